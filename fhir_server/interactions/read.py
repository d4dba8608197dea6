"""read — GET [base]/[type]/[id] (http.html#read). Serves the stored bytes as-is."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fhir_server.core.errors import ErrorKind, FhirError, not_found
from fhir_server.core.formats import RawJson
from fhir_server.core.model import FhirRequest, FhirResponse
from fhir_server.interactions.common import cache_headers, etag

if TYPE_CHECKING:
    from fhir_server.interactions.port import Server


def read(server: Server, req: FhirRequest) -> FhirResponse:
    assert req.resource_type and req.id
    item = server.store.read(req.resource_type, req.id)
    if item is None:
        raise not_found(req.resource_type, req.id)
    headers = cache_headers(item)
    if item.deleted:
        raise FhirError(ErrorKind.GONE, f"{req.resource_type}/{req.id} was deleted",
                        headers=headers)
    if req.header("if-none-match") in (etag(item.vid), f'"{item.vid}"'):
        return FhirResponse(304, headers)
    return FhirResponse(200, headers, raw=RawJson(item.body or b""))
