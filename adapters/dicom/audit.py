"""The AuditEvent of one study received over DICOM (R-INT-2, R-SEC-3).

The FHIR writes an import causes are audited by the core; this event records the
exchange itself, refused studies included: DICOM PS3.15 A.5.3.4 *DICOM Instances
Transferred* (110104), action C, the sender (calling AE title, STOW client or CLI user)
as source, this server as destination, the study (Study Instance UID, instance count)
and the patient as entities, outcome 0 or 4 with the reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fhir_server.search.values import format_instant, now_us

if TYPE_CHECKING:
    from adapters.dicom.pipeline import StudyResult

DCM = "http://dicom.nema.org/resources/ontology/DCM"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
CHANNELS = {"scp": "C-STORE", "stow": "STOW-RS", "import": "import de fichiers"}


def transfer_event(result: StudyResult, sender: str, channel: str, peer: str,
                   server_name: str) -> dict[str, Any]:
    source: dict[str, Any] = {
        "type": {"coding": [{"system": DCM, "code": "110153", "display": "Source Role ID"}]},
        "who": {"identifier": {"system": "urn:teleimagerie:dicom:sender", "value": sender},
                "display": sender},
        "requestor": True}
    host = peer.rsplit(":", 1)[0]
    if host:
        source["network"] = {"address": host, "type": "2"}
    destination = {"type": {"coding": [{"system": DCM, "code": "110152",
                                        "display": "Destination Role ID"}]},
                   "who": {"display": server_name}, "requestor": False}
    study: dict[str, Any] = {
        "what": {"identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{result.uid}"}},
        "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
        "role": {"system": OBJECT_ROLE, "code": "3", "display": "Report"},
        "description": f"{CHANNELS.get(channel, channel)} : {result.instances} instance(s), "
                       f"{result.new_instances} nouvelle(s)"}
    if result.reference:
        study["what"]["reference"] = result.reference
    entities = [study]
    if result.patient:
        entities.append({"what": {"reference": result.patient},
                         "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
                         "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"}})
    out: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": {"system": DCM, "code": "110104", "display": "DICOM Instances Transferred"},
        "action": "C", "recorded": format_instant(now_us()),
        "outcome": "4" if result.error else "0",
        "agent": [source, destination],
        "source": {"observer": {"display": server_name},
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/"
                             "security-source-type", "code": "4"}]},
        "entity": entities,
    }
    if result.error:
        out["outcomeDesc"] = result.error[:1000]
    return out
