"""The DICOM service: the C-STORE SCP in its own process, started by ``teleimagerie
serve`` when ``TELEIMG_DICOM_PORT`` is set, or alone by ``teleimagerie dicom scp``. A port
that cannot be bound stops it with one line (to ``serve``, or on stderr) and status 1
(issue 24)."""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import threading

from adapters.dicom.scp import StoreScp
from adapters.dicom.settings import DicomSettings
from fhir_server import health, logs
from fhir_server.config import Settings
from fhir_server.processes import cannot_listen, listener_failed, tell_parent
from fhir_server.runtime import CoreBuilder

log = logging.getLogger("teleimagerie.dicom")
BIND_ERRORS = (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES)


def main(build: CoreBuilder) -> None:
    """Runs the SCP on the core ``build`` makes (the composition root's)."""
    settings = Settings.from_env()
    logs.configure(settings.log_level)  # redacted (R-SEC-6)
    dicom = DicomSettings.from_env()
    if not dicom.port:
        raise SystemExit("TELEIMG_DICOM_PORT is not set: no DICOM SCP to run")
    server = build(settings)
    scp = StoreScp(server, dicom, settings.data_dir / "dicom-spool")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        scp.start()  # imports what a stop left in the spool, then binds
    except OSError as exc:
        if server.audit is not None:
            server.audit.close()
        if not isinstance(exc, socket.gaierror) and exc.errno not in BIND_ERRORS:
            raise  # the spool, not the port
        listener_failed(cannot_listen("DICOM", dicom.host, dicom.port, exc))
    health.beat("dicom", settings.data_dir)
    tell_parent("ready")  # `teleimagerie serve` waits for this before serving HTTP
    parent = os.environ.get("TELEIMG_DICOM_PARENT")
    try:
        while not stop.wait(1.0):
            health.beat("dicom", settings.data_dir)  # readiness (issue 29)
            if parent and os.getppid() != int(parent):  # `serve` is gone, even if killed
                log.warning("DICOM SCP: the server process %s is gone, stopping", parent)
                break
    finally:
        scp.stop()
        if server.audit is not None:
            server.audit.close()

