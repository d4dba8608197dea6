"""Where AuditEvents go: chained into the store, in batches (R-SEC-3; ADR 0005).

Events of writes and of refused or failed requests are committed before the response
leaves (``durable=True``). Events of successful reads and searches are queued and
committed together within ``interval`` seconds by a background thread: one write unit
per batch instead of one fsync per read keeps auditing from halving read throughput.
The queue is flushed on shutdown; a crash can lose at most one interval of read
events, never a write's.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from fhir_server.audit.chain import append
from fhir_server.store.base import Store

log = logging.getLogger("teleimagerie.audit")


class AuditSink:
    def __init__(self, store: Store, interval: float = 0.2, max_batch: int = 2000) -> None:
        self.store = store
        self.interval = interval
        self.max_batch = max_batch
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()  # guards _pending
        self._flushing = threading.Lock()  # one flush at a time keeps the chain in order
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None

    def record(self, events: list[dict[str, Any]], durable: bool) -> None:
        with self._lock:
            self._pending.extend(events)
            size = len(self._pending)
        if durable:
            self.flush()
        else:
            self._ensure_thread()
            if size >= self.max_batch:
                self._wake.set()

    def flush(self) -> None:
        with self._flushing:
            with self._lock:
                batch, self._pending = self._pending, []
            if batch:
                try:
                    append(self.store, batch)
                except Exception:
                    with self._lock:  # keep them for the next attempt, in order
                        self._pending[:0] = batch
                    raise

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._run, name="audit-sink",
                                                    daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self.flush()
            except Exception:
                log.exception("audit flush failed; retrying")

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush()
