"""update — PUT [base]/[type]/[id] and conditional update PUT [base]/[type]?criteria.

Update-as-create with a client-chosen id is allowed (http.html#upsert); ``If-Match``
gives optimistic locking (412 on mismatch, http.html#concurrency).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from fhir_server.core.errors import ErrorKind, FhirError
from fhir_server.core.model import FhirRequest, FhirResponse
from fhir_server.interactions.common import (
    check_if_match,
    find_matches,
    lock_key,
    persist,
    written,
)
from fhir_server.validation.resource import check_id, validate_resource

if TYPE_CHECKING:
    from fhir_server.interactions.port import Server


def update(server: Server, req: FhirRequest) -> FhirResponse:
    assert req.resource_type
    resource = validate_resource(req.body, req.resource_type)
    server.profiles.check_write(resource)
    if req.id is None:
        return _conditional_update(server, req, resource)
    check_id(req.id)
    body_id = resource.get("id")
    if body_id is None:
        raise FhirError(ErrorKind.INVALID, "the resource must carry its id for an update",
                        expression=[f"{req.resource_type}.id"])
    if body_id != req.id:
        raise FhirError(ErrorKind.INVALID, f"resource id {body_id!r} does not match the URL id "
                        f"{req.id!r}", expression=[f"{req.resource_type}.id"])
    with server.store.write():
        current = server.store.read(req.resource_type, req.id)
        check_if_match(req, current)
        item = persist(server, req, req.resource_type, req.id, resource, "PUT", current)
    created = current is None or current.deleted
    return written(req, item, 201 if created else 200,
                   f"{'created' if created else 'updated'} {item.type}/{item.id}")


def _conditional_update(server: Server, req: FhirRequest, resource: dict[str, Any]) -> FhirResponse:
    assert req.resource_type
    criteria = req.params
    with server.store.lock(lock_key(req.resource_type, criteria)), server.store.write():
        matches = find_matches(server, req.resource_type, criteria, "conditional update")
        if len(matches) > 1:
            raise FhirError(ErrorKind.PRECONDITION_FAILED,
                            f"conditional update criteria match {len(matches)} resources")
        if matches:
            target = matches[0]
            if resource.get("id") not in (None, target.id):
                raise FhirError(ErrorKind.INVALID, f"resource id {resource['id']!r} differs "
                                f"from the matched {target.type}/{target.id}",
                                expression=[f"{req.resource_type}.id"])
            check_if_match(req, target)
            item = persist(server, req, req.resource_type, target.id, resource, "PUT", target)
            return written(req, item, 200, f"updated {item.type}/{item.id}")
        rid = resource.get("id") or str(uuid.uuid4())
        current = server.store.read(req.resource_type, rid)
        item = persist(server, req, req.resource_type, rid, resource, "PUT", current)
    return written(req, item, 201, f"created {item.type}/{item.id}")
