"""Upload over HTTP, as DICOMweb STOW-RS does (PS3.18 §10.5): ``POST /dicomweb/studies``
with ``application/dicom`` (one instance) or ``multipart/related; type="application/
dicom"`` (several). Headers only are read; each study goes through the pipeline as the
authenticated caller (its role must allow writing ImagingStudy and Observation). The
answer is the Store Instances Response Module in ``application/dicom+json``: 200 all
stored, 202 some failed, 409 none stored (PS3.18 §10.5.3). An instance whose UIDs break
the UI grammar fails with FailureReason A900 and is audited; a target study UID in the path
that breaks it is a 400 (issue 27 item 1; R-SEC-2, R-INT-2)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from adapters.dicom.pipeline import Importer
from adapters.dicom.reader import NOT_MATCHING_SOP_CLASS, BadUid, Instance, NotReadable, read
from adapters.dicom.settings import DicomSettings
from fhir_server.core.safepath import UnsafeIdentifier, check_uid, is_uid

if TYPE_CHECKING:
    from fhir_server.security.principal import Principal
    from fhir_server.server.dispatch import FhirServer

PROCESSING_FAILURE = 0x0110  # PS3.4 C.4.2.1.4 / PS3.18 FailureReason
CANNOT_UNDERSTAND = 0xC000


class BadUpload(ValueError):
    pass


def parts(body: bytes, content_type: str) -> list[bytes]:
    """The DICOM objects of the request body."""
    ctype = content_type.split(";")[0].strip().lower()
    if ctype == "application/dicom":
        return [body]
    if ctype != "multipart/related":
        raise BadUpload(f"Content-Type {content_type!r} : attendu application/dicom ou "
                        'multipart/related; type="application/dicom"')
    found = re.search(r'boundary="?([^";]+)"?', content_type, re.I)
    if not found:
        raise BadUpload("multipart/related sans paramètre boundary")
    delimiter = b"--" + found.group(1).encode()
    out = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):  # the close delimiter
            break
        head, sep, content = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise BadUpload("partie multipart sans en-têtes")
        if re.search(rb"content-type:\s*(?!application/dicom\b)\S", head, re.I):
            raise BadUpload("chaque partie doit être application/dicom")
        out.append(content[:-2] if content.endswith(b"\r\n") else content)
    if not out:
        raise BadUpload("multipart/related sans partie")
    return out


def _ref(uid: str, sop_class: str, reason: int | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"00081150": {"vr": "UI", "Value": [sop_class]},
                            "00081155": {"vr": "UI", "Value": [uid]}}
    if reason is not None:
        item["00081197"] = {"vr": "US", "Value": [reason]}
    return item


def _uid(ds: Any, keyword: str) -> str:
    """A refused instance's UID for the response, only when it is a valid one: the
    response never echoes what broke the grammar."""
    value = ds.get(keyword) if ds is not None else None
    return str(value) if is_uid(value) else ""


def store(server: FhirServer, principal: Principal, body: bytes, content_type: str,
          settings: DicomSettings | None = None, peer: str = "", study: str = ""
          ) -> tuple[int, dict[str, Any], list[str]]:
    """(HTTP status, response dataset, failure reasons) of one STOW request; posted to
    ``/studies/{study}``, instances of another study are refused."""
    importer = Importer(server, settings or DicomSettings.from_env(), principal, peer,
                        channel="stow")
    if study:
        try:
            check_uid(study, "Study Instance UID de l'URL")
        except UnsafeIdentifier as exc:  # PS3.18 §10.5.3: 400, the request is malformed
            importer.refused([str(exc)])
            return 400, {}, [str(exc)]
    instances: list[Instance] = []
    failed: list[dict[str, Any]] = []
    reasons: list[str] = []
    refused: list[str] = []  # audited, as the studies the pipeline refuses are
    for n, raw in enumerate(parts(body, content_type), start=1):
        try:
            instance = read(raw, name=f"partie {n}")
        except NotReadable as exc:
            ds = exc.dataset if isinstance(exc, BadUid) else None
            code = NOT_MATCHING_SOP_CLASS if isinstance(exc, BadUid) else CANNOT_UNDERSTAND
            failed.append(_ref(_uid(ds, "SOPInstanceUID"), _uid(ds, "SOPClassUID"), code))
            reasons.append(str(exc))
            refused.append(str(exc))
            continue
        if study and instance.study_uid != study:
            ds = instance.dataset
            failed.append(_ref(str(ds.SOPInstanceUID), str(ds.SOPClassUID),
                               PROCESSING_FAILURE))
            reasons.append(f"partie {n} : étude {instance.study_uid}, pas {study}")
            continue
        instances.append(instance)
    importer.refused(refused)  # R-SEC-3
    summary = importer.import_instances(instances)
    errors = {s.uid: s.error for s in summary.studies if s.error}
    stored: list[dict[str, Any]] = []
    for instance in instances:
        ds = instance.dataset
        if instance.study_uid in errors:
            failed.append(_ref(str(ds.SOPInstanceUID), str(ds.SOPClassUID),
                               PROCESSING_FAILURE))
        else:
            stored.append(_ref(str(ds.SOPInstanceUID), str(ds.SOPClassUID)))
    reasons += list(dict.fromkeys(errors.values()))
    response: dict[str, Any] = {}
    if stored:
        response["00081199"] = {"vr": "SQ", "Value": stored}
    if failed:
        response["00081198"] = {"vr": "SQ", "Value": failed}
    status = 200 if not failed else 202 if stored else 409
    return status, response, reasons
