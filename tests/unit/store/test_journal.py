"""Journal records (AuditEvents) are indexed after they are appended (ADR 0007, R-SEC-3).

Runs on both stores: a search, include or revinclude that reads the journal sees every
event appended before it; idle-time indexing works in chunks, in append order, and never
writes a record's index twice.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import orjson

from fhir_server.audit.chain import append
from fhir_server.audit.sink import AuditSink
from fhir_server.search.query import QueryParser
from fhir_server.store.sqlite import SqliteStore


def _event(patient: str, outcome: str = "0", request: str = "r") -> dict[str, Any]:
    """An event of interaction ``request`` about ``patient``."""
    return {"resourceType": "AuditEvent",
            "type": {"system": "http://dicom.nema.org/resources/ontology/DCM",
                     "code": "110112", "display": "Query"},
            "recorded": "2026-11-22T10:00:00Z", "outcome": outcome,
            "agent": [{"who": {"identifier": {"system": "urn:oid:1.2.250.1.71.4.2.1",
                                              "value": "810000000042"}},
                       "requestor": True}],
            "source": {"observer": {"display": "teleimagerie"}},
            "entity": [{"what": {"identifier": {"value": request}}},
                       {"what": {"reference": f"Patient/{patient}"}}]}


def _search(store: Any, query: str) -> list[str]:
    params = [tuple(p.split("=", 1)) for p in query.split("&")]
    return [i.id for i in store.search(QueryParser().parse("AuditEvent", params)).items]


def test_audit_events_are_searchable_as_soon_as_appended_R_SEC_3(store: Any) -> None:
    append(store, [_event("a"), _event("a", "4"), _event("b")], durable=False)
    assert store.journal_backlog() == 3  # appended, not yet indexed
    assert len(_search(store, "patient=Patient/a")) == 2
    assert store.journal_backlog() == 0  # the search indexed them first
    assert len(_search(store, "patient=Patient/a&outcome=4")) == 1
    append(store, [_event("a")])
    assert len(_search(store, "patient=Patient/a&_count=50")) == 3


def test_revinclude_and_has_on_audit_events_see_unindexed_events_R_SEC_3(store: Any) -> None:
    append(store, [_event("x"), _event("x")])
    found = store.incoming(["AuditEvent.patient"], [("Patient", "x")])
    assert len(found) == 2
    append(store, [_event("x")])
    patient = QueryParser().parse("Patient", [("_has:AuditEvent:patient:outcome", "0")])
    assert store.journal_backlog() == 1
    store.search(patient)
    assert store.journal_backlog() == 0


def test_index_journal_works_in_chunks_of_whole_records_in_append_order(store: Any) -> None:
    for n in range(5):
        append(store, [_event(str(n), request=str(n))])
    assert store.index_journal(2) == 2
    assert store.journal_backlog() == 3
    assert store.index_journal(10) == 3
    assert store.index_journal(10) == 0
    for n in range(5):  # each indexed exactly once
        assert len(_search(store, f"patient=Patient/{n}")) == 1


def test_concurrent_indexers_never_index_a_record_twice(tmp_path: Path) -> None:
    """Two worker processes share the file: each has its own store and indexer."""
    one, two = SqliteStore(tmp_path / "t.db"), SqliteStore(tmp_path / "t.db")
    append(one, [_event(str(n % 7)) for n in range(600)], durable=False)

    def work(store: SqliteStore) -> None:
        while store.journal_backlog():
            store.index_journal(50)

    threads = [threading.Thread(target=work, args=(s,)) for s in (one, two)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dupes = one._conn().execute(
        "SELECT COUNT(*) FROM (SELECT pk, p, rid FROM audit_idx_reference "
        "GROUP BY pk, p, rid, idval HAVING COUNT(*) > 1)").fetchone()[0]
    assert dupes == 0
    assert one._conn().execute("SELECT COUNT(DISTINCT pk) FROM audit_idx_reference "
                               "WHERE p = 'AuditEvent.patient'").fetchone()[0] == 600


def test_audit_sink_indexes_when_idle(store: Any) -> None:
    sink = AuditSink(store, interval=0.02)
    try:
        sink.record([_event("z") for _ in range(30)], durable=False)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (sink._pending or store.journal_backlog()):
            time.sleep(0.02)
        assert store.journal_backlog() == 0
    finally:
        sink.close()


def test_audit_sink_indexes_under_load_only_over_the_lag_bound(store: Any) -> None:
    for n in range(4):
        append(store, [_event("z", request=f"{n}.{m}") for m in range(10)])
    AuditSink(store, max_lag=100, index_chunk=10)._index(idle=False)
    assert store.journal_backlog() == 40  # busy and under the bound: requests first
    AuditSink(store, max_lag=20, index_chunk=10)._index(idle=False)
    assert store.journal_backlog() == 30  # over the bound: one chunk per drain


def test_the_events_of_one_append_are_one_record_and_expand_to_exactly_those_events_R_SEC_3(
        store: Any) -> None:
    """ADR 0016, 0017: a search touching 20 patients and a read appended together make one
    chained record; the store expands it into the 21 BALP AuditEvents, each exactly the
    event that was recorded (plus its id, meta and link)."""
    from fhir_server.audit.chain import head, verify

    search = [_event(f"p{n}", request="search-1") for n in range(20)]
    append(store, [*search, _event("q", request="read-2")])
    assert head(store)[0] == 1
    assert store.journal_backlog() == 21
    found = {orjson.loads(i.body)["entity"][-1]["what"]["reference"]: orjson.loads(i.body)
             for i in store.history("AuditEvent", None, None, 50, None).items}
    assert set(found) == {f"Patient/p{n}" for n in range(20)} | {"Patient/q"}
    for n, event in enumerate(search):
        served = found[f"Patient/p{n}"]
        assert {k: v for k, v in served.items() if k not in ("id", "meta", "extension")} == \
            {k: v for k, v in event.items() if k != "resourceType"} | {
                "resourceType": "AuditEvent"}
        assert served["meta"]["versionId"] == "1"
    assert len({e["id"] for e in found.values()}) == 21
    assert verify(store).ok and verify(store).checked == 21


def test_verify_detects_an_edited_record_and_an_added_event_R_SEC_3(store: Any) -> None:
    from fhir_server.audit.chain import verify

    append(store, [_event(f"p{n}", request="s") for n in range(3)])
    append(store, [_event("q", request="t")])
    assert verify(store).ok
    record = orjson.loads(store.journal_records(0, 1)[0][1])
    record["members"][1][1] = {"what": {"reference": "Patient/someone-else"}}
    forged = orjson.dumps(record)
    if hasattr(store, "journal"):  # MongoDB
        store.journal.update_one({"_id": 1}, {"$set": {"body": forged}})
    else:
        with store.write():
            store._conn().execute("UPDATE audit_record SET body = ? WHERE seq = 1", (forged,))
    problems = verify(store).problems
    assert any("journal record 1" in p and "edited" in p for p in problems)


def test_appending_and_expanding_a_search_costs_one_record_not_one_per_patient(
        store: Any) -> None:
    append(store, [_event(f"p{n}", request="s") for n in range(50)])
    assert len(store.journal_records(0, 10)) == 1
    assert store.index_journal(10) == 50  # a record is expanded whole
    assert store.journal_backlog() == 0


def test_two_records_naming_one_id_neither_stall_indexing_nor_pass_verify_R_SEC_3(
        store: Any) -> None:
    """Two imports of one AuditEvent racing each other both get chained; the first keeps
    the id, indexing goes on, and ``audit verify`` names the second."""
    from fhir_server.audit.chain import verify

    append(store, [_event("a", request="first")], ids=["dup"])
    append(store, [_event("b", request="second")], ids=["dup"])
    append(store, [_event("c", request="third")])
    while store.index_journal(1):
        pass
    assert store.journal_backlog() == 0
    assert len(_search(store, "patient=Patient/c")) == 1
    kept = orjson.loads(store.read("AuditEvent", "dup").body)
    assert kept["entity"][-1]["what"]["reference"] == "Patient/a"
    problems = verify(store).problems
    assert any("AuditEvent/dup (journal record 2)" in p for p in problems), problems
