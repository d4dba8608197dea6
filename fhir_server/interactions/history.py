"""history — instance, type and system level (http.html#history), newest first."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from fhir_server.core.errors import invalid, not_found
from fhir_server.core.formats import RawJson
from fhir_server.core.model import FhirRequest, FhirResponse
from fhir_server.core.params import bounded_int
from fhir_server.interactions.common import etag, http_date
from fhir_server.search.query import decode_cursor, encode_cursor
from fhir_server.search.values import date_range, format_instant

if TYPE_CHECKING:
    from fhir_server.interactions.port import Server
    from fhir_server.store.base import Stored

# as the interactions answer them (a DELETE answers 200 with an OperationOutcome)
STATUS = {"POST": "201 Created", "PUT": "200 OK", "PATCH": "200 OK", "DELETE": "200 OK"}


def history(server: Server, req: FhirRequest) -> FhirResponse:
    since, count, cursor, kept = _params(server, req)
    if req.id is not None:
        assert req.resource_type
        if server.store.read(req.resource_type, req.id) is None:
            raise not_found(req.resource_type, req.id)
    page = server.store.history(req.resource_type, req.id, since, count, cursor)
    path = "/".join(p for p in (req.resource_type, req.id) if p)
    base = f"{req.base_url}/{path}/_history" if path else f"{req.base_url}/_history"

    def url(cur: dict[str, Any] | None) -> str:
        items = kept + ([("_cursor", encode_cursor(cur))] if cur else [])
        return f"{base}?{urlencode(items)}" if items else base

    # search.html#paging: self, first (no cursor), next, previous
    links = [{"relation": "self", "url": url(cursor)}, {"relation": "first", "url": url(None)}]
    if page.next_cursor:
        links.append({"relation": "next", "url": url(page.next_cursor)})
    if page.prev_cursor:
        links.append({"relation": "previous", "url": url(page.prev_cursor)})
    entries = [_entry(req.base_url, item) for item in page.items]
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "history"}
    if page.total is not None:
        bundle["total"] = page.total
    bundle["link"] = links
    if entries:
        bundle["entry"] = entries
    headers = {"Last-Modified": http_date(page.items[0].updated)} if page.items else {}
    return FhirResponse(200, headers, resource=bundle)


def _params(server: Server, req: FhirRequest
            ) -> tuple[int | None, int, dict[str, Any] | None, list[tuple[str, str]]]:
    """(_since, _count, _cursor, the parameters the paging links repeat)."""
    since = None
    count = server.limits.default_count
    cursor = None
    kept: list[tuple[str, str]] = []
    for key, value in req.params:
        if key == "_since":
            rng = date_range(value)
            if rng is None or "T" not in value:
                raise invalid("_since must be an instant (YYYY-MM-DDThh:mm:ss[.sss]Z)", "_since")
            since = rng[0]
            kept.append((key, value))
        elif key == "_count":
            number = bounded_int(value)
            if number is None:
                raise invalid("_count must be a non-negative integer", "_count")
            count = min(number, server.limits.max_count)
            kept.append((key, value))
        elif key == "_cursor":
            cursor = decode_cursor(value)
    return since, count, cursor, kept


def _entry(base_url: str, item: Stored) -> dict[str, Any]:
    """One version as a history entry: its request and response as the client saw them."""
    entry: dict[str, Any] = {"fullUrl": f"{base_url}/{item.type}/{item.id}"}
    if item.body is not None:
        entry["resource"] = RawJson(item.body)
    entry["request"] = {"method": "PUT" if item.method == "PATCH" else item.method,
                        "url": item.type if item.method == "POST"
                        else f"{item.type}/{item.id}"}
    entry["response"] = {"status": STATUS.get(item.method, "200 OK"),
                         "etag": etag(item.vid),
                         "lastModified": format_instant(item.updated)}
    return entry
