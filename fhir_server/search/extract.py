"""Write-time extraction of search index values (the "extract" step of search).

Each parameter's FHIRPath is evaluated once per write; the results are turned into
typed index rows by the FHIR data type found (FHIR R4 search.html, "Search types and
FHIR types" table). Both stores persist exactly these rows, so they answer the same.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from fhir_server.search.paths import compile_simple
from fhir_server.search.registry import SearchParam, params_for
from fhir_server.search.values import MAX_US, MIN_US, date_range, normalize_string

CONTACT_SYSTEMS = frozenset({"phone", "fax", "email", "pager", "url", "sms", "other"})


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


def parse_reference(ref: str) -> tuple[str | None, str | None]:
    """``Type/id`` or ``Type/id/_history/v`` (relative) -> (type, id); otherwise (None, None)."""
    if ref.startswith(("#", "urn:", "http:", "https:")):
        return None, None
    parts = ref.split("/")
    if len(parts) in (2, 4) and parts[0][:1].isupper():
        return parts[0], parts[1]
    return None, None


def _text_of(concept: dict[str, Any]) -> str | None:
    texts = [concept.get("text")] + [c.get("display") for c in concept.get("coding", [])
                                     if isinstance(c, dict)]
    joined = " ".join(t for t in texts if isinstance(t, str))
    return normalize_string(joined) if joined else None


def _tokens(value: Any) -> list[tuple[str | None, str | None, str | None]]:
    if isinstance(value, bool):
        return [(None, "true" if value else "false", None)]
    if isinstance(value, str):
        return [(None, value, None)]
    if not isinstance(value, dict):
        return []
    if "coding" in value or ("text" in value and "value" not in value and "code" not in value):
        text = _text_of(value)
        rows: list[tuple[str | None, str | None, str | None]] = [
            (c.get("system"), c.get("code"), text)
            for c in value.get("coding", []) if isinstance(c, dict)
        ]
        return rows or [(None, None, text)]
    if "value" in value and isinstance(value["value"], str):  # Identifier / ContactPoint
        text = None
        kind = value.get("type")
        if isinstance(kind, dict):
            text = _text_of(kind)
        return [(value.get("system"), value["value"], text)]
    if "code" in value:  # Coding, Quantity-as-token
        display = value.get("display")
        return [(value.get("system"), value["code"],
                 normalize_string(display) if isinstance(display, str) else None)]
    return []


_NAME_PARTS = ("family", "given", "prefix", "suffix", "text")
_ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, dict):
        return []
    out: list[str] = []
    for part in (*_NAME_PARTS, *_ADDRESS_PARTS):
        item = value.get(part)
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, list):
            out.extend(i for i in item if isinstance(i, str))
    return out


def _dates(value: Any) -> list[tuple[int, int]]:
    if isinstance(value, str):
        rng = date_range(value)
        return [rng] if rng else []
    if isinstance(value, dict):
        if "start" in value or "end" in value:  # Period
            start = date_range(value["start"]) if isinstance(value.get("start"), str) else None
            end = date_range(value["end"]) if isinstance(value.get("end"), str) else None
            return [(start[0] if start else MIN_US, end[1] if end else MAX_US)]
        if "event" in value:  # Timing
            return [r for e in value["event"] if isinstance(e, str) and (r := date_range(e))]
    return []


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float | Decimal):
        return float(value)
    return None


def _references(value: Any, only: str | None
                ) -> list[tuple[str | None, str | None, str | None, str | None, str | None]]:
    if isinstance(value, str):  # canonical
        return [(None, None, value, None, None)] if only is None else []
    if not isinstance(value, dict):
        return []
    ref = value.get("reference")
    raw_ident = value.get("identifier")
    ident: dict[str, Any] = raw_ident if isinstance(raw_ident, dict) else {}
    rtype, rid = parse_reference(ref) if isinstance(ref, str) else (None, None)
    if rtype is None and isinstance(value.get("type"), str) and ident:
        rtype = value["type"]
    if only is not None and rtype != only:
        return []
    if ref is None and not ident:
        return []
    url = ref if isinstance(ref, str) and rid is None else None
    return [(rtype, rid, url, ident.get("system"), ident.get("value"))]


def _sort_key(kind: str, param_rows: list[Any]) -> tuple[Any, Any] | None:
    keys: list[Any]
    if kind == "date":
        lows = [r[1] for r in param_rows]
        highs = [r[2] for r in param_rows]
        return (min(lows), max(highs)) if lows else None
    if kind == "string":
        keys = [r[1] for r in param_rows]
    elif kind == "token":
        keys = [r[2] for r in param_rows if r[2] is not None]
    elif kind in ("number", "quantity"):
        keys = [r[1] for r in param_rows]
    elif kind == "uri":
        keys = [r[1] for r in param_rows]
    else:
        keys = [f"{r[1]}/{r[2]}" if r[2] else r[3] for r in param_rows if r[2] or r[3]]
    return (min(keys), max(keys)) if keys else None


class Memo:
    """The rows each parameter gave for the last resource of a series, with the elements
    they came from. Resources that share element objects (the AuditEvents a journal record
    expands into, ADR 0017) reuse them: a parameter is evaluated again only when one of
    the top-level elements it reads is another object."""

    def __init__(self) -> None:
        # param key -> (elements read, rows, sort key)
        self.rows: dict[str, tuple[tuple[Any, ...], list[Any], Any]] = {}


_ROOT = re.compile(r"^[A-Z][A-Za-z]+\.([a-z][A-Za-z]*)")
_ROOTS: dict[str, tuple[str, ...] | None] = {}


def _roots(param: SearchParam) -> tuple[str, ...] | None:
    """The top-level elements ``param`` reads; None when that is not plain to see
    (expressions only the FHIRPath engine runs may read anything)."""
    if param.key not in _ROOTS:
        roots: list[str] | None = []
        for path in param.paths:
            match = _ROOT.match(path.expression)
            if roots is None or match is None or compile_simple(path.expression) is None:
                roots = None
                break
            roots.append(match.group(1))
        _ROOTS[param.key] = tuple(roots) if roots is not None else None
    return _ROOTS[param.key]


def extract(resource: dict[str, Any], memo: Memo | None = None) -> IndexRows:
    """Index rows for every search parameter of the resource's type."""
    rows = IndexRows()
    seen: dict[str, list[Any]] = {}  # parameters sharing a path evaluate it once
    for param in params_for(resource["resourceType"]).values():
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
    mine = _values(param, resource, seen)
    return mine, _sort_key(param.kind, mine) if mine else None


def _values(param: SearchParam, resource: dict[str, Any],
            seen: dict[str, list[Any]]) -> list[Any]:
    """The parameter's index rows for ``resource``, without duplicates."""
    key = param.key
    mine: list[Any] = []
    for path in param.paths:
        values = seen.get(path.expression)
        if values is None:
            try:
                values = seen[path.expression] = path.evaluate(resource)
            except Exception:  # a malformed optional element must not block the write
                continue
        for value in values:
            if param.kind == "token":
                mine.extend((key, *t) for t in _tokens(value))
            elif param.kind == "string":
                mine.extend((key, normalize_string(s), s) for s in _strings(value))
            elif param.kind == "date":
                mine.extend((key, lo, hi) for lo, hi in _dates(value))
            elif param.kind == "number":
                number = _number(value)
                if number is not None:
                    mine.append((key, number))
            elif param.kind == "quantity":
                if isinstance(value, dict) and _number(value.get("value")) is not None:
                    mine.append((key, _number(value["value"]), value.get("system"),
                                 value.get("code"), value.get("unit")))
            elif param.kind == "uri":
                if isinstance(value, str):
                    mine.append((key, value))
            elif param.kind == "reference":
                mine.extend((key, *r) for r in _references(value, path.only))
    return list(dict.fromkeys(mine))  # duplicates from union paths
