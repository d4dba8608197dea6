"""The parts every exchange AuditEvent shares (R-INT-2, R-SEC-3): the remote peer and
this server as DICOM Source / Destination Role IDs (DCM 110153 / 110152), the server as
observer, the patient entity. HL7 v2 messages and DICOM transfers fill in the rest."""

from __future__ import annotations

from typing import Any

from fhir_server.search.values import format_instant, now_us

DCM = "http://dicom.nema.org/resources/ontology/DCM"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE = {"system": DCM, "code": "110153", "display": "Source Role ID"}
DESTINATION = {"system": DCM, "code": "110152", "display": "Destination Role ID"}


def event(code: dict[str, str], action: str, outcome: str, remote: dict[str, Any],
          peer: str, server_name: str, inbound: bool, entities: list[dict[str, Any]],
          patient: str | None = None, error: str = "",
          subtype: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One exchange: ``remote`` is the peer's ``who``; ``peer`` its ``host:port``."""
    them: dict[str, Any] = {"type": {"coding": [SOURCE if inbound else DESTINATION]},
                            "who": remote, "requestor": inbound}
    host = peer.rsplit(":", 1)[0]
    if host:
        them["network"] = {"address": host, "type": "2"}
    us = {"type": {"coding": [DESTINATION if inbound else SOURCE]},
          "who": {"display": server_name}, "requestor": not inbound}
    if patient:
        entities = [*entities, {"what": {"reference": patient},
                                "type": {"system": ENTITY_TYPE, "code": "1",
                                         "display": "Person"},
                                "role": {"system": OBJECT_ROLE, "code": "1",
                                         "display": "Patient"}}]
    out: dict[str, Any] = {
        "resourceType": "AuditEvent", "type": code, "action": action,
        "recorded": format_instant(now_us()), "outcome": outcome,
        "agent": [them, us],
        "source": {"observer": {"display": server_name},
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/"
                             "security-source-type", "code": "4"}]},
        "entity": entities,
    }
    if subtype:
        out["subtype"] = subtype
    if error:
        out["outcomeDesc"] = error[:1000]
    return out
