"""A query's work is bounded (issue 27 item 7; R-SEC-6).

- includes: more than ``TELEIMG_MAX_INCLUDES`` resources is a 400 too-costly naming the
  limit; ``_revinclude:iterate=*`` stops after ``TELEIMG_MAX_INCLUDE_DEPTH`` rounds;
- time: a query running past ``TELEIMG_QUERY_TIMEOUT`` is interrupted (SQLite: by its
  progress handler, so even a statement that would never end stops) and answered 503
  ``timeout`` with Retry-After; the next request is answered normally;
- disconnect: a client that leaves mid-query stops the query (counted in
  :data:`fhir_server.store.budget.STATS`).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fhir_server.config import Settings
from fhir_server.http.app import ReadFastPath
from fhir_server.search.query import SearchQuery
from fhir_server.server.dispatch import FhirServer
from fhir_server.store import budget
from fhir_server.store.base import Page
from fhir_server.store.sqlite import SqliteStore
from teleimagerie.wiring import create_app
from tests.conftest import Fhir, serve
from tests.e2e.harness import in_thread

NEVER_ENDS = ("WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) "
              "SELECT count(*) FROM n")


def _core(store: Any, **limits: Any) -> FhirServer:
    core = FhirServer(store)
    core.limits = replace(core.limits, **limits)
    return core


def _world(http: Fhir, observations: int) -> None:
    """A role, requests made to it, observations based on the requests."""
    http.create({"resourceType": "Patient", "id": "p"} | {"name": [{"family": "P"}]})
    pid = http.search("Patient")["entry"][0]["resource"]["id"]
    role = http.create({"resourceType": "PractitionerRole", "active": True})
    for i in range(observations):
        sr = http.create({"resourceType": "ServiceRequest", "status": "active",
                          "intent": "order", "subject": {"reference": f"Patient/{pid}"},
                          "performer": [{"reference": f"PractitionerRole/{role['id']}"}]})
        http.create({"resourceType": "Observation", "status": "final",
                     "code": {"text": f"o{i}"}, "subject": {"reference": f"Patient/{pid}"},
                     "basedOn": [{"reference": f"ServiceRequest/{sr['id']}"}]})


def test_more_includes_than_the_limit_is_a_400_naming_it(store: Any, tmp_path: Path
                                                         ) -> None:
    http = Fhir(serve(_core(store, max_includes=5), tmp_path, None))
    _world(http, 6)
    r = http.get("/fhir/Patient?_revinclude=Observation:subject")
    assert r.status_code == 400, r.text
    issue = r.json()["issue"][0]
    assert issue["code"] == "too-costly" and "TELEIMG_MAX_INCLUDES" in issue["diagnostics"]
    # under the limit: answered
    ok = http.search("Observation?_include=Observation:subject")
    assert [e["search"]["mode"] for e in ok["entry"]].count("include") == 1


def test_revinclude_iterate_star_is_bounded_by_count_and_depth(store: Any, tmp_path: Path
                                                               ) -> None:
    query = "PractitionerRole?_revinclude:iterate=*"
    small = Fhir(serve(_core(store, max_includes=4), tmp_path, None))
    _world(small, 3)  # 3 requests, then 3 observations (round 2)
    r = small.get(f"/fhir/{query}")
    assert r.status_code == 400 and "TELEIMG_MAX_INCLUDES" in r.text
    shallow = Fhir(serve(_core(store, max_include_depth=1), tmp_path, None))
    types = [e["resource"]["resourceType"] for e in shallow.search(query)["entry"]
             if e["search"]["mode"] == "include"]
    assert types == ["ServiceRequest"] * 3  # one round: not the observations
    deep = Fhir(serve(_core(store), tmp_path, None))
    types = [e["resource"]["resourceType"] for e in deep.search(query)["entry"]
             if e["search"]["mode"] == "include"]
    assert {"Observation", "ServiceRequest"} <= set(types)  # iterated, under the limits


@pytest.fixture
def never_ending(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """SQLite searches of Basic run a statement that never ends by itself."""
    calls = {"n": 0}
    real = SqliteStore.search

    @budget.interruptible
    def search(self: SqliteStore, query: SearchQuery, count_only: bool = False) -> Page:
        if query.type != "Basic":
            return real(self, query, count_only)
        calls["n"] += 1
        self._conn().execute(NEVER_ENDS).fetchone()
        raise AssertionError("the statement ended")

    monkeypatch.setattr(SqliteStore, "search", search)
    return calls


def test_a_query_over_its_time_budget_is_stopped_and_answered_503(
        never_ending: dict[str, int], tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "fhir.db")
    http = Fhir(serve(_core(store, query_timeout=0.3), tmp_path, None))
    before = budget.STATS.interrupted
    r = http.get("/fhir/Basic?code=x")
    assert r.status_code == 503, r.text
    assert r.headers["Retry-After"].isdigit()
    issue = r.json()["issue"][0]
    assert issue["code"] == "timeout" and "TELEIMG_QUERY_TIMEOUT" in issue["diagnostics"]
    assert budget.STATS.interrupted == before + 1 and never_ending["n"] == 1
    # the next request is answered, on the same connection and thread pool
    assert http.get("/fhir/Patient").status_code == 200
    store.close()


def test_a_spent_budget_is_a_503_on_both_stores(store: Any, tmp_path: Path) -> None:
    """MongoDB is given the remaining time as maxTimeMS; a budget already spent is
    refused before the query is sent, the same 503 on both stores."""
    http = Fhir(serve(_core(store, query_timeout=1e-9), tmp_path, None))
    r = http.get("/fhir/Observation?_has:Observation:patient:_source=eq||")
    assert r.status_code in (400, 503), r.text
    r = http.get("/fhir/Observation?code=x")
    assert r.status_code == 503 and r.json()["issue"][0]["code"] == "timeout"
    # reads are one indexed lookup: not budgeted
    assert http.get("/fhir/Observation/none").status_code == 404


def test_mongo_finds_carry_the_remaining_budget(tmp_path: Path) -> None:
    from tests.conftest import make_store

    store = make_store("mongo", tmp_path)
    seen: list[int | None] = []
    real = store.res.find

    def find(*args: Any, **kwargs: Any) -> Any:
        cursor = real(*args, **kwargs)
        original = cursor.max_time_ms

        def max_time_ms(ms: int | None) -> Any:
            seen.append(ms)
            return original(ms)

        cursor.max_time_ms = max_time_ms
        return cursor

    store.res.find = find
    http = Fhir(serve(_core(store, query_timeout=30), tmp_path, None))
    http.search("Observation?code=x")
    assert seen and all(ms is not None and 0 < ms <= 30_000 for ms in seen)
    store.close()


@pytest.fixture
def served(never_ending: dict[str, int], tmp_path: Path) -> Iterator[int]:
    store = SqliteStore(tmp_path / "fhir.db")
    core = _core(store, query_timeout=60)
    app = ReadFastPath(create_app(Settings(data_dir=tmp_path), server=core), core, None)
    try:
        with in_thread(app) as port:
            yield port
    finally:
        store.close()


def _get(port: int, path: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock


def test_a_client_that_leaves_stops_its_query(served: int, never_ending: dict[str, int]
                                              ) -> None:
    before = budget.STATS.cancelled
    sock = _get(served, "/fhir/Basic?code=x")
    deadline = time.monotonic() + 20
    while never_ending["n"] == 0:  # the statement is running
        assert time.monotonic() < deadline
        time.sleep(0.02)
    sock.close()  # the client leaves; the statement would run forever otherwise
    while budget.STATS.cancelled == before:
        assert time.monotonic() < deadline, "the query kept running after the client left"
        time.sleep(0.02)
    sock = _get(served, "/fhir/Patient")
    sock.settimeout(10)
    assert sock.recv(100).startswith(b"HTTP/1.1 200")
    sock.close()


@pytest.mark.parametrize(("name", "value"), [
    ("TELEIMG_QUERY_TIMEOUT", "soon"), ("TELEIMG_QUERY_TIMEOUT", "-1"),
    ("TELEIMG_QUERY_TIMEOUT", "nan"), ("TELEIMG_MAX_INCLUDES", "0"),
    ("TELEIMG_MAX_INCLUDE_DEPTH", "x"), ("TELEIMG_MAX_BODY_BYTES", "-5")])
def test_bad_budget_settings_stop_the_start_with_one_line(
        monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exc:
        Settings.from_env()
    assert name in str(exc.value) and "\n" not in str(exc.value)


def test_budget_settings_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEIMG_QUERY_TIMEOUT", "2.5")
    monkeypatch.setenv("TELEIMG_MAX_INCLUDES", "50")
    limits = Settings.from_env().limits
    assert limits.query_timeout == 2.5 and limits.max_includes == 50
