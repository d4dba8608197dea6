"""The MongoDB compiler produces a plan and runs nothing (issue 28 item 2): what a filter
needs from other documents is a lookup the store runs first."""

from typing import Any

from fhir_server.search.query import QueryParser
from fhir_server.store.mongo import MongoCompiler


def test_a_chain_compiles_to_a_lookup_filled_by_its_results() -> None:
    q = QueryParser().parse("ServiceRequest", [("subject:Patient.identifier", "urn:s|1")])
    plan = MongoCompiler().plan("ServiceRequest", q.terms)  # no store: nothing can run
    (slot,) = plan.slots
    (lookup,) = slot.lookups
    assert lookup.op == "ids" and lookup.plan.filter["type"] == "Patient"
    assert slot.target == {}  # not filled until the store ran the lookup
    slot.target.update(slot.fill([["p1", "p2"]]))
    cond: Any = plan.filter["$and"][0]
    assert cond == {"ref": {"$elemMatch": {"p": "ServiceRequest.subject", "$or": [
        {"t": "Patient", "i": {"$in": ["p1", "p2"]}}]}}}


def test_has_reads_the_referenced_ids() -> None:
    q = QueryParser().parse("Patient", [("_has:Observation:patient:code", "1")])
    plan = MongoCompiler().plan("Patient", q.terms)
    (lookup,) = plan.slots[0].lookups
    assert (lookup.op, lookup.key) == ("referenced", "Observation.patient")
    assert plan.slots[0].fill([["a"]]) == {"rid": {"$in": ["a"]}}


def test_plain_clauses_need_no_lookup() -> None:
    q = QueryParser().parse("Patient", [("family", "dupont"), ("gender", "female")])
    assert MongoCompiler().plan("Patient", q.terms).slots == []
