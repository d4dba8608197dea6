"""Store.tally: the compiled aggregate behind $indicators (issue 30, R-EVAL-1), the same
on both stores."""

from __future__ import annotations

import random
import statistics
from typing import Any

import orjson

from fhir_server.core.limits import Limits
from fhir_server.search.extract import extract
from fhir_server.search.query import QueryParser
from fhir_server.store.base import DAY_US, Stored
from fhir_server.workflow.indicators import _spread, percentile
from fhir_server.workflow.search import register_all

register_all()


def _task(i: int, day: str, site: str) -> dict[str, Any]:
    task: dict[str, Any] = {
        "resourceType": "Task", "id": f"t{i}", "status": "requested", "intent": "order",
        "authoredOn": f"{day}T10:00:00Z", "meta": {"versionId": "1"},
        "code": {"coding": [{"system": "urn:x", "code": "a"}], "text": f"free {i}"},
        "input": [{"type": {"coding": [{"code": "site"}]},
                   "valueReference": {"reference": f"Organization/{site}"}}]}
    return task


def test_tally_groups_values_by_day_on_both_stores(store: Any) -> None:
    tasks = [_task(0, "2026-03-01", "s1"), _task(1, "2026-03-01", "s2"),
             _task(2, "2026-03-02", "s1")]
    with store.write():
        for task in tasks:
            store.put(Stored("Task", task["id"], 1, 1, False, orjson.dumps(task), "POST"),
                      extract(task))
    query = QueryParser(Limits()).parse("Task", [("authored-on", "ge2026-01-01")])
    found = store.tally(query, ["Task.code", "Task.tlm-site"])
    assert found["Task.code"] == [("urn:x", "a", 3)]  # grouped by value, not by text
    assert sorted(found["Task.tlm-site"]) == [("Organization", "s1", 2),
                                              ("Organization", "s2", 1)]
    query = QueryParser(Limits()).parse("Task", [("authored-on", "ge2026-01-01")])
    series = store.tally(query, ["Task.tlm-site"], by="Task.authored-on")
    day = 1_772_323_200_000_000 // DAY_US  # 2026-03-01
    assert sorted(series["Task.tlm-site"]) == [
        (day, "Organization", "s1", 1), (day, "Organization", "s2", 1),
        (day + 1, "Organization", "s1", 1)]


def test_spread_is_the_median_and_p90_of_the_values() -> None:
    rnd = random.Random(30)
    for size in (1, 2, 3, 10, 101):
        values = [round(rnd.expovariate(1 / 60), 1) for _ in range(size)]
        rows = [(v, values.count(v)) for v in set(values)]
        part = {p["name"]: p for p in _spread(rows)}
        assert part["count"]["valueInteger"] == size
        assert part["median"]["valueQuantity"]["value"] == round(statistics.median(values), 1)
        assert part["p90"]["valueQuantity"]["value"] == round(percentile(values, 0.9), 1)


def test_indicators_from_the_summaries_equal_those_from_the_index(
        store: Any, monkeypatch: Any) -> None:
    """Issue 30: the summary rows kept in the write unit give the figures the index gives
    (R-EVAL-1), on both stores, with every filter — including rows stored before the
    summaries were first read (filled then) and rows changed after."""
    from benchmarks import indicators as bench
    from fhir_server.core.model import FhirRequest, Interaction
    from fhir_server.server.dispatch import FhirServer
    from fhir_server.workflow import indicators
    from fhir_server.workflow.engine import Workflow

    server = FhirServer(store, workflow=Workflow())
    monkeypatch.setattr(bench, "N", 400)
    bench.load(store)
    while store.fill_summaries(150):  # the filler of an upgraded store, in chunks
        pass

    def both(params: list[tuple[str, str]]) -> tuple[Any, Any]:
        req = FhirRequest(Interaction.OPERATION, operation="indicators",
                          params=[("start", "2026-01-01"), ("end", "2027-01-01"), *params])
        fast = server.handle(req).resource
        with monkeypatch.context() as m:
            m.setattr(indicators, "_from_summaries", lambda *_: None)
            slow = server.handle(req).resource
        return fast, slow

    scope = indicators.Scope(server, FhirRequest(
        Interaction.OPERATION, operation="indicators", params=[("start", "2026-01-01")]))
    assert indicators._from_summaries(server, scope) is not None  # the fast path answers
    for params in ([], [("site", "Organization/site3")], [("imager", "Practitioner/im7")],
                   [("modality", "CT")], [("start", "2026-03-01"), ("end", "2026-04-01")],
                   [("series", "week")]):
        fast, slow = both(params)
        assert fast == slow, params
    # a request changed after the summaries were filled: its row follows
    task = orjson.loads(store.read("Task", "t1").body)
    task["businessStatus"]["coding"][0]["code"] = "annulee"
    with store.write():
        store.put(Stored("Task", "t1", 2, 2, False, orjson.dumps(task), "PUT"), extract(task))
    fast, slow = both([])
    assert fast == slow
