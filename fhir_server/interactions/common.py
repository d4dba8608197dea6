"""What the interactions share: versioned writes, response headers, Prefer, conditionals."""

from __future__ import annotations

from email.utils import formatdate
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson

from fhir_server.core.errors import ErrorKind, FhirError, outcome
from fhir_server.core.formats import RawJson
from fhir_server.core.model import FhirRequest, FhirResponse
from fhir_server.search.extract import extract
from fhir_server.search.query import QueryParser, SearchQuery
from fhir_server.search.values import format_instant, now_us
from fhir_server.store.base import Store, Stored

if TYPE_CHECKING:
    from fhir_server.core.server import FhirServer


def http_date(us: int) -> str:
    return formatdate(us / 1_000_000, usegmt=True)


def etag(vid: int) -> str:
    return f'W/"{vid}"'


def cache_headers(item: Stored) -> dict[str, str]:
    return {"ETag": etag(item.vid), "Last-Modified": http_date(item.updated)}


def version_headers(req: FhirRequest, item: Stored) -> dict[str, str]:
    return {**cache_headers(item),
            "Location": f"{req.base_url}/{item.type}/{item.id}/_history/{item.vid}"}


def parse_if_match(value: str) -> int:
    tag = value.strip()
    if tag.startswith("W/"):
        tag = tag[2:]
    tag = tag.strip('"')
    if not tag.isdigit():
        raise FhirError(ErrorKind.INVALID, f"If-Match must be an ETag like W/\"3\", got {value!r}")
    return int(tag)


def check_if_match(req: FhirRequest, current: Stored | None) -> None:
    value = req.header("if-match")
    if value is None:
        return
    wanted = parse_if_match(value)
    if current is None or current.deleted or current.vid != wanted:
        have = "none" if current is None or current.deleted else etag(current.vid)
        raise FhirError(ErrorKind.PRECONDITION_FAILED,
                        f"If-Match {value} does not match the current version ({have})")


def persist(server: FhirServer, req: FhirRequest, rtype: str, rid: str,
            resource: dict[str, Any] | None, method: str, previous: Stored | None) -> Stored:
    """Write a client's new version: the workflow's rules and side effects around it (issue
    5) — whichever way it arrived (REST, Bundle entry, HL7/DICOM adapter)."""
    workflow = server.workflow
    if workflow is not None:
        resource = workflow.before_write(server, req, rtype, rid, resource, previous)
    item = store_version(server, server.store, rtype, rid, resource, method, previous)
    if workflow is not None:
        workflow.after_write(server, req, item, resource, previous)
    return item


def store_version(server: FhirServer, store: Store, rtype: str, rid: str,
                  resource: dict[str, Any] | None, method: str,
                  previous: Stored | None) -> Stored:
    """Write a new version: server-owned meta, index extraction, history (one write unit)."""
    vid = previous.vid + 1 if previous else 1
    updated = max(now_us(), previous.updated + 1 if previous else 0)
    body = None
    rows = None
    if resource is not None:
        meta = {k: v for k, v in (resource.get("meta") or {}).items()
                if k not in ("versionId", "lastUpdated")}
        meta = {"versionId": str(vid), "lastUpdated": format_instant(updated), **meta}
        rest = {k: v for k, v in resource.items() if k not in ("resourceType", "id", "meta")}
        resource = {"resourceType": rtype, "id": rid, "meta": meta, **rest}
        body = orjson.dumps(resource)
        rows = extract(resource)
    item = Stored(rtype, rid, vid, updated, resource is None, body, method)
    store.put(item, rows)
    return item


def written(req: FhirRequest, item: Stored, status: int, message: str) -> FhirResponse:
    """Response to create/update/patch honouring ``Prefer: return=`` (http.html#ops)."""
    headers = version_headers(req, item)
    prefer = preference(req, "return") or "representation"
    if prefer == "minimal":
        return FhirResponse(status, headers)
    if prefer == "OperationOutcome":
        return FhirResponse(status, headers, resource=outcome(message))
    return FhirResponse(status, headers, raw=RawJson(item.body or b""))


def preference(req: FhirRequest, name: str) -> str | None:
    for part in (req.header("prefer") or "").split(";"):
        for item in part.split(","):
            key, _, value = item.strip().partition("=")
            if key.strip() == name:
                return value.strip().strip('"')
    return None


def conditional_query(server: FhirServer, rtype: str, criteria: list[tuple[str, str]],
                      what: str) -> SearchQuery:
    """Criteria of a conditional interaction: unknown parameters are an error, not ignored."""
    criteria = [(k, v) for k, v in criteria if k not in ("_format", "_pretty")]
    if not criteria:
        raise FhirError(ErrorKind.INVALID, f"{what} needs search criteria")
    query = QueryParser(server.limits, strict=True).parse(rtype, criteria)
    query.count = 2
    query.total = "none"
    query.sort = []
    return query


def criteria_from_header(value: str) -> list[tuple[str, str]]:
    text = value.split("?", 1)[1] if "?" in value else value
    return parse_qsl(text, keep_blank_values=True)


def lock_key(rtype: str, criteria: list[tuple[str, str]]) -> str:
    return rtype + "?" + "&".join(f"{k}={v}" for k, v in sorted(criteria))


def find_matches(server: FhirServer, rtype: str, criteria: list[tuple[str, str]],
                 what: str) -> list[Stored]:
    return server.store.search(conditional_query(server, rtype, criteria, what)).items
