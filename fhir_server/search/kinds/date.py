"""date (search.html#date): half-open ``[low, high)`` ranges in µs, matched by prefix."""

from __future__ import annotations

from typing import Any

from fhir_server.core.errors import invalid
from fhir_server.search.kinds.base import DateWidths, RangeValue, Row, Sql, split_prefix
from fhir_server.search.values import MAX_US, MIN_US, date_range, now_us


def dates(value: Any) -> list[tuple[int, int]]:
    """The ranges of a date, dateTime, instant, Period or Timing."""
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


def date_sql(v: RangeValue | tuple[RangeValue, ...], width: int) -> Sql:
    """Prefix semantics on [low, high). Each form is led by bounds it implies (low < high,
    and high - low <= width, the widest interval stored for the parameter), so SQLite can
    range-scan idx_date_low on both sides."""
    if isinstance(v, tuple):  # bounds merged by query.merge_date_bounds
        parts = [date_sql(bound, width) for bound in v]
        return (" AND ".join(f"({cond})" for cond, _ in parts),
                [arg for _, args in parts for arg in args])
    lo, hi = int(v.low), int(v.high)
    within = "(low >= ? AND high <= ?)"
    return {
        "eq": (f"low >= ? AND low < ? AND {within}", [lo, hi, lo, hi]),
        "ne": (f"NOT {within}", [lo, hi]),
        "gt": ("low > ? AND high > ?", [hi - width, hi]),
        "lt": ("low < ?", [lo]),
        "ge": (f"low > ? AND high > ? AND (high > ? OR {within})",
               [lo - width, lo, hi, lo, hi]),
        "le": (f"low < ? AND (low < ? OR {within})", [hi, lo, lo, hi]),
        "sa": ("low >= ?", [hi]),
        "eb": ("low < ? AND high <= ?", [lo, lo]),
        "ap": ("low > ? AND low < ? AND high > ?", [lo - width, hi, lo]),
    }[v.prefix]


def date_mongo(v: RangeValue) -> dict[str, Any]:
    lo, hi = int(v.low), int(v.high)
    within = {"lo": {"$gte": lo}, "hi": {"$lte": hi}}
    conds: dict[str, dict[str, Any]] = {
        "eq": within,
        "ne": {"$or": [{"lo": {"$lt": lo}}, {"hi": {"$gt": hi}}]},
        "gt": {"hi": {"$gt": hi}},
        "lt": {"lo": {"$lt": lo}},
        "ge": {"hi": {"$gt": lo}, "$or": [{"hi": {"$gt": hi}}, within]},
        "le": {"lo": {"$lt": hi}, "$or": [{"lo": {"$lt": lo}}, within]},
        "sa": {"lo": {"$gte": hi}},
        "eb": {"hi": {"$lte": lo}},
        "ap": {"lo": {"$lt": hi}, "hi": {"$gt": lo}},
    }
    return conds[v.prefix]


class Date:
    name = "date"
    modifiers = frozenset({"missing"})
    columns = ("low", "high")
    array = "dt"
    fields = ("lo", "hi")

    def extract(self, key: str, values: list[Any], only: str | None) -> list[Row]:
        return [(key, lo, hi) for value in values for lo, hi in dates(value)]

    def sort_key(self, rows: list[Row]) -> tuple[Any, Any] | None:
        if not rows:
            return None
        return min(r[1] for r in rows), max(r[2] for r in rows)

    def parse(self, modifier: str | None, text: str, key: str) -> Any:
        prefix, rest = split_prefix(text)
        rng = date_range(rest)
        if rng is None:
            raise invalid(f"invalid date {rest!r} for {key} (expected YYYY[-MM[-DD"
                          "[Thh:mm[:ss[.sss]][Z|±hh:mm]]]])", key)
        if prefix == "ap":  # search.html#prefix: within 10% of the gap to now
            margin = abs(now_us() - rng[0]) // 10
            return RangeValue(prefix, float(rng[0] - margin), float(rng[1] + margin))
        return RangeValue(prefix, rng[0], rng[1])

    def sql(self, value: Any, modifier: str | None, key: str, ctx: DateWidths) -> Sql:
        return date_sql(value, ctx.date_width(key))

    def mongo(self, value: Any, modifier: str | None) -> dict[str, Any]:
        if isinstance(value, tuple):  # bounds merged by query.merge_date_bounds
            return {"$and": [date_mongo(b) for b in value]}
        return date_mongo(value)


KIND = Date()
