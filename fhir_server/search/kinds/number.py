"""number (search.html#number): prefixes, and the implicit precision of the value."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from fhir_server.core.errors import invalid
from fhir_server.search.kinds.base import (
    DateWidths,
    RangeValue,
    Row,
    Sql,
    min_max,
    split_pipe,
    split_prefix,
)
from fhir_server.search.values import number_range


def as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float | Decimal):
        return float(value)
    return None


def parse_range(kind: str, text: str, key: str) -> RangeValue:
    """``[prefix]value`` (number) or ``[prefix]value[|system[|code]]`` (quantity)."""
    prefix, rest = split_prefix(text)
    parts = split_pipe(rest)
    rng = number_range(parts[0])
    if rng is None or (kind == "number" and len(parts) > 1) or len(parts) > 3:
        raise invalid(f"invalid {kind} {text!r} for {key}", key)
    value, low, high = rng
    if prefix == "ap":
        low, high = value - abs(value) * 0.1, value + abs(value) * 0.1
    system = parts[1] or None if len(parts) > 1 else None
    code = parts[2] or None if len(parts) > 2 else None
    return RangeValue(prefix, low, high, value, system, code)


def number_sql(v: RangeValue) -> Sql:
    return {
        "eq": ("value >= ? AND value < ?", [v.low, v.high]),
        "ne": ("NOT (value >= ? AND value < ?)", [v.low, v.high]),
        "gt": ("value > ?", [v.value]),
        "lt": ("value < ?", [v.value]),
        "ge": ("value >= ?", [v.value]),
        "le": ("value <= ?", [v.value]),
        "sa": ("value > ?", [v.value]),
        "eb": ("value < ?", [v.value]),
        "ap": ("value >= ? AND value <= ?", [v.low, v.high]),
    }[v.prefix]


def number_mongo(v: RangeValue) -> dict[str, Any]:
    conds: dict[str, dict[str, Any]] = {
        "eq": {"v": {"$gte": v.low, "$lt": v.high}},
        "ne": {"$or": [{"v": {"$lt": v.low}}, {"v": {"$gte": v.high}}]},
        "gt": {"v": {"$gt": v.value}},
        "lt": {"v": {"$lt": v.value}},
        "ge": {"v": {"$gte": v.value}},
        "le": {"v": {"$lte": v.value}},
        "sa": {"v": {"$gt": v.value}},
        "eb": {"v": {"$lt": v.value}},
        "ap": {"v": {"$gte": v.low, "$lte": v.high}},
    }
    return conds[v.prefix]


class Number:
    name = "number"
    modifiers = frozenset({"missing"})
    columns = ("value",)
    array = "num"
    fields = ("v",)

    def extract(self, key: str, values: list[Any], only: str | None) -> list[Row]:
        return [(key, n) for value in values if (n := as_number(value)) is not None]

    def sort_key(self, rows: list[Row]) -> tuple[Any, Any] | None:
        return min_max([r[1] for r in rows])

    def parse(self, modifier: str | None, text: str, key: str) -> Any:
        return parse_range(self.name, text, key)

    def sql(self, value: Any, modifier: str | None, key: str, ctx: DateWidths) -> Sql:
        return number_sql(value)

    def mongo(self, value: Any, modifier: str | None) -> dict[str, Any]:
        return number_mongo(value)


KIND = Number()
