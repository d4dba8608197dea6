"""The AuditEvent of one HL7 v2 message exchange, in or out (R-INT-2, R-SEC-3).

The FHIR interactions a message causes are audited by the core like any other; this
event records the exchange itself — including messages refused before any FHIR
interaction: DICOM 110107 *Import* (received) / 110106 *Export* (sent), subtype the HL7
message type (table 0076) and event (table 0003), the peer as source, the stored message
and the patient as entities, the outcome from the ACK.
"""

from __future__ import annotations

from typing import Any

from adapters.exchange import DCM, ENTITY_TYPE, OBJECT_ROLE, event
from adapters.hl7v2.message import Message
from adapters.hl7v2.records import Record

V2_0003 = "http://terminology.hl7.org/CodeSystem/v2-0003"
OUTCOME = {"AA": "0", "CA": "0", "AE": "4", "CE": "4", "AR": "8", "CR": "8"}


def exchange_event(record: Record, msg: Message | None, peer: str, server_name: str,
                   inbound: bool, duplicate: bool = False) -> dict[str, Any]:
    app, facility = msg.sender if msg else ("", "")
    if not inbound and msg is not None:
        app, facility = msg.receiver
    code, kind = (msg.message_type[:2] if msg else ("", ""))
    entities: list[dict[str, Any]] = [{
        "what": {"reference": f"Basic/{record.id}"},
        "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
        "role": {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
        "description": f"HL7 v2 {code}^{kind} MSH-10 "
                       f"{msg.control_id if msg else record.control_id or '?'}"
                       f"{' (doublon)' if duplicate else ''}"}]
    outcome = OUTCOME.get(record.ack_code, "0" if record.status in (
        "processed", "sent", "held", "received", "pending") else "4")
    return event({"system": DCM, "code": "110107", "display": "Import"} if inbound else
                 {"system": DCM, "code": "110106", "display": "Export"},
                 "C" if inbound else "R", outcome,
                 {"identifier": {"system": "urn:teleimagerie:hl7v2:application",
                                 "value": f"{app}^{facility}"},
                  "display": f"{app} ({facility})"}, peer, server_name, inbound, entities,
                 patient=record.patient, error=record.error,
                 subtype=[{"system": V2_0003, "code": kind or "?",
                           "display": f"{code}^{kind}"}])
