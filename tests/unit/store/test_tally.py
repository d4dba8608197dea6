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
