"""capabilities — GET [base]/metadata: the CapabilityStatement (capabilitystatement.html).

Generated from the resource type list, the search parameter table and the operation
tables below, so it always tells the truth about what the server does. The OpenAPI
document (:mod:`fhir_server.http.openapi`) is generated from the same tables
(:func:`resource_entries`, :func:`operations`): one description of the API (issue 29).
"""

from __future__ import annotations

import json
import weakref
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from fhir_server import FHIR_VERSION, __version__
from fhir_server.core.canonical import url
from fhir_server.core.model import FhirRequest, FhirResponse
from fhir_server.core.resource_types import CONFORMANCE_TYPES, SUPPORTED_TYPES
from fhir_server.interactions.search import SYSTEM_TYPES
from fhir_server.search.compartments import compartments
from fhir_server.search.registry import get, params_for
from fhir_server.subscriptions.topics import TOPIC_CANONICAL, TOPICS

if TYPE_CHECKING:
    from fhir_server.interactions.port import Server

TYPE_INTERACTIONS = ["read", "vread", "update", "patch", "delete", "history-instance",
                     "history-type", "create", "search-type"]


TERMINOLOGY_OPERATIONS = {"CodeSystem": ["lookup", "validate-code"],
                          "ValueSet": ["expand", "validate-code"], "ConceptMap": ["translate"]}
OPERATION_DEFINITIONS = {
    "lookup": "http://hl7.org/fhir/OperationDefinition/CodeSystem-lookup",
    "validate-code": "http://hl7.org/fhir/OperationDefinition/ValueSet-validate-code",
    "expand": "http://hl7.org/fhir/OperationDefinition/ValueSet-expand",
    "translate": "http://hl7.org/fhir/OperationDefinition/ConceptMap-translate",
    "validate": "http://hl7.org/fhir/OperationDefinition/Resource-validate",
    "everything": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
}
# operations of the core on one type (besides $validate on every type and the terminology
# ones): Patient/[id]/$everything, the right of access (R-SEC-4)
CORE_OPERATIONS = {"Patient": ["everything"]}
# where each operation is invoked: [base]/$op ("system"), [base]/Type/$op ("type"),
# [base]/Type/[id]/$op ("instance"); a workflow operation on a type is an instance one
# (ServiceRequest/[id]/$accept), one without a type a system one ($indicators)
OPERATION_LEVELS: dict[str, tuple[str, ...]] = {
    "validate": ("type", "instance"), "lookup": ("type", "instance"),
    "validate-code": ("type", "instance"), "expand": ("type", "instance"),
    "translate": ("type", "instance"), "everything": ("instance",)}
# Bulk Data Access IG v2 $export (issue 31): [base]/$export, [base]/Patient/$export,
# [base]/Group/[id]/$export — (type or None, level, OperationDefinition)
BULK_DATA = "http://hl7.org/fhir/uv/bulkdata"
EXPORT_OPERATIONS: tuple[tuple[str | None, str, str], ...] = (
    ("Patient", "type", f"{BULK_DATA}/OperationDefinition/patient-export"),
    ("Group", "instance", f"{BULK_DATA}/OperationDefinition/group-export"),
    (None, "system", f"{BULK_DATA}/OperationDefinition/export"),
)
SYSTEM_INTERACTIONS = ["transaction", "batch", "search-system", "history-system"]
CONFORMANCE_INTERACTIONS = ["read", "vread", "search-type"]
# rest.security (SMART App Launch, conformance.html#security)
SECURITY_SERVICE = {"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                    "code": "SMART-on-FHIR", "display": "SMART-on-FHIR"}
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"


@dataclass(frozen=True)
class Operation:
    """One operation as served: ``rtype`` None for a system one; ``levels`` where it is
    invoked (``system``, ``type``, ``instance``); ``definition`` its OperationDefinition."""

    name: str
    rtype: str | None
    levels: tuple[str, ...]
    definition: str


def operations(extra: tuple[tuple[str, str], ...] = ()) -> list[Operation]:
    """Every operation the server answers, in CapabilityStatement order: per type
    (supported types, then conformance types), then the system ones. ``extra``: the
    workflow's (type or "" for the system, name)."""
    out: list[Operation] = []
    for rtype in SUPPORTED_TYPES:
        out.append(Operation("validate", rtype, OPERATION_LEVELS["validate"],
                             OPERATION_DEFINITIONS["validate"]))
        out.extend(Operation(n, rtype, OPERATION_LEVELS[n], OPERATION_DEFINITIONS[n])
                   for n in CORE_OPERATIONS.get(rtype, []))
        out.extend(Operation(n, rtype, ("instance",),
                             url("OperationDefinition", f"{rtype}-{n}"))
                   for t, n in extra if t == rtype)
        out.extend(Operation("export", rtype, (level,), definition)
                   for t, level, definition in EXPORT_OPERATIONS if t == rtype)
    for rtype in sorted(CONFORMANCE_TYPES):
        out.extend(Operation(n, rtype, OPERATION_LEVELS[n], OPERATION_DEFINITIONS[n])
                   for n in TERMINOLOGY_OPERATIONS.get(rtype, []))
    out.extend(Operation(n, None, ("system",), url("OperationDefinition", n))
               for t, n in extra if not t)
    out.extend(Operation("export", None, (level,), definition)
               for t, level, definition in EXPORT_OPERATIONS if t is None)
    return out


def resource_interactions() -> dict[str, list[str]]:
    """The interaction codes of each resource type served, in CapabilityStatement order."""
    table = {rtype: list(TYPE_INTERACTIONS) for rtype in SUPPORTED_TYPES}
    table.update({rtype: list(CONFORMANCE_INTERACTIONS) for rtype in sorted(CONFORMANCE_TYPES)})
    return table


def workflow_operations(server: Server) -> tuple[tuple[str, str], ...]:
    """The workflow's operations as (type or "", name), sorted (``extra`` above)."""
    return tuple(sorted((t or "", n) for t, n in server.workflow.operations)) \
        if server.workflow else ()


def rest_security(dev_issuer: bool, authorize_url: str | None, token_url: str | None,
                  cors: bool) -> dict[str, Any]:
    """``rest.security``: OAuth bearer tokens the SMART way, the authorize and token
    endpoints (oauth-uris extension) when configured, and whether CORS is on."""
    security: dict[str, Any] = {
        "cors": cors,
        "service": [{"coding": [SECURITY_SERVICE], "text": "OAuth2 bearer tokens (SMART "
                     "App Launch scopes); discovery at .well-known/smart-configuration"}],
        "description": "Every request but GET metadata needs an OAuth 2.0 bearer token "
        "(Authorization: Bearer …) signed by a configured issuer (TELEIMG_AUTH_ISSUERS)"
        + (" or, in development mode, the local development issuer" if dev_issuer else "")
        + "; rights come from its role and SMART scopes.",
    }
    uris = [{"url": name, "valueUri": value} for name, value in
            (("authorize", authorize_url), ("token", token_url)) if value]
    if uris:
        security["extension"] = [{"url": OAUTH_URIS, "extension": uris}]
    return security


# the rest.security each served app publishes (set by the HTTP adapter, which knows the
# OAuth endpoints and CORS settings; a core without one publishes the bare SMART coding)
_SECURITY: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def publish_security(server: Server, security: dict[str, Any]) -> None:
    """Set the ``rest.security`` the CapabilityStatement of ``server`` shows."""
    _SECURITY[server] = json.dumps(security, sort_keys=True)


# IHE MHD (4.2) Document Responder: ITI-67 Find Document References on DocumentReference,
# ITI-68 Retrieve Document on the Binary its attachment.url names (issue 9)
MHD = "https://profiles.ihe.net/ITI/MHD"
INSTANTIATES = [f"{MHD}/CapabilityStatement/IHE.MHD.DocumentResponder"]
IMPLEMENTATION_GUIDES = [f"{MHD}/ImplementationGuide/ihe.iti.mhd"]
DOCUMENTATION = {
    "DocumentReference": "IHE MHD Document Responder, ITI-67 Find Document References: "
    "one DocumentReference per report document version (CDA N1 and N3), carrying its XDS "
    "metadata; poll with _lastUpdated=gt<the last lastUpdated seen>&_sort=_lastUpdated "
    "(keyset paging). Masked documents (securityLabel TRE_A07) and documents a patient "
    "opposed sharing are left out for who may not see them.",
    "Binary": "IHE MHD ITI-68 Retrieve Document: GET of a DocumentReference's "
    "attachment.url with Accept set to its contentType (application/hl7-cda+xml) returns "
    "the document bytes; a FHIR Accept returns the Binary resource.",
    "Subscription": "FHIR R4 Subscriptions (issue 31): criteria-based (criteria = a search "
    "on one served type, matched on the written version's own values) or a topic of the "
    "Subscriptions R5 Backport IG (criteria = the topic's canonical, listed in this entry's "
    "extensions and at Subscription/$topics); channels rest-hook (https) and websocket "
    "(bind-with-token, $get-ws-binding-token); payload empty, id-only (the default) or "
    "full-resource (backport-payload-content). A notification carries only what the "
    "subscription's owner may read at the event; $status and $events report the event "
    "numbers (eventsSinceSubscriptionStart).",
}
SUPPORTED_PROFILES = {"DocumentReference": [
    f"{MHD}/StructureDefinition/IHE.MHD.Comprehensive.DocumentReference"]}


def capabilities(server: Server, req: FhirRequest) -> FhirResponse:
    required = tuple(sorted((t, tuple(u)) for t, u in server.profiles.required.items()))
    security = _SECURITY.get(server) or json.dumps(rest_security(True, None, None, False),
                                                         sort_keys=True)
    return FhirResponse(200, {}, resource=_statement(req.base_url, server.released, required,
                                                     workflow_operations(server), security))


def _system_params() -> list[dict[str, str]]:
    """The parameters a system search takes: those of every type it covers by default."""
    shared = [p for p in params_for(SYSTEM_TYPES[0]).values()
              if all(get(t, p.name) for t in SYSTEM_TYPES)]
    return [{"name": "_type", "type": "token",
             "documentation": "the resource types searched (default: every stored type but "
             "AuditEvent); the other parameters must be defined for each of them"},
            *({"name": p.name, "definition": p.url, "type": p.kind}
              for p in sorted(shared, key=lambda p: p.name))]


@cache
def _statement(base_url: str, released: str,
               required: tuple[tuple[str, tuple[str, ...]], ...],
               extra: tuple[tuple[str, str], ...] = (),
               security: str | None = None) -> dict[str, Any]:
    """``extra``: (type or "" for the system, name) of the workflow's operations;
    ``security``: the ``rest.security`` as JSON (:func:`rest_security`)."""
    resources = []
    mandatory = dict(required)
    interactions = resource_interactions()
    ops = operations(extra)

    def operation_list(rtype: str) -> list[dict[str, str]]:
        return [{"name": op.name, "definition": op.definition} for op in ops
                if op.rtype == rtype]

    for rtype in SUPPORTED_TYPES:
        params = sorted(params_for(rtype).values(), key=lambda p: p.name)
        ref_params = [p.name for p in params if p.kind == "reference"]
        resources.append({
            "type": rtype,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{rtype}",
            "interaction": [{"code": code} for code in interactions[rtype]],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalRead": "not-supported",
            "conditionalUpdate": True,
            "conditionalDelete": "single",
            "referencePolicy": ["literal", "logical"],
            "searchInclude": ["*"] + [f"{rtype}:{n}" for n in ref_params],
            "searchRevInclude": ["*"],
            "searchParam": [
                {"name": p.name, "definition": p.url, "type": p.kind} for p in params
            ],
            "operation": operation_list(rtype),
        })
        # writes must meet the mandatory ones (TELEIMG_REQUIRED_PROFILES)
        profiles = [*mandatory.get(rtype, ()), *SUPPORTED_PROFILES.get(rtype, ())]
        if profiles:
            resources[-1]["supportedProfile"] = profiles
        if rtype in DOCUMENTATION:
            resources[-1]["documentation"] = DOCUMENTATION[rtype]
        if rtype == "Subscription":  # the backport's topic discovery (issue 31)
            resources[-1]["extension"] = [{"url": TOPIC_CANONICAL, "valueCanonical": t}
                                          for t in TOPICS]
    for rtype in sorted(CONFORMANCE_TYPES):
        resources.append({
            "type": rtype, "profile": f"http://hl7.org/fhir/StructureDefinition/{rtype}",
            "interaction": [{"code": code} for code in interactions[rtype]],
            "searchParam": [{"name": n, "type": "uri" if n == "url" else "token"
                             if n in ("_id", "status", "type", "version") else "string"}
                            for n in ("url", "name", "title", "version", "status", "type",
                                      "_id")],
            "operation": operation_list(rtype),
        })
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": released,
        "publisher": "Téléimagerie",
        "kind": "instance",
        "instantiates": INSTANTIATES,
        "software": {"name": "teleimagerie", "version": __version__},
        "implementation": {"description": "Téléimagerie FHIR R4 server", "url": base_url},
        "fhirVersion": FHIR_VERSION,
        "implementationGuide": IMPLEMENTATION_GUIDES,
        "format": ["application/fhir+json", "application/fhir+xml", "json", "xml"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [{
            "mode": "server",
            "security": json.loads(security) if security else
            rest_security(True, None, None, False),
            "resource": resources,
            "interaction": [{"code": code} for code in SYSTEM_INTERACTIONS],
            # GET [base]?… / POST [base]/_search: the parameters every type has
            "searchParam": _system_params(),
            # GET [base]/Patient/[id]/[type]?… (search.html#compartments)
            "compartment": [c.url for c in compartments().values()],
            "operation": [{"name": op.name, "definition": op.definition} for op in ops
                          if op.rtype is None],
        }],
    }
