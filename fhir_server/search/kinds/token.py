"""token (search.html#token): codes, identifiers, booleans; ``:not``, ``:text``."""

from __future__ import annotations

from typing import Any

from fhir_server.core.errors import invalid
from fhir_server.search.kinds.base import (
    ANY,
    DateWidths,
    Row,
    Sql,
    TokenValue,
    like_escape,
    min_max,
    regex_escape,
    split_pipe,
    unescape,
)
from fhir_server.search.values import normalize_string


def _text_of(concept: dict[str, Any]) -> str | None:
    texts = [concept.get("text")] + [c.get("display") for c in concept.get("coding", [])
                                     if isinstance(c, dict)]
    joined = " ".join(t for t in texts if isinstance(t, str))
    return normalize_string(joined) if joined else None


def tokens(value: Any) -> list[tuple[str | None, str | None, str | None]]:
    """(system, code, normalized text) of a code, Coding, CodeableConcept, Identifier,
    ContactPoint or boolean."""
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


def parse_token(modifier: str | None, text: str, key: str) -> TokenValue:
    """``[system|]code``, ``system|``, ``|code``; ``:text`` searches the display text."""
    if modifier == "text":
        return TokenValue(ANY, None, normalize_string(unescape(text)))
    parts = split_pipe(text)
    if len(parts) == 1:
        return TokenValue(ANY, parts[0])
    if len(parts) == 2:
        return TokenValue(parts[0] or None, parts[1] or None)
    raise invalid(f"invalid token {text!r} for {key}", key)


def token_sql(v: TokenValue, sys_col: str, code_col: str) -> Sql:
    if v.text is not None:
        return "text LIKE ? ESCAPE '\\'", [f"%{like_escape(v.text)}%"]
    conds: list[str] = []
    args: list[Any] = []
    if v.code is not None:
        conds.append(f"{code_col} = ?")
        args.append(v.code)
    if v.system is None:
        conds.append(f"{sys_col} IS NULL")
    elif v.system is not ANY:
        conds.append(f"{sys_col} = ?")
        args.append(v.system)
    return " AND ".join(conds) or "1", args


def token_mongo(v: TokenValue, sys_f: str, code_f: str) -> dict[str, Any]:
    if v.text is not None:
        return {"t": {"$regex": regex_escape(v.text)}}
    out: dict[str, Any] = {}
    if v.code is not None:
        out[code_f] = v.code
    if v.system is None:
        out[sys_f] = None
    elif v.system is not ANY:
        out[sys_f] = v.system
    return out or {"p": {"$exists": True}}


class Token:
    name = "token"
    modifiers = frozenset({"not", "text", "missing"})
    columns = ("system", "code", "text")
    array = "tok"
    fields = ("s", "c", "t")

    def extract(self, key: str, values: list[Any], only: str | None) -> list[Row]:
        return [(key, *t) for value in values for t in tokens(value)]

    def sort_key(self, rows: list[Row]) -> tuple[Any, Any] | None:
        return min_max([r[2] for r in rows if r[2] is not None])

    def parse(self, modifier: str | None, text: str, key: str) -> Any:
        return parse_token(modifier, text, key)

    def sql(self, value: Any, modifier: str | None, key: str, ctx: DateWidths) -> Sql:
        return token_sql(value, "system", "code")

    def mongo(self, value: Any, modifier: str | None) -> dict[str, Any]:
        return token_mongo(value, "s", "c")


KIND = Token()
