"""The embedded store's record format: the clinical and journal tables, one index table
per search parameter kind (its columns from :mod:`fhir_server.search.kinds`), and how
index rows are written (ADR 0003, 0006)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from fhir_server.search.extract import IndexRows
from fhir_server.search.kinds import KINDS
from fhir_server.store.base import APPEND_ONLY_TYPES, chunks

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
# kind -> "(pk, p, <the kind's columns>)" of its index table
INDEX_COLUMNS = {name: f"(pk, p, {', '.join(kind.columns)})" for name, kind in KINDS.items()}
MAX_VARIABLES = 999  # SQLite's smallest compiled-in limit (3.32+ allow 32766)
BLOB_IN_PLACE = 256 * 1024  # bodies from this size are written with sqlite3_blob_write
T = TypeVar("T")


def insert_rows(conn: sqlite3.Connection, table: str, columns: str,
                rows: list[tuple[Any, ...]]) -> None:
    """Multi-row INSERTs: one statement per ~1000 values instead of one step per row.
    Each SQLite call releases the GIL; a background writer doing thousands of them per
    batch waits for the request thread every time (convoy), so fewer calls matter more
    than fewer rows."""
    if not rows:
        return
    width = len(rows[0])
    per = max(1, MAX_VARIABLES // width)
    for part in chunks(rows, per):
        one = "(" + ", ".join("?" * width) + ")"
        conn.execute(f"INSERT INTO {table} {columns} VALUES {', '.join([one] * len(part))}",
                     [value for row in part for value in row])


@dataclass(frozen=True)
class Tables:
    """Where one resource type lives: the clinical tables, or the append-only journal
    tables of :data:`APPEND_ONLY_TYPES` (lean indexes, no history copy; ADR 0006)."""

    resource: str
    history: str
    sort: str
    index: dict[str, str]
    append_only: bool

    @classmethod
    def named(cls, prefix: str, append_only: bool) -> Tables:
        return cls(f"{prefix}resource", f"{prefix}history", f"{prefix}sort_key",
                   {kind: f"{prefix}idx_{kind}" for kind in INDEX_COLUMNS}, append_only)


SCHEMAS = ("main", "journal")  # the clinical file and the attached journal file
CLINICAL = Tables.named("", append_only=False)
JOURNAL = Tables.named("audit_", append_only=True)


def tables_for(rtype: str | None) -> Tables:
    return JOURNAL if rtype in APPEND_ONLY_TYPES else CLINICAL


def by_tables(items: list[T], type_of: Callable[[T], str]) -> list[tuple[Tables, list[T]]]:
    groups: dict[bool, list[T]] = {}
    for item in items:
        groups.setdefault(tables_for(type_of(item)).append_only, []).append(item)
    return [(JOURNAL if journal else CLINICAL, group) for journal, group in groups.items()]


def read_date_widths(conn: sqlite3.Connection) -> dict[str, int]:
    """The widest interval stored per date parameter (the compiler's range bounds)."""
    return dict(conn.execute("SELECT p, w FROM date_width"))


def write_index(conn: sqlite3.Connection, tables: Tables,
                entries: list[tuple[int, IndexRows]]) -> None:
    """The index rows, date widths and sort keys of resources ``(pk, rows)``."""
    for kind, columns in INDEX_COLUMNS.items():
        insert_rows(conn, tables.index[kind], columns,
                    [(pk, *v) for pk, rows in entries for v in getattr(rows, kind)])
    widest: dict[str, int] = {}
    for _, rows in entries:
        for key, low, high in rows.date:
            widest[key] = max(widest.get(key, 0), high - low)
    for key, width in widest.items():
        conn.execute("INSERT INTO date_width (p, w) VALUES (?, ?) ON CONFLICT (p) "
                     "DO UPDATE SET w = max(w, excluded.w) WHERE excluded.w > w",
                     (key, width))
    # append-only types keep the sort keys auditors use (time) and nothing more
    dated = {key for _, rows in entries for key, _, _ in rows.date}
    insert_rows(conn, tables.sort, "(pk, p, asc_key, desc_key)",
                [(pk, k, a, d) for pk, rows in entries for k, (a, d) in rows.sort.items()
                 if not tables.append_only or k in dated])


def body_slot(body: bytes | None) -> tuple[str, Any]:
    """(SQL placeholder, argument) for a resource body: a large one is inserted as a
    zeroblob of its size and written in place afterwards — bound, SQLite would copy it
    twice and the cached statement keep a copy alive until its next use."""
    if body is not None and len(body) >= BLOB_IN_PLACE:
        return "zeroblob(?)", len(body)
    return "?", body
