"""Break-the-glass: an explicit, justified, audited, time-limited opening of one patient's
record (R-SEC-2, R-SEC-3; ADR 0020).

A clinician outside the patient's care relationship sends ``X-Break-Glass: <reason>``
on a request about one patient — ``GET Patient/[id]``, ``Patient/[id]/$everything`` or
``Patient/[id]/[type]`` (a compartment search). The server then, before serving it:

1. writes a **grant**: a Flag on the patient, ``meta.security`` = v3-ActReason ``BTG``
   (no client may set ``meta.security``, so no client can forge a grant), tagged with the
   clinician's key, ``period`` now → now + ``TELEIMG_BREAK_GLASS_MINUTES`` (60), author
   the clinician (idNatPs), the reason as its ``code.text``. Until it ends the guard
   reaches the patient's whole record (:class:`~fhir_server.security.care.Relationship`);
   the patient and their care team see the Flag;
2. records a **security alert** AuditEvent, committed before the answer:
   ``type`` DCM 110113 *Security Alert*, ``subtype`` DCM 110127 *Emergency Override
   Started*, ``purposeOfEvent`` v3-ActReason ``BTG`` with the reason as its text, the
   clinician, the patient and the Flag — the auditor's alert:
   ``GET AuditEvent?subtype=http://dicom.nema.org/resources/ontology/DCM|110127``.

FHIR and IHE BALP carry the purpose of use as ``AuditEvent.purposeOfEvent`` (v3
PurposeOfUse; ``BTG`` in v3-ActReason) and model the start of an override as DCM 110127;
SMART has no standard claim for it, hence the header, which also carries the reason.
Only people with a clinical care role may declare it (not a secretary, not a connector).
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from fhir_server.audit.balp import DCM, build
from fhir_server.core.errors import ErrorKind, FhirError, invalid, not_found
from fhir_server.core.model import FhirRequest, Interaction
from fhir_server.search.values import format_instant, now_us
from fhir_server.security.care import ACT_REASON, BREAK_GLASS, self_key
from fhir_server.security.principal import RPPS_OID
from fhir_server.store.versions import store_version

if TYPE_CHECKING:
    from fhir_server.security.access import Access

HEADER = "x-break-glass"
ROLES = frozenset({"requesting-physician", "remote-imager", "local-physician",
                   "nuclear-physician", "radiographer"})
BTG = {"system": ACT_REASON, "code": "BTG", "display": "break the glass"}
ALERT = {"system": DCM, "code": "110113", "display": "Security Alert"}
OVERRIDE = {"system": DCM, "code": "110127", "display": "Emergency Override Started"}
MAX_REASON = 500
_ON_ONE_PATIENT = (Interaction.READ, Interaction.SEARCH_COMPARTMENT, Interaction.OPERATION)


def declared(req: FhirRequest) -> bool:
    return req.header(HEADER) is not None and req.context.source != "bundle"


def declare(req: FhirRequest, access: Access, server_name: str) -> None:
    """Grant the break-the-glass ``req`` declares and record its alert (see module)."""
    reason = " ".join((req.header(HEADER) or "").split())
    principal = access.principal
    if principal.is_system or not ROLES & set(principal.roles):
        raise FhirError(ErrorKind.FORBIDDEN, "break-the-glass is for a clinician "
                        f"({', '.join(sorted(ROLES))}) acting in person (R-SEC-2)")
    if not reason or len(reason) > MAX_REASON or not reason.isprintable():
        raise invalid(f"X-Break-Glass must state the reason (1 to {MAX_REASON} printable "
                      "characters)")
    if req.resource_type != "Patient" or not req.id or req.interaction not in \
            _ON_ONE_PATIENT or (req.interaction == Interaction.OPERATION and
                                req.operation != "everything") or req.method != "GET":
        raise invalid("X-Break-Glass opens one patient's record: send it on GET "
                      "Patient/[id], Patient/[id]/$everything or Patient/[id]/[type]")
    store = access.store
    patient = store.read("Patient", req.id)
    if patient is None or patient.deleted:
        raise not_found("Patient", req.id)
    start = now_us()
    end = start + int(timedelta(minutes=access.limits.break_glass_minutes).total_seconds()
                      * 1_000_000)
    who: dict[str, Any] = {"display": principal.display}
    if principal.id_nat_ps:
        who["identifier"] = {"system": RPPS_OID, "value": principal.id_nat_ps}
    flag = {
        "resourceType": "Flag",
        "meta": {"security": [BTG], "tag": [{"system": BREAK_GLASS,
                                             "code": self_key(principal)}]},
        "status": "active",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                            "flag-category", "code": "admin"}]}],
        "code": {"coding": [BTG], "text": reason},
        "subject": {"reference": f"Patient/{req.id}"},
        "period": {"start": format_instant(start), "end": format_instant(end)},
        "author": who,
    }
    flag_id = str(uuid.uuid4())
    with store.write():
        store_version(None, store, "Flag", flag_id, flag, "POST", None)
    touched = {f"Flag/{flag_id}": {req.id}}
    for event in build(req, 200, None, touched, server_name, f"Flag/{flag_id}"):
        event.update(type=ALERT, subtype=[OVERRIDE], action="E",
                     purposeOfEvent=[{"coding": [BTG], "text": reason}])
        req.context.events.append(event)
