"""The AuditEvent of one HL7 v2 message exchange, in or out (R-INT-2, R-SEC-3).

The FHIR interactions a message causes are audited by the core like any other; this
event records the exchange itself — including messages refused before any FHIR
interaction: DICOM 110107 *Import* (received) / 110106 *Export* (sent), subtype the HL7
message type (table 0076) and event (table 0003), the peer as source, the stored message
and the patient as entities, the outcome from the ACK.
"""

from __future__ import annotations

from typing import Any

from adapters.hl7v2.message import Message
from adapters.hl7v2.records import Record
from fhir_server.search.values import format_instant, now_us

DCM = "http://dicom.nema.org/resources/ontology/DCM"
V2_0003 = "http://terminology.hl7.org/CodeSystem/v2-0003"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
OUTCOME = {"AA": "0", "CA": "0", "AE": "4", "CE": "4", "AR": "8", "CR": "8"}


def exchange_event(record: Record, msg: Message | None, peer: str, server_name: str,
                   inbound: bool, duplicate: bool = False) -> dict[str, Any]:
    app, facility = msg.sender if msg else ("", "")
    if not inbound and msg is not None:
        app, facility = msg.receiver
    remote = {"type": {"coding": [{"system": DCM, "code": "110153" if inbound else "110152",
                                   "display": "Source Role ID" if inbound
                                   else "Destination Role ID"}]},
              "who": {"identifier": {"system": "urn:teleimagerie:hl7v2:application",
                                     "value": f"{app}^{facility}"},
                      "display": f"{app} ({facility})"},
              "requestor": inbound}
    host = peer.rsplit(":", 1)[0]
    if host:
        remote["network"] = {"address": host, "type": "2"}
    local = {"type": {"coding": [{"system": DCM, "code": "110152" if inbound else "110153",
                                  "display": "Destination Role ID" if inbound
                                  else "Source Role ID"}]},
             "who": {"display": server_name}, "requestor": not inbound}
    code, event = (msg.message_type[:2] if msg else ("", ""))
    entities: list[dict[str, Any]] = [{
        "what": {"reference": f"Basic/{record.id}"},
        "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
        "role": {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
        "description": f"HL7 v2 {code}^{event} MSH-10 {msg.control_id if msg else '?'}"
                       f"{' (doublon)' if duplicate else ''}"}]
    if record.patient:
        entities.append({"what": {"reference": record.patient},
                         "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
                         "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"}})
    event_code = {"system": DCM, "code": "110107", "display": "Import"} if inbound else \
        {"system": DCM, "code": "110106", "display": "Export"}
    out: dict[str, Any] = {
        "resourceType": "AuditEvent", "type": event_code,
        "subtype": [{"system": V2_0003, "code": event or "?", "display": f"{code}^{event}"}],
        "action": "C" if inbound else "R", "recorded": format_instant(now_us()),
        "outcome": OUTCOME.get(record.ack_code, "0" if record.status in (
            "processed", "sent", "held", "received", "pending") else "4"),
        "agent": [remote, local],
        "source": {"observer": {"display": server_name},
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/"
                             "security-source-type", "code": "4"}]},
        "entity": entities,
    }
    if record.error:
        out["outcomeDesc"] = record.error[:1000]
    return out
