"""create — POST [base]/[type], with conditional create (If-None-Exist) (http.html#create).

The If-None-Exist check and the insert run in one write unit under a lock on the
criteria, so concurrent identical conditional creates never both create.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from fhir_server.core.errors import ErrorKind, FhirError
from fhir_server.core.formats import RawJson
from fhir_server.core.model import FhirRequest, FhirResponse
from fhir_server.interactions.common import (
    criteria_from_header,
    find_matches,
    lock_key,
    persist,
    version_headers,
    written,
)
from fhir_server.validation.resource import validate_resource

if TYPE_CHECKING:
    from fhir_server.interactions.port import Server


def create(server: Server, req: FhirRequest) -> FhirResponse:
    assert req.resource_type
    resource = validate_resource(req.body, req.resource_type)
    server.profiles.check_write(resource)
    # a client id in the body is ignored (http.html#create)
    rid = req.assigned_id or str(uuid.uuid4())
    condition = req.header("if-none-exist")
    if condition is None:
        with server.store.write():
            item = persist(server, req, req.resource_type, rid, resource, "POST", None)
        return written(req, item, 201, f"created {item.type}/{item.id}")
    criteria = criteria_from_header(condition)
    with server.store.lock(lock_key(req.resource_type, criteria)), server.store.write():
        matches = find_matches(server, req.resource_type, criteria, "If-None-Exist")
        if len(matches) > 1:
            raise FhirError(ErrorKind.PRECONDITION_FAILED,
                            f"If-None-Exist {condition!r} matches {len(matches)} resources")
        if matches:
            found = matches[0]
            return FhirResponse(200, version_headers(req, found), raw=RawJson(found.body or b""))
        item = persist(server, req, req.resource_type, rid, resource, "POST", None)
    return written(req, item, 201, f"created {item.type}/{item.id}")
