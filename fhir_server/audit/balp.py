"""AuditEvents shaped per IHE Basic Audit Log Patterns (BALP) for RESTful activity (R-SEC-3).

One event per interaction and per patient concerned (BALP "PatientRead"/"PatientQuery"
patterns), denied and failed attempts included. The client is the Source Role ID and
this server the Destination Role ID, as DICOM/IHE establish.
"""

from __future__ import annotations

import base64
from functools import lru_cache
from typing import Any, Protocol

from fhir_server.core.canonical import url
from fhir_server.core.model import FhirRequest, Interaction
from fhir_server.core.params import query_string
from fhir_server.search.values import format_instant, now_us
from profiles.spec import RPPS as RPPS_OID  # idNatPs (FR Core Practitioner)

DCM = "http://dicom.nema.org/resources/ontology/DCM"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
BALP_ENTITY = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"
INTERACTION = "http://hl7.org/fhir/restful-interaction"
ROLE_SYSTEM = url("CodeSystem", "teleimagerie-role")
CHANNEL_SYSTEM = url("CodeSystem", "teleimagerie-channel")


class Principal(Protocol):
    """Who acted, as an AuditEvent agent names them: what the audit reads of
    ``security.principal.Principal`` (a Protocol, so the audit sits below security, issue
    28 item 1). Hashable: the agents of one caller are built once."""

    @property
    def sub(self) -> str: ...
    @property
    def issuer(self) -> str: ...
    @property
    def roles(self) -> tuple[str, ...]: ...
    @property
    def id_nat_ps(self) -> str | None: ...
    @property
    def acr(self) -> str | None: ...
    @property
    def auth_mode(self) -> str | None: ...
    @property
    def patient(self) -> str | None: ...
    @property
    def client_id(self) -> str | None: ...
    @property
    def display(self) -> str: ...

# interaction -> (restful-interaction subtype, action)
SUBTYPE: dict[Interaction, tuple[str, str]] = {
    Interaction.READ: ("read", "R"),
    Interaction.VREAD: ("vread", "R"),
    Interaction.HISTORY_INSTANCE: ("history-instance", "R"),
    Interaction.HISTORY_TYPE: ("history-type", "E"),
    Interaction.HISTORY_SYSTEM: ("history-system", "E"),
    Interaction.SEARCH_TYPE: ("search-type", "E"),
    Interaction.SEARCH_SYSTEM: ("search-system", "E"),
    Interaction.SEARCH_COMPARTMENT: ("search-compartment", "E"),
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


V3_PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
V3_ROLE_CLASS = "http://terminology.hl7.org/CodeSystem/v3-RoleClass"
IRCP = _coding(V3_PARTICIPATION, "IRCP", "information recipient")
PAT = _coding(V3_ROLE_CLASS, "PAT", "patient")
AGNT = _coding(V3_ROLE_CLASS, "AGNT", "agent")
REST = _coding("http://terminology.hl7.org/CodeSystem/audit-event-type", "rest",
               "Restful Operation")
SUBTYPE_CODING = {code: [_coding(INTERACTION, code)] for code in
                  [*(s for s, _ in SUBTYPE.values()), "transaction", "operation"]}
XREQUEST_ID = _coding(BALP_ENTITY, "XrequestId", "X-Request-Id")
SYSTEM_OBJECT = _coding(ENTITY_TYPE, "2", "System Object")
DOMAIN_RESOURCE = _coding(OBJECT_ROLE, "4", "Domain Resource")
QUERY = _coding(OBJECT_ROLE, "24", "Query")
PERSON = _coding(ENTITY_TYPE, "1", "Person")
PATIENT = _coding(OBJECT_ROLE, "1", "Patient")


def _user_agent(principal: Principal | None, writes: bool,
                client_address: str | None) -> dict[str, Any]:
    if principal is None:
        who: dict[str, Any] = {"display": "anonymous (no valid token)"}
        agent: dict[str, Any] = {"type": {"coding": [IRCP]}, "who": who, "requestor": True}
    else:
        if principal.patient and "patient" in principal.roles:
            kind = PAT
        elif writes:
            kind = AGNT
        else:
            kind = IRCP
        ident = {"system": RPPS_OID, "value": principal.id_nat_ps} if principal.id_nat_ps \
            else {"system": principal.issuer, "value": principal.sub}
        agent = {"type": {"coding": [kind]},
                 "who": {"identifier": ident, "display": principal.display},
                 "altId": principal.sub, "requestor": True}
        if principal.roles:
            agent["role"] = [{"coding": [_coding(ROLE_SYSTEM, r)]} for r in principal.roles]
        if principal.acr or principal.auth_mode:
            agent["policy"] = [f"acr:{principal.acr or principal.auth_mode}"]
    if client_address:
        agent["network"] = {"address": client_address, "type": "2"}
    return agent


@lru_cache(maxsize=64)
def _client_agent(client_id: str) -> dict[str, Any]:
    return {"type": {"coding": [_coding(DCM, "110153", "Source Role ID")]},
            "who": {"identifier": {"value": client_id}}, "requestor": False}


@lru_cache(maxsize=64)
def _server_parts(server_name: str, base_url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(destination agent, source) of this server."""
    agent = {"type": {"coding": [_coding(DCM, "110152", "Destination Role ID")]},
             "who": {"display": server_name}, "requestor": False,
             "network": {"address": base_url, "type": "5"}}
    source = {"site": base_url, "observer": {"display": server_name},
              "type": [_coding("http://terminology.hl7.org/CodeSystem/security-source-type",
                               "4", "Application Server")]}
    return agent, source


# Events share these parts: they are built once per principal (or server) and never
# mutated afterwards, which keeps a read's audit cost low (issue 3).
@lru_cache(maxsize=4096)
def _agents(principal: Principal | None, writes: bool, client_address: str | None,
            server_name: str, base_url: str) -> list[dict[str, Any]]:
    """One list object per caller and server: their events share it, and a journal record
    compares it by identity (ADR 0017)."""
    agents = [_user_agent(principal, writes, client_address)]
    if principal is not None and principal.client_id:
        agents.append(_client_agent(principal.client_id))
    agents.append(_server_parts(server_name, base_url)[0])
    return agents


def build(req: FhirRequest, status: int, diagnostics: str | None,
          touched: dict[str, set[str]] | None, server_name: str,
          target: str | None = None) -> list[dict[str, Any]]:
    """The AuditEvent(s) for one interaction: one per patient concerned (at least one)."""
    subtype, action = SUBTYPE.get(req.interaction, ("operation", "E"))
    action = req.audit_action or action
    if req.interaction == Interaction.BATCH and isinstance(req.body, dict) and \
            req.body.get("type") == "transaction":
        subtype = "transaction"
    recorded = format_instant(now_us())
    principal = req.context.principal
    source = _server_parts(server_name, req.base_url)[1]
    agents = _agents(principal, action in ("C", "U", "D"), req.context.client_address,
                     server_name, req.base_url)
    entities: list[dict[str, Any]] = [{
        "what": {"identifier": {"value": req.context.request_id}}, "type": XREQUEST_ID}]
    targets = req.audit_targets or [t for t in (target or _target(req),) if t]
    # an operation names itself on what it acted on (ADR 0009: which transition)
    detail = [{"type": "operation", "valueString": f"${req.operation}"}] \
        if req.interaction == Interaction.OPERATION and req.operation else None
    entities.extend({"what": {"reference": t}, "type": SYSTEM_OBJECT, "role": DOMAIN_RESOURCE,
                     **({"detail": detail} if detail else {})} for t in targets)
    if action == "E" and req.interaction != Interaction.BATCH:
        query = query_string([(k, v) for k, v in req.params if k != "_format"])
        # a system operation ($export) acts on no resource: its query names it
        entities.append({"type": SYSTEM_OBJECT, "role": QUERY,
                         "description": f"{req.resource_type or ''}?{query}",
                         "query": base64.b64encode(query.encode()).decode(),
                         **({"detail": detail} if detail and not targets else {})})
    if req.context.source != "rest":
        source = {**source, "type": [*source["type"],
                                     _coding(CHANNEL_SYSTEM, req.context.source)]}
    base: dict[str, Any] = {
        "resourceType": "AuditEvent", "type": REST, "subtype": SUBTYPE_CODING[subtype],
        "action": action, "recorded": recorded, "outcome": outcome_code(status),
        "agent": agents, "source": source,
    }
    if diagnostics and status >= 400:
        base["outcomeDesc"] = f"{status}: {diagnostics}"[:1000]
    patients = sorted({p for found in (touched or {}).values() for p in found})
    if not patients:
        return [{**base, "entity": entities}]
    return [{**base, "entity": [*entities, {
        "what": {"reference": f"Patient/{p}"}, "type": PERSON, "role": PATIENT}]}
        for p in patients]


def _target(req: FhirRequest) -> str | None:
    if req.resource_type and req.id:
        ref = f"{req.resource_type}/{req.id}"
        return f"{ref}/_history/{req.version_id}" if req.version_id else ref
    return None
