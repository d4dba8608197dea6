"""string (search.html#string): case- and accent-insensitive prefix; ``:exact``,
``:contains``."""

from __future__ import annotations

from typing import Any

from fhir_server.search.kinds.base import (
    DateWidths,
    Row,
    Sql,
    like_escape,
    min_max,
    prefix_upper,
    regex_escape,
    unescape,
)
from fhir_server.search.values import normalize_string

_NAME_PARTS = ("family", "given", "prefix", "suffix", "text")
_ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")


def strings(value: Any) -> list[str]:
    """The texts of a string, HumanName or Address."""
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


class String:
    name = "string"
    modifiers = frozenset({"exact", "contains", "missing"})
    columns = ("norm", "exact")
    array = "str"
    fields = ("n", "e")

    def extract(self, key: str, values: list[Any], only: str | None) -> list[Row]:
        return [(key, normalize_string(s), s) for value in values for s in strings(value)]

    def sort_key(self, rows: list[Row]) -> tuple[Any, Any] | None:
        return min_max([r[1] for r in rows])

    def parse(self, modifier: str | None, text: str, key: str) -> Any:
        plain = unescape(text)
        return plain if modifier == "exact" else normalize_string(plain)

    def sql(self, value: Any, modifier: str | None, key: str, ctx: DateWidths) -> Sql:
        if modifier == "exact":
            return "exact = ?", [value]
        if modifier == "contains":
            return "norm LIKE ? ESCAPE '\\'", [f"%{like_escape(value)}%"]
        return "norm >= ? AND norm < ?", [value, prefix_upper(value)]

    def mongo(self, value: Any, modifier: str | None) -> dict[str, Any]:
        if modifier == "exact":
            return {"e": value}
        if modifier == "contains":
            return {"n": {"$regex": regex_escape(value)}}
        return {"n": {"$regex": "^" + regex_escape(value)}}


KIND = String()
