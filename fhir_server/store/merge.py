"""Several type-level queries served as one keyset-paged result (system and compartment
search, search.html#system and search.html#compartments).

Each type keeps its own ordinary query, run through the same store object as a
type-level search — with a security policy that is the request's ``GuardedStore``, which
narrows every query exactly as it narrows ``GET [type]?…`` — and the pages are merged
here in the queries' common order: the ``_sort`` keys, then the type name, then the
store's row key. Without ``_sort`` that order is type by type (each in the type-level
order), so a page reads only the types it reaches.

The paging cursor is the global position of the last (forward) or first (backward) row
served: ``{"d", "k": sort keys, "t": type, "p": row key}``. For each type it is turned
back into that type's own keyset cursor, so pages stay exact when resources are created
or deleted between requests and no row is served twice or skipped.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import total_ordering
from typing import Any, Protocol

from fhir_server.core.errors import invalid
from fhir_server.search.query import SearchQuery
from fhir_server.store.base import Page, Stored

# above every row key: "strictly after (K, BIG)" means "after every row with keys K"
BIG = 2 ** 62


class Searchable(Protocol):
    def search(self, query: SearchQuery, count_only: bool = False) -> Page: ...


@total_ordering
class _Reversed:
    """A value ordered the other way round (descending columns, backward paging)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Reversed) and self.value == other.value

    def __lt__(self, other: _Reversed) -> bool:
        return bool(other.value < self.value)

    def __hash__(self) -> int:
        return hash(self.value)


def _rank(value: Any) -> tuple[int, Any]:
    """The stores' order of index values: null lowest, then numbers, then strings."""
    if value is None:
        return (0, 0)
    if isinstance(value, (int, float)):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    return (3, repr(value))


Position = tuple[Any, ...]


@dataclass
class _Stream:
    query: SearchQuery
    buffer: list[Stored] = field(default_factory=list)
    more: bool = True  # rows may remain past what was fetched
    floor: Position | None = None  # no row left is before this (in paging direction)
    fetched: bool = False


@dataclass
class Merged:
    items: list[Stored]
    total: int | None
    next_cursor: dict[str, Any] | None = None
    prev_cursor: dict[str, Any] | None = None


class Merger:
    """One page of the union of ``queries`` (same sort parameters, distinct types)."""

    def __init__(self, store: Searchable, queries: list[SearchQuery], count: int,
                 cursor: dict[str, Any] | None, want_total: bool) -> None:
        self.store = store
        self.queries = sorted(queries, key=lambda q: q.type)
        self.count = count
        self.cursor = cursor
        self.want_total = want_total
        self.desc = [d for _, d in queries[0].sort] if queries else []
        self.forward = cursor is None or cursor["d"] == "after"
        if cursor is not None:
            keys = cursor.get("k")
            if not isinstance(keys, list) or len(keys) != len(self.desc) or \
                    not isinstance(cursor.get("t"), str) or \
                    not isinstance(cursor.get("p"), int):
                raise invalid("paging cursor does not match the search", "_cursor")

    # -- positions --------------------------------------------------------------------
    def _position(self, keys: list[Any], rtype: str, pk: Any) -> Position:
        cols = tuple(_Reversed(_rank(v)) if d else _rank(v)
                     for v, d in zip(keys, self.desc, strict=True))
        pos = (*cols, rtype, pk)
        return pos if self.forward else tuple(_Reversed(p) for p in pos)

    def _item_position(self, item: Stored) -> Position:
        if item.key is None:
            raise RuntimeError("the store did not return the search position of its rows")
        return self._position(item.key[:-1], item.type, item.key[-1])

    def _type_cursor(self, rtype: str) -> dict[str, Any] | None:
        """The global cursor as ``rtype``'s own keyset cursor (see the module doc)."""
        cur = self.cursor
        if cur is None:
            return None
        if rtype == cur["t"]:
            pk: int | None = cur["p"]
        else:  # rows of a later type with equal keys come after, of an earlier one before
            pk = None if rtype > cur["t"] else BIG
        return {"d": cur["d"], "k": [*cur["k"], pk]}

    def _initial_floor(self, rtype: str) -> Position | None:
        if self.desc:  # sorted: any type may hold the next row
            return None
        # unsorted: the order is type by type, so a type's rows all sit together
        return (rtype,) if self.forward else (_Reversed(rtype),)

    # -- fetching ---------------------------------------------------------------------
    def _fetch(self, stream: _Stream, size: int) -> int | None:
        query = stream.query
        query.count = max(size, 1)
        query.total = "accurate" if self.want_total else "none"
        page = self.store.search(copy.copy(query))  # a guarded store narrows its own copy
        stream.fetched = True
        stream.buffer = list(page.items)
        if not self.forward:
            stream.buffer.reverse()  # pages come in ascending order: serve the last first
        frontier = page.next_cursor if self.forward else page.prev_cursor
        stream.more = frontier is not None
        if frontier is not None:
            query.cursor = frontier
            keys = frontier["k"]
            stream.floor = self._position(keys[:-1], query.type, keys[-1])
        return page.total

    def page(self) -> Merged:
        streams = self._streams()
        totals: list[int | None] = []
        out = self._merge(streams, totals)
        self._peek_past_boundary(streams, totals)
        has_more = any(s.buffer or s.more for s in streams)
        total = self._total(streams, totals) if self.want_total else None
        if not self.forward:
            out.reverse()
        merged = Merged(out, total)
        if not out:
            return merged
        if (has_more if self.forward else True):
            merged.next_cursor = _cursor("after", out[-1])
        if (self.cursor is not None) if self.forward else has_more:
            merged.prev_cursor = _cursor("before", out[0])
        return merged

    def _streams(self) -> list[_Stream]:
        streams = [_Stream(q, floor=self._initial_floor(q.type)) for q in self.queries]
        for s in streams:
            s.query.cursor = self._type_cursor(s.query.type)
            if not self.desc and self.cursor is not None and s.query.type != self.cursor["t"] \
                    and (s.query.type < self.cursor["t"]) == self.forward:
                s.more = False  # unsorted: a type wholly before the cursor (or after it)
        return streams

    def _merge(self, streams: list[_Stream], totals: list[int | None]) -> list[Stored]:
        """The page's rows in merged order, fetching a stream when it may hold the next."""
        out: list[Stored] = []
        while len(out) < self.count:
            heads = [(self._item_position(s.buffer[0]), i) for i, s in enumerate(streams)
                     if s.buffer]
            best = min(heads) if heads else None
            pending = [s for s in streams if not s.buffer and s.more and (
                best is None or s.floor is None or s.floor < best[0])]
            if pending:
                stream = min(pending, key=lambda s: (s.floor is not None, s.floor or ()))
                totals.append(self._fetch(stream, self.count - len(out)))
                continue
            if best is None:
                break
            out.append(streams[best[1]].buffer.pop(0))
        return out

    def _peek_past_boundary(self, streams: list[_Stream], totals: list[int | None]) -> None:
        """A page that ends at a type boundary: is any row left in a type not read yet?
        (one row is enough; no ``next`` link to an empty page)"""
        while not any(s.buffer or (s.more and s.fetched) for s in streams):
            unread = [s for s in streams if s.more and not s.fetched]
            if not unread:
                break
            stream = min(unread, key=lambda s: (s.floor is not None, s.floor or ()))
            totals.append(self._fetch(stream, 1))

    def _total(self, streams: list[_Stream], totals: list[int | None]) -> int | None:
        for s in streams:
            if not s.fetched:  # not reached by this page: counted only
                totals.append(self.store.search(copy.copy(s.query), count_only=True).total)
        return None if any(t is None for t in totals) else sum(
            t for t in totals if t is not None)


def count_all(store: Searchable, queries: list[SearchQuery]) -> int:
    """``_summary=count`` of the union: the sum of the type-level counts."""
    return sum(store.search(copy.copy(q), count_only=True).total or 0 for q in queries)


def _cursor(direction: str, item: Stored) -> dict[str, Any]:
    assert item.key is not None
    return {"d": direction, "k": list(item.key[:-1]), "t": item.type, "p": item.key[-1]}
