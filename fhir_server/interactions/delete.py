"""delete — DELETE [base]/[type]/[id] and conditional delete (http.html#delete).

Deletion is logical: a new version marked deleted; read then answers 410 Gone and the
history keeps every version.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fhir_server.core.errors import ErrorKind, FhirError, not_found, outcome
from fhir_server.core.model import FhirRequest, FhirResponse
from fhir_server.interactions.common import (
    check_if_match,
    etag,
    find_matches,
    lock_key,
    persist,
)

if TYPE_CHECKING:
    from fhir_server.core.server import FhirServer


def delete(server: FhirServer, req: FhirRequest) -> FhirResponse:
    assert req.resource_type
    if req.id is None:
        criteria = req.params
        with server.store.lock(lock_key(req.resource_type, criteria)), server.store.write():
            matches = find_matches(server, req.resource_type, criteria, "conditional delete")
            if len(matches) > 1:
                raise FhirError(ErrorKind.PRECONDITION_FAILED,
                                f"conditional delete criteria match {len(matches)} resources")
            if not matches:
                return FhirResponse(200, {}, resource=outcome("no resource matched; nothing "
                                                              "deleted"))
            target = matches[0]
            check_if_match(req, target)
            item = persist(server, req, target.type, target.id, None, "DELETE", target)
        return FhirResponse(200, {"ETag": etag(item.vid)},
                            resource=outcome(f"deleted {item.type}/{item.id}"))
    with server.store.write():
        current = server.store.read(req.resource_type, req.id)
        if current is None:
            raise not_found(req.resource_type, req.id)
        if current.deleted:
            return FhirResponse(200, {"ETag": etag(current.vid)},
                                resource=outcome(f"{current.type}/{current.id} was already "
                                                 "deleted"))
        check_if_match(req, current)
        item = persist(server, req, current.type, current.id, None, "DELETE", current)
    return FhirResponse(200, {"ETag": etag(item.vid)},
                        resource=outcome(f"deleted {item.type}/{item.id}"))
