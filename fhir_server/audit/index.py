"""Search index rows of an AuditEvent, written out for speed (R-SEC-3, ADR 0006).

The audit trail writes one AuditEvent per read, so their extraction is the hottest write
path of the server. This walks the eleven AuditEvent search parameters directly instead
of through the general path evaluator, with shortcuts for the shapes BALP events have
(plain strings, Codings, identifier references) and the general value readers for
anything else. It yields the rows :func:`fhir_server.search.extract.extract` would, as
the journal stores them (sort keys of the date parameters only); a test holds the two
equal on generated events and on the R4 examples.
"""

from __future__ import annotations

from typing import Any

from fhir_server.search.extract import (
    IndexRows,
    _dates,
    _references,
    _sort_key,
    _tokens,
    parse_reference,
)

P = "AuditEvent."
Token = tuple[str, str | None, str | None, str | None]
Reference = tuple[str, str | None, str | None, str | None, str | None, str | None]


def _each(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list):
        return [v for v in value if v is not None]
    return [value]


def _children(items: list[Any], name: str) -> list[Any]:
    return [v for item in items if isinstance(item, dict) for v in _each(item.get(name))]


def _token_rows(key: str, values: list[Any]) -> list[Token]:
    out: list[Token] = []
    for v in values:
        if isinstance(v, str):
            out.append((key, None, v, None))
        elif isinstance(v, dict) and "code" in v and "display" not in v and "coding" not in v \
                and "value" not in v and "text" not in v:
            out.append((key, v.get("system"), v["code"], None))
        else:
            out.extend((key, *t) for t in _tokens(v))
    return list(dict.fromkeys(out)) if len(out) > 1 else out


def _reference_rows(key: str, values: list[Any], only: str | None) -> list[Reference]:
    out: list[Reference] = []
    for v in values:
        ref = v.get("reference") if isinstance(v, dict) else None
        if only is None and isinstance(v, dict) and ref is None and "type" not in v:
            ident = v.get("identifier")
            if isinstance(ident, dict) and ident:  # BALP agents and the X-Request-Id entity
                out.append((key, None, None, None, ident.get("system"), ident.get("value")))
                continue
        if isinstance(ref, str) and "identifier" not in v:
            rtype, rid = parse_reference(ref)
            if only is not None and rtype != only:
                continue
            out.append((key, rtype, rid, ref if rid is None else None, None, None))
            continue
        out.extend((key, *r) for r in _references(v, only))
    return list(dict.fromkeys(out)) if len(out) > 1 else out


def rows(resource: dict[str, Any]) -> IndexRows:
    out = IndexRows()
    agents = _each(resource.get("agent"))
    who = _children(agents, "who")
    what = _children(_each(resource.get("entity")), "what")
    meta = resource.get("meta")
    for name, value in (("_lastUpdated", meta.get("lastUpdated") if isinstance(meta, dict)
                         else None), ("date", resource.get("recorded"))):
        key = P + name
        found = list(dict.fromkeys((key, *d) for v in _each(value) for d in _dates(v)))
        if found:
            out.date.extend(found)
            sort = _sort_key("date", found)
            if sort is not None:
                out.sort[key] = sort
    tokens = out.token
    tokens += _token_rows(P + "_id", _each(resource.get("id")))
    tokens += _token_rows(P + "action", _each(resource.get("action")))
    tokens += _token_rows(P + "altid", _children(agents, "altId"))
    tokens += _token_rows(P + "outcome", _each(resource.get("outcome")))
    tokens += _token_rows(P + "subtype", _each(resource.get("subtype")))
    tokens += _token_rows(P + "type", _each(resource.get("type")))
    refs = out.reference
    refs += _reference_rows(P + "agent", who, None)
    refs += _reference_rows(P + "entity", what, None)
    refs += _reference_rows(P + "patient", [*who, *what], "Patient")
    return out
