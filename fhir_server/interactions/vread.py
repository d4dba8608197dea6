"""vread — GET [base]/[type]/[id]/_history/[vid] (http.html#vread); a vid that is not
a 64-bit version number is 404 like any missing version (issue 27)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fhir_server.core.errors import ErrorKind, FhirError
from fhir_server.core.formats import RawJson
from fhir_server.core.model import FhirRequest, FhirResponse
from fhir_server.core.params import version_number
from fhir_server.interactions.common import cache_headers

if TYPE_CHECKING:
    from fhir_server.interactions.port import Server


def vread(server: Server, req: FhirRequest) -> FhirResponse:
    assert req.resource_type and req.id and req.version_id is not None
    vid = version_number(req.version_id)  # 1..2^63-1: no other version can exist
    if vid is None:
        raise FhirError(ErrorKind.NOT_FOUND, f"no version {req.version_id[:40]!r} of "
                        f"{req.resource_type}/{req.id}")
    item = server.store.vread(req.resource_type, req.id, vid)
    if item is None:
        raise FhirError(ErrorKind.NOT_FOUND, f"no version {req.version_id} of "
                        f"{req.resource_type}/{req.id}")
    headers = cache_headers(item)
    if item.deleted:
        raise FhirError(ErrorKind.GONE, f"version {item.vid} of {item.type}/{item.id} is a "
                        "deletion", headers=headers)
    return FhirResponse(200, headers, raw=RawJson(item.body or b""))
