"""Group commit of the embedded store (issue 32, ADR 0026): units of concurrent threads
share one commit, each still atomic on its own and answered only once on disk (R-INT-2)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from fhir_server.store.base import Stored
from fhir_server.store.sqlite import SqliteStore


class Refused(Exception):
    """A unit's own code failing."""


def _org(i: int) -> Stored:
    return Stored("Organization", f"o{i}", 1, 1_700_000_000_000_000 + i, False,
                  b'{"resourceType":"Organization","id":"o%d"}' % i, "POST")


def _on_disk(path: Path, rid: str) -> bool:
    """Read by a connection of its own: what another process would see."""
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT 1 FROM resource WHERE id = ?", (rid,)).fetchone() \
            is not None


def test_units_queued_behind_a_unit_commit_with_it_and_return_only_once_on_disk(
        tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "g.db")
    group = store._group
    seen: dict[int, bool] = {}

    def writer(i: int) -> None:
        with store.write():
            store.put(_org(i), None)
            if i == 0:  # the first unit holds the writer until the 7 others queue
                while group._queued < 7:
                    threading.Event().wait(0.01)
        seen[i] = _on_disk(store.path, f"o{i}")  # what another process sees on return

    first = threading.Thread(target=writer, args=(0,))
    first.start()
    while group._open is None:
        threading.Event().wait(0.01)
    others = [threading.Thread(target=writer, args=(i,)) for i in range(1, 8)]
    before = group.commits
    for t in others:
        t.start()
    for t in [first, *others]:
        t.join()
    assert seen == dict.fromkeys(range(8), True)
    assert group.commits - before == 1  # eight units, one commit (one flush to disk)


def test_a_failing_unit_rolls_back_alone_while_its_batch_commits(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "g.db")
    gate = threading.Barrier(6)
    errors: list[Exception] = []

    def writer(i: int) -> None:
        gate.wait()
        try:
            with store.write():
                store.put(_org(i), None)
                if i % 2:
                    raise Refused(i)
        except Refused as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 3
    assert [_on_disk(store.path, f"o{i}") for i in range(6)] == [True, False] * 3


def test_a_nested_unit_is_a_savepoint(tmp_path: Path) -> None:
    """The audit of a refused write commits while the write itself is undone."""
    store = SqliteStore(tmp_path / "g.db")
    with store.write():
        store.put(_org(1), None)
        with pytest.raises(RuntimeError), store.write():
            store.put(_org(2), None)
            raise RuntimeError("refused")
        store.put(_org(3), None)
    assert [_on_disk(store.path, f"o{i}") for i in (1, 2, 3)] == [True, False, True]


def test_a_durable_unit_never_joins_a_batch_committed_without_flush(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "g.db")
    with store.write(durable=False):
        store.put(_org(1), None)
    conn = store._conn()
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again
    with store.write():
        assert store._group._open is not None and store._group._open.durable
        store.put(_org(2), None)
    assert _on_disk(store.path, "o2")
