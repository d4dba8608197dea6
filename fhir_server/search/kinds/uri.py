"""uri (search.html#uri): exact; ``:below`` (prefix), ``:above`` (the value's prefixes)."""

from __future__ import annotations

from typing import Any

from fhir_server.search.kinds.base import (
    DateWidths,
    Row,
    Sql,
    min_max,
    prefix_upper,
    regex_escape,
    unescape,
)


class Uri:
    name = "uri"
    modifiers = frozenset({"below", "above", "missing"})
    columns = ("value",)
    array = "uri"
    fields = ("v",)

    def extract(self, key: str, values: list[Any], only: str | None) -> list[Row]:
        return [(key, value) for value in values if isinstance(value, str)]

    def sort_key(self, rows: list[Row]) -> tuple[Any, Any] | None:
        return min_max([r[1] for r in rows])

    def parse(self, modifier: str | None, text: str, key: str) -> Any:
        return unescape(text)

    def sql(self, value: Any, modifier: str | None, key: str, ctx: DateWidths) -> Sql:
        if modifier == "below":
            return "value >= ? AND value < ?", [value, prefix_upper(value)]
        if modifier == "above":
            return "substr(?, 1, length(value)) = value", [value]
        return "value = ?", [value]

    def mongo(self, value: Any, modifier: str | None) -> dict[str, Any]:
        if modifier == "below":
            return {"v": {"$regex": "^" + regex_escape(value)}}
        if modifier == "above":
            return {"v": {"$in": [value[:i] for i in range(1, len(value) + 1)]}}
        return {"v": value}


KIND = Uri()
