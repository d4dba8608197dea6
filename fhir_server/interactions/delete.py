"""delete — DELETE [base]/[type]/[id] and conditional delete (http.html#delete).

Deletion is logical: a new version marked deleted; read then answers 410 Gone and the
history keeps every version. The answer is always **200 with an informational
OperationOutcome** — also when there was nothing to delete (unknown id, already deleted,
no match: deleting is idempotent, so a transaction is not refused for it) — with the
deletion's ``ETag`` and ``Last-Modified`` when a version exists: the same version id and
date as the history entry and the 410 of read/vread, and a ``PUT`` with ``If-Match`` on
that ETag brings the resource back. ``Prefer: return=minimal`` gets 204 without a body.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fhir_server.core.errors import ErrorKind, FhirError, outcome
from fhir_server.core.model import FhirRequest, FhirResponse
from fhir_server.interactions.common import (
    PREFERENCE_APPLIED,
    cache_headers,
    check_if_match,
    find_matches,
    lock_key,
    persist,
    preference,
)
from fhir_server.store.base import Stored

if TYPE_CHECKING:
    from fhir_server.interactions.port import Server


def delete(server: Server, req: FhirRequest) -> FhirResponse:
    assert req.resource_type
    if req.id is None:
        criteria = req.params
        with server.store.lock(lock_key(req.resource_type, criteria)), server.store.write():
            matches = find_matches(server, req.resource_type, criteria, "conditional delete")
            if len(matches) > 1:
                raise FhirError(ErrorKind.PRECONDITION_FAILED,
                                f"conditional delete criteria match {len(matches)} resources")
            if not matches:
                return _deleted(req, None, "no resource matched; nothing deleted")
            target = matches[0]
            check_if_match(req, target)
            item = persist(server, req, target.type, target.id, None, "DELETE", target)
        return _deleted(req, item, f"deleted {item.type}/{item.id}")
    with server.store.write():
        current = server.store.read(req.resource_type, req.id)
        if current is None:
            return _deleted(req, None, f"{req.resource_type}/{req.id} is not known; "
                            "nothing deleted")
        if current.deleted:
            return _deleted(req, current, f"{current.type}/{current.id} was already deleted")
        check_if_match(req, current)
        item = persist(server, req, current.type, current.id, None, "DELETE", current)
    return _deleted(req, item, f"deleted {item.type}/{item.id}")


def _deleted(req: FhirRequest, version: Stored | None, message: str) -> FhirResponse:
    headers = cache_headers(version) if version is not None else {}
    prefer = preference(req, "return")
    if prefer == "minimal":
        return FhirResponse(204, {**headers, PREFERENCE_APPLIED: "return=minimal"})
    if prefer == "OperationOutcome":
        headers[PREFERENCE_APPLIED] = "return=OperationOutcome"
    return FhirResponse(200, headers, resource=outcome(message))
