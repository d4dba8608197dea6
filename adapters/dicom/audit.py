"""The AuditEvent of one study received over DICOM (R-INT-2, R-SEC-3).

The FHIR writes an import causes are audited by the core; this event records the
exchange itself, refused studies included: DICOM PS3.15 A.5.3.4 *DICOM Instances
Transferred* (110104), action C, the sender (calling AE title, STOW client or CLI user)
as source, this server as destination, the study (Study Instance UID, instance count)
and the patient as entities, outcome 0 or 4 with the reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from adapters.exchange import DCM, ENTITY_TYPE, OBJECT_ROLE, event

if TYPE_CHECKING:
    from adapters.dicom.pipeline import StudyResult

CHANNELS = {"scp": "C-STORE", "stow": "STOW-RS", "import": "import de fichiers"}


def transfer_event(result: StudyResult, sender: str, channel: str, peer: str,
                   server_name: str) -> dict[str, Any]:
    study: dict[str, Any] = {
        "what": {"identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{result.uid}"}},
        "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
        "role": {"system": OBJECT_ROLE, "code": "3", "display": "Report"},
        "description": f"{CHANNELS.get(channel, channel)} : {result.instances} instance(s), "
                       f"{result.new_instances} nouvelle(s)"}
    if result.reference:
        study["what"]["reference"] = result.reference
    return event({"system": DCM, "code": "110104", "display": "DICOM Instances Transferred"},
                 "C", "4" if result.error else "0",
                 {"identifier": {"system": "urn:teleimagerie:dicom:sender", "value": sender},
                  "display": sender}, peer, server_name, True, [study],
                 patient=result.patient, error=result.error)


def refusal_event(reason: str, sender: str, channel: str, peer: str, server_name: str
                  ) -> dict[str, Any]:
    """An instance refused before the pipeline (unreadable, or a UID that breaks its
    grammar; issue 27 item 1): 110104, action C, outcome 4, the reason; no entity but
    the channel, since nothing it names can be trusted."""
    what = {"type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
            "role": {"system": OBJECT_ROLE, "code": "3", "display": "Report"},
            "description": f"{CHANNELS.get(channel, channel)} : instance refusée"}
    return event({"system": DCM, "code": "110104", "display": "DICOM Instances Transferred"},
                 "C", "4", {"identifier": {"system": "urn:teleimagerie:dicom:sender",
                                           "value": sender}, "display": sender},
                 peer, server_name, True, [what], error=reason)
