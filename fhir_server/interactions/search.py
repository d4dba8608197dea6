"""search — type, system and compartment level (search.html).

- ``GET [base]/[type]?…`` and ``POST [base]/[type]/_search``: parse -> store-compiled
  index query -> keyset page -> _include/_revinclude -> searchset.
- ``GET [base]?_type=…&…`` and ``POST [base]/_search`` (search.html#system), and
  ``GET [base]/Patient/[id]/[type]?…`` or ``…/Patient/[id]/*`` (search.html#compartments):
  one ordinary type-level query per type, run through the same store object — the
  request's ``GuardedStore`` under a security policy, so each is narrowed to what the
  caller may see exactly as ``GET [type]?…`` is — merged by :mod:`fhir_server.store.merge`.
  A type the caller may not search is refused (403) when named, left out when implied.

Paging links (self, first, next, previous) carry an opaque keyset cursor, so pages stay
correct when resources are created or deleted between requests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fhir_server.core.errors import ErrorKind, FhirError, invalid, not_found, outcome
from fhir_server.core.formats import RawJson
from fhir_server.core.model import FhirRequest, FhirResponse, Interaction
from fhir_server.core.params import query_string
from fhir_server.core.resource_types import CONFORMANCE_TYPES, SUPPORTED_TYPES, is_supported
from fhir_server.interactions.common import preference
from fhir_server.search.compartments import compartment
from fhir_server.search.query import (
    RESULT_PARAMS,
    AnyOf,
    Include,
    QueryParser,
    SearchQuery,
    encode_cursor,
)
from fhir_server.search.registry import get, params_for
from fhir_server.store import budget
from fhir_server.store.base import APPEND_ONLY_TYPES, Stored
from fhir_server.store.merge import Merger, count_all

if TYPE_CHECKING:
    from fhir_server.interactions.port import Server

# what a system search without _type covers: the stored clinical and directory types (the
# audit trail is searched by naming it, as it is left out of the system history)
SYSTEM_TYPES = tuple(t for t in SUPPORTED_TYPES if t not in APPEND_ONLY_TYPES)


def search(server: Server, req: FhirRequest) -> FhirResponse:
    assert req.resource_type
    strict = preference(req, "handling") == "strict"
    query = QueryParser(server.limits, strict).parse(req.resource_type, req.params)
    count_only = query.summary == "count"
    page = server.store.search(query, count_only=count_only)
    total = page.total if query.total != "none" else None
    return _searchset(server, req, f"{req.base_url}/{req.resource_type}", list(query.used),
                      query.cursor, page.next_cursor, page.prev_cursor, total, page.items,
                      query.includes, query.revincludes, query.ignored)


# -- system and compartment search -------------------------------------------------------

def search_system(server: Server, req: FhirRequest) -> FhirResponse:
    """``GET [base]?_type=A,B&…``: parameters common to the types searched."""
    types, named, params, type_param = _split_type(req.params)
    for rtype in types:
        if rtype in CONFORMANCE_TYPES:
            raise invalid(f"_type: {rtype} is served from the implementation guide; search "
                          f"it with GET [base]/{rtype}?…", "_type")
        if not is_supported(rtype):
            raise invalid(f"_type: resource type {rtype} is not supported", "_type")
    if not named:
        types = list(SYSTEM_TYPES)
    return _multi(server, req, req.base_url, types, named, params, type_param, {})


def search_compartment(server: Server, req: FhirRequest) -> FhirResponse:
    """``GET [base]/Patient/[id]/[type]?…``: ``[type]``'s search narrowed to the resources
    in the compartment (compartmentdefinition-patient); ``*`` for all its types."""
    assert req.resource_type and req.id and req.compartment_search
    comp = compartment(req.resource_type)
    owner = server.store.read(req.resource_type, req.id)  # guarded: hidden is absent
    if owner is None:
        raise not_found(req.resource_type, req.id)
    if owner.deleted:
        raise FhirError(ErrorKind.GONE, f"{req.resource_type}/{req.id} was deleted")
    types, named, params, type_param = _split_type(req.params)
    if req.compartment_search != "*":
        types, named = [req.compartment_search], True
    elif not named:
        types = sorted(comp.members)
    for rtype in types:
        if rtype not in comp.members:
            raise invalid(f"{rtype} is not in the {comp.code} compartment ({comp.url})",
                          "_type" if req.compartment_search == "*" else None)
    target = f"{req.resource_type}/{req.id}"
    terms = {}
    for rtype in types:
        parser = QueryParser(server.limits)
        options = [parser.parse(rtype, [("_id", req.id)]).terms[0] if p == "{def}" else
                   parser.parse(rtype, [(p, target)]).terms[0] for p in comp.members[rtype]]
        terms[rtype] = AnyOf(options)
    base = f"{req.base_url}/{target}/{req.compartment_search}"
    return _multi(server, req, base, types, named, params, type_param, terms)


def _split_type(params: list[tuple[str, str]]
                ) -> tuple[list[str], bool, list[tuple[str, str]], list[tuple[str, str]]]:
    """(types named by ``_type``, whether any, the other parameters, the _type params)."""
    types: list[str] = []
    rest, kept = [], []
    for key, value in params:
        if key == "_type":
            kept.append((key, value))
            for name in value.split(","):
                if name.strip() and name.strip() not in types:
                    types.append(name.strip())
        else:
            rest.append((key, value))
    if kept and not types:
        raise invalid("_type names no resource type", "_type")
    return types, bool(kept), rest, kept


def _multi(server: Server, req: FhirRequest, base: str, types: list[str], named: bool,
           params: list[tuple[str, str]], type_param: list[tuple[str, str]],
           terms: dict[str, AnyOf]) -> FhirResponse:
    strict = preference(req, "handling") == "strict"
    parser = QueryParser(server.limits, strict)
    types = [t for t in types if may_search(req, t, named)]
    if not named:
        # search.html#system: the parameters must be common to the types searched; without
        # _type, the types that lack one the others define cannot match and are left out
        known = {n for n in _names(params) if any(get(t, n) for t in types)}
        types = [t for t in types if all(get(t, n) for n in known)]
    queries = [parser.parse(rtype, params) for rtype in types]
    honoured = {k for q in queries for k, _ in q.used}
    for query in queries:
        lacking = [k for k in query.ignored if k in honoured]
        if lacking:
            raise invalid(f"search parameter {lacking[0]} is not defined for {query.type}: "
                          "a search over several types takes the parameters they share",
                          lacking[0])
        if query.type in terms:
            query.terms = [terms[query.type], *query.terms]
    if not queries:
        return _searchset(server, req, base, [*type_param, *_kept(params)], None, None,
                          None, 0, [], [], [], [])
    _check_sorts(queries)
    head = queries[0]
    used = [*type_param, *head.used]
    ignored = sorted({k for q in queries for k in q.ignored})
    includes = _unique(i for q in queries for i in q.includes)
    revincludes = _unique(i for q in queries for i in q.revincludes)
    if head.summary == "count":
        total = count_all(server.store, queries)
        return _searchset(server, req, base, used, None, None, None, total, [], [], [],
                          ignored)
    cursor = head.cursor
    merged = Merger(server.store, queries, head.count, cursor, head.total != "none").page()
    return _searchset(server, req, base, used, cursor, merged.next_cursor,
                      merged.prev_cursor, merged.total, merged.items, includes, revincludes,
                      ignored)


def _names(params: list[tuple[str, str]]) -> set[str]:
    """The search parameter names a query uses (filters and ``_sort``)."""
    names: set[str] = set()
    for key, value in params:
        if key == "_sort":
            names.update(item.lstrip("-") for item in value.split(",") if item.strip("-"))
        elif key in RESULT_PARAMS or key.startswith(("_include", "_revinclude", "_has:")):
            continue
        else:
            names.add(key.split(":")[0].split(".")[0])
    return names


def _kept(params: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in params if k not in ("_cursor", "_format", "_pretty")]


def may_search(req: FhirRequest, rtype: str, named: bool) -> bool:
    """The type-level authorisation of ``GET [rtype]?…`` for this caller (roles, scopes,
    strong authentication): a named type it refuses is refused, an implied one skipped."""
    access = req.context.access
    if access is None:
        return True
    from fhir_server.security.policy import authorize

    try:
        authorize(FhirRequest(Interaction.SEARCH_TYPE, resource_type=rtype,
                              context=req.context), access)
    except FhirError as exc:
        if named or exc.kind != ErrorKind.FORBIDDEN:
            raise
        return False
    return True


def _check_sorts(queries: list[SearchQuery]) -> None:
    kinds = {tuple((p.name, p.kind, d) for p, d in q.sort) for q in queries}
    if len(kinds) > 1:
        raise invalid("_sort must name parameters of the same kind on every type searched",
                      "_sort")


def _unique(items: Any) -> list[Include]:
    out: list[Include] = []
    for item in items:
        if item not in out:
            out.append(item)
    return out


# -- the searchset -----------------------------------------------------------------------

def _searchset(server: Server, req: FhirRequest, base: str,
               params: list[tuple[str, str]], cursor: dict[str, Any] | None,
               next_cursor: dict[str, Any] | None, prev_cursor: dict[str, Any] | None,
               total: int | None, items: list[Stored], includes: list[Include],
               revincludes: list[Include], ignored: list[str]) -> FhirResponse:
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if total is not None:
        bundle["total"] = total
    bundle["link"] = paging_links(base, params, cursor, next_cursor, prev_cursor)
    entries = [_entry(req, item, "match") for item in items]
    if items and (includes or revincludes):
        entries += [_entry(req, item, "include")
                    for item in _included(server, includes, revincludes, items)]
    if ignored:
        entries.append({"resource": outcome(
            "unknown search parameters ignored: " + ", ".join(ignored),
            severity="warning", code="not-supported"), "search": {"mode": "outcome"}})
    if entries:
        bundle["entry"] = entries
    return FhirResponse(200, {}, resource=bundle)


def paging_links(base: str, params: list[tuple[str, str]], cursor: dict[str, Any] | None,
                 next_cursor: dict[str, Any] | None, prev_cursor: dict[str, Any] | None
                 ) -> list[dict[str, str]]:
    """self, first, next, previous (search.html#paging): ``first`` is the search without
    a cursor, whatever page this is."""
    links = [{"relation": "self", "url": _url(base, params, cursor)},
             {"relation": "first", "url": _url(base, params, None)}]
    if next_cursor:
        links.append({"relation": "next", "url": _url(base, params, next_cursor)})
    if prev_cursor:
        links.append({"relation": "previous", "url": _url(base, params, prev_cursor)})
    return links


def _url(base: str, params: list[tuple[str, str]], cursor: dict[str, Any] | None) -> str:
    items = list(params)
    if cursor is not None:
        items.append(("_cursor", encode_cursor(cursor)))
    return f"{base}?{query_string(items)}" if items else base


def _entry(req: FhirRequest, item: Stored, mode: str) -> dict[str, Any]:
    return {"fullUrl": f"{req.base_url}/{item.type}/{item.id}",
            "resource": RawJson(item.body or b"{}"), "search": {"mode": mode}}


def _reference_keys(source_type: str, param: str) -> list[str]:
    params = params_for(source_type)
    if param == "*":
        return [p.key for p in params.values() if p.kind == "reference"]
    return [params[param].key] if param in params else []


def _included(server: Server, includes: list[Include], revincludes: list[Include],
              matches: list[Stored]) -> list[Stored]:
    """Resolve _include / _revinclude, iterating (``:iterate``) at most
    ``TELEIMG_MAX_INCLUDE_DEPTH`` rounds; more than ``TELEIMG_MAX_INCLUDES`` resources
    (after the guard) is a 400 too-costly, and each round starts within the request's
    time budget (issue 27 item 7, :mod:`fhir_server.store.budget`)."""
    limit = server.limits.max_includes
    seen = {(i.type, i.id) for i in matches}
    found: list[Stored] = []
    frontier = matches
    spent = budget.current()
    for round_no in range(server.limits.max_include_depth):
        if spent is not None:
            spent.check()
        new: list[Stored] = []
        for inc in includes:
            if round_no and not inc.iterate:
                continue
            new += _forward(server, inc, frontier, seen)
            if len(found) + len(new) > limit:
                raise budget.too_many_includes(limit)
        for inc in revincludes:
            if round_no and not inc.iterate:
                continue
            new += _reverse(server, inc, frontier, seen)
            if len(found) + len(new) > limit:
                raise budget.too_many_includes(limit)
        if not new:
            break
        found += new
        frontier = new
    return found


def _forward(server: Server, inc: Include, frontier: list[Stored],
             seen: set[tuple[str, str]]) -> list[Stored]:
    sources = [i for i in frontier if i.type == inc.source_type]
    keys = _reference_keys(inc.source_type, inc.param)
    targets = [t for t in server.store.outgoing(sources, keys)
               if t not in seen and (inc.target_type is None or t[0] == inc.target_type)]
    budget.take_rows(len(targets))
    out = server.store.read_many(targets)
    seen.update((i.type, i.id) for i in out)
    return out


def _reverse(server: Server, inc: Include, frontier: list[Stored],
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
