"""Search index rows of an AuditEvent, written out for speed (R-SEC-3, ADR 0006).

The audit trail writes one AuditEvent per read, so their extraction is the hottest write
path of the server. This walks the eleven AuditEvent search parameters directly instead
of through the general path evaluator; it yields exactly the rows
:func:`fhir_server.search.extract.extract` would (a test holds them equal on generated
events and on the R4 examples), so searches cannot tell the difference.
"""

from __future__ import annotations

from typing import Any

from fhir_server.search.extract import (
    IndexRows,
    _dates,
    _references,
    _sort_key,
    _tokens,
)

P = "AuditEvent."


def _each(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list):
        return [v for v in value if v is not None]
    return [value]


def _children(items: list[Any], name: str) -> list[Any]:
    return [v for item in items if isinstance(item, dict) for v in _each(item.get(name))]


def rows(resource: dict[str, Any]) -> IndexRows:
    out = IndexRows()
    agents = _each(resource.get("agent"))
    who = _children(agents, "who")
    what = _children(_each(resource.get("entity")), "what")
    meta = resource.get("meta")

    def add(kind: str, name: str, found: list[tuple[Any, ...]]) -> None:
        if not found:
            return
        key = P + name
        mine = list(dict.fromkeys((key, *f) for f in found))
        getattr(out, kind).extend(mine)
        sort = _sort_key(kind, mine)
        if sort is not None:
            out.sort[key] = sort

    def tokens(name: str, values: list[Any]) -> None:
        add("token", name, [t for v in values for t in _tokens(v)])

    # the registry's order (alphabetical), so rows compare equal item by item
    tokens("_id", _each(resource.get("id")))
    add("date", "_lastUpdated", [d for v in _each(meta.get("lastUpdated") if isinstance(
        meta, dict) else None) for d in _dates(v)])
    tokens("action", _each(resource.get("action")))
    add("reference", "agent", [r for v in who for r in _references(v, None)])
    tokens("altid", _children(agents, "altId"))
    add("date", "date", [d for v in _each(resource.get("recorded")) for d in _dates(v)])
    add("reference", "entity", [r for v in what for r in _references(v, None)])
    tokens("outcome", _each(resource.get("outcome")))
    add("reference", "patient", [r for v in [*who, *what] for r in _references(v, "Patient")])
    tokens("subtype", _each(resource.get("subtype")))
    tokens("type", _each(resource.get("type")))
    return out
