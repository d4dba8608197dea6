"""The C-STORE SCP (PS3.4 Annex B Storage Service Class, PS3.7 §9.1.1) and C-ECHO
(Verification), with pynetdicom.

Every instance's header (no pixel data) is written to a spool file and flushed to disk
before the C-STORE response says Success (0000) — nothing is acknowledged before it is
durably kept. When the association is released or aborted, its spooled instances go
through the import pipeline as one batch (one new ImagingStudy version per study);
instances of a study that cannot be imported stay in ``failed/`` with the reason, for
``teleimagerie dicom import`` once the cause is fixed. Spool folders left by a stop are
imported at the next start.

The spool file is named after the SOP Instance UID the sender gives: the UIDs are checked
against their grammar first (``reader.checked``) and the path must stay in the spool
(``fhir_server.core.safepath``); a bad UID is answered A900, written nowhere and audited
(issue 27 item 1; R-SEC-2, R-INT-2).
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from adapters.dicom.pipeline import Importer, Summary, system_principal
from adapters.dicom.reader import NOT_MATCHING_SOP_CLASS, BadUid, NotReadable, read
from adapters.dicom.settings import DicomSettings
from fhir_server import logs, metrics
from fhir_server.core.safepath import UnsafeIdentifier, check_ae_title, inside, shown

if TYPE_CHECKING:
    from pynetdicom.transport import ThreadedAssociationServer

    from fhir_server.server.dispatch import FhirServer

log = logging.getLogger("teleimagerie.dicom")
CANNOT_UNDERSTAND = 0xC000  # Storage: Error, cannot understand (PS3.4 B.2.3)
OUT_OF_RESOURCES = 0xA700  # Storage: Refused, out of resources (PS3.4 B.2.3)
NOT_AUTHORISED = 0x0124  # Refused: Not Authorized (PS3.7 §9.1.1.1.9, Annex C)


class StoreScp:
    def __init__(self, server: FhirServer, settings: DicomSettings, spool: Path) -> None:
        self.server = server
        self.settings = settings
        self.spool = spool
        self.failed = spool / "failed"
        self.failed.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # one batch imported at a time, in arrival order
        self.ae = AE(ae_title=settings.ae_title)
        self.ae.supported_contexts = AllStoragePresentationContexts
        self.ae.add_supported_context(Verification)
        self.ae.require_calling_aet = sorted(settings.allowed_aes)
        self.ae.maximum_pdu_size = 0
        self._server: ThreadedAssociationServer | None = None

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> tuple[str, int]:
        """Recover what a stop left in the spool, then listen (in threads)."""
        self.recover()
        handlers: list[Any] = [(evt.EVT_C_STORE, self._store), (evt.EVT_C_ECHO, lambda e: 0x0000),
                    (evt.EVT_RELEASED, self._finished), (evt.EVT_ABORTED, self._finished)]
        handlers = [(e, metrics.dicom_store(h) if e is evt.EVT_C_STORE else h)  # issue 29
                    for e, h in handlers] + [(e, metrics.dicom_association) for e in (
                        evt.EVT_ACCEPTED, evt.EVT_REJECTED, evt.EVT_RELEASED, evt.EVT_ABORTED)]
        server = self.ae.start_server((self.settings.host, self.settings.port),
                                      block=False, evt_handlers=handlers)
        assert server is not None
        self._server = server
        host, port = server.server_address[:2]
        log.info("DICOM C-STORE SCP %s on %s:%s", self.settings.ae_title, host, port)
        return str(host), int(port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def recover(self) -> None:
        for folder in sorted(p for p in self.spool.iterdir()
                             if p.is_dir() and p != self.failed):
            self.flush(folder, "reprise")

    # -- events ----------------------------------------------------------------------
    @staticmethod
    def _folder_of(event: Any) -> str:
        assoc = event.assoc
        if not hasattr(assoc, "_teleimg_spool"):
            assoc._teleimg_spool = uuid.uuid4().hex
        return str(assoc._teleimg_spool)

    def _store(self, event: Any) -> int:
        try:  # pynetdicom checks it on receipt: kept, since it names the principal
            calling = check_ae_title(event.assoc.requestor.ae_title, "AE appelant")
        except UnsafeIdentifier as exc:
            return self._refuse(event, str(exc), NOT_AUTHORISED)
        try:
            raw = event.encoded_dataset(include_meta=True)
            instance = read(raw, name=f"C-STORE de {calling}")
            uid = str(instance.dataset.SOPInstanceUID)
            affected = str(event.request.AffectedSOPInstanceUID or "")
            if affected != uid:  # PS3.7 §9.1.1.1: the request names the instance it carries
                raise BadUid(f"C-STORE de {calling} : SOPInstanceUID de l'instance "
                             f"{shown(uid)}, Affected SOP Instance UID {shown(affected)}")
            folder = inside(self.spool, self._folder_of(event))
            path = inside(folder, f"{uid}.dcm")
        except (BadUid, UnsafeIdentifier) as exc:  # nothing written (R-SEC-2)
            return self._refuse(event, str(exc), NOT_MATCHING_SOP_CLASS)
        except NotReadable as exc:
            return self._refuse(event, str(exc), CANNOT_UNDERSTAND)
        try:
            folder.mkdir(exist_ok=True)
            header = io.BytesIO()
            instance.dataset.save_as(header, enforce_file_format=False)
            with open(path, "wb") as fh:
                fh.write(header.getvalue())
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            log.error("DICOM spool %s: %s", folder, exc)
            return OUT_OF_RESOURCES
        return 0x0000

    def _refuse(self, event: Any, reason: str, status: int) -> int:
        """Answer a failure status; log and audit why (R-SEC-3), write nothing."""
        requestor = event.assoc.requestor
        log.warning("%s", reason)
        try:
            calling = check_ae_title(requestor.ae_title)
        except UnsafeIdentifier:
            calling = shown(requestor.ae_title, 40)  # escaped, never as sent
        try:
            Importer(self.server, self.settings, system_principal(calling),
                     f"{requestor.address}:{requestor.port}", channel="scp"
                     ).refused([reason])
        except Exception as exc:  # the failure status still goes back to the sender
            log.error("DICOM: audit of a refused instance failed: %s", logs.failure(exc))
        return status

    def _finished(self, event: Any) -> None:
        folder = inside(self.spool, self._folder_of(event))
        if folder.exists():
            requestor = event.assoc.requestor
            self.flush(folder, str(requestor.ae_title),
                       f"{requestor.address}:{requestor.port}")

    def flush(self, folder: Path, calling: str, peer: str = "") -> Summary:
        """Import one association's instances, then drop them from the spool."""
        with self._lock:
            importer = Importer(self.server, self.settings, system_principal(calling),
                                peer, channel="scp")
            summary = importer.import_paths(sorted(folder.glob("*.dcm")))
            for source, reason in summary.failed:
                path = Path(source)
                if path.exists():  # spool names were checked when written: kept so
                    shutil.move(str(path), inside(self.failed, path.name))
                    inside(self.failed, f"{path.name}.txt").write_text(reason + "\n")
                log.warning("DICOM %s: %s", path.name, reason)
            shutil.rmtree(folder, ignore_errors=True)
            log.info("DICOM association of %s: %d instance(s) imported, %d refused",
                     calling, summary.imported, len(summary.failed))
            return summary

