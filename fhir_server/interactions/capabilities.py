"""capabilities — GET [base]/metadata: the CapabilityStatement (capabilitystatement.html).

Generated from the resource type list and the search parameter table, so it always
tells the truth about what the server does.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from fhir_server import FHIR_VERSION, __version__
from fhir_server.core.canonical import url
from fhir_server.core.model import FhirRequest, FhirResponse
from fhir_server.core.resource_types import CONFORMANCE_TYPES, SUPPORTED_TYPES
from fhir_server.interactions.search import SYSTEM_TYPES
from fhir_server.search.compartments import compartments
from fhir_server.search.registry import get, params_for

if TYPE_CHECKING:
    from fhir_server.core.server import FhirServer

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
}


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
}
SUPPORTED_PROFILES = {"DocumentReference": [
    f"{MHD}/StructureDefinition/IHE.MHD.Comprehensive.DocumentReference"]}


def capabilities(server: FhirServer, req: FhirRequest) -> FhirResponse:
    required = tuple(sorted((t, tuple(u)) for t, u in server.profiles.required.items()))
    extra = tuple(sorted((t or "", n) for t, n in server.workflow.operations)) \
        if server.workflow else ()
    return FhirResponse(200, {}, resource=_statement(req.base_url, server.released, required,
                                                     extra))


def _system_params() -> list[dict[str, str]]:
    """The parameters a system search takes: those of every type it covers by default."""
    shared = [p for p in params_for(SYSTEM_TYPES[0]).values()
              if all(get(t, p.name) for t in SYSTEM_TYPES)]
    return [{"name": "_type", "type": "token",
             "documentation": "the resource types searched (default: every stored type but "
             "AuditEvent); the other parameters must be defined for each of them"},
            *({"name": p.name, "definition": p.url, "type": p.kind}
              for p in sorted(shared, key=lambda p: p.name))]


def _operation(name: str) -> dict[str, str]:
    return {"name": name, "definition": OPERATION_DEFINITIONS[name]}


@cache
def _statement(base_url: str, released: str,
               required: tuple[tuple[str, tuple[str, ...]], ...],
               extra: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
    """``extra``: (type or "" for the system, name) of the workflow's operations."""
    resources = []
    mandatory = dict(required)
    for rtype in SUPPORTED_TYPES:
        params = sorted(params_for(rtype).values(), key=lambda p: p.name)
        ref_params = [p.name for p in params if p.kind == "reference"]
        resources.append({
            "type": rtype,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{rtype}",
            "interaction": [{"code": code} for code in TYPE_INTERACTIONS],
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
            "operation": [_operation("validate"), *(
                {"name": n, "definition": url("OperationDefinition", f"{rtype}-{n}")}
                for t, n in extra if t == rtype)],
        })
        # writes must meet the mandatory ones (TELEIMG_REQUIRED_PROFILES)
        profiles = [*mandatory.get(rtype, ()), *SUPPORTED_PROFILES.get(rtype, ())]
        if profiles:
            resources[-1]["supportedProfile"] = profiles
        if rtype in DOCUMENTATION:
            resources[-1]["documentation"] = DOCUMENTATION[rtype]
    for rtype in sorted(CONFORMANCE_TYPES):
        resources.append({
            "type": rtype, "profile": f"http://hl7.org/fhir/StructureDefinition/{rtype}",
            "interaction": [{"code": "read"}, {"code": "vread"}, {"code": "search-type"}],
            "searchParam": [{"name": n, "type": "uri" if n == "url" else "token"
                             if n in ("_id", "status", "type", "version") else "string"}
                            for n in ("url", "name", "title", "version", "status", "type",
                                      "_id")],
            "operation": [_operation(op) for op in TERMINOLOGY_OPERATIONS.get(rtype, [])],
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
            "resource": resources,
            "interaction": [{"code": "transaction"}, {"code": "batch"},
                            {"code": "search-system"}, {"code": "history-system"}],
            # GET [base]?… / POST [base]/_search: the parameters every type has
            "searchParam": _system_params(),
            # GET [base]/Patient/[id]/[type]?… (search.html#compartments)
            "compartment": [c.url for c in compartments().values()],
            "operation": [{"name": n, "definition": url("OperationDefinition", n)}
                          for t, n in extra if not t],
        }],
    }
