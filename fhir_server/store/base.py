"""The storage protocol shared by the embedded (SQLite) and MongoDB stores.

A store keeps every version of every resource (history) and the current version with
its extracted index rows. Writes happen inside :meth:`Store.write`, one atomic unit
per FHIR interaction or transaction Bundle; the unit is re-entrant so a Bundle's
entries join the Bundle's unit.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from fhir_server.search.extract import IndexRows
from fhir_server.search.query import SearchQuery
from fhir_server.search.registry import param_kind
from fhir_server.store import budget

# Types whose records are never changed once written: the audit trail (R-SEC-3). Stores
# keep them in lean append-only tables/collections, written only by expanding journal
# records (ADR 0016), and refuse updates and deletions.
APPEND_ONLY_TYPES = frozenset({"AuditEvent"})


# The index fields :meth:`Store.tally` groups a kind's values by (the value, not its
# display text): positions in the kind's columns / fields.
GROUPED: dict[str, int] = {"token": 2, "reference": 2, "quantity": 1, "date": 1,
                           "number": 1, "uri": 1, "string": 2}
DAY_US = 86_400_000_000


@dataclass(frozen=True)
class Column:
    """A summary column: the first value of parameter ``key`` (its :class:`IndexRows`
    tuple positions ``fields``, joined by ``/``: a reference's type/id), or with
    ``equals`` (system, code) 1 when one of its token values is that, else 0, or with
    ``present`` 1 when it has a value, else 0."""

    name: str
    key: str
    fields: tuple[int, ...] = (2,)
    equals: tuple[str, str] | None = None
    present: bool = False  # 1 when the parameter has a value, else 0


@dataclass(frozen=True)
class Summary:
    """A narrow row per resource of ``rtype``, kept by the store in the resource's write
    unit (R-EVAL-1, issue 30: the figures of a year of 100 000 requests are GROUP BYs
    over these rows, no search match): the UTC day of date parameter ``when`` (no day,
    no row), then :attr:`columns`; ``each``, a column whose every value makes a row (a
    report's performers)."""

    name: str
    rtype: str
    when: str
    columns: tuple[Column, ...]
    each: str | None = None

    def rows(self, rows: IndexRows) -> list[tuple[Any, ...]]:
        """(day, column values…) of a resource's index rows."""
        days = [low for key, low, _ in rows.date if key == self.when]
        if not days:
            return []
        values: list[list[Any]] = []
        for column in self.columns:
            found = [v for v in getattr(rows, param_kind(column.key)) if v[0] == column.key]
            if column.equals is not None or column.present:
                hit = any(column.present or (v[1], v[2]) == column.equals for v in found)
                values.append([1 if hit else 0])
                continue
            parts = [tuple(v[i] for i in column.fields) for v in found]
            kept = [part[0] if len(part) == 1 else "/".join(str(x) for x in part)
                    for part in parts if all(x is not None for x in part)]
            first = kept if column.name == self.each else kept[:1]
            values.append(first or [None])
        day = min(days) // DAY_US
        out: list[tuple[Any, ...]] = [(day,)]
        for choices in values:
            out = [(*row, choice) for row in out for choice in choices]
        return out


SUMMARIES: dict[str, Summary] = {}
FILL_CHUNK = 2000  # resources per write unit when a summary is filled afterwards
SUMMARY_COLUMNS = 12  # v0..v11 in the stores' summary rows


def register_summary(summary: Summary) -> None:
    """Declare a summary the stores keep from now on (and fill for existing rows)."""
    assert len(summary.columns) <= SUMMARY_COLUMNS
    SUMMARIES[summary.name] = summary


def summaries_of(rtype: str) -> list[Summary]:
    return [s for s in SUMMARIES.values() if s.rtype == rtype]


@dataclass
class Stored:
    """One stored version. ``body`` is the exact JSON bytes served on read."""

    type: str
    id: str
    vid: int
    updated: int  # µs since epoch
    deleted: bool
    body: bytes | None
    method: str = "PUT"  # POST | PUT | PATCH | DELETE (history entries)
    pk: int = 0
    # search results: the row's position in the query's order (sort keys, then pk), so
    # pages of several queries can be merged (system and compartment search)
    key: list[Any] | None = field(default=None, compare=False, repr=False)


@dataclass
class Page:
    items: list[Stored]
    total: int | None = None
    next_cursor: dict[str, Any] | None = None
    prev_cursor: dict[str, Any] | None = None
    included: list[Stored] = field(default_factory=list)


class Store(Protocol):
    supports_transactions: bool
    # a nested write unit is a savepoint: its failure undoes it alone, so a request's
    # writes and its audit can share one unit (one commit; issue 32)
    savepoints: bool
    # write units run one at a time across threads and processes (SQLite's writer):
    # a check inside a unit holds until it commits, with no lock of the caller's
    serial_units: bool

    def write(self, durable: bool = True) -> AbstractContextManager[None]:
        """An atomic write unit (re-entrant), on disk when it ends. ``durable=False`` lets
        a batch of read-audit events skip the flush to disk (they survive a process crash,
        not a power loss) — never a clinical write, and never one that is answered
        before a durable unit follows."""

    def lock(self, key: str) -> AbstractContextManager[None]:
        """Serialise conditional interactions on the same criteria (race-free If-None-Exist)."""

    def read(self, rtype: str, rid: str) -> Stored | None:
        """Current version (``deleted`` set when the last version is a deletion)."""

    def vread(self, rtype: str, rid: str, vid: int) -> Stored | None: ...

    def put(self, item: Stored, rows: IndexRows | None) -> None:
        """Store a new version (``item.body is None`` for a deletion) and its index rows."""

    def journal_append(self, records: list[tuple[int, int, bytes]]) -> None:
        """Store chained journal records (sequence, how many AuditEvents it stands for,
        body) in bulk, inside a write unit (``audit.chain.append``; ADR 0016). They are
        expanded into AuditEvents and indexed later by :meth:`index_journal`."""

    def journal_last(self) -> bytes | None:
        """The body of the last journal record (the chain head), None when there is none."""

    def journal_records(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        """(sequence, body) of up to ``limit`` records after sequence ``after``, in order."""

    def journal_backlog(self) -> int:
        """How many AuditEvents are not expanded and indexed yet."""

    def index_journal(self, limit: int = 1000) -> int:
        """Expand and index about ``limit`` AuditEvents of the oldest records (idle-time
        work); how many. A read or search of a journal type, and an include or revinclude
        through one, expands them all first, so it sees every record appended before it."""

    def search(self, query: SearchQuery, count_only: bool = False) -> Page: ...

    def read_many(self, keys: list[tuple[str, str]]) -> list[Stored]: ...

    def values(self, query: SearchQuery, keys: list[str]) -> dict[str, list[tuple[Any, ...]]]:
        """The index values of parameters ``keys`` (``Type.name``) of the resources matching
        ``query``: per key, one tuple per value — a resource handle (equal for values of the
        same resource), then the kind's fields in :class:`IndexRows` order. The match is
        computed once per kind; aggregates (indicators) read these, never the bodies."""

    def tally(self, query: SearchQuery, keys: list[str], by: str | None = None
              ) -> dict[str, list[tuple[Any, ...]]]:
        """The index values of parameters ``keys`` of the resources matching ``query``,
        counted in the store (a compiled aggregate, no value travels one by one): per key,
        one tuple per distinct value — its :data:`GROUPED` fields, then how many rows hold
        it. With ``by`` (a date parameter) the tuple starts with the UTC day number
        (µs // :data:`DAY_US`) of each ``by`` value of the resource (R-EVAL-1 series)."""

    def summarize(self, name: str, days: tuple[int, int], where: list[tuple[str, Any]],
                  group: list[str]) -> list[tuple[Any, ...]] | None:
        """Rows of summary ``name`` (:class:`Summary`) whose day is in ``[days)``, whose
        columns equal ``where``'s values (a list: one of them), counted per ``group``
        columns (``day`` is one): ``(*group, count)``; None from a view that cannot
        answer with summaries (a narrowed guard) or from a store still filling the
        summary for the resources stored before it was declared (a background thread
        started at the first use: :meth:`fill_summaries`)."""

    def summary_rows(self, name: str, days: tuple[int, int], where: list[tuple[str, Any]],
                     columns: list[str]) -> list[tuple[Any, ...]] | None:
        """The ``columns`` of the rows :meth:`summarize` would count, one tuple per row
        (one pass that several figures share); None as for :meth:`summarize`."""

    def fill_summaries(self, limit: int = FILL_CHUNK) -> int:
        """Fill summary rows for up to ``limit`` resources stored before their summary was
        declared; how many (0: all filled)."""

    def outgoing(self, items: list[Stored], param_keys: list[str]) -> list[tuple[str, str]]:
        """(type, id) referenced by ``items`` through the given reference parameters."""

    def incoming(self, param_keys: list[str], targets: list[tuple[str, str]]) -> list[Stored]:
        """Current resources whose reference parameters point at ``targets``."""

    def history(self, rtype: str | None, rid: str | None, since: int | None,
                count: int, cursor: dict[str, Any] | None, counted: bool = True) -> Page:
        """Versions newest first; ``counted=False`` skips the total (a full count)."""

    def close(self) -> None: ...


def keyset_page(items: list[Stored], total: int | None, first_key: list[Any] | None,
                last_key: list[Any] | None, cursor: dict[str, Any] | None, more: bool) -> Page:
    """A page fetched with ``limit + 1`` after/before ``cursor``, with its paging cursors.

    Going forward there is a next page when the extra row came back, and a previous one
    whenever we started from a cursor; going backward, the reverse.
    """
    page = Page(items, total)
    if not items:
        return page
    after = cursor is None or cursor["d"] == "after"
    if more or not after:
        page.next_cursor = {"d": "after", "k": last_key}
    if (not after and more) or (after and cursor is not None):
        page.prev_cursor = {"d": "before", "k": first_key}
    return page


def chunks(seq: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(seq), size):
        yield seq[i:i + size]


class SummaryReads(ABC):
    """The two reads of the summary rows (issue 30, ``$indicators``), the same on both
    stores: grouped counts, or the rows themselves; each store implements ``_summary``."""

    _filled: set[str]  # summaries known filled in this store
    _filler: threading.Thread | None
    _filler_lock: threading.Lock

    @abstractmethod
    def _summary(self, name: str, days: tuple[int, int], where: list[tuple[str, Any]],
                 columns: list[str], grouped: bool) -> list[tuple[Any, ...]] | None:
        ...

    @abstractmethod
    def _marked_filled(self, name: str) -> bool:
        """Whether the store records ``name`` as filled (by an earlier process)."""
        ...

    @abstractmethod
    def fill_summaries(self, limit: int = FILL_CHUNK) -> int:
        ...

    @abstractmethod
    def _fill_all(self) -> None:
        ...

    def _ready(self, summary: Summary) -> bool:
        """Whether ``summary`` is filled; if not, a small store fills it now, a large
        one in a background thread (the callers answer from the index meanwhile)."""
        if summary.name in self._filled:
            return True
        if self._marked_filled(summary.name):
            self._filled.add(summary.name)
            return True
        with self._filler_lock:
            if self._filler is None:  # a small (or new) store: filled now
                while (done := self.fill_summaries()) and done < FILL_CHUNK:
                    pass
                if not done:
                    return summary.name in self._filled
            if self._filler is None or not self._filler.is_alive():
                self._filler = threading.Thread(target=self._fill_all, daemon=True,
                                                name="summary-fill")
                self._filler.start()
        return False

    @budget.interruptible
    def summarize(self, name: str, days: tuple[int, int], where: list[tuple[str, Any]],
                  group: list[str]) -> list[tuple[Any, ...]] | None:
        return self._summary(name, days, where, group, grouped=True)

    @budget.interruptible
    def summary_rows(self, name: str, days: tuple[int, int], where: list[tuple[str, Any]],
                     columns: list[str]) -> list[tuple[Any, ...]] | None:
        return self._summary(name, days, where, columns, grouped=False)
