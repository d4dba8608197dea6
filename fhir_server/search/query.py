"""Parse FHIR R4 search parameters into a backend-neutral query (search.html).

Each value is parsed by its parameter's kind (:mod:`fhir_server.search.kinds`). The
"compile" step belongs to each store: :mod:`fhir_server.store.sqlite.compiler` turns the
:class:`SearchQuery` into SQL over the index tables and
:mod:`fhir_server.store.mongo.compiler` into a plan of ``$elemMatch`` filters over the
multikey index arrays.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from fhir_server.core.errors import ErrorKind, FhirError, invalid
from fhir_server.core.limits import Limits
from fhir_server.core.resource_types import is_supported
from fhir_server.search.kinds import KINDS
from fhir_server.search.kinds.base import ANY, RangeValue, ReferenceValue, TokenValue
from fhir_server.search.kinds.reference import parse_reference_value
from fhir_server.search.registry import SearchParam, get

__all__ = [  # the value types live with the kinds; importers know them from here
    "ANY", "AllOf", "AnyOf", "Chain", "Clause", "Has", "InCare", "Include", "Not", "Opened",
    "PatientSet", "QueryParser", "RangeValue", "ReferenceValue", "SearchQuery", "Term",
    "TokenValue", "decode_cursor", "encode_cursor", "escape", "merge_date_bounds",
    "split_values", "types_read",
]

RESULT_PARAMS = frozenset({
    "_count", "_sort", "_include", "_revinclude", "_total", "_summary", "_elements",
    "_format", "_pretty", "_cursor", "_contained", "_containedType",
})


@dataclass
class Clause:
    """One AND term: the OR of ``values`` for one parameter (with a modifier)."""

    param: SearchParam
    modifier: str | None
    values: list[Any]
    missing: bool | None = None


@dataclass
class Chain:
    """``ref:Type.param=...``: resources whose ``param`` references a match in ``target``."""

    param: SearchParam
    target_types: list[str]
    inner: list[Term]


@dataclass
class Has:
    """``_has:Type:ref:param=...``: resources referenced by a match of ``source_type``."""

    source_type: str
    ref: SearchParam
    inner: list[Term]


@dataclass
class AnyOf:
    """The OR of terms on different parameters: membership of a compartment
    (compartmentdefinition.html), e.g. ``subject=Patient/x`` or ``performer=Patient/x``."""

    options: list[Term]


@dataclass
class AllOf:
    """The AND of terms (an option of an :class:`AnyOf`); empty: every resource."""

    terms: list[Term]


@dataclass
class Not:
    """The resources that do not match ``term``."""

    term: Term


@dataclass
class PatientSet:
    """Ids of patients: those that ``ref`` (a reference parameter of ``source_type``)
    points at from the resources of ``source_type`` matching ``terms`` — or, when
    ``ref`` is None, the matching Patients themselves. Compiled as a sub-select, never
    materialised as a list of ids in the query (issue 27 item 6)."""

    source_type: str
    ref: SearchParam | None
    terms: list[Term]


@dataclass
class Opened:
    """Patients opened from a resource on: a resource qualifies when its patient is the
    one ``ref`` of a matching ``source_type`` resource points at, and that resource was
    created no later than it (creation order, the store's ``pk``). A request a user
    makes themselves party to opens what comes after it, never what existed before
    (R-SEC-2, issue 27 item 3)."""

    source_type: str
    ref: SearchParam
    terms: list[Term]


@dataclass
class InCare:
    """The guard's term on one type (R-SEC-2): resources whose patient — through
    ``param``, a reference parameter of the type, or the resource itself when ``param``
    is None (Patient) — is in one of ``sets`` or ``ids``, or was opened by one of
    ``since`` no later than the resource was created. Built by
    :mod:`fhir_server.security.care`, compiled by each store as sub-selects."""

    param: SearchParam | None
    sets: list[PatientSet]
    ids: list[str]
    since: list[Opened]


Term = Clause | Chain | Has | AnyOf | AllOf | Not | InCare


@dataclass(frozen=True)
class Include:
    source_type: str
    param: str  # "*" or a reference parameter name
    target_type: str | None
    iterate: bool


@dataclass
class SearchQuery:
    type: str
    terms: list[Term] = field(default_factory=list)
    sort: list[tuple[SearchParam, bool]] = field(default_factory=list)  # (param, descending)
    count: int = 20
    includes: list[Include] = field(default_factory=list)
    revincludes: list[Include] = field(default_factory=list)
    total: str = "accurate"
    summary: str | None = None
    elements: list[str] | None = None
    cursor: dict[str, Any] | None = None
    used: list[tuple[str, str]] = field(default_factory=list)  # params honoured (self link)
    ignored: list[str] = field(default_factory=list)


def split_values(text: str) -> list[str]:
    """Split an OR list on unescaped commas and unescape ``\\, \\| \\$ \\\\``."""
    if "\\" not in text:  # nothing escaped: every comma splits (the common case)
        return text.split(",")
    out, cur, i = [], [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            cur.append(text[i:i + 2])
            i += 2
            continue
        if ch == ",":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    out.append("".join(cur))
    return out


def escape(value: str) -> str:
    """A search value matched as a whole: ``, | $ \\`` escaped (search.html#escaping)."""
    return "".join("\\" + c if c in "\\,$|" else c for c in value)


def encode_cursor(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).decode().rstrip("=")


def decode_cursor(text: str) -> dict[str, Any]:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        raise invalid("invalid paging cursor", "_cursor") from None
    if not isinstance(data, dict) or data.get("d") not in ("after", "before"):
        raise invalid("invalid paging cursor", "_cursor")
    return data


class QueryParser:
    def __init__(self, limits: Limits | None = None, strict: bool = False) -> None:
        self.limits = limits or Limits()
        self.strict = strict

    def parse(self, rtype: str, params: list[tuple[str, str]]) -> SearchQuery:
        query = SearchQuery(type=rtype, count=self.limits.default_count)
        for key, raw in params:
            if key in RESULT_PARAMS or key.startswith(("_include", "_revinclude")):
                self._result_param(query, key, raw)
                continue
            try:
                term = self._term(rtype, key, raw, depth=0)
            except _Unknown as exc:
                if self.strict:
                    raise invalid(f"unknown search parameter {exc.args[0]!r} for {rtype}",
                                  exc.args[0]) from None
                query.ignored.append(key)
                continue
            query.terms.append(term)
            query.used.append((key, raw))
        query.terms = merge_date_bounds(query.terms)
        if len(query.terms) > self.limits.max_search_terms:
            raise FhirError(ErrorKind.TOO_COSTLY, f"{len(query.terms)} search parameters: at "
                            f"most {self.limits.max_search_terms} may be combined "
                            "(TELEIMG_MAX_SEARCH_TERMS)")
        return query

    # -- result parameters -------------------------------------------------------------
    def _result_param(self, query: SearchQuery, key: str, raw: str) -> None:
        if key == "_cursor":
            query.cursor = decode_cursor(raw)
            return
        handler = _RESULT_HANDLERS.get(key)
        if handler is not None:
            handler(self, query, raw)
        elif key.startswith(("_include", "_revinclude")):
            self._include(query, key, raw)
        if key not in ("_format", "_pretty"):
            query.used.append((key, raw))

    def _count(self, query: SearchQuery, raw: str) -> None:
        if not raw.isdigit():
            raise invalid("_count must be a non-negative integer", "_count")
        query.count = min(int(raw), self.limits.max_count)
        if int(raw) == 0:
            query.summary = "count"

    def _sort(self, query: SearchQuery, raw: str) -> None:
        for item in raw.split(","):
            desc = item.startswith("-")
            name = item[1:] if desc else item
            param = get(query.type, name)
            if param is None:
                raise invalid(f"unknown sort parameter {name!r} for {query.type}", "_sort")
            query.sort.append((param, desc))
        if len(query.sort) > self.limits.max_sort_keys:
            raise FhirError(ErrorKind.TOO_COSTLY, f"_sort names {len(query.sort)} keys: "
                            f"at most {self.limits.max_sort_keys} "
                            "(TELEIMG_MAX_SORT_KEYS)", expression=["_sort"])

    def _total(self, query: SearchQuery, raw: str) -> None:
        if raw not in ("none", "estimate", "accurate"):
            raise invalid("_total must be none, estimate or accurate", "_total")
        query.total = raw

    def _summary(self, query: SearchQuery, raw: str) -> None:
        if raw not in ("true", "false", "text", "data", "count"):
            raise invalid("_summary must be true, false, text, data or count", "_summary")
        query.summary = None if raw == "false" else raw

    def _elements(self, query: SearchQuery, raw: str) -> None:
        query.elements = [e.strip() for e in raw.split(",") if e.strip()]

    def _include(self, query: SearchQuery, key: str, raw: str) -> None:
        base, _, mod = key.partition(":")
        if base not in ("_include", "_revinclude") or mod not in ("", "iterate", "recurse"):
            raise invalid(f"unknown include parameter {key}", key)
        iterate = mod in ("iterate", "recurse")
        if raw == "*":
            inc = Include(query.type if base == "_include" else "*", "*", None, iterate)
        else:
            parts = raw.split(":")
            if len(parts) not in (2, 3) or not is_supported(parts[0]):
                raise invalid(f"{key} must be Type:parameter[:targetType]", key)
            param = get(parts[0], parts[1]) if parts[1] != "*" else None
            if parts[1] != "*" and (param is None or param.kind != "reference"):
                raise invalid(f"{parts[0]}:{parts[1]} is not a reference search parameter", key)
            inc = Include(parts[0], parts[1], parts[2] if len(parts) == 3 else None, iterate)
        (query.includes if base == "_include" else query.revincludes).append(inc)

    # -- filter terms -------------------------------------------------------------------
    def _term(self, rtype: str, key: str, raw: str, depth: int) -> Term:
        if depth > self.limits.max_chain_depth:
            raise FhirError(ErrorKind.TOO_COSTLY, f"chain deeper than "
                            f"{self.limits.max_chain_depth} levels: {key}")
        if key.startswith("_has:"):
            return self._has(key, raw, depth)
        name, dot, rest = key.partition(".")
        pname, _, modifier = name.partition(":")
        param = get(rtype, pname)
        if param is None:
            raise _Unknown(key)
        if dot:
            return self._chain(param, modifier, rest, raw, key, depth)
        return self._clause(param, modifier or None, raw, key)

    def _has(self, key: str, raw: str, depth: int) -> Has:
        parts = key.split(":", 3)
        if len(parts) != 4:
            raise invalid(f"_has must be _has:Type:reference:parameter ({key})", key)
        _, source, ref_name, rest = parts
        if not is_supported(source):
            raise invalid(f"_has: unsupported resource type {source}", key)
        ref = get(source, ref_name)
        if ref is None or ref.kind != "reference":
            raise invalid(f"_has: {source}:{ref_name} is not a reference parameter", key)
        return Has(source, ref, [self._term(source, rest, raw, depth + 1)])

    def _chain(self, param: SearchParam, modifier: str, rest: str, raw: str, key: str,
               depth: int) -> Chain:
        pname = param.name
        if param.kind != "reference":
            raise invalid(f"{pname} is not a reference parameter and cannot be chained", key)
        if modifier and not is_supported(modifier):
            raise invalid(f"chain target type {modifier} is not supported", key)
        chained = rest.partition(":")[0].partition(".")[0]
        targets = [modifier] if modifier else [
            t for t in (param.targets or ()) if is_supported(t) and get(t, chained)]
        if not targets:
            raise invalid(f"no target type of {pname} has a parameter {chained!r}", key)
        inner = []
        for target in targets:
            try:
                inner.append(self._term(target, rest, raw, depth + 1))
            except _Unknown:
                raise invalid(f"unknown chained parameter {rest!r} on {target}", key) from None
        return Chain(param, targets, inner)

    def _clause(self, param: SearchParam, modifier: str | None, raw: str, key: str) -> Clause:
        clause = self._values(param, modifier, raw, key)
        if len(clause.values) > self.limits.max_or_values:
            raise FhirError(ErrorKind.TOO_COSTLY, f"{key} names {len(clause.values)} values: "
                            f"at most {self.limits.max_or_values} may be OR-ed "
                            "(TELEIMG_MAX_OR_VALUES)", expression=[key])
        return clause

    def _values(self, param: SearchParam, modifier: str | None, raw: str, key: str) -> Clause:
        if modifier == "missing":
            if raw not in ("true", "false"):
                raise invalid(f"{key} must be true or false", key)
            return Clause(param, modifier, [], missing=raw == "true")
        if modifier is not None and param.kind == "reference" and is_supported(modifier):
            values = [parse_reference_value(v, key, modifier) for v in split_values(raw)]
            return Clause(param, None, values)
        kind = KINDS[param.kind]
        if modifier is not None and modifier not in kind.modifiers:
            raise invalid(f"modifier :{modifier} is not supported on {param.kind} "
                          f"parameter {param.name}", key)
        values = [kind.parse(modifier, v, key) for v in split_values(raw) if v != ""]
        if not values:
            raise invalid(f"empty value for search parameter {key}", key)
        return Clause(param, modifier, values)


def merge_date_bounds(terms: list[Term]) -> list[Term]:
    """AND-ed single-value bounds on one date parameter (``date=ge…&date=lt…``) become one
    range matched on the same value: indexable, and what such a query means. For repeating
    dates a resource then needs one value inside the range (README, "Search")."""
    merged: list[Term] = []
    by_param: dict[str, Clause] = {}
    for term in terms:
        if (isinstance(term, Clause) and term.param.kind == "date" and term.modifier is None
                and term.missing is None and len(term.values) == 1):
            first = by_param.get(term.param.key)
            if first is not None:
                prior = first.values[0]
                first.values = [(*(prior if isinstance(prior, tuple) else (prior,)),
                                 term.values[0])]
                continue
            by_param[term.param.key] = term
        merged.append(term)
    return merged


def types_read(rtype: str, terms: list[Term]) -> set[str]:
    """Every resource type whose index a search reads (its own, chained targets, _has
    sources): stores index append-only types lazily and catch up before such a search."""
    found = {rtype}
    for term in terms:
        if isinstance(term, Chain):
            for target, inner in zip(term.target_types, term.inner, strict=True):
                found |= types_read(target, [inner])
        elif isinstance(term, Has):
            found |= types_read(term.source_type, term.inner)
        elif isinstance(term, AnyOf):
            found |= types_read(rtype, term.options)
        elif isinstance(term, AllOf):
            found |= types_read(rtype, term.terms)
        elif isinstance(term, Not):
            found |= types_read(rtype, [term.term])
        elif isinstance(term, InCare):
            for source in term.sets:
                found |= types_read(source.source_type, source.terms)
            for opened in term.since:
                found |= types_read(opened.source_type, opened.terms)
    return found


class _Unknown(Exception):
    pass


_RESULT_HANDLERS: dict[str, Callable[[QueryParser, SearchQuery, str], None]] = {
    "_count": QueryParser._count, "_sort": QueryParser._sort, "_total": QueryParser._total,
    "_summary": QueryParser._summary, "_elements": QueryParser._elements,
}

