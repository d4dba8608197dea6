"""The embedded store's audit journal (ADR 0007, 0015, 0016): chained records appended
in bulk, expanded into AuditEvents and indexed later — by an idle-time indexer, or before
any read of the journal's types (read-your-writes for auditors)."""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from fhir_server.audit.records import expand, instant_us
from fhir_server.core.errors import ErrorKind, FhirError
from fhir_server.search.extract import IndexRows, Memo
from fhir_server.store.base import chunks
from fhir_server.store.sqlite.records import JOURNAL, MAX_VARIABLES, insert_rows, write_index

if TYPE_CHECKING:
    from fhir_server.store.sqlite.store import SqliteStore

log = logging.getLogger("teleimagerie.store")


class SqliteJournal:
    """The journal tables of one store (``audit_record``, ``journal_state`` and the
    ``audit_`` resource and index tables in the journal file)."""

    def __init__(self, store: SqliteStore, path: Path) -> None:
        self.store = store
        # one indexer at a time, across threads and worker processes
        self._indexer = threading.Lock()
        self._index_fd = os.open(f"{path}.index-lock", os.O_RDWR | os.O_CREAT, 0o600)

    def close(self) -> None:
        if self._index_fd >= 0:
            os.close(self._index_fd)
            self._index_fd = -1

    def append(self, records: list[tuple[int, int, bytes]]) -> None:
        """Insert chained records (sequence, AuditEvents it stands for, body) in bulk."""
        conn = self.store._conn()
        assert self.store.in_unit(), "journal_append() outside a write unit"
        try:
            insert_rows(conn, "audit_record", "(seq, events, body)", records)
        except sqlite3.IntegrityError:
            raise FhirError(ErrorKind.CONFLICT, "a record of the batch already exists"
                            ) from None
        conn.execute("UPDATE journal_state SET indexed_upto = indexed_upto + ? "
                     "WHERE name = 'appended'", (sum(r[1] for r in records),))

    def last(self) -> bytes | None:
        row = self.store._conn().execute(
            "SELECT body FROM audit_record ORDER BY seq DESC LIMIT 1").fetchone()
        return bytes(row[0]) if row else None

    def records(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        return [(int(seq), bytes(body)) for seq, body in self.store._conn().execute(
            "SELECT seq, body FROM audit_record WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit))]

    def state(self) -> dict[str, int]:
        state = dict(self.store._conn().execute("SELECT name, indexed_upto FROM journal_state"))
        state["last_pk"] = self.store._conn().execute(
            "SELECT COALESCE(MAX(pk), 0) FROM audit_resource").fetchone()[0]
        return state

    def backlog(self) -> int:
        """AuditEvents not yet expanded and indexed (events appended one by one before
        records existed included)."""
        state = self.state()
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

    def index(self, limit: int = 1000) -> int:
        """Expand and index the oldest unexpanded records, about ``limit`` AuditEvents
        (at least one record); how many AuditEvents were indexed.

        Rows are computed outside the write unit (pure functions of the records); the
        unit writes them only if the watermark did not move meanwhile."""
        with self._indexing():
            state = self.state()
            if state["last_pk"] > state["audit"]:
                return self._index_events(state["audit"], limit)
            conn = self.store._conn()
            upto = state["record"]
            expanded: list[tuple[str, int, bytes, IndexRows]] = []
            memo = Memo()  # the events of a record share elements: extracted once (ADR 0017)
            for seq, count, body in conn.execute(
                    "SELECT seq, events, body FROM audit_record WHERE seq > ? ORDER BY seq "
                    "LIMIT ?", (upto, limit)):
                if expanded and len(expanded) + count > limit:
                    break
                expanded.extend((event["id"], instant_us(event["meta"]["lastUpdated"]),
                                 orjson.dumps(event), self.store.indexer(event, memo))
                                for event in expand(orjson.loads(body)))
                upto = seq
            if not expanded:
                return 0
            with self.store.write(durable=False):
                conn = self.store._conn()  # the writer's connection, inside the unit
                if self.state()["record"] != state["record"]:
                    return 0  # another indexer got there first; the caller asks again
                pk = state["last_pk"]
                items, entries = [], []
                for rid, updated, raw, rows in self._unclaimed(conn, expanded):
                    pk += 1
                    items.append((pk, "AuditEvent", rid, 1, updated, 0, raw))
                    entries.append((pk, rows))
                insert_rows(conn, "audit_resource",
                            "(pk, type, id, vid, updated, deleted, body)", items)
                write_index(conn, JOURNAL, entries)
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
        conn = self.store._conn()
        records = conn.execute("SELECT pk, body FROM audit_resource WHERE pk > ? "
                               "ORDER BY pk LIMIT ?", (upto, limit)).fetchall()
        entries = [(pk, self.store.indexer(orjson.loads(body), None)) for pk, body in records]
        with self.store.write(durable=False):
            conn = self.store._conn()
            write_index(conn, JOURNAL, entries)
            conn.execute("UPDATE journal_state SET indexed_upto = ? WHERE name = 'audit'",
                         (records[-1][0],))
        return len(records)

    def catch_up(self) -> None:
        """Before reading the journal's AuditEvents or index tables: expand and index every
        record appended so far, so a read or search sees every event recorded before it
        (read-your-writes for auditors). Not inside a unit: indexing takes the indexer
        lock, which must never be awaited while holding the writer lock."""
        if self.store.in_unit():
            return
        while self.backlog() and self.index():
            pass

