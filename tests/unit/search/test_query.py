"""Parsing search parameters into the backend-neutral query (search.html)."""

import pytest

from fhir_server.core.errors import FhirError
from fhir_server.search.query import ANY, Chain, Has, QueryParser, TokenValue, split_values


def test_escaped_commas_and_pipes() -> None:
    assert split_values(r"a\,b,c") == [r"a\,b", "c"]
    q = QueryParser().parse("Patient", [("identifier", r"urn:x|a\|b")])
    assert q.terms[0].values == [TokenValue("urn:x", "a|b")]


def test_token_forms() -> None:
    values = QueryParser().parse("Patient", [("gender", "male,|female,urn:s|")]).terms[0].values
    assert values == [TokenValue(ANY, "male"), TokenValue(None, "female"),
                      TokenValue("urn:s", None)]


def test_chain_and_has_structures() -> None:
    q = QueryParser().parse("DiagnosticReport", [
        ("based-on:ServiceRequest.subject:Patient.family", "x"),
        ("_has:Observation:patient:code", "1")])
    assert isinstance(q.terms[0], Chain) and isinstance(q.terms[0].inner[0], Chain)


def test_has_on_patient() -> None:
    q = QueryParser().parse("Patient", [("_has:Observation:patient:code", "1")])
    assert isinstance(q.terms[0], Has)


def test_chain_too_deep_is_refused() -> None:
    key = ".".join(["based-on:ServiceRequest"] + ["based-on:ServiceRequest"] * 5) + ".status"
    with pytest.raises(FhirError):
        QueryParser().parse("ServiceRequest", [(key, "active")])


def test_count_is_capped_and_unknown_ignored_unless_strict() -> None:
    q = QueryParser().parse("Patient", [("_count", "100000"), ("zzz", "1")])
    assert q.count == 1000 and q.ignored == ["zzz"]
    with pytest.raises(FhirError):
        QueryParser(strict=True).parse("Patient", [("zzz", "1")])
