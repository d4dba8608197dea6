"""search — GET [base]/[type]?… and POST [base]/[type]/_search (search.html).

Parse -> store-compiled index query -> keyset page -> _include/_revinclude -> searchset.
Paging links carry an opaque keyset cursor, so pages stay correct when resources are
created or deleted between requests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from fhir_server.core.errors import outcome
from fhir_server.core.formats import RawJson
from fhir_server.core.model import FhirRequest, FhirResponse
from fhir_server.core.resource_types import SUPPORTED_TYPES
from fhir_server.interactions.common import preference
from fhir_server.search.query import Include, QueryParser, SearchQuery, encode_cursor
from fhir_server.search.registry import params_for
from fhir_server.store.base import Stored

if TYPE_CHECKING:
    from fhir_server.core.server import FhirServer

MAX_INCLUDE_ROUNDS = 4


def search(server: FhirServer, req: FhirRequest) -> FhirResponse:
    assert req.resource_type
    strict = preference(req, "handling") == "strict"
    query = QueryParser(server.limits, strict).parse(req.resource_type, req.params)
    count_only = query.summary == "count"
    page = server.store.search(query, count_only=count_only)
    base = f"{req.base_url}/{req.resource_type}"
    self_params = list(query.used)
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if page.total is not None and query.total != "none":
        bundle["total"] = page.total
    links = [{"relation": "self", "url": _url(base, self_params, query.cursor)}]
    if page.next_cursor:
        links.append({"relation": "next", "url": _url(base, self_params, page.next_cursor)})
    if page.prev_cursor:
        links.append({"relation": "previous", "url": _url(base, self_params, page.prev_cursor)})
    bundle["link"] = links
    entries = [_entry(req, item, "match") for item in page.items]
    if page.items and (query.includes or query.revincludes):
        entries += [_entry(req, item, "include") for item in _included(server, query,
                                                                       page.items)]
    if query.ignored:
        entries.append({"resource": outcome(
            "unknown search parameters ignored: " + ", ".join(query.ignored),
            severity="warning", code="not-supported"), "search": {"mode": "outcome"}})
    if entries:
        bundle["entry"] = entries
    return FhirResponse(200, {}, resource=bundle)


def _url(base: str, params: list[tuple[str, str]], cursor: dict[str, Any] | None) -> str:
    items = list(params)
    if cursor is not None:
        items.append(("_cursor", encode_cursor(cursor)))
    return f"{base}?{urlencode(items)}" if items else base


def _entry(req: FhirRequest, item: Stored, mode: str) -> dict[str, Any]:
    return {"fullUrl": f"{req.base_url}/{item.type}/{item.id}",
            "resource": RawJson(item.body or b"{}"), "search": {"mode": mode}}


def _reference_keys(source_type: str, param: str) -> list[str]:
    params = params_for(source_type)
    if param == "*":
        return [p.key for p in params.values() if p.kind == "reference"]
    return [params[param].key] if param in params else []


def _included(server: FhirServer, query: SearchQuery, matches: list[Stored]) -> list[Stored]:
    """Resolve _include / _revinclude, iterating (``:iterate``) up to a fixed depth."""
    seen = {(i.type, i.id) for i in matches}
    found: list[Stored] = []
    frontier = matches
    for round_no in range(MAX_INCLUDE_ROUNDS):
        new: list[Stored] = []
        for inc in query.includes:
            if round_no and not inc.iterate:
                continue
            new += _forward(server, inc, frontier, seen)
        for inc in query.revincludes:
            if round_no and not inc.iterate:
                continue
            new += _reverse(server, inc, frontier, seen)
        if not new:
            break
        found += new
        frontier = new
    return found


def _forward(server: FhirServer, inc: Include, frontier: list[Stored],
             seen: set[tuple[str, str]]) -> list[Stored]:
    sources = [i for i in frontier if i.type == inc.source_type]
    keys = _reference_keys(inc.source_type, inc.param)
    targets = [t for t in server.store.outgoing(sources, keys)
               if t not in seen and (inc.target_type is None or t[0] == inc.target_type)]
    out = server.store.read_many(targets)
    seen.update((i.type, i.id) for i in out)
    return out


def _reverse(server: FhirServer, inc: Include, frontier: list[Stored],
             seen: set[tuple[str, str]]) -> list[Stored]:
    targets = [(i.type, i.id) for i in frontier
               if inc.target_type is None or i.type == inc.target_type]
    if inc.source_type == "*":
        keys = [k for t in SUPPORTED_TYPES for k in _reference_keys(t, "*")]
    else:
        keys = _reference_keys(inc.source_type, inc.param)
    out = [i for i in server.store.incoming(keys, targets) if (i.type, i.id) not in seen]
    seen.update((i.type, i.id) for i in out)
    return out
