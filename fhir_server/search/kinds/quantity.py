"""quantity (search.html#quantity): a number, with an optional system and code/unit."""

from __future__ import annotations

from typing import Any

from fhir_server.search.kinds.base import DateWidths, Row, Sql, min_max
from fhir_server.search.kinds.number import as_number, number_mongo, number_sql, parse_range


class Quantity:
    name = "quantity"
    modifiers = frozenset({"missing"})
    columns = ("value", "system", "code", "unit")
    array = "qty"
    fields = ("v", "s", "c", "u")

    def extract(self, key: str, values: list[Any], only: str | None) -> list[Row]:
        return [(key, n, value.get("system"), value.get("code"), value.get("unit"))
                for value in values
                if isinstance(value, dict) and (n := as_number(value.get("value"))) is not None]

    def sort_key(self, rows: list[Row]) -> tuple[Any, Any] | None:
        return min_max([r[1] for r in rows])

    def parse(self, modifier: str | None, text: str, key: str) -> Any:
        return parse_range(self.name, text, key)

    def sql(self, value: Any, modifier: str | None, key: str, ctx: DateWidths) -> Sql:
        cond, args = number_sql(value)
        if value.code:
            cond += " AND (code = ? OR unit = ?)"
            args = [*args, value.code, value.code]
        if value.system:
            cond += " AND system = ?"
            args = [*args, value.system]
        return cond, args

    def mongo(self, value: Any, modifier: str | None) -> dict[str, Any]:
        cond = number_mongo(value)
        extra: list[dict[str, Any]] = []
        if value.code:
            extra.append({"$or": [{"c": value.code}, {"u": value.code}]})
        if value.system:
            extra.append({"s": value.system})
        return {"$and": [cond, *extra]} if extra else cond


KIND = Quantity()
