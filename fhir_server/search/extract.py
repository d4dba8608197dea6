"""Write-time extraction of search index values (the "extract" step of search).

Each parameter's FHIRPath is evaluated once per write; the results are turned into
typed index rows by the parameter's kind (:mod:`fhir_server.search.kinds`), by the FHIR
data type found (FHIR R4 search.html, "Search types and FHIR types" table). Both stores
persist exactly these rows, so they answer the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fhir_server.search.kinds import KINDS, Kind
from fhir_server.search.kinds.reference import parse_reference
from fhir_server.search.paths import top_keys
from fhir_server.search.registry import SearchParam, params_for

__all__ = ["IndexRows", "Memo", "extract", "parse_reference"]


@dataclass
class IndexRows:
    # (param key, system, code, normalized text)
    token: list[tuple[str, str | None, str | None, str | None]] = field(default_factory=list)
    # (param key, normalized, exact)
    string: list[tuple[str, str, str]] = field(default_factory=list)
    # (param key, low µs, high µs exclusive)
    date: list[tuple[str, int, int]] = field(default_factory=list)
    number: list[tuple[str, float]] = field(default_factory=list)
    # (param key, value, system, code, unit)
    quantity: list[tuple[str, float, str | None, str | None, str | None]] = field(
        default_factory=list)
    uri: list[tuple[str, str]] = field(default_factory=list)
    # (param key, target type, target id, url, identifier system, identifier value)
    reference: list[tuple[str, str | None, str | None, str | None, str | None, str | None]] = (
        field(default_factory=list))
    # param key -> (ascending key, descending key) used by _sort
    sort: dict[str, tuple[Any, Any]] = field(default_factory=dict)


class Memo:
    """The rows each parameter gave for the last resource of a series, with the elements
    they came from. Resources that share element objects (the AuditEvents a journal record
    expands into, ADR 0017) reuse them: a parameter is evaluated again only when one of
    the top-level elements it reads is another object."""

    def __init__(self) -> None:
        # param key -> (elements read, rows, sort key)
        self.rows: dict[str, tuple[tuple[Any, ...], list[Any], Any]] = {}


_ROOTS: dict[str, tuple[str, ...] | None] = {}


def _roots(param: SearchParam) -> tuple[str, ...] | None:
    """The top-level keys of the resource ``param`` reads (choice keys included); None
    when that is not plain to see (expressions only the FHIRPath engine runs may read
    anything)."""
    if param.key not in _ROOTS:
        roots: list[str] | None = []
        for path in param.paths:
            keys = top_keys(path.expression)
            if roots is None or keys is None:
                roots = None
                break
            roots.extend(keys)
        _ROOTS[param.key] = tuple(dict.fromkeys(roots)) if roots is not None else None
    return _ROOTS[param.key]


def extract(resource: dict[str, Any], memo: Memo | None = None) -> IndexRows:
    """Index rows for every search parameter of the resource's type. A parameter whose
    top-level elements the resource lacks is skipped without evaluating its paths (most
    of a type's parameters, on most resources: issue 32)."""
    rows = IndexRows()
    seen: dict[str, list[Any]] = {}  # parameters sharing a path evaluate it once
    for param in params_for(resource["resourceType"]).values():
        roots = _roots(param)
        if roots is not None and not any(key in resource for key in roots):
            continue
        _extract_param(param, resource, rows, seen, memo)
    return rows


def _extract_param(param: SearchParam, resource: dict[str, Any], rows: IndexRows,
                   seen: dict[str, list[Any]], memo: Memo | None = None) -> None:
    roots = _roots(param) if memo is not None else None
    if memo is None or roots is None:
        mine, sort_key = _computed(param, resource, seen)
    else:
        sources = tuple(resource.get(r) for r in roots)
        last = memo.rows.get(param.key)
        if last is not None and all(a is b for a, b in zip(last[0], sources, strict=True)):
            _, mine, sort_key = last
        else:
            mine, sort_key = _computed(param, resource, seen)
            # keeps the sources alive, so no other object can take their ids
            memo.rows[param.key] = (sources, mine, sort_key)
    if not mine:
        return
    getattr(rows, param.kind).extend(mine)
    if sort_key is not None:
        rows.sort[param.key] = sort_key


def _computed(param: SearchParam, resource: dict[str, Any],
              seen: dict[str, list[Any]]) -> tuple[list[Any], Any]:
    """(the parameter's rows, its sort key) for ``resource``."""
    kind = KINDS[param.kind]
    mine = _values(param, kind, resource, seen)
    return mine, kind.sort_key(mine) if mine else None


def _values(param: SearchParam, kind: Kind, resource: dict[str, Any],
            seen: dict[str, list[Any]]) -> list[Any]:
    """The parameter's index rows for ``resource``, without duplicates."""
    mine: list[Any] = []
    for path in param.paths:
        values = seen.get(path.expression)
        if values is None:
            try:
                values = seen[path.expression] = path.evaluate(resource)
            except Exception:  # a malformed optional element must not block the write
                continue
        mine.extend(kind.extract(param.key, values, path.only))
    return list(dict.fromkeys(mine))  # duplicates from union paths
