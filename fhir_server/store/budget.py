"""The per-request work budget of a query (issue 27 item 7; R-SEC-6 availability).

One :class:`Budget` per request, set for the thread that runs it with :func:`applied`:

- time: ``TELEIMG_QUERY_TIMEOUT`` seconds. SQLite checks it from its progress handler
  (:func:`progress_handler`, installed on every connection), which interrupts the running
  statement past the deadline; MongoDB gets the remaining time as ``maxTimeMS`` on every
  find and count (:func:`mongo_ms`). Either way the query stops and the request is
  answered 503 ``timeout`` with ``Retry-After`` — the one 5xx a client can cause.
- disconnect: when the client leaves, the HTTP layer calls :meth:`Budget.cancel`, which
  moves the deadline to "now": the statement running in the worker thread is interrupted
  at its next progress check and nothing more is computed for nobody.
- rows: what the includes of a search fetch is counted (:meth:`Budget.take_rows`); past
  ``10 × TELEIMG_MAX_INCLUDES`` rows read (before the access guard filters them) the
  search is refused 400 ``too-costly`` — the guarded count is checked by the search
  itself against ``TELEIMG_MAX_INCLUDES``.

Only the read methods wrapped by :func:`interruptible` are interrupted: a write running
in the same request is never cut half-way (the progress handler looks at
``Budget.querying``).
"""

from __future__ import annotations

import functools
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar, cast

from fhir_server.core.errors import ErrorKind, FhirError, Issue

log = logging.getLogger("teleimagerie.budget")
F = TypeVar("F", bound=Callable[..., Any])
# how many SQLite VM instructions between two deadline checks (~ a millisecond)
PROGRESS_STEPS = 20_000
RETRY_AFTER = 5  # seconds suggested to a client whose query ran out of time


class Budget:
    """The time and include budget of one request."""

    def __init__(self, timeout: float | None, max_includes: int = 1000) -> None:
        self.timeout = timeout
        self.deadline = math.inf if not timeout or timeout <= 0 else \
            time.monotonic() + timeout
        self.max_includes = max_includes
        self.cancelled = False
        self.querying = 0  # depth of interruptible calls running now
        self.rows = 0

    def cancel(self) -> None:
        """The client left: stop the work now (called from the event loop's thread)."""
        self.cancelled = True
        self.deadline = 0.0

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def remaining(self) -> float:
        return max(self.deadline - time.monotonic(), 0.0)

    def check(self) -> None:
        """Raise the 503 when the budget is spent (between two steps of the work)."""
        if self.expired():
            raise self.error()

    def error(self) -> FhirError:
        """503 ``timeout`` with ``Retry-After`` (the errors table maps UNAVAILABLE)."""
        if self.cancelled:
            text = "the client disconnected: the query was stopped"
        else:
            text = (f"the query ran out of its time budget of {self.timeout:g} s "
                    "(TELEIMG_QUERY_TIMEOUT); narrow it or retry later")
        return FhirError(ErrorKind.UNAVAILABLE, text, issues=[Issue(text, code="timeout")],
                         headers={"Retry-After": str(RETRY_AFTER)})

    def take_rows(self, count: int) -> None:
        """Count rows the includes fetched; 400 too-costly past ten times the limit."""
        self.rows += count
        if self.rows > 10 * self.max_includes:
            raise too_many_includes(self.max_includes)


def too_many_includes(limit: int) -> FhirError:
    """400 ``too-costly`` naming the limit (the query itself asks for too much)."""
    return FhirError(ErrorKind.TOO_COSTLY, f"_include/_revinclude would return more than "
                     f"{limit} resources (TELEIMG_MAX_INCLUDES); narrow the search, page "
                     "it with a smaller _count or include less")


_CURRENT: ContextVar[Budget | None] = ContextVar("teleimg_budget", default=None)


class _Stats:
    """Queries stopped by their budget since start (tests and metrics)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.interrupted = 0
        self.cancelled = 0

    def count(self, budget: Budget) -> None:
        with self.lock:
            self.interrupted += 1
            if budget.cancelled:
                self.cancelled += 1


STATS = _Stats()


def current() -> Budget | None:
    return _CURRENT.get()


@contextmanager
def applied(budget: Budget | None) -> Iterator[Budget | None]:
    """Run the block under ``budget`` (this thread's context)."""
    token = _CURRENT.set(budget)
    try:
        yield budget
    finally:
        _CURRENT.reset(token)


def take_rows(count: int) -> None:
    """Count rows an include fetched against the request's budget (if any)."""
    budget = _CURRENT.get()
    if budget is not None:
        budget.take_rows(count)


def progress_handler() -> int:
    """SQLite's progress callback: non-zero interrupts the statement (past the deadline,
    inside an :func:`interruptible` read only)."""
    budget = _CURRENT.get()
    return 1 if budget is not None and budget.querying and budget.expired() else 0


def install(conn: sqlite3.Connection) -> None:
    """Install the deadline check on a SQLite connection."""
    conn.set_progress_handler(progress_handler, PROGRESS_STEPS)


def mongo_ms() -> int | None:
    """The remaining budget as MongoDB ``maxTimeMS`` (None: unbounded)."""
    budget = _CURRENT.get()
    if budget is None or budget.deadline == math.inf:
        return None
    return max(int(budget.remaining() * 1000), 1)


def _timed_out(exc: Exception) -> bool:
    if isinstance(exc, sqlite3.OperationalError):
        return "interrupted" in str(exc)
    return type(exc).__name__ in ("ExecutionTimeout", "NetworkTimeout") or \
        getattr(exc, "code", None) == 50  # MaxTimeMSExpired


def interruptible(fn: F) -> F:
    """Wrap a store read: checked before it starts, interrupted past the deadline, the
    interruption answered 503 (never a 500)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        budget = _CURRENT.get()
        if budget is None:
            return fn(*args, **kwargs)
        budget.check()
        budget.querying += 1
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not isinstance(exc, FhirError) and _timed_out(exc):
                STATS.count(budget)
                log.warning("query stopped: %s", "client disconnected" if budget.cancelled
                            else f"over its {budget.timeout:g} s budget")
                raise budget.error() from None
            raise
        finally:
            budget.querying -= 1

    return cast(F, wrapper)
