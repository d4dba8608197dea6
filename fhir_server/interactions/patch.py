"""patch — PATCH [base]/[type]/[id] with JSON Patch (RFC 6902; http.html#patch)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jsonpatch
import orjson

from fhir_server.core.errors import ErrorKind, FhirError, not_found
from fhir_server.core.model import FhirRequest, FhirResponse
from fhir_server.interactions.common import check_if_match, find_matches, persist, written
from fhir_server.store.base import Stored
from fhir_server.validation.resource import validate_resource

if TYPE_CHECKING:
    from fhir_server.interactions.port import Server


def patch(server: Server, req: FhirRequest) -> FhirResponse:
    assert req.resource_type
    operations = req.body
    if not isinstance(operations, list):
        raise FhirError(ErrorKind.INVALID, "a JSON Patch body must be an array of operations")
    current: Stored | None
    with server.store.write():
        if req.id is None:
            matches = find_matches(server, req.resource_type, req.params, "conditional patch")
            if len(matches) != 1:
                raise FhirError(ErrorKind.PRECONDITION_FAILED if matches else
                                ErrorKind.NOT_FOUND,
                                f"conditional patch criteria match {len(matches)} resources")
            current = matches[0]
        else:
            current = server.store.read(req.resource_type, req.id)
        if current is None:
            raise not_found(req.resource_type, req.id or "")
        if current.deleted:
            raise FhirError(ErrorKind.GONE, f"{current.type}/{current.id} was deleted")
        check_if_match(req, current)
        resource: dict[str, Any] = orjson.loads(current.body or b"{}")
        try:
            patched = jsonpatch.JsonPatch(operations).apply(resource)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError,
                KeyError, ValueError) as exc:
            raise FhirError(ErrorKind.UNPROCESSABLE, f"JSON Patch failed: {exc}") from None
        if patched.get("id") != current.id or patched.get("resourceType") != current.type:
            raise FhirError(ErrorKind.UNPROCESSABLE, "a patch may not change id or resourceType")
        validate_resource(patched, current.type)
        server.profiles.check_write(patched)
        item = persist(server, req, current.type, current.id, patched, "PATCH", current)
    return written(req, item, 200, f"patched {item.type}/{item.id}")
