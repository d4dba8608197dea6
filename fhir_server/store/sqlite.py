"""The embedded store: SQLite (standard library), WAL, ``synchronous=FULL`` (ADR 0003).

One connection per thread; a write unit is ``BEGIN IMMEDIATE … COMMIT``, which
serialises writers across threads *and* processes, so conditional interactions
checked inside the unit are race-free. Searches compile to ``pk IN (SELECT pk FROM
idx_… WHERE p = ? AND …)`` over the typed index tables — never a scan of the bodies.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import orjson

from fhir_server.audit.records import expand, instant_us
from fhir_server.core.errors import ErrorKind, FhirError, invalid
from fhir_server.search.extract import IndexRows, Memo, extract
from fhir_server.search.query import (
    ANY,
    AllOf,
    AnyOf,
    Chain,
    Clause,
    Has,
    InCare,
    Not,
    Opened,
    PatientSet,
    RangeValue,
    ReferenceValue,
    SearchQuery,
    Term,
    TokenValue,
    types_read,
)
from fhir_server.search.registry import param_kind
from fhir_server.store import budget
from fhir_server.store.base import (
    APPEND_ONLY_TYPES,
    Page,
    Stored,
    chunks,
    journal_put,
    keyset_page,
)

MIGRATIONS = Path(__file__).parent / "migrations"
INDEX_COLUMNS = {
    "token": "(pk, p, system, code, text)",
    "string": "(pk, p, norm, exact)",
    "date": "(pk, p, low, high)",
    "number": "(pk, p, value)",
    "quantity": "(pk, p, value, system, code, unit)",
    "uri": "(pk, p, value)",
    "reference": "(pk, p, rtype, rid, url, idsys, idval)",
}
log = logging.getLogger("teleimagerie.store")
MAX_VARIABLES = 999  # SQLite's smallest compiled-in limit (3.32+ allow 32766)


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


Sql = tuple[str, list[Any]]
T = TypeVar("T")


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _prefix_upper(text: str) -> str:
    return text + "\U0010ffff"


class SqlCompiler:
    """Compile the search AST into SQL over the index tables (search.html semantics)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._n = 0
        self._conn = conn
        self._date_widths: dict[str, int] | None = None
        self._ctes: list[Sql] = []
        self._cte_names: dict[tuple[int, ...], str] = {}

    def date_width(self, key: str) -> int:
        """Widest stored interval of a date parameter, read once per query that needs it."""
        if self._date_widths is None:
            self._date_widths = dict(self._conn.execute("SELECT p, w FROM date_width"))
        return self._date_widths.get(key, 0)

    def alias(self) -> str:
        self._n += 1
        return f"r{self._n}"

    def where(self, alias: str, rtype: str, terms: list[Term]) -> Sql:
        sql = [f"{alias}.type = ?", f"{alias}.deleted = 0"]
        args: list[Any] = [rtype]
        for term in terms:
            part, part_args = self.term(alias, rtype, term)
            sql.append(part)
            args += part_args
        return " AND ".join(sql), args

    def term(self, alias: str, rtype: str, term: Term) -> Sql:
        if isinstance(term, Clause):
            return self.clause(alias, rtype, term)
        if isinstance(term, AnyOf):
            if term.options and all(isinstance(t, Clause) and t.missing is None and
                                    t.modifier != "not" for t in term.options):
                # one indexed lookup per option, as one set (an OR of IN would scan)
                subs = [self.matching(rtype, t) for t in term.options
                        if isinstance(t, Clause)]
                return (f"{alias}.pk IN ({' UNION '.join(sql for sql, _ in subs)})",
                        [a for _, sub_args in subs for a in sub_args])
            parts = [self.term(alias, rtype, t) for t in term.options]
            return ("(" + " OR ".join(f"({sql})" for sql, _ in parts) + ")" if parts else "0",
                    [a for _, part_args in parts for a in part_args])
        if isinstance(term, AllOf):
            parts = [self.term(alias, rtype, t) for t in term.terms]
            return (" AND ".join(f"({sql})" for sql, _ in parts) if parts else "1",
                    [a for _, part_args in parts for a in part_args])
        if isinstance(term, Not):
            sql, args = self.term(alias, rtype, term.term)
            return f"NOT ({sql})", args
        if isinstance(term, InCare):
            return self.in_care(alias, rtype, term)
        if isinstance(term, Chain):
            ors, args = [], [term.param.key]
            for target, inner in zip(term.target_types, term.inner, strict=True):
                a2 = self.alias()
                cond, cargs = self.where(a2, target, [inner])
                ors.append(f"(x.rtype = ? AND x.rid IN (SELECT {a2}.id FROM "
                           f"{tables_for(target).resource} {a2} WHERE {cond}))")
                args += [target, *cargs]
            return (f"{alias}.pk IN (SELECT x.pk FROM {tables_for(rtype).index['reference']} x "
                    f"WHERE x.p = ? AND ({' OR '.join(ors)}))", args)
        assert isinstance(term, Has)
        a3 = self.alias()
        cond, cargs = self.where(a3, term.source_type, term.inner)
        source = tables_for(term.source_type)
        # uncorrelated (the type is bound, not read from the row): computed once
        return (f"{alias}.id IN (SELECT x.rid FROM {source.index['reference']} x WHERE x.p = ? "
                f"AND x.rtype = ? AND x.pk IN (SELECT {a3}.pk FROM "
                f"{source.resource} {a3} WHERE {cond}))", [term.ref.key, rtype, *cargs])

    def cte(self, key: tuple[int, ...], build: Callable[[], Sql], columns: str) -> str:
        """A named sub-select of the statement (``WITH``), built once however many times
        the guard names it (a Binary's guard names its targets' sets): flat SQL, each
        set computed once per statement (issue 27 item 6)."""
        if key not in self._cte_names:
            sql, args = build()
            name = f"g{len(self._ctes) + 1}"
            self._ctes.append((f"{name}({columns}) AS ({sql})", args))
            self._cte_names[key] = name
        return self._cte_names[key]

    def prefix(self) -> Sql:
        """The statement's ``WITH`` clause (to put before the SELECT using ``where``)."""
        if not self._ctes:
            return "", []
        return ("WITH " + ", ".join(sql for sql, _ in self._ctes) + " ",
                [a for _, args in self._ctes for a in args])

    def _patient_set(self, source: PatientSet) -> Sql:
        a = self.alias()
        tables = tables_for(source.source_type)
        cond, args = self.where(a, source.source_type, source.terms)
        if source.ref is None:
            return f"SELECT {a}.id FROM {tables.resource} {a} WHERE {cond}", args
        return (f"SELECT {a}x.rid FROM {tables.index['reference']} {a}x WHERE {a}x.p = ? "
                f"AND {a}x.rtype = 'Patient' AND {a}x.pk IN (SELECT {a}.pk FROM "
                f"{tables.resource} {a} WHERE {cond})", [source.ref.key, *args])

    def _opened(self, opened: Opened) -> Sql:
        """(patient, the first matching source's pk) for each patient a source names."""
        s = self.alias()
        source = tables_for(opened.source_type)
        cond, args = self.where(s, opened.source_type, opened.terms)
        return (f"SELECT {s}x.rid, MIN({s}.pk) FROM {source.index['reference']} {s}x JOIN "
                f"{source.resource} {s} ON {s}.pk = {s}x.pk WHERE {s}x.p = ? AND "
                f"{s}x.rtype = 'Patient' AND {cond} GROUP BY {s}x.rid",
                [opened.ref.key, *args])

    def in_care(self, alias: str, rtype: str, term: InCare) -> Sql:
        """The guard (R-SEC-2): the resource's patient is in a set, or was opened by a
        resource created no later than it (``pk`` is creation order). The sets are
        uncorrelated sub-selects (``WITH``), computed once per statement."""
        ors: list[str] = []
        args: list[Any] = []
        names = [self.cte((id(source),), partial(self._patient_set, source), "id")
                 for source in term.sets]
        parts = [f"SELECT id FROM {name}" for name in names]
        if term.ids:
            parts.append("VALUES " + ", ".join(["(?)"] * len(term.ids)))
            args += list(term.ids)
        index = tables_for(rtype).index["reference"]
        union = " UNION ".join(parts)
        if union and term.param is None:
            ors.append(f"{alias}.id IN ({union})")
        elif union and term.param is not None:
            y = self.alias()
            ors.append(f"{alias}.pk IN (SELECT {y}.pk FROM {index} {y} WHERE {y}.p = ? AND "
                       f"{y}.rtype = 'Patient' AND {y}.rid IN ({union}))")
            args = [term.param.key, *args]
        for opened in term.since if not tables_for(rtype).append_only else []:
            name = self.cte((id(opened),), partial(self._opened, opened), "id, pk")
            if term.param is None:
                ors.append(f"EXISTS (SELECT 1 FROM {name} WHERE {name}.id = {alias}.id AND "
                           f"{name}.pk <= {alias}.pk)")
                continue
            y = self.alias()
            ors.append(f"EXISTS (SELECT 1 FROM {index} {y} CROSS JOIN {name} WHERE "
                       f"{y}.pk = {alias}.pk AND {y}.p = ? AND {y}.rtype = 'Patient' AND "
                       f"{name}.id = {y}.rid AND {name}.pk <= {alias}.pk)")
            args.append(term.param.key)
        return ("(" + " OR ".join(ors) + ")" if ors else "0"), args

    def clause(self, alias: str, rtype: str, clause: Clause) -> Sql:
        kind = clause.param.kind
        if clause.modifier == "identifier" or (kind == "reference" and clause.values
                                               and isinstance(clause.values[0], TokenValue)):
            kind = "reference-identifier"
        table = tables_for(rtype).index["reference" if kind.startswith("reference") else kind]
        if clause.missing is not None:
            op = "NOT IN" if clause.missing else "IN"
            return f"{alias}.pk {op} (SELECT pk FROM {table} WHERE p = ?)", [clause.param.key]
        op = "NOT IN" if clause.modifier == "not" else "IN"
        sub, args = self.matching(rtype, clause)
        return f"{alias}.pk {op} ({sub})", args

    def matching(self, rtype: str, clause: Clause) -> Sql:
        """The pks whose index rows match ``clause``'s values (``:not`` negated by the
        caller; ``:missing`` is not a row match)."""
        kind = clause.param.kind
        if clause.modifier == "identifier" or (kind == "reference" and clause.values
                                               and isinstance(clause.values[0], TokenValue)):
            kind = "reference-identifier"
        table = tables_for(rtype).index["reference" if kind.startswith("reference") else kind]
        ors, args = [], []
        for value in clause.values:
            cond, cargs = self.value(kind, clause.modifier, value, clause.param.key)
            ors.append(f"({cond})")
            args += cargs
        return (f"SELECT pk FROM {table} WHERE p = ? AND ({' OR '.join(ors)})",
                [clause.param.key, *args])

    def value(self, kind: str, modifier: str | None, v: Any, key: str) -> Sql:
        if kind == "token":
            return _token_sql(v, "system", "code")
        if kind == "reference-identifier":
            return _token_sql(v, "idsys", "idval")
        if kind == "string":
            if modifier == "exact":
                return "exact = ?", [v]
            if modifier == "contains":
                return "norm LIKE ? ESCAPE '\\'", [f"%{_like_escape(v)}%"]
            return "norm >= ? AND norm < ?", [v, _prefix_upper(v)]
        if kind == "uri":
            if modifier == "below":
                return "value >= ? AND value < ?", [v, _prefix_upper(v)]
            if modifier == "above":
                return "substr(?, 1, length(value)) = value", [v]
            return "value = ?", [v]
        if kind == "date":
            return _date_sql(v, self.date_width(key))
        if kind in ("number", "quantity"):
            cond, args = _number_sql(v)
            if kind == "quantity" and v.code:
                cond += " AND (code = ? OR unit = ?)"
                args += [v.code, v.code]
            if kind == "quantity" and v.system:
                cond += " AND system = ?"
                args.append(v.system)
            return cond, args
        assert isinstance(v, ReferenceValue)
        if v.url and v.rid:
            return "(url = ? OR (rid = ? AND rtype = ?))", [v.url, v.rid, v.rtype]
        if v.url:
            return "url = ?", [v.url]
        if v.rtype:
            return "rid = ? AND rtype = ?", [v.rid, v.rtype]
        return "rid = ?", [v.rid]


def _token_sql(v: TokenValue, sys_col: str, code_col: str) -> Sql:
    if v.text is not None:
        return "text LIKE ? ESCAPE '\\'", [f"%{_like_escape(v.text)}%"]
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


def _date_sql(v: RangeValue | tuple[RangeValue, ...], width: int) -> Sql:
    """Prefix semantics on [low, high). Each form is led by bounds it implies (low < high,
    and high - low <= width, the widest interval stored for the parameter), so SQLite can
    range-scan idx_date_low on both sides."""
    if isinstance(v, tuple):  # bounds merged by query.merge_date_bounds
        parts = [_date_sql(bound, width) for bound in v]
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


def _number_sql(v: RangeValue) -> Sql:
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


def keyset(columns: list[tuple[str, bool]], values: list[Any], after: bool) -> Sql:
    """Rows strictly after (or before) ``values`` in the order ``columns`` (NULL lowest)."""
    ors: list[str] = []
    args: list[Any] = []
    for i, (col, desc) in enumerate(columns):
        conds: list[str] = []
        cargs: list[Any] = []
        for pcol, _ in columns[:i]:
            pval = values[columns.index((pcol, _))]
            if pval is None:
                conds.append(f"{pcol} IS NULL")
            else:
                conds.append(f"{pcol} = ?")
                cargs.append(pval)
        val = values[i]
        greater = (not desc) == after
        if greater:
            conds.append(f"{col} IS NOT NULL" if val is None else f"{col} > ?")
        else:
            conds.append("0" if val is None else f"({col} < ? OR {col} IS NULL)")
        if val is not None:
            cargs.append(val)
        ors.append("(" + " AND ".join(conds) + ")")
        args += cargs
    return "(" + " OR ".join(ors) + ")", args


# SQLite's memory, whatever the number of worker threads (each has its connection):
# a page cache of SQLITE_CACHE_KIB per file per connection, and a process-wide soft
# limit on all of SQLite's heap (issue 27 item 9; it was 64 MiB per file per thread).
SQLITE_CACHE_KIB = 2048
SQLITE_SOFT_HEAP = 96 * 1024 * 1024


BLOB_IN_PLACE = 256 * 1024  # bodies from this size are written with sqlite3_blob_write


def _body_slot(body: bytes | None) -> tuple[str, Any]:
    """(SQL placeholder, argument) for a resource body: a large one is inserted as a
    zeroblob of its size and written in place afterwards — bound, SQLite would copy it
    twice and the cached statement keep a copy alive until its next use."""
    if body is not None and len(body) >= BLOB_IN_PLACE:
        return "zeroblob(?)", len(body)
    return "?", body


class SqliteStore:
    """The default store: one file in ``TELEIMG_DATA_DIR``; no server needed."""

    supports_transactions = True

    def __init__(self, path: Path,
                 indexer: Callable[[dict[str, Any], Memo | None], IndexRows] = extract) -> None:
        self.path = path
        # the audit journal's own file (ADR 0015): its frequent commits must not reset the
        # clinical file's page cache
        self.journal_path = path.with_name(f"{path.stem}-audit{path.suffix}")
        self.indexer = indexer
        self._local = threading.local()
        # Writers queue on a thread lock, then on a kernel file lock shared by all worker
        # processes: both wake the next writer at once, where SQLite's busy handler would
        # sleep and poll (seconds-long latency tails under concurrent writes).
        self._writer = threading.Lock()
        self._lock_fd = os.open(f"{path}.writer-lock", os.O_RDWR | os.O_CREAT, 0o600)
        self._indexer = threading.Lock()
        self._index_fd = os.open(f"{path}.index-lock", os.O_RDWR | os.O_CREAT, 0o600)
        self._migrate()

    # -- connections -------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   timeout=30.0)
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("ATTACH DATABASE ? AS journal", (str(self.journal_path),))
            for schema in SCHEMAS:
                conn.execute(f"PRAGMA {schema}.journal_mode=WAL")
                # an acknowledged write survives a crash
                conn.execute(f"PRAGMA {schema}.synchronous=FULL")
                # one page cache per thread's connection: bounded small (mapped pages
                # serve reads), all of SQLite's heap by SQLITE_SOFT_HEAP (issue 27 item 9)
                conn.execute(f"PRAGMA {schema}.cache_size=-{SQLITE_CACHE_KIB}")
                # Every commit by another connection (other workers) resets this
                # connection's page cache of that file; mapped pages are re-read without
                # a syscall.
                conn.execute(f"PRAGMA {schema}.mmap_size=1073741824")
            conn.execute("PRAGMA temp_store=MEMORY")
            conn.execute(f"PRAGMA soft_heap_limit={SQLITE_SOFT_HEAP}")  # process-wide
            budget.install(conn)  # the request's time budget interrupts reads (item 7)
            self._local.conn = conn
            self._local.depth = 0
        return conn

    def _migrate(self) -> None:
        """Run the scripts newer than the main file's ``user_version``, one write unit
        each. A script marked ``-- idempotent`` writes another file than the one holding
        the version: its version is set in a unit of its own after it commits (commits are
        atomic per file only), and it may run again after a crash.

        The whole migration — the first connection (its switch to WAL) and every script,
        each version read inside its unit — runs under an exclusive lock on
        ``<file>.migrate-lock``: processes opening a new file together (``serve``'s HTTP
        workers and listeners) wait for the first, then find the schema current. Holding
        the writer lock per script only was not enough: a process that re-ran the
        idempotent 0005 could set the version back to 5 after another had run 0006, and
        0006 ran twice (``no such view: main.audit_history``; issue 27 item 13).
        """
        fd = os.open(f"{self.path}.migrate-lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            conn = self._conn()
            for script in sorted(MIGRATIONS.glob("*.sql")):
                number = int(script.name.split("_", 1)[0])
                text = script.read_text()
                idempotent = "-- idempotent" in text
                with self.write():
                    if self._version(conn) >= number:
                        continue
                    # comments may hold semicolons: drop them before splitting statements
                    code = "\n".join(line for line in text.splitlines()
                                     if not line.lstrip().startswith("--"))
                    for statement in code.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    if not idempotent:
                        conn.execute(f"PRAGMA user_version = {number}")
                if idempotent:
                    with self.write():
                        if self._version(conn) < number:  # never set a version back
                            conn.execute(f"PRAGMA user_version = {number}")
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @staticmethod
    def _version(conn: sqlite3.Connection) -> int:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def write(self, durable: bool = True) -> Iterator[None]:
        conn = self._conn()
        if self._local.depth:
            self._local.depth += 1
            try:
                yield
            finally:
                self._local.depth -= 1
            return
        with self._writer:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                if not durable:  # WAL stays consistent; the next FULL commit syncs it
                    for schema in SCHEMAS:
                        conn.execute(f"PRAGMA {schema}.synchronous=NORMAL")
                conn.execute("BEGIN IMMEDIATE")
                self._local.depth = 1
                try:
                    yield
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                else:
                    conn.execute("COMMIT")
                finally:
                    self._local.depth = 0
            finally:
                if not durable:
                    for schema in SCHEMAS:
                        conn.execute(f"PRAGMA {schema}.synchronous=FULL")
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction so multi-statement reads (page + total) are consistent."""
        conn = self._conn()
        if self._local.depth:
            yield conn
            return
        conn.execute("BEGIN")
        self._local.depth = 1
        try:
            yield conn
        finally:
            self._local.depth = 0
            conn.execute("COMMIT")

    @contextmanager
    def lock(self, key: str) -> Iterator[None]:
        # Writers are serialised by BEGIN IMMEDIATE; the conditional check runs inside it.
        yield

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            os.close(self._index_fd)
            self._lock_fd = self._index_fd = -1

    # -- reads -------------------------------------------------------------------------
    def read(self, rtype: str, rid: str) -> Stored | None:
        if rtype in APPEND_ONLY_TYPES:
            self._catch_up()
        row = self._conn().execute(
            f"SELECT vid, updated, deleted, body, pk FROM {tables_for(rtype).resource} "
            "WHERE type = ? AND id = ?", (rtype, rid)).fetchone()
        if row is None:
            return None
        return Stored(rtype, rid, row[0], row[1], bool(row[2]), row[3], pk=row[4])

    def vread(self, rtype: str, rid: str, vid: int) -> Stored | None:
        if rtype in APPEND_ONLY_TYPES:
            self._catch_up()
        row = self._conn().execute(
            f"SELECT updated, method, body FROM {tables_for(rtype).history} "
            "WHERE type = ? AND id = ? AND vid = ?", (rtype, rid, vid)).fetchone()
        if row is None:
            return None
        return Stored(rtype, rid, vid, row[0], row[1] == "DELETE", row[2], row[1])

    @budget.interruptible
    def read_many(self, keys: list[tuple[str, str]]) -> list[Stored]:
        if any(rtype in APPEND_ONLY_TYPES for rtype, _ in keys):
            self._catch_up()
        out: list[Stored] = []
        conn = self._conn()
        for tables, group in _by_tables(sorted(set(keys)), lambda key: key[0]):
            for part in chunks(group, 400):
                cond = " OR ".join(["(type = ? AND id = ?)"] * len(part))
                args = [x for key in part for x in key]
                for row in conn.execute(
                        f"SELECT type, id, vid, updated, body, pk FROM {tables.resource} "
                        f"WHERE deleted = 0 AND ({cond})", args):
                    out.append(Stored(row[0], row[1], row[2], row[3], False, row[4], pk=row[5]))
        return out

    # -- writes ------------------------------------------------------------------------
    def put(self, item: Stored, rows: IndexRows | None) -> None:
        conn = self._conn()
        assert self._local.depth, "put() outside a write unit"
        if item.type in APPEND_ONLY_TYPES:
            journal_put(self, item)
            return
        # below: the clinical tables, named as such
        existing = conn.execute("SELECT pk, vid FROM resource WHERE type = ? AND id = ?",
                                (item.type, item.id)).fetchone()
        if item.vid != (existing[1] + 1 if existing else 1):
            raise FhirError(ErrorKind.CONFLICT, f"{item.type}/{item.id} was changed "
                            "concurrently; retry with the current version")
        # a large body is written in place (no bound copies, none kept by the statement
        # cache after the request: issue 27 items 8, 9)
        slot, arg = _body_slot(item.body)
        if existing:
            pk = existing[0]
            conn.execute(f"UPDATE resource SET vid = ?, updated = ?, deleted = ?, body = {slot} "
                         "WHERE pk = ?", (item.vid, item.updated, int(item.deleted), arg, pk))
            for table in (*CLINICAL.index.values(), CLINICAL.sort):
                conn.execute(f"DELETE FROM {table} WHERE pk = ?", (pk,))
        else:
            cur = conn.execute(
                "INSERT INTO resource (type, id, vid, updated, deleted, body) "
                f"VALUES (?, ?, ?, ?, ?, {slot})",
                (item.type, item.id, item.vid, item.updated, int(item.deleted), arg))
            pk = cur.lastrowid
        cur = conn.execute("INSERT INTO history (type, id, vid, updated, method, body) "
                           f"VALUES (?, ?, ?, ?, ?, {slot})",
                           (item.type, item.id, item.vid, item.updated, item.method, arg))
        if slot != "?" and item.body is not None and pk is not None and cur.lastrowid:
            for table, row in (("resource", pk), ("history", cur.lastrowid)):
                with conn.blobopen(table, "body", row) as blob:
                    blob.write(item.body)
        if rows is not None and not item.deleted:
            self._index(CLINICAL, [(pk, rows)])

    # -- the audit journal (ADR 0007, 0016) ----------------------------------------------
    def journal_append(self, records: list[tuple[int, int, bytes]]) -> None:
        """Insert chained records (sequence, AuditEvents it stands for, body) in bulk."""
        conn = self._conn()
        assert self._local.depth, "journal_append() outside a write unit"
        try:
            insert_rows(conn, "audit_record", "(seq, events, body)", records)
        except sqlite3.IntegrityError:
            raise FhirError(ErrorKind.CONFLICT, "a record of the batch already exists"
                            ) from None
        conn.execute("UPDATE journal_state SET indexed_upto = indexed_upto + ? "
                     "WHERE name = 'appended'", (sum(r[1] for r in records),))

    def journal_last(self) -> bytes | None:
        row = self._conn().execute(
            "SELECT body FROM audit_record ORDER BY seq DESC LIMIT 1").fetchone()
        return bytes(row[0]) if row else None

    def journal_records(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        return [(int(seq), bytes(body)) for seq, body in self._conn().execute(
            "SELECT seq, body FROM audit_record WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit))]

    def _journal_state(self) -> dict[str, int]:
        state = dict(self._conn().execute("SELECT name, indexed_upto FROM journal_state"))
        state["last_pk"] = self._conn().execute(
            "SELECT COALESCE(MAX(pk), 0) FROM audit_resource").fetchone()[0]
        return state

    def journal_backlog(self) -> int:
        """AuditEvents not yet expanded and indexed (events appended one by one before
        records existed included)."""
        state = self._journal_state()
        return state["appended"] - state["expanded"] + state["last_pk"] - state["audit"]

    @contextmanager
    def _indexing(self) -> Iterator[None]:
        """One indexer at a time across threads and worker processes: a second one would
        expand and extract the same records only to find them done."""
        with self._indexer:
            fcntl.flock(self._index_fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._index_fd, fcntl.LOCK_UN)

    def index_journal(self, limit: int = 1000) -> int:
        """Expand and index the oldest unexpanded records, about ``limit`` AuditEvents
        (at least one record); how many AuditEvents were indexed.

        Rows are computed outside the write unit (pure functions of the records); the
        unit writes them only if the watermark did not move meanwhile."""
        with self._indexing():
            state = self._journal_state()
            if state["last_pk"] > state["audit"]:
                return self._index_events(state["audit"], limit)
            conn = self._conn()
            upto = state["record"]
            expanded: list[tuple[str, int, bytes, IndexRows]] = []
            memo = Memo()  # the events of a record share elements: extracted once (ADR 0017)
            for seq, count, body in conn.execute(
                    "SELECT seq, events, body FROM audit_record WHERE seq > ? ORDER BY seq "
                    "LIMIT ?", (upto, limit)):
                if expanded and len(expanded) + count > limit:
                    break
                expanded.extend((event["id"], instant_us(event["meta"]["lastUpdated"]),
                                 orjson.dumps(event), self.indexer(event, memo))
                                for event in expand(orjson.loads(body)))
                upto = seq
            if not expanded:
                return 0
            with self.write(durable=False):
                if self._journal_state()["record"] != state["record"]:
                    return 0  # another indexer got there first; the caller asks again
                pk = state["last_pk"]
                items, entries = [], []
                for rid, updated, raw, rows in self._unclaimed(conn, expanded):
                    pk += 1
                    items.append((pk, "AuditEvent", rid, 1, updated, 0, raw))
                    entries.append((pk, rows))
                insert_rows(conn, "audit_resource",
                            "(pk, type, id, vid, updated, deleted, body)", items)
                self._index(JOURNAL, entries)
                conn.executemany("UPDATE journal_state SET indexed_upto = ? WHERE name = ?",
                                 [(upto, "record"), (pk, "audit"),
                                  (state["expanded"] + len(expanded), "expanded")])
            return len(expanded)

    @staticmethod
    def _unclaimed(conn: sqlite3.Connection, expanded: list[tuple[str, int, bytes, IndexRows]]
                   ) -> list[tuple[str, int, bytes, IndexRows]]:
        """The expanded AuditEvents whose id no earlier one took. Two records may name one
        id (two imports of an event racing): the first keeps it, ``audit verify`` reports
        the second, and indexing goes on instead of failing on it forever."""
        taken: set[str] = set()
        for part in chunks([e[0] for e in expanded], MAX_VARIABLES - 1):
            taken.update(row[0] for row in conn.execute(
                "SELECT id FROM audit_resource WHERE type = 'AuditEvent' AND id IN "
                f"({', '.join('?' * len(part))})", part))
        out = []
        for event in expanded:
            if event[0] in taken:
                log.warning("AuditEvent/%s is named by two journal records: the later one "
                            "is not stored (audit verify reports it)", event[0])
                continue
            taken.add(event[0])
            out.append(event)
        return out

    def _index_events(self, upto: int, limit: int) -> int:
        """Index AuditEvents appended one by one, before records existed."""
        conn = self._conn()
        records = conn.execute("SELECT pk, body FROM audit_resource WHERE pk > ? "
                               "ORDER BY pk LIMIT ?", (upto, limit)).fetchall()
        entries = [(pk, self.indexer(orjson.loads(body), None)) for pk, body in records]
        with self.write(durable=False):
            self._index(JOURNAL, entries)
            conn.execute("UPDATE journal_state SET indexed_upto = ? WHERE name = 'audit'",
                         (records[-1][0],))
        return len(records)

    def _catch_up(self) -> None:
        """Before reading the journal's AuditEvents or index tables: expand and index every
        record appended so far, so a read or search sees every event recorded before it
        (read-your-writes for auditors). Not inside a unit: indexing takes the indexer
        lock, which must never be awaited while holding the writer lock."""
        if getattr(self._local, "depth", 0):
            return
        while self.journal_backlog() and self.index_journal():
            pass

    def _index(self, tables: Tables, entries: list[tuple[int, IndexRows]]) -> None:
        conn = self._conn()
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

    # -- search ------------------------------------------------------------------------
    @budget.interruptible
    def search(self, query: SearchQuery, count_only: bool = False) -> Page:
        tables = tables_for(query.type)
        if APPEND_ONLY_TYPES & types_read(query.type, query.terms):
            self._catch_up()
        with self._snapshot() as conn:
            compiler = SqlCompiler(conn)
            where, args = compiler.where("r", query.type, query.terms)
            head, head_args = compiler.prefix()
            total = None
            if count_only or query.total in ("accurate", "estimate"):
                total = conn.execute(
                    f"{head}SELECT COUNT(*) FROM {tables.resource} r WHERE {where}",
                    [*head_args, *args]).fetchone()[0]
            if count_only:
                return Page([], total)
            joins, jargs, columns = [], [], []
            for i, (param, desc) in enumerate(query.sort):
                joins.append(f"LEFT JOIN {tables.sort} s{i} ON s{i}.pk = r.pk AND s{i}.p = ?")
                jargs.append(param.key)
                columns.append((f"s{i}.{'desc_key' if desc else 'asc_key'}", desc))
            columns.append(("r.pk", False))
            cursor = query.cursor
            after = cursor is None or cursor["d"] == "after"
            page_where, page_args = where, list(args)
            if cursor is not None:
                if len(cursor["k"]) != len(columns):
                    raise invalid("paging cursor does not match the search", "_cursor")
                cond, cargs = keyset(columns, cursor["k"], after)
                page_where += f" AND {cond}"
                page_args += cargs
            order = ", ".join(
                f"{col} {'DESC' if desc == after else 'ASC'}" for col, desc in columns)
            select_cols = ", ".join(col for col, _ in columns)
            rows = conn.execute(
                f"{head}SELECT r.type, r.id, r.vid, r.updated, r.body, {select_cols} "
                f"FROM {tables.resource} r {' '.join(joins)} WHERE {page_where} ORDER BY {order} "
                f"LIMIT ?", [*head_args, *jargs, *page_args, query.count + 1]).fetchall()
        more = len(rows) > query.count
        rows = rows[:query.count]
        if not after:
            rows.reverse()
        items = [Stored(r[0], r[1], r[2], r[3], False, r[4], pk=r[-1], key=list(r[5:]))
                 for r in rows]
        return keyset_page(items, total, list(rows[0][5:]) if rows else None,
                           list(rows[-1][5:]) if rows else None, cursor, more)

    @budget.interruptible
    def values(self, query: SearchQuery, keys: list[str]) -> dict[str, list[tuple[Any, ...]]]:
        tables = tables_for(query.type)
        if APPEND_ONLY_TYPES & types_read(query.type, query.terms):
            self._catch_up()
        by_kind: dict[str, list[str]] = {}
        for key in keys:
            by_kind.setdefault(param_kind(key), []).append(key)
        out: dict[str, list[tuple[Any, ...]]] = {key: [] for key in keys}
        with self._snapshot() as conn:
            compiler = SqlCompiler(conn)
            where, args = compiler.where("r", query.type, query.terms)
            head, head_args = compiler.prefix()
            head = f"{head.rstrip()}, " if head else "WITH "
            for kind, wanted in by_kind.items():
                columns = ", ".join(
                    f"x.{c}" for c in INDEX_COLUMNS[kind].strip("()").split(", ")[2:])
                rows = conn.execute(
                    f"{head}m AS (SELECT r.pk FROM {tables.resource} r WHERE {where}) "
                    f"SELECT x.p, x.pk, {columns} FROM {tables.index[kind]} x JOIN m "
                    f"ON x.pk = m.pk WHERE x.p IN ({','.join('?' * len(wanted))})",
                    [*head_args, *args, *wanted]).fetchall()
                for row in rows:
                    out[row[0]].append(tuple(row[1:]))
        return out

    @budget.interruptible
    def outgoing(self, items: list[Stored], param_keys: list[str]) -> list[tuple[str, str]]:
        if not param_keys:
            return []
        out: list[tuple[str, str]] = []
        conn = self._conn()
        for tables, group in _by_tables([i for i in items if i.pk], lambda item: item.type):
            if tables.append_only:
                self._catch_up()
            for part in chunks([i.pk for i in group], 500):
                rows = conn.execute(
                    f"SELECT DISTINCT rtype, rid FROM {tables.index['reference']} WHERE pk IN "
                    f"({','.join('?' * len(part))}) AND p IN "
                    f"({','.join('?' * len(param_keys))}) AND rid IS NOT NULL",
                    [*part, *param_keys]).fetchall()
                out += [(r[0], r[1]) for r in rows if r[0]]
        return out

    @budget.interruptible
    def incoming(self, param_keys: list[str], targets: list[tuple[str, str]]) -> list[Stored]:
        if not targets or not param_keys:
            return []
        out: list[Stored] = []
        conn = self._conn()
        # a parameter key is "SourceType.name": its source type says which tables hold it
        for tables, keys in _by_tables(param_keys, lambda key: key.split(".", 1)[0]):
            if tables.append_only:
                self._catch_up()
            for part in chunks(targets, 300):
                cond = " OR ".join(["(x.rid = ? AND x.rtype = ?)"] * len(part))
                args = [v for (t, i) in part for v in (i, t)]
                rows = conn.execute(
                    f"SELECT DISTINCT r.type, r.id, r.vid, r.updated, r.body, r.pk FROM "
                    f"{tables.resource} r JOIN {tables.index['reference']} x ON x.pk = r.pk "
                    f"WHERE r.deleted = 0 AND x.p IN ({','.join('?' * len(keys))}) "
                    f"AND ({cond})", [*keys, *args])
                while batch := rows.fetchmany(200):
                    budget.take_rows(len(batch))  # bounded while read, not after
                    out += [Stored(r[0], r[1], r[2], r[3], False, r[4], pk=r[5])
                            for r in batch]
        return out

    # -- history -----------------------------------------------------------------------
    @budget.interruptible
    def history(self, rtype: str | None, rid: str | None, since: int | None,
                count: int, cursor: dict[str, Any] | None, counted: bool = True) -> Page:
        """System history is the clinical history: journal types are listed by type."""
        if rtype in APPEND_ONLY_TYPES:
            self._catch_up()
        table = tables_for(rtype).history
        conds: list[str] = ["1"]
        args: list[Any] = []
        if rtype:
            conds.append("type = ?")
            args.append(rtype)
        if rid:
            conds.append("id = ?")
            args.append(rid)
        if since is not None:
            conds.append("updated >= ?")
            args.append(since)
        base = " AND ".join(conds)
        after = cursor is None or cursor["d"] == "after"
        page_where, page_args = base, list(args)
        if cursor is not None:
            page_where += " AND seq < ?" if after else " AND seq > ?"
            page_args.append(cursor["k"][0])
        order = "DESC" if after else "ASC"
        with self._snapshot() as conn:
            total = conn.execute(f"SELECT COUNT(*) FROM {table} WHERE {base}",
                                 args).fetchone()[0] if counted else None
            rows = conn.execute(
                f"SELECT type, id, vid, updated, method, body, seq FROM {table} "
                f"WHERE {page_where} ORDER BY seq {order} LIMIT ?",
                [*page_args, count + 1]).fetchall()
        more = len(rows) > count
        rows = rows[:count]
        if not after:
            rows.reverse()
        items = [Stored(r[0], r[1], r[2], r[3], r[4] == "DELETE", r[5], r[4], pk=r[6])
                 for r in rows]
        return keyset_page(items, total, [rows[0][6]] if rows else None,
                           [rows[-1][6]] if rows else None, cursor, more)


def _by_tables(items: list[T], type_of: Callable[[T], str]) -> list[tuple[Tables, list[T]]]:
    groups: dict[bool, list[T]] = {}
    for item in items:
        groups.setdefault(tables_for(type_of(item)).append_only, []).append(item)
    return [(JOURNAL if journal else CLINICAL, group) for journal, group in groups.items()]
