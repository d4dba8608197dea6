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


# -- operator commands (teleimagerie hl7 …, teleimagerie delivery …) ---------------------------
OPERATOR_ACTIONS = "https://teleimagerie.fr/fhir/CodeSystem/teleimagerie-operator-action"
OPERATOR_SYSTEM = "urn:teleimagerie:operator"


class Refused(Exception):
    """An operator command that does not apply to what it names; nothing was changed. The
    text says why and which command would apply."""


def system_object(reference: str, role: str, description: str = "") -> dict[str, Any]:
    """An AuditEvent entity for one of our records (``role``: object-role code, 4 *Domain
    Resource* for the record acted on, 20 *Job* for what it carries)."""
    out: dict[str, Any] = {
        "what": {"reference": reference},
        "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
        "role": {"system": OBJECT_ROLE, "code": role,
                 "display": {"4": "Domain Resource", "20": "Job"}.get(role, role)}}
    if description:
        out["description"] = description[:1000]
    return out


def operator_event(command: str, action: str, operator: str, server_name: str,
                   outbound: bool, entities: list[dict[str, Any]],
                   patient: str | None = None) -> dict[str, Any]:
    """What an operator did from the CLI (R-SEC-3, R-INT-2): DCM 110106 *Export* for what
    leaves, 110107 *Import* for what came in, action U, the operator as requestor, the
    command (``hl7 resend``, ``delivery retry``…) as subtype ``action`` of
    ``teleimagerie-operator-action``."""
    code = {"system": DCM, "code": "110106", "display": "Export"} if outbound else \
        {"system": DCM, "code": "110107", "display": "Import"}
    return event(code, "U", "0",
                 {"identifier": {"system": OPERATOR_SYSTEM, "value": operator},
                  "display": f"opérateur {operator} (teleimagerie CLI)"}, "", server_name,
                 True, entities, patient=patient,
                 subtype=[{"system": OPERATOR_ACTIONS, "code": action,
                           "display": f"teleimagerie {command} {action}"}])
