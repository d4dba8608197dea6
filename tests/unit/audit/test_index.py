"""The hand-written AuditEvent index equals the general extraction (R-SEC-3, ADR 0006)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fhir_server.audit.balp import build
from fhir_server.audit.index import rows
from fhir_server.core.model import FhirRequest, Interaction, RequestContext
from fhir_server.search.extract import IndexRows, extract
from fhir_server.security.principal import Principal
from tests.conftest import REFERENCES

EXAMPLES = sorted((REFERENCES / "fhir-r4" / "examples").glob("AuditEvent-*.json"))
PEOPLE = [
    None,
    Principal(sub="s1", issuer="https://psc", roles=("teleradiologist",),
              id_nat_ps="810002345678", name="Dr A", acr="eidas3", client_id="viewer"),
    Principal(sub="pat", issuer="https://dev", roles=("patient",), patient="p9"),
]
REQUESTS = [
    FhirRequest(Interaction.READ, "Patient", "p1"),
    FhirRequest(Interaction.VREAD, "Observation", "o1", "2"),
    FhirRequest(Interaction.SEARCH_TYPE, "ServiceRequest",
                params=[("subject", "Patient/p1"), ("_count", "5")]),
    FhirRequest(Interaction.CREATE, "Patient"),
    FhirRequest(Interaction.BATCH, body={"type": "transaction"}),
    FhirRequest(Interaction.HISTORY_SYSTEM),
]


def journal(resource: dict[str, Any]) -> IndexRows:
    """The general extraction as the journal keeps it: sort keys of dates only."""
    out = extract(resource)
    dated = {key for key, _, _ in out.date}
    out.sort = {k: v for k, v in out.sort.items() if k in dated}
    return out


def _events() -> list[dict[str, Any]]:
    out = []
    for who in PEOPLE:
        for req in REQUESTS:
            req.context = RequestContext(request_id="r-1", principal=who,
                                         client_address="10.0.0.1")
            for status, touched in ((200, {"Patient/p1": {"p1"}}), (403, None),
                                    (200, {"A/1": {"p1", "p2"}, "A/2": {"p3"}})):
                for event in build(req, status, "refused" if status >= 400 else None,
                                   touched, "teleimagerie"):
                    out.append({**event, "id": "0190-x", "meta": {
                        "versionId": "1", "lastUpdated": "2026-11-22T08:00:00.123Z"}})
    return out


@pytest.mark.parametrize("event", _events(), ids=lambda e: f"{e['action']}-{e['outcome']}")
def test_audit_index_rows_equal_the_general_extraction_for_balp_events(
        event: dict[str, Any]) -> None:
    assert rows(event) == journal(event)


@pytest.mark.skipif(not EXAMPLES, reason="R4 examples absent")
def test_audit_index_rows_equal_the_general_extraction_for_the_r4_examples() -> None:
    for path in EXAMPLES:
        event = json.loads(path.read_text())
        assert rows(event) == journal(event), path.name


def test_audit_index_is_lenient_with_malformed_elements() -> None:
    event = {"resourceType": "AuditEvent", "agent": {"who": "x", "altId": 3},
             "entity": [None, {"what": {"reference": "Patient/p"}}], "recorded": "garbage",
             "type": "not-a-coding", "subtype": [{"code": "read"}, {"code": "read"}],
             "meta": []}
    assert rows(event) == journal(event)


@pytest.mark.parametrize("who", [
    {"identifier": {}}, {"identifier": {"value": "x"}, "type": "Practitioner"},
    {"reference": "Patient/p", "identifier": {"value": "x"}}, {"reference": "urn:uuid:1"},
    {"reference": "http://other/fhir/Patient/p"}, {"reference": "Patient/p/_history/2"},
    {"display": "only a name"}])
def test_audit_index_rows_equal_the_general_extraction_for_reference_shapes(
        who: dict[str, Any]) -> None:
    event = {"resourceType": "AuditEvent", "agent": [{"who": who}], "entity": [{"what": who}]}
    assert rows(event) == journal(event)
