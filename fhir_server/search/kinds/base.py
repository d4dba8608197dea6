"""What every search parameter kind defines (FHIR R4 search.html, "Search types and FHIR
types"), and the parsed search values the kinds share.

A kind is one object with: the index rows it extracts from a FHIR value (write time),
the modifiers it accepts and how it parses a search value, the row layout each backend
stores (SQLite index table columns, MongoDB index array fields), and the condition it
compiles a value to for each backend. The compilers loop over ``kinds.KINDS``. Adding a
kind: its module, its entry in ``kinds.KINDS``, its list in ``IndexRows``, a migration
creating ``idx_<kind>`` and ``audit_idx_<kind>``, and its array on ``ResourceDoc``
(with its indexes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol

Sql = tuple[str, list[Any]]
Row = tuple[Any, ...]  # (param key, the kind's fields…)
ANY = object()  # token system wildcard


@dataclass(frozen=True)
class TokenValue:
    system: Any  # str | None (explicitly no system) | ANY
    code: str | None  # None: any code of the system
    text: str | None = None


@dataclass(frozen=True)
class RangeValue:
    prefix: str
    low: float
    high: float
    value: float = 0.0  # number/quantity: the value as written
    system: str | None = None
    code: str | None = None


@dataclass(frozen=True)
class ReferenceValue:
    rtype: str | None
    rid: str | None
    url: str | None


class DateWidths(Protocol):
    """What a SQL clause may need from its compiler: the widest interval stored for a
    date parameter (read once per query by the store, ADR 0003)."""

    def date_width(self, key: str) -> int: ...


class Kind(Protocol):
    """One search parameter kind, in one place."""

    @property
    def name(self) -> str: ...

    @property
    def modifiers(self) -> frozenset[str]:
        """Accepted besides a type modifier (reference)."""

    @property
    def columns(self) -> tuple[str, ...]:
        """The SQLite ``idx_<name>`` table's columns after (pk, p)."""

    @property
    def array(self) -> str:
        """The MongoDB resource document's index array."""

    @property
    def fields(self) -> tuple[str, ...]:
        """Its entries' fields after ``p``."""

    def extract(self, key: str, values: list[Any], only: str | None) -> list[Row]:
        """Index rows of the FHIR values one path of a parameter gave (``only``: keep
        references to that type only)."""

    def sort_key(self, rows: list[Row]) -> tuple[Any, Any] | None:
        """(ascending, descending) ``_sort`` key of a resource's rows of one parameter."""

    def parse(self, modifier: str | None, text: str, key: str) -> Any:
        """One search value (escaped text, one of an OR list) as the compilers take it."""

    def sql(self, value: Any, modifier: str | None, key: str, ctx: DateWidths) -> Sql:
        """The condition on one ``idx_<name>`` row matching ``value``."""

    def mongo(self, value: Any, modifier: str | None) -> dict[str, Any]:
        """The ``$elemMatch`` condition on one index array entry matching ``value``."""


# -- helpers several kinds share ---------------------------------------------------------

def unescape(text: str) -> str:
    """``\\, \\| \\$ \\\\`` of a search value (search.html#escaping)."""
    return re.sub(r"\\([,|$\\])", r"\1", text)


def split_pipe(text: str) -> list[str]:
    return [unescape(p) for p in re.split(r"(?<!\\)\|", text)]


def like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def prefix_upper(text: str) -> str:
    """The least string above every string starting with ``text`` (a range scan)."""
    return text + "\U0010ffff"


def regex_escape(text: str) -> str:
    return re.escape(text)


def min_max(keys: list[Any]) -> tuple[Any, Any] | None:
    return (min(keys), max(keys)) if keys else None


PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")


def split_prefix(text: str) -> tuple[str, str]:
    """(prefix, rest) of an ordered value (search.html#prefix); ``eq`` when none."""
    if len(text) > 2 and text[:2] in PREFIXES and not text[2].isalpha():
        return text[:2], text[2:]
    return "eq", text
