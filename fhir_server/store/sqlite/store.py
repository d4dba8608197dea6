"""The embedded store: SQLite (standard library), WAL, ``synchronous=FULL`` (ADR 0003).

One read connection per thread; the write units of a process run one at a time on one
writer connection and commit in groups (:mod:`.group`, ADR 0026) inside ``BEGIN
IMMEDIATE … COMMIT``, which serialises writers across threads *and* processes, so
conditional interactions checked inside a unit are race-free. Searches compile to
``pk IN (SELECT pk FROM idx_… WHERE p = ? AND …)`` over the typed index tables — never
a scan of the bodies: :mod:`.compiler` makes the plan, this module runs it;
:mod:`.records` is the table format, :mod:`.journal` the audit journal.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from fhir_server.audit.chain import journal_put
from fhir_server.core.errors import ErrorKind, FhirError, invalid
from fhir_server.search.extract import IndexRows, Memo, extract
from fhir_server.search.kinds import KINDS
from fhir_server.search.query import SearchQuery, types_read
from fhir_server.search.registry import param_kind
from fhir_server.store import budget
from fhir_server.store.base import (
    APPEND_ONLY_TYPES,
    DAY_US,
    FILL_CHUNK,
    GROUPED,
    SUMMARIES,
    SUMMARY_COLUMNS,
    Page,
    Stored,
    Summary,
    SummaryReads,
    chunks,
    keyset_page,
    summaries_of,
)
from fhir_server.store.sqlite.compiler import SqlCompiler, SqlPlan, keyset
from fhir_server.store.sqlite.group import GroupCommit
from fhir_server.store.sqlite.journal import SqliteJournal
from fhir_server.store.sqlite.records import (
    CLINICAL,
    MIGRATIONS,
    SCHEMAS,
    body_slot,
    by_tables,
    insert_rows,
    read_date_widths,
    tables_for,
    write_index,
)

# SQLite's memory, whatever the number of worker threads (each has its connection):
# a page cache of SQLITE_CACHE_KIB per file per connection, and a process-wide soft
# limit on all of SQLite's heap (issue 27 item 9; it was 64 MiB per file per thread).
SQLITE_CACHE_KIB = 2048
SQLITE_SOFT_HEAP = 96 * 1024 * 1024



def _write_summary(conn: sqlite3.Connection, summary: Summary,
                   entries: list[tuple[int, IndexRows]]) -> None:
    rows = [(pk, k, summary.name, *row, *[None] * (1 + SUMMARY_COLUMNS - len(row)))
            for pk, index in entries for k, row in enumerate(summary.rows(index))]
    names = ", ".join(f"v{i}" for i in range(SUMMARY_COLUMNS))
    insert_rows(conn, "summary", f"(pk, k, s, day, {names})", rows)


class SqliteStore(SummaryReads):
    """The default store: one file in ``TELEIMG_DATA_DIR``; no server needed."""

    supports_transactions = True
    savepoints = True
    serial_units = True

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
        self._lock_fd = os.open(f"{path}.writer-lock", os.O_RDWR | os.O_CREAT, 0o600)
        self._group = GroupCommit(self._connect, lambda: self._lock_fd)
        self._readers: list[sqlite3.Connection] = []  # every thread's, closed by close()
        self._readers_lock = threading.Lock()
        self._journal = SqliteJournal(self, path)
        self._filled: set[str] = set()  # summaries known filled in this file
        self._fill_cursor: dict[str, int] = {}  # the last pk filled, per summary
        self._filler: threading.Thread | None = None
        self._filler_lock = threading.Lock()
        self._migrate()

    # -- connections -------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        """This thread's connection: the writer's inside a write unit, else its own (read
        snapshots)."""
        if getattr(self._local, "writing", False):
            return self._group.connection
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            self._local.depth = 0
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def _connect(self) -> sqlite3.Connection:
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
            self._conn()  # the first connection switches the files to WAL
            for script in sorted(MIGRATIONS.glob("*.sql")):
                number = int(script.name.split("_", 1)[0])
                text = script.read_text()
                idempotent = "-- idempotent" in text
                with self.write():
                    conn = self._conn()
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
                        conn = self._conn()
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
        """A write unit; one nested in another is a savepoint of it: its failure undoes
        it alone (the enclosing unit may still commit, e.g. the audit of a refused
        write). The outermost unit commits with the group (:mod:`.group`)."""
        if getattr(self._local, "writing", False):
            conn = self._group.connection
            name = f"nested{self._local.depth}"
            conn.execute(f"SAVEPOINT {name}")
            self._local.depth += 1
            try:
                yield
            except BaseException:
                if conn.in_transaction:
                    conn.execute(f"ROLLBACK TO {name}")
                    conn.execute(f"RELEASE {name}")
                raise
            else:
                conn.execute(f"RELEASE {name}")
            finally:
                self._local.depth -= 1
            return
        self._conn()  # this thread's state
        with self._group.unit(durable):
            self._local.writing, self._local.depth = True, 1
            try:
                yield
            finally:
                self._local.writing, self._local.depth = False, 0

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
        """Close every connection of the store, those of the threads that read through
        it included (pool threads outlive a store: their connections must not)."""
        self._local.conn = None
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for conn in readers:
            conn.close()
        self._group.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
        self._journal.close()

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
        for tables, group in by_tables(sorted(set(keys)), lambda key: key[0]):
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
        assert getattr(self._local, "writing", False), "put() outside a write unit"
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
        slot, arg = body_slot(item.body)
        if existing:
            pk = existing[0]
            conn.execute(f"UPDATE resource SET vid = ?, updated = ?, deleted = ?, body = {slot} "
                         "WHERE pk = ?", (item.vid, item.updated, int(item.deleted), arg, pk))
            for table in (*CLINICAL.index.values(), CLINICAL.sort, "summary"):
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
            write_index(conn, CLINICAL, [(pk, rows)])
            for summary in summaries_of(item.type):
                _write_summary(conn, summary, [(pk, rows)])


    # -- the audit journal (ADR 0007, 0016): :mod:`.journal` ---------------------------
    def in_unit(self) -> bool:
        """Whether this thread is inside a write unit or a read snapshot."""
        return bool(getattr(self._local, "depth", 0))

    def journal_append(self, records: list[tuple[int, int, bytes]]) -> None:
        """Insert chained records (sequence, AuditEvents it stands for, body) in bulk."""
        self._journal.append(records)

    def journal_last(self) -> bytes | None:
        return self._journal.last()

    def journal_records(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        return self._journal.records(after, limit)

    def journal_backlog(self) -> int:
        return self._journal.backlog()

    def index_journal(self, limit: int = 1000) -> int:
        return self._journal.index(limit)

    def _catch_up(self) -> None:
        self._journal.catch_up()

    # -- search ------------------------------------------------------------------------
    @staticmethod
    def _plan(conn: sqlite3.Connection, query: SearchQuery) -> SqlPlan:
        """The compiled search; the date widths are read (once) only if a clause needs
        them."""
        return SqlCompiler(partial(read_date_widths, conn)).plan("r", query.type,
                                                                 query.terms)

    @budget.interruptible
    def search(self, query: SearchQuery, count_only: bool = False) -> Page:
        tables = tables_for(query.type)
        if APPEND_ONLY_TYPES & types_read(query.type, query.terms):
            self._catch_up()
        with self._snapshot() as conn:
            plan = self._plan(conn, query)
            where, args, head, head_args = plan.where, plan.args, plan.head, plan.head_args
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
            plan = self._plan(conn, query)
            where, args, head_args = plan.where, plan.args, plan.head_args
            head = f"{plan.head.rstrip()}, " if plan.head else "WITH "
            for kind, wanted in by_kind.items():
                columns = ", ".join(f"x.{c}" for c in KINDS[kind].columns)
                rows = conn.execute(
                    f"{head}m AS (SELECT r.pk FROM {tables.resource} r WHERE {where}) "
                    f"SELECT x.p, x.pk, {columns} FROM {tables.index[kind]} x JOIN m "
                    f"ON x.pk = m.pk WHERE x.p IN ({','.join('?' * len(wanted))})",
                    [*head_args, *args, *wanted]).fetchall()
                for row in rows:
                    out[row[0]].append(tuple(row[1:]))
        return out

    @budget.interruptible
    def tally(self, query: SearchQuery, keys: list[str], by: str | None = None
              ) -> dict[str, list[tuple[Any, ...]]]:
        """One GROUP BY per index kind over the compiled match (R-EVAL-1: a year of
        100 000 requests counted in SQLite, not in Python)."""
        tables = tables_for(query.type)
        if APPEND_ONLY_TYPES & types_read(query.type, query.terms):
            self._catch_up()
        by_kind: dict[str, list[str]] = {}
        for key in keys:
            by_kind.setdefault(param_kind(key), []).append(key)
        out: dict[str, list[tuple[Any, ...]]] = {key: [] for key in keys}
        with self._snapshot() as conn:
            plan = self._plan(conn, query)
            head = f"{plan.head.rstrip()}, " if plan.head else "WITH "
            for kind, wanted in by_kind.items():
                group = [f"x.{c}" for c in KINDS[kind].columns[:GROUPED[kind]]]
                day, join, join_args = "", "", []
                if by is not None:
                    day = f"d.low / {DAY_US}, "
                    join = f"JOIN {tables.index['date']} d ON d.pk = x.pk AND d.p = ? "
                    join_args = [by]
                fields = ", ".join(group)
                rows = conn.execute(
                    f"{head}m AS (SELECT r.pk FROM {tables.resource} r WHERE {plan.where}) "
                    f"SELECT x.p, {day}{fields}, count(*) FROM {tables.index[kind]} x "
                    f"JOIN m ON x.pk = m.pk {join}"
                    f"WHERE x.p IN ({','.join('?' * len(wanted))}) "
                    f"GROUP BY x.p, {day}{fields}",
                    [*plan.head_args, *plan.args, *join_args, *wanted]).fetchall()
                for row in rows:
                    out[row[0]].append(tuple(row[1:]))
        return out

    def _summary(self, name: str, days: tuple[int, int], where: list[tuple[str, Any]],
                 columns: list[str], grouped: bool) -> list[tuple[Any, ...]] | None:
        summary = SUMMARIES[name]
        column = {"day": "day", **{c.name: f"v{i}" for i, c in enumerate(summary.columns)}}
        if not self._ready(summary):
            return None
        conds, args = ["s = ?", "day >= ?", "day < ?"], [name, *days]
        for col, value in where:
            values = value if isinstance(value, list | tuple) else [value]
            conds.append(f"{column[col]} IN ({','.join('?' * len(values))})")
            args += values
        picked = ", ".join(column[c] for c in columns)
        if grouped:
            select = f"{picked + ', ' if picked else ''}count(*)"
            tail = f" GROUP BY {picked}" if picked else ""
        else:
            select, tail = picked, ""
        with self._snapshot() as conn:
            return [tuple(row) for row in conn.execute(
                f"SELECT {select} FROM summary WHERE {' AND '.join(conds)}{tail}", args)]

    def _marked_filled(self, name: str) -> bool:
        return self._conn().execute("SELECT 1 FROM summary_filled WHERE s = ?",
                                    (name,)).fetchone() is not None

    def _fill_all(self) -> None:
        try:
            while self.fill_summaries():
                pass
        finally:
            self.close_thread()

    def close_thread(self) -> None:
        """Close this thread's connection (a worker thread that ends)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            with self._readers_lock:
                self._readers = [c for c in self._readers if c is not conn]
            conn.close()
            self._local.conn = None

    def fill_summaries(self, limit: int = FILL_CHUNK) -> int:
        """Summary rows of up to ``limit`` resources stored before their summary was
        declared (an upgraded file), from their index rows, in one write unit; how many
        (0: every summary is filled). Resources written meanwhile keep their own rows:
        a chunk deletes and rewrites the rows of its resources only."""
        for summary in SUMMARIES.values():
            if summary.name in self._filled:
                continue
            with self.write():
                conn = self._conn()  # the writer's connection (group commit, ADR 0026)
                if conn.execute("SELECT 1 FROM summary_filled WHERE s = ?",
                                (summary.name,)).fetchone() is not None:
                    self._filled.add(summary.name)
                    continue
                after = self._fill_cursor.get(summary.name, 0)
                pks = [r[0] for r in conn.execute(
                    "SELECT pk FROM resource WHERE type = ? AND deleted = 0 AND pk > ? "
                    "ORDER BY pk LIMIT ?", (summary.rtype, after, limit))]
                if not pks:
                    conn.execute("INSERT OR IGNORE INTO summary_filled (s) VALUES (?)",
                                 (summary.name,))
                    self._filled.add(summary.name)
                    continue
                keys = sorted({summary.when, *(c.key for c in summary.columns)})
                for part in chunks(pks, 500):
                    marks = ",".join("?" * len(part))
                    conn.execute(f"DELETE FROM summary WHERE s = ? AND pk IN ({marks})",
                                 [summary.name, *part])
                    entries = {pk: IndexRows() for pk in part}
                    for kind in sorted({param_kind(k) for k in keys}):
                        cols = ", ".join(KINDS[kind].columns)
                        for row in conn.execute(
                                f"SELECT pk, p, {cols} FROM {CLINICAL.index[kind]} "
                                f"WHERE pk IN ({marks}) AND p IN "
                                f"({','.join('?' * len(keys))})", [*part, *keys]):
                            getattr(entries[row[0]], kind).append(tuple(row[1:]))
                    _write_summary(conn, summary, list(entries.items()))
            self._fill_cursor[summary.name] = pks[-1]
            return len(pks)
        return 0

    @budget.interruptible
    def outgoing(self, items: list[Stored], param_keys: list[str]) -> list[tuple[str, str]]:
        if not param_keys:
            return []
        out: list[tuple[str, str]] = []
        conn = self._conn()
        for tables, group in by_tables([i for i in items if i.pk], lambda item: item.type):
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
        for tables, keys in by_tables(param_keys, lambda key: key.split(".", 1)[0]):
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

