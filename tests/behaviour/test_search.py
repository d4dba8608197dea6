"""Search (FHIR R4 search.html) — the same expectations on both stores."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server.search.registry import get, register
from tests.conftest import Fhir

INS_NIR = "urn:oid:1.2.250.1.213.1.4.8"

# R4 defines no number parameter for our types; later issues add rows like this one.
if get("ImagingStudy", "number-of-series") is None:
    register({"type": "ImagingStudy", "name": "number-of-series", "kind": "number",
              "paths": [{"expression": "ImagingStudy.numberOfSeries"}],
              "url": "urn:test:number-of-series"})


@pytest.fixture
def data(client: Fhir) -> dict[str, Any]:
    """Two patients, a practitioner, requests, a study and a report."""
    p1 = client.create({
        "resourceType": "Patient",
        "identifier": [{"system": INS_NIR, "value": "180047512345678"}],
        "name": [{"family": "Lefèvre", "given": ["Élodie", "Marie"]}],
        "gender": "female", "birthDate": "1980-04-02",
        "telecom": [{"system": "email", "value": "elodie@example.fr"}],
        "address": [{"city": "Saint-Étienne", "postalCode": "42000"}],
    })
    p2 = client.create({
        "resourceType": "Patient",
        "identifier": [{"system": INS_NIR, "value": "275117512345679"}],
        "name": [{"family": "Martin", "given": ["Paul"]}],
        "gender": "male", "birthDate": "1975-11",
    })
    pr = client.create({
        "resourceType": "Practitioner",
        "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "810002345678"}],
        "name": [{"family": "Radiologue", "given": ["Jean"]}],
    })
    sr1 = client.create({
        "resourceType": "ServiceRequest", "status": "active", "intent": "order",
        "priority": "urgent", "subject": {"reference": f"Patient/{p1['id']}"},
        "requester": {"reference": f"Practitioner/{pr['id']}"},
        "code": {"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM",
                             "code": "CT", "display": "Computed Tomography"}],
                 "text": "Scanner thoracique"},
        "authoredOn": "2024-03-15T10:30:00+01:00",
    })
    sr2 = client.create({
        "resourceType": "ServiceRequest", "status": "completed", "intent": "order",
        "priority": "routine", "subject": {"reference": f"Patient/{p2['id']}"},
        "code": {"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM",
                             "code": "MR"}]},
        "authoredOn": "2024-04-01",
    })
    study = client.create({
        "resourceType": "ImagingStudy", "status": "available",
        "subject": {"reference": f"Patient/{p1['id']}"},
        "basedOn": [{"reference": f"ServiceRequest/{sr1['id']}"}],
        "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.3.4.5"}],
        "numberOfSeries": 3,
    })
    report = client.create({
        "resourceType": "DiagnosticReport", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "18748-4"}]},
        "subject": {"reference": f"Patient/{p1['id']}"},
        "basedOn": [{"reference": f"ServiceRequest/{sr1['id']}"}],
        "imagingStudy": [{"reference": f"ImagingStudy/{study['id']}"}],
        "performer": [{"reference": f"Practitioner/{pr['id']}"}],
        "effectiveDateTime": "2024-03-16T09:00:00Z",
    })
    dose = client.create({
        "resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM",
                             "code": "113813"}]},
        "subject": {"reference": f"Patient/{p1['id']}"},
        "valueQuantity": {"value": 412.5, "unit": "mGy.cm",
                          "system": "http://unitsofmeasure.org", "code": "mGy.cm"},
    })
    return {"p1": p1["id"], "p2": p2["id"], "pr": pr["id"], "sr1": sr1["id"],
            "sr2": sr2["id"], "study": study["id"], "report": report["id"], "dose": dose["id"]}


def test_token_system_code_forms(client: Fhir, data: dict[str, Any]) -> None:
    assert client.ids(f"Patient?identifier={INS_NIR}|180047512345678") == [data["p1"]]
    assert client.ids("Patient?identifier=180047512345678") == [data["p1"]]
    assert client.ids("Patient?identifier=|180047512345678") == []
    assert sorted(client.ids(f"Patient?identifier={INS_NIR}|")) == sorted([data["p1"],
                                                                           data["p2"]])
    assert client.ids("Patient?gender=male,female") and len(client.ids(
        "Patient?gender=male,female")) == 2


def test_token_not_and_text_modifiers(client: Fhir, data: dict[str, Any]) -> None:
    assert client.ids("Patient?gender:not=female") == [data["p2"]]
    assert client.ids("ServiceRequest?code:text=scanner") == [data["sr1"]]
    assert client.ids("ServiceRequest?code:text=computed") == [data["sr1"]]


def test_string_default_exact_contains_accent_insensitive(client: Fhir,
                                                            data: dict[str, Any]) -> None:
    assert client.ids("Patient?family=lefe") == [data["p1"]]
    assert client.ids("Patient?given=elod") == [data["p1"]]
    assert client.ids("Patient?family:exact=Lefèvre") == [data["p1"]]
    assert client.ids("Patient?family:exact=lefèvre") == []
    assert client.ids("Patient?family:contains=fev") == [data["p1"]]
    assert client.ids("Patient?address-city=saint-etienne") == [data["p1"]]
    assert client.ids("Patient?name=marie") == [data["p1"]]


def test_missing_modifier(client: Fhir, data: dict[str, Any]) -> None:
    assert client.ids("Patient?email:missing=false") == [data["p1"]]
    assert client.ids("Patient?email:missing=true") == [data["p2"]]


@pytest.mark.parametrize("query,expected", [
    ("birthdate=1980", ["p1"]),
    ("birthdate=1980-04-02", ["p1"]),
    ("birthdate=eq1980-04", ["p1"]),
    ("birthdate=1975-11-10", []),  # the stored month is wider than the searched day
    ("birthdate=ap1975-11-10", ["p1", "p2"]),  # ±10% of the 51-year gap to now
    ("birthdate=ap1950-01-01", []),
    ("birthdate=gt1979-12-31", ["p1"]),
    ("birthdate=lt1976", ["p2"]),
    ("birthdate=ge1975-11", ["p1", "p2"]),
    ("birthdate=le1975-11", ["p2"]),
    ("birthdate=ne1980-04-02", ["p2"]),
    ("birthdate=sa1976-01-01", ["p1"]),
    ("birthdate=eb1976-01-01", ["p2"]),
    ("birthdate=ge1975&birthdate=lt1980", ["p2"]),
])
def test_date_prefixes_with_precision(client: Fhir, data: dict[str, Any], query: str,
                                      expected: list[str]) -> None:
    assert sorted(client.ids(f"Patient?{query}")) == sorted(data[k] for k in expected)


def test_datetime_with_timezone(client: Fhir, data: dict[str, Any]) -> None:
    assert client.ids("ServiceRequest?authored=2024-03-15T09:30:00Z") == [data["sr1"]]
    assert client.ids("ServiceRequest?authored=gt2024-03-15T09:31:00Z") == [data["sr2"]]


def test_invalid_date_is_400_naming_parameter(client: Fhir, data: dict[str, Any]) -> None:
    r = client.get("/fhir/Patient?birthdate=yesterday")
    assert r.status_code == 400
    assert r.json()["issue"][0]["expression"] == ["birthdate"]


def test_number_and_quantity(client: Fhir, data: dict[str, Any]) -> None:
    assert client.ids("ImagingStudy?number-of-series=3") == [data["study"]]
    assert client.ids("ImagingStudy?number-of-series=gt3") == []
    assert client.ids("Observation?value-quantity=412.5") == [data["dose"]]
    assert client.ids("Observation?value-quantity=gt400|http://unitsofmeasure.org|mGy.cm") == [
        data["dose"]]
    assert client.ids("Observation?value-quantity=gt400||mGy") == []
    assert client.ids("Observation?value-quantity=ap410") == [data["dose"]]


def test_reference_forms(client: Fhir, data: dict[str, Any]) -> None:
    p1 = data["p1"]
    assert client.ids(f"ServiceRequest?subject=Patient/{p1}") == [data["sr1"]]
    assert client.ids(f"ServiceRequest?subject={p1}") == [data["sr1"]]
    assert client.ids(f"ServiceRequest?subject:Patient={p1}") == [data["sr1"]]
    assert client.ids(f"ServiceRequest?patient={p1}") == [data["sr1"]]
    assert client.ids(f"ServiceRequest?subject=http://testserver/fhir/Patient/{p1}") == [
        data["sr1"]]


def test_chained_search_several_levels(client: Fhir, data: dict[str, Any]) -> None:
    q = f"ServiceRequest?subject:Patient.identifier={INS_NIR}|180047512345678"
    assert client.ids(q) == [data["sr1"]]
    assert client.ids("ServiceRequest?subject.family=martin") == [data["sr2"]]
    q2 = "DiagnosticReport?based-on:ServiceRequest.subject:Patient.family=lefevre"
    assert client.ids(q2) == [data["report"]]
    assert client.ids("DiagnosticReport?based-on:ServiceRequest.subject:Patient.family=x") == []


def test_reverse_chaining_has(client: Fhir, data: dict[str, Any]) -> None:
    assert client.ids("Patient?_has:DiagnosticReport:subject:status=final") == [data["p1"]]
    assert client.ids("ServiceRequest?_has:ImagingStudy:basedon:status=available") == [
        data["sr1"]]
    assert client.ids("Patient?_has:DiagnosticReport:subject:status=preliminary") == []


def test_include_revinclude_and_iterate(client: Fhir, data: dict[str, Any]) -> None:
    bundle = client.search(f"ServiceRequest?_id={data['sr1']}&_include=ServiceRequest:subject"
                           "&_include=ServiceRequest:requester")
    modes = {(e["resource"]["resourceType"], e["search"]["mode"]) for e in bundle["entry"]}
    assert modes == {("ServiceRequest", "match"), ("Patient", "include"),
                     ("Practitioner", "include")}
    assert bundle["total"] == 1
    rev = client.search(f"Patient?_id={data['p1']}&_revinclude=ServiceRequest:subject")
    assert {e["resource"]["resourceType"] for e in rev["entry"]} == {"Patient", "ServiceRequest"}
    it = client.search(f"DiagnosticReport?_id={data['report']}"
                       "&_include=DiagnosticReport:based-on"
                       "&_include:iterate=ServiceRequest:requester")
    assert {e["resource"]["resourceType"] for e in it["entry"]} == {
        "DiagnosticReport", "ServiceRequest", "Practitioner"}
    star = client.search(f"DiagnosticReport?_id={data['report']}&_include=*")
    assert {e["resource"]["resourceType"] for e in star["entry"]} >= {
        "Patient", "ServiceRequest", "Practitioner"}


def test_sort_several_keys(client: Fhir, data: dict[str, Any]) -> None:
    assert client.ids("Patient?_sort=birthdate") == [data["p2"], data["p1"]]
    assert client.ids("Patient?_sort=-birthdate") == [data["p1"], data["p2"]]
    assert client.ids("ServiceRequest?_sort=status,-authored") == [data["sr1"], data["sr2"]]
    assert client.ids("Patient?_sort=-_lastUpdated") == [data["p2"], data["p1"]]


def test_summary_count_and_total_none(client: Fhir, data: dict[str, Any]) -> None:
    count = client.search("Patient?_summary=count")
    assert count["total"] == 2 and "entry" not in count
    assert "total" not in client.search("Patient?_total=none")


def test_unknown_parameters_lenient_then_strict(client: Fhir, data: dict[str, Any]) -> None:
    lenient = client.search("Patient?foo=bar&gender=male")
    assert "foo" not in lenient["link"][0]["url"] and "gender=male" in lenient["link"][0]["url"]
    assert [e["resource"]["id"] for e in lenient["entry"] if e["search"]["mode"] == "match"] == [
        data["p2"]]
    strict = client.get("/fhir/Patient?foo=bar", headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400
    assert "foo" in strict.json()["issue"][0]["diagnostics"]


def test_post_search_form(client: Fhir, data: dict[str, Any]) -> None:
    r = client.post("/fhir/Patient/_search", data={"gender": "male"})
    assert r.status_code == 200
    assert [e["resource"]["id"] for e in r.json()["entry"]] == [data["p2"]]


def test_tag_profile_security_lastupdated(trusted_client: Fhir) -> None:
    client = trusted_client  # meta.security is server-owned through the secured API
    rid = client.create({"resourceType": "Patient", "meta": {
        "tag": [{"system": "urn:t", "code": "vip"}],
        "profile": ["https://example.org/StructureDefinition/p"],
        "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                      "code": "R"}]}})["id"]
    assert client.ids("Patient?_tag=urn:t|vip") == [rid]
    assert client.ids("Patient?_profile=https://example.org/StructureDefinition/p") == [rid]
    assert client.ids("Patient?_security=R") == [rid]
    assert client.ids("Patient?_lastUpdated=gt2000-01-01") == [rid]
    assert client.ids("Patient?_lastUpdated=lt2000-01-01") == []


def test_paging_is_stable_across_inserts_and_deletes(client: Fhir) -> None:
    ids = [client.create({"resourceType": "Organization", "name": f"Org {i:02d}"})["id"]
           for i in range(7)]
    page1 = client.search("Organization?_count=3&_sort=name")
    assert [e["resource"]["id"] for e in page1["entry"]] == ids[:3]
    nxt = next(lk["url"] for lk in page1["link"] if lk["relation"] == "next")
    client.create({"resourceType": "Organization", "name": "Org 00a"})  # sorts into page 1
    client.delete(f"/fhir/Organization/{ids[3]}")
    page2 = client.get(nxt.replace("http://testserver", "")).json()
    assert [e["resource"]["id"] for e in page2["entry"]] == ids[4:7]
    prev = next(lk["url"] for lk in page2["link"] if lk["relation"] == "previous")
    back = client.get(prev.replace("http://testserver", "")).json()
    assert [e["resource"]["id"] for e in back["entry"]][-2:] == ids[1:3]


def test_invalid_cursor_and_modifier_are_400(client: Fhir) -> None:
    assert client.get("/fhir/Patient?_cursor=garbage").status_code == 400
    assert client.get("/fhir/Patient?birthdate:exact=2000").status_code == 400
    assert client.get("/fhir/Patient?_sort=nope").status_code == 400


def test_date_bounds_on_one_parameter_form_a_range(client: Fhir, data: dict[str, Any]) -> None:
    q = "ServiceRequest?authored=ge2024-03-15&authored=lt2024-03-16"
    assert client.ids(q) == [data["sr1"]]
    assert client.ids("ServiceRequest?authored=ge2024-03-16&authored=lt2024-04-01") == []
    assert sorted(client.ids("ServiceRequest?authored=ge2024-03-01&authored=le2024-04")) == \
        sorted([data["sr1"], data["sr2"]])


def test_open_ended_period_still_matches_after_bounds(client: Fhir) -> None:
    """The implied width bound on dates must not lose intervals without an end."""
    open_ended = client.create({"resourceType": "ServiceRequest", "status": "active",
                                "intent": "order", "subject": {"reference": "Patient/x"},
                                "occurrencePeriod": {"start": "2020-01-01"}})["id"]
    short = client.create({"resourceType": "ServiceRequest", "status": "active",
                           "intent": "order", "subject": {"reference": "Patient/x"},
                           "occurrenceDateTime": "2031-05-01T10:00:00Z"})["id"]
    assert sorted(client.ids("ServiceRequest?occurrence=ge2030-01-01")) == sorted(
        [open_ended, short])
    assert client.ids("ServiceRequest?occurrence=gt2031-06-01") == [open_ended]
    assert sorted(client.ids("ServiceRequest?occurrence=ap2031-05-01T10:00:00Z")) == sorted(
        [open_ended, short])
