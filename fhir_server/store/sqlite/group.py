"""Group commit for the embedded store (issue 32, ADR 0026).

Every write unit of a process runs on one writer connection, one unit at a time, each in
a savepoint of its own: a failing unit rolls back alone and its caller gets the error at
once. A unit that ends while other threads of the process are queued for the writer
leaves the transaction open and waits; the last unit of the queue — or the
``max_units``-th — commits them all with one flush to disk, and only then does each of
them return (so nothing is answered before it is on disk, R-INT-2). A lone writer
commits its own unit at once: one client sees the latency it always had.

Between processes (HTTP workers, listeners) the kernel lock on ``<file>.writer-lock`` is
held from ``BEGIN IMMEDIATE`` to ``COMMIT`` of a batch, as it was per unit.

A batch is durable (``synchronous=FULL``) or not (``NORMAL``: read-audit batches, the
HL7 claim of a message answered only after a durable unit); SQLite cannot change that
inside a transaction, so a durable unit arriving on an open non-durable batch commits
that batch first and opens its own.
"""

from __future__ import annotations

import fcntl
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from fhir_server.store.sqlite.records import SCHEMAS


@dataclass
class Batch:
    """One open transaction and the units it holds."""

    durable: bool
    units: int = 0
    done: bool = False
    error: BaseException | None = None


class BatchFailed(sqlite3.OperationalError):
    """The commit of a batch failed: none of its units is on disk."""


class GroupCommit:
    """The writer connection of one store in one process, and its open batch."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], lock_fd: Callable[[], int],
                 max_units: int = 32) -> None:
        self._connect = connect
        self._lock_fd = lock_fd
        self.max_units = max_units
        self._conn: sqlite3.Connection | None = None
        self._mutex = threading.Lock()  # the writer connection: one unit body at a time
        self._state = threading.Condition()  # queue length and batch completion
        self._queued = 0
        self._open: Batch | None = None
        self.commits = 0  # batches committed (tests, metrics)
        self.units = 0  # units committed

    @property
    def connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def close(self) -> None:
        with self._mutex:
            if self._open is not None:
                self._finish(self._open)
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @contextmanager
    def unit(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """A write unit on the writer connection; returns once it is committed."""
        with self._state:
            self._queued += 1
        self._mutex.acquire()
        with self._state:
            self._queued -= 1
        try:
            batch = self._join(durable)
        except BaseException:
            self._mutex.release()
            raise
        conn = self.connection
        conn.execute("SAVEPOINT unit")
        try:
            yield conn
        except BaseException:
            self._abandon(batch, conn)
            raise
        try:
            conn.execute("RELEASE unit")
        except BaseException as exc:
            self._abandon(batch, conn, exc)
            raise
        batch.units += 1
        self._leave(batch)

    # -- the steps ---------------------------------------------------------------------
    def _join(self, durable: bool) -> Batch:
        """The open batch this unit joins (under the mutex), opened if none is."""
        batch = self._open
        if batch is not None and durable and not batch.durable:
            self._finish(batch)  # its waiters are answered; this unit needs a flush
            batch = None
        if batch is not None:
            return batch
        conn = self.connection
        fd = self._lock_fd()
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if not durable:  # WAL stays consistent; the next FULL commit syncs it
                for schema in SCHEMAS:
                    conn.execute(f"PRAGMA {schema}.synchronous=NORMAL")
            conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._restore(conn, durable)
            fcntl.flock(fd, fcntl.LOCK_UN)
            raise
        self._open = Batch(durable)
        return self._open

    def _abandon(self, batch: Batch, conn: sqlite3.Connection,
                 error: BaseException | None = None) -> None:
        """A unit failed: undo it alone; the batch goes on with the others."""
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK TO unit")
                conn.execute("RELEASE unit")
        except sqlite3.Error as exc:
            error = error or exc
        if not conn.in_transaction or error is not None:
            # SQLite rolled the whole transaction back (an I/O error, an interrupt), or
            # the savepoint could not be undone: the batch is lost, as its units learn
            self._finish(batch, error or BatchFailed("the transaction was rolled back"))
        self._leave(batch, failed=True)

    def _leave(self, batch: Batch, failed: bool = False) -> None:
        """After a unit: commit now (nobody queued, or the batch is full) or hand over to
        the next queued unit and wait for the commit; release the mutex either way."""
        if batch.done:
            self._mutex.release()
        else:
            with self._state:
                queued = self._queued
            if queued and batch.units < self.max_units:
                self._mutex.release()
                if failed:  # nothing of it to wait for
                    return
                with self._state:
                    while not batch.done:
                        self._state.wait()
            else:
                try:
                    self._finish(batch)
                finally:
                    self._mutex.release()
        if not failed and batch.error is not None:
            raise BatchFailed(f"commit failed: {batch.error}") from batch.error

    def _finish(self, batch: Batch, error: BaseException | None = None) -> None:
        """Commit (or, with ``error`` or no unit kept, roll back) ``batch``; wake its
        waiters. Under the mutex."""
        conn = self.connection
        try:
            if conn.in_transaction:
                if error is None and batch.units:
                    try:
                        conn.execute("COMMIT")
                    except sqlite3.Error as exc:
                        error = exc
                        conn.execute("ROLLBACK")
                else:
                    conn.execute("ROLLBACK")
        finally:
            self._restore(conn, batch.durable)
            fcntl.flock(self._lock_fd(), fcntl.LOCK_UN)
            if self._open is batch:
                self._open = None
            if error is None and batch.units:
                self.commits += 1
                self.units += batch.units
            with self._state:
                batch.error = error
                batch.done = True
                self._state.notify_all()

    @staticmethod
    def _restore(conn: sqlite3.Connection, durable: bool) -> None:
        if not durable:
            for schema in SCHEMAS:
                conn.execute(f"PRAGMA {schema}.synchronous=FULL")
