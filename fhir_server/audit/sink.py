"""Where AuditEvents go: chained into the store (R-SEC-3; ADR 0005).

Events of writes and of refused or failed requests are appended before the response
leaves (``durable=True``). Events of successful reads and searches are queued and
appended by a background thread in batches of at most ``max_batch`` (one write unit per
batch instead of one fsync per read), at least every ``interval`` seconds. The chain
orders events by append, not by arrival; each carries its ``recorded`` time. When the
queue reaches ``max_pending``, readers wait for the writer (back-pressure, never an
unbounded queue). The queue is drained on shutdown; a crash can lose at most the queued
read events, never a write's. Read batches are committed without waiting for the disk
(WAL, ``synchronous=NORMAL``): a power loss can also take the last such batches.

The store indexes events after they are appended (ADR 0007). The same thread does that
work when no event arrived for ``interval`` (idle time), or at once when more than
``max_lag`` events wait, so a busy server spends its CPU on requests and the backlog
stays bounded; a search on AuditEvent indexes whatever is left before it runs.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from fhir_server.audit.chain import Report, append, head, verify
from fhir_server.store.base import Store

log = logging.getLogger("teleimagerie.audit")


class AuditSink:
    def __init__(self, store: Store, interval: float = 0.2, max_batch: int = 200,
                 max_pending: int = 10000, max_lag: int = 50_000,
                 index_chunk: int = 500) -> None:
        self.store = store
        self.max_lag = max_lag
        self.index_chunk = index_chunk
        self.interval = interval
        self.max_batch = max_batch
        self.max_pending = max_pending
        self._pending: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._flushing = threading.Lock()  # the background drain and flush() never interleave
        self._stop = False
        self._thread: threading.Thread | None = None

    def record(self, events: list[dict[str, Any]], durable: bool) -> None:
        if durable:
            append(self.store, events)
            return
        with self._cond:
            while len(self._pending) >= self.max_pending and not self._stop:
                self._cond.notify_all()
                self._cond.wait(1.0)
            self._pending.extend(events)
            if len(self._pending) >= self.max_batch:
                self._cond.notify_all()
        self._ensure_thread()

    def flush(self) -> None:
        """Append everything queued now (tests, shutdown)."""
        with self._flushing:
            while self._drain_one():
                pass

    def _drain_one(self) -> bool:
        with self._cond:
            batch = self._pending[:self.max_batch]
            del self._pending[:self.max_batch]
            self._cond.notify_all()
        if not batch:
            return False
        try:
            append(self.store, batch, durable=False)
        except Exception:
            with self._cond:  # keep them for the next attempt
                self._pending[:0] = batch
            raise
        return True

    def _index(self, idle: bool) -> None:
        """Idle: index chunk after chunk until events arrive. Busy: one chunk, only when
        the backlog is over ``max_lag``."""
        if not idle:
            if self.store.journal_backlog() > self.max_lag:
                self.store.index_journal(self.index_chunk)
            return
        while self.store.index_journal(self.index_chunk):
            with self._cond:
                if self._pending or self._stop:
                    return

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="audit-sink",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        last = time.monotonic()
        while True:
            with self._cond:
                # Append only a full batch or after ``interval``: appending whatever is
                # pending as soon as the last append ends makes one tiny commit after
                # another under load, and each commit makes every reader connection drop
                # its page cache (the read path slowed 10×; issue 3).
                while not self._stop and len(self._pending) < self.max_batch:
                    left = last + self.interval - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                if self._stop and not self._pending:
                    return
                idle = not self._pending
            last = time.monotonic()
            try:
                self.flush()
                self._index(idle)
            except Exception:
                log.exception("audit append failed; retrying")
                with self._cond:
                    self._cond.wait(self.interval)

    def head(self) -> tuple[int, str]:
        """The chain's head (sequence, hash), as ``teleimagerie audit head`` reads it —
        for the auditor's console page (issue 30), which reaches the journal only here."""
        return head(self.store)

    def verify(self) -> Report:
        """Walk the whole chain (``teleimagerie audit verify``), for the auditor's console."""
        self.flush()  # what was recorded before the request is in the walk
        return verify(self.store)

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.flush()
