"""capabilities — GET [base]/metadata: the CapabilityStatement (capabilitystatement.html).

Generated from the resource type list and the search parameter table, so it always
tells the truth about what the server does.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from fhir_server import FHIR_VERSION, __version__
from fhir_server.core.model import FhirRequest, FhirResponse
from fhir_server.core.resource_types import SUPPORTED_TYPES
from fhir_server.search.registry import params_for

if TYPE_CHECKING:
    from fhir_server.core.server import FhirServer

TYPE_INTERACTIONS = ["read", "vread", "update", "patch", "delete", "history-instance",
                     "history-type", "create", "search-type"]


def capabilities(server: FhirServer, req: FhirRequest) -> FhirResponse:
    return FhirResponse(200, {}, resource=_statement(req.base_url, server.released))


@cache
def _statement(base_url: str, released: str) -> dict[str, Any]:
    resources = []
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
        })
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": released,
        "publisher": "Téléimagerie",
        "kind": "instance",
        "software": {"name": "teleimagerie", "version": __version__},
        "implementation": {"description": "Téléimagerie FHIR R4 server", "url": base_url},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "application/fhir+xml", "json", "xml"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [{
            "mode": "server",
            "resource": resources,
            "interaction": [{"code": "transaction"}, {"code": "batch"},
                            {"code": "history-system"}],
        }],
    }
