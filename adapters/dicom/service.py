"""The DICOM service: the C-STORE SCP in its own process, started by ``teleimagerie
serve`` when ``TELEIMG_DICOM_PORT`` is set, or alone by ``teleimagerie dicom scp``."""

from __future__ import annotations

import logging
import os
import signal
import threading

from adapters.dicom.scp import StoreScp
from adapters.dicom.settings import DicomSettings
from fhir_server.config import Settings

log = logging.getLogger("teleimagerie.dicom")


def main() -> None:
    from fhir_server.runtime import build_core

    settings = Settings.from_env()
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    dicom = DicomSettings.from_env()
    if not dicom.port:
        raise SystemExit("TELEIMG_DICOM_PORT is not set: no DICOM SCP to run")
    server = build_core(settings)
    scp = StoreScp(server, dicom, settings.data_dir / "dicom-spool")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    scp.start()
    parent = os.environ.get("TELEIMG_DICOM_PARENT")
    try:
        while not stop.wait(1.0):
            if parent and os.getppid() != int(parent):  # `serve` is gone, even if killed
                log.warning("DICOM SCP: the server process %s is gone, stopping", parent)
                break
    finally:
        scp.stop()
        if server.audit is not None:
            server.audit.close()


if __name__ == "__main__":
    main()
