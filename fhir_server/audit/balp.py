"""AuditEvents shaped per IHE Basic Audit Log Patterns (BALP) for RESTful activity (R-SEC-3).

One event per interaction and per patient concerned (BALP "PatientRead"/"PatientQuery"
patterns), denied and failed attempts included. The client is the Source Role ID and
this server the Destination Role ID, as DICOM/IHE establish.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import urlencode

from fhir_server.core.canonical import url
from fhir_server.core.model import FhirRequest, Interaction
from fhir_server.search.values import format_instant, now_us
from fhir_server.security.principal import RPPS_OID

DCM = "http://dicom.nema.org/resources/ontology/DCM"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
BALP_ENTITY = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"
INTERACTION = "http://hl7.org/fhir/restful-interaction"
ROLE_SYSTEM = url("CodeSystem", "teleimagerie-role")
CHANNEL_SYSTEM = url("CodeSystem", "teleimagerie-channel")

# interaction -> (restful-interaction subtype, action)
SUBTYPE: dict[Interaction, tuple[str, str]] = {
    Interaction.READ: ("read", "R"),
    Interaction.VREAD: ("vread", "R"),
    Interaction.HISTORY_INSTANCE: ("history-instance", "R"),
    Interaction.HISTORY_TYPE: ("history-type", "E"),
    Interaction.HISTORY_SYSTEM: ("history-system", "E"),
    Interaction.SEARCH_TYPE: ("search-type", "E"),
    Interaction.CREATE: ("create", "C"),
    Interaction.UPDATE: ("update", "U"),
    Interaction.PATCH: ("patch", "U"),
    Interaction.DELETE: ("delete", "D"),
    Interaction.BATCH: ("batch", "E"),
    Interaction.OPERATION: ("operation", "E"),
    Interaction.CAPABILITIES: ("capabilities", "E"),
}


def outcome_code(status: int) -> str:
    """AuditEvent.outcome: 0 success, 4 minor failure (refused/invalid), 8 serious (ours)."""
    if status < 400:
        return "0"
    return "4" if status < 500 else "8"


def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    out = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def user_agent(req: FhirRequest, action: str) -> dict[str, Any]:
    ctx = req.context
    principal = ctx.principal
    if principal is None:
        who: dict[str, Any] = {"display": "anonymous (no valid token)"}
        kind = _coding("http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "IRCP",
                       "information recipient")
        agent: dict[str, Any] = {"type": {"coding": [kind]}, "who": who, "requestor": True}
    else:
        if principal.patient and "patient" in principal.roles:
            kind = _coding("http://terminology.hl7.org/CodeSystem/v3-RoleClass", "PAT",
                           "patient")
        elif action in ("C", "U", "D"):
            kind = _coding("http://terminology.hl7.org/CodeSystem/v3-RoleClass", "AGNT",
                           "agent")
        else:
            kind = _coding("http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                           "IRCP", "information recipient")
        ident = {"system": RPPS_OID, "value": principal.id_nat_ps} if principal.id_nat_ps \
            else {"system": principal.issuer, "value": principal.sub}
        agent = {"type": {"coding": [kind]},
                 "who": {"identifier": ident, "display": principal.display},
                 "altId": principal.sub, "requestor": True}
        if principal.roles:
            agent["role"] = [{"coding": [_coding(ROLE_SYSTEM, r)]} for r in principal.roles]
        if principal.acr or principal.auth_mode:
            agent["policy"] = [f"acr:{principal.acr or principal.auth_mode}"]
    if ctx.client_address:
        agent["network"] = {"address": ctx.client_address, "type": "2"}
    return agent


def build(req: FhirRequest, status: int, diagnostics: str | None,
          touched: dict[str, set[str]] | None, server_name: str,
          target: str | None = None) -> list[dict[str, Any]]:
    """The AuditEvent(s) for one interaction: one per patient concerned (at least one)."""
    subtype, action = SUBTYPE.get(req.interaction, ("operation", "E"))
    if req.interaction == Interaction.BATCH and isinstance(req.body, dict) and \
            req.body.get("type") == "transaction":
        subtype = "transaction"
    recorded = format_instant(now_us())
    agents = [user_agent(req, action)]
    principal = req.context.principal
    if principal is not None and principal.client_id:
        agents.append({"type": {"coding": [_coding(DCM, "110153", "Source Role ID")]},
                       "who": {"identifier": {"value": principal.client_id}},
                       "requestor": False})
    agents.append({"type": {"coding": [_coding(DCM, "110152", "Destination Role ID")]},
                   "who": {"display": server_name}, "requestor": False,
                   "network": {"address": req.base_url, "type": "5"}})
    entities: list[dict[str, Any]] = [{
        "what": {"identifier": {"value": req.context.request_id}},
        "type": _coding(BALP_ENTITY, "XrequestId", "X-Request-Id")}]
    target = target or _target(req)
    if target:
        entities.append({"what": {"reference": target},
                         "type": _coding(ENTITY_TYPE, "2", "System Object"),
                         "role": _coding(OBJECT_ROLE, "4", "Domain Resource")})
    if action == "E" and req.interaction != Interaction.BATCH:
        query = urlencode([(k, v) for k, v in req.params if k != "_format"])
        entities.append({"type": _coding(ENTITY_TYPE, "2", "System Object"),
                         "role": _coding(OBJECT_ROLE, "24", "Query"),
                         "description": f"{req.resource_type or ''}?{query}",
                         "query": base64.b64encode(query.encode()).decode()})
    base: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": _coding("http://terminology.hl7.org/CodeSystem/audit-event-type", "rest",
                        "Restful Operation"),
        "subtype": [_coding(INTERACTION, subtype)],
        "action": action, "recorded": recorded, "outcome": outcome_code(status),
        "agent": agents,
        "source": {"site": req.base_url, "observer": {"display": server_name},
                   "type": [_coding("http://terminology.hl7.org/CodeSystem/"
                                    "security-source-type", "4", "Application Server")]},
    }
    if diagnostics and status >= 400:
        base["outcomeDesc"] = f"{status}: {diagnostics}"[:1000]
    if req.context.source != "rest":
        base["source"]["type"].append(_coding(CHANNEL_SYSTEM, req.context.source))
    patients = sorted({p for found in (touched or {}).values() for p in found})
    if not patients:
        return [{**base, "entity": entities}]
    return [{**base, "entity": [*entities, {
        "what": {"reference": f"Patient/{p}"},
        "type": _coding(ENTITY_TYPE, "1", "Person"),
        "role": _coding(OBJECT_ROLE, "1", "Patient")}]} for p in patients]


def _target(req: FhirRequest) -> str | None:
    if req.resource_type and req.id:
        ref = f"{req.resource_type}/{req.id}"
        return f"{ref}/_history/{req.version_id}" if req.version_id else ref
    return None
