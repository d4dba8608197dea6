"""reference (search.html#reference): ``[Type/]id``, an absolute URL or a canonical;
``:Type``, ``:identifier`` (the reference's Identifier, compiled like a token)."""

from __future__ import annotations

from typing import Any

from fhir_server.core.errors import invalid
from fhir_server.core.resource_types import is_supported
from fhir_server.search.kinds.base import (
    DateWidths,
    ReferenceValue,
    Row,
    Sql,
    TokenValue,
    min_max,
    unescape,
)
from fhir_server.search.kinds.token import parse_token, token_mongo, token_sql


def parse_reference(ref: str) -> tuple[str | None, str | None]:
    """``Type/id`` or ``Type/id/_history/v`` (relative) -> (type, id); otherwise (None, None)."""
    if ref.startswith(("#", "urn:", "http:", "https:")):
        return None, None
    parts = ref.split("/")
    if len(parts) in (2, 4) and parts[0][:1].isupper():
        return parts[0], parts[1]
    return None, None


def references(value: Any, only: str | None
               ) -> list[tuple[str | None, str | None, str | None, str | None, str | None]]:
    """(target type, id, url, identifier system, identifier value) of a Reference or a
    canonical."""
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


def parse_reference_value(text: str, key: str, rtype: str | None) -> ReferenceValue:
    """A search value of a reference parameter (``rtype``: its ``:Type`` modifier)."""
    text = unescape(text)
    if text.startswith(("http:", "https:", "urn:")):
        tail = text.rstrip("/").split("/")
        if len(tail) >= 2 and is_supported(tail[-2]) and rtype in (None, tail[-2]):
            # absolute URL of a local resource: also match the relative form
            return ReferenceValue(tail[-2], tail[-1], text)
        return ReferenceValue(None, None, text)
    parts = text.split("/")
    if len(parts) == 1:
        return ReferenceValue(rtype, parts[0], None)
    if len(parts) in (2, 4) and is_supported(parts[0]):
        if rtype and parts[0] != rtype:
            raise invalid(f"reference {text} does not match the type modifier :{rtype}", key)
        return ReferenceValue(parts[0], parts[1], None)
    raise invalid(f"invalid reference {text!r} for {key}", key)


class Reference:
    name = "reference"
    modifiers = frozenset({"identifier", "missing"})
    columns = ("rtype", "rid", "url", "idsys", "idval")
    array = "ref"
    fields = ("t", "i", "u", "is", "iv")

    def extract(self, key: str, values: list[Any], only: str | None) -> list[Row]:
        return [(key, *r) for value in values for r in references(value, only)]

    def sort_key(self, rows: list[Row]) -> tuple[Any, Any] | None:
        return min_max([f"{r[1]}/{r[2]}" if r[2] else r[3] for r in rows if r[2] or r[3]])

    def parse(self, modifier: str | None, text: str, key: str) -> Any:
        if modifier == "identifier":
            return parse_token(None, text, key)
        return parse_reference_value(text, key, None)

    def sql(self, value: Any, modifier: str | None, key: str, ctx: DateWidths) -> Sql:
        if isinstance(value, TokenValue):  # :identifier
            return token_sql(value, "idsys", "idval")
        v: ReferenceValue = value
        if v.url and v.rid:
            return "(url = ? OR (rid = ? AND rtype = ?))", [v.url, v.rid, v.rtype]
        if v.url:
            return "url = ?", [v.url]
        if v.rtype:
            return "rid = ? AND rtype = ?", [v.rid, v.rtype]
        return "rid = ?", [v.rid]

    def mongo(self, value: Any, modifier: str | None) -> dict[str, Any]:
        if isinstance(value, TokenValue):  # :identifier
            return token_mongo(value, "is", "iv")
        v: ReferenceValue = value
        if v.url and v.rid:
            return {"$or": [{"u": v.url}, {"i": v.rid, "t": v.rtype}]}
        if v.url:
            return {"u": v.url}
        if v.rtype:
            return {"i": v.rid, "t": v.rtype}
        return {"i": v.rid}


KIND = Reference()
