"""Never store what breaks the base R4 specification (issue 25, items 1–4), on both stores.

A body that breaks the base specification — a JSON type the R4 JSON format does not
allow, a primitive that does not match its format, a code outside a required binding —
is answered 400 with one OperationOutcome issue per problem, each naming its element in
``expression``, and nothing is stored; whichever way it comes (create, update, patch, a
transaction or batch entry). A profile or business rule violation stays 422.
``$validate`` reports the same problems as errors. ``teleimagerie store check`` lists
what is already stored and would now be refused.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from fhir_server.core.canonical import BASE
from fhir_server.server.dispatch import FhirServer
from fhir_server.store import check
from fhir_server.store.versions import store_version
from fhir_server.workflow.records import save
from tests.conftest import Fhir

# (body, the element the issue names) — the issue's examples first
REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"resourceType": "Patient", "active": "yes"}, "Patient.active"),
    ({"resourceType": "Patient", "active": 1}, "Patient.active"),
    ({"resourceType": "Patient", "deceasedBoolean": "false"}, "Patient.deceasedBoolean"),
    ({"resourceType": "ImagingStudy", "status": "available",
      "subject": {"reference": "Patient/p1"}, "numberOfSeries": "3"},
     "ImagingStudy.numberOfSeries"),
    ({"resourceType": "Patient", "gender": "maybe"}, "Patient.gender"),
    ({"resourceType": "Observation", "status": "bogus", "code": {"text": "x"}},
     "Observation.status"),
    ({"resourceType": "ServiceRequest", "status": "active", "intent": "wish",
      "subject": {"reference": "Patient/p1"}}, "ServiceRequest.intent"),
    ({"resourceType": "DiagnosticReport", "status": "done", "code": {"text": "x"}},
     "DiagnosticReport.status"),
    # the rest of the R4 JSON format
    ({"resourceType": "ImagingStudy", "status": "available",
      "subject": {"reference": "Patient/p1"}, "numberOfSeries": -1},
     "ImagingStudy.numberOfSeries"),
    ({"resourceType": "ImagingStudy", "status": "available",
      "subject": {"reference": "Patient/p1"}, "numberOfSeries": 2_147_483_648},
     "ImagingStudy.numberOfSeries"),
    ({"resourceType": "Patient", "multipleBirthInteger": 2.0}, "Patient.multipleBirthInteger"),
    ({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
      "valueQuantity": {"value": "3.5"}}, "Observation.valueQuantity.value"),
    ({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
      "valueQuantity": {"value": 3.5, "comparator": "about"}},
     "Observation.valueQuantity.comparator"),
    ({"resourceType": "Patient", "active": None}, "Patient.active"),
    ({"resourceType": "Patient", "name": []}, "Patient.name"),
    ({"resourceType": "Patient", "name": [{}]}, "Patient.name[0]"),
    ({"resourceType": "Patient", "name": [{"family": ""}]}, "Patient.name[0].family"),
    ({"resourceType": "Patient", "name": [{"family": "Du\u0000rand"}]},
     "Patient.name[0].family"),
    ({"resourceType": "Patient", "gender": "male "}, "Patient.gender"),
    ({"resourceType": "Patient", "birthDate": "1980-2-4"}, "Patient.birthDate"),
    ({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
      "issued": "2024-01-01T10:00:00"}, "Observation.issued"),
    ({"resourceType": "Patient", "identifier": [{"system": "urn:oid:1.2 3", "value": "1"}]},
     "Patient.identifier[0].system"),
    ({"resourceType": "Patient", "identifier": [{"use": "primary", "value": "1"}]},
     "Patient.identifier[0].use"),
    ({"resourceType": "Patient", "telecom": [{"system": "pigeon", "value": "x"}]},
     "Patient.telecom[0].system"),
    ({"resourceType": "Patient", "text": {"status": "done",
                                          "div": '<div xmlns="http://www.w3.org/1999/xhtml">'
                                                 "x</div>"}}, "Patient.text.status"),
    ({"resourceType": "Patient", "colour": "blue"}, "Patient.colour"),
]
IDS = [f"{body['resourceType']}-{where.split('.', 1)[1]}-{i}"
       for i, (body, where) in enumerate(REFUSED)]


def _count(client: Fhir, rtype: str) -> int:
    return int(client.search(f"{rtype}?_summary=count")["total"])


def _expressions(outcome: dict[str, Any]) -> list[str]:
    return [e for issue in outcome["issue"] for e in issue.get("expression", [])]


@pytest.mark.parametrize(("body", "where"), REFUSED, ids=IDS)
def test_create_refuses_with_400_naming_the_element(client: Fhir, body: dict[str, Any],
                                                    where: str) -> None:
    r = client.post(f"/fhir/{body['resourceType']}", json=body)
    assert r.status_code == 400, r.text
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert where in _expressions(outcome)
    assert all(i["severity"] == "error" and i.get("expression") for i in outcome["issue"])
    assert _count(client, body["resourceType"]) == 0


def test_one_issue_per_problem(client: Fhir) -> None:
    r = client.post("/fhir/Patient", json={
        "resourceType": "Patient", "active": "yes", "gender": "maybe",
        "name": [{"family": 3, "given": ["Anne", ""]}], "birthDate": "1980-02-30"})
    assert r.status_code == 400
    assert _expressions(r.json()) == ["Patient.active", "Patient.gender",
                                      "Patient.name[0].family", "Patient.name[0].given[1]",
                                      "Patient.birthDate"]
    codes = [i["code"] for i in r.json()["issue"]]
    assert codes == ["structure", "code-invalid", "structure", "value", "value"]


def test_update_and_patch_refuse_and_keep_the_stored_version(client: Fhir) -> None:
    created = client.create({"resourceType": "Patient", "gender": "female", "active": True})
    rid = created["id"]
    r = client.put(f"/fhir/Patient/{rid}", json={"resourceType": "Patient", "id": rid,
                                                 "active": "false"})
    assert r.status_code == 400 and _expressions(r.json()) == ["Patient.active"]
    r = client.put("/fhir/Patient/new-one", json={"resourceType": "Patient", "id": "new-one",
                                                  "gender": "F"})
    assert r.status_code == 400 and _expressions(r.json()) == ["Patient.gender"]
    assert client.get("/fhir/Patient/new-one").status_code == 404
    r = client.patch(f"/fhir/Patient/{rid}", json=[
        {"op": "replace", "path": "/active", "value": "yes"}],
        headers={"content-type": "application/json-patch+json"})
    assert r.status_code == 400 and _expressions(r.json()) == ["Patient.active"]
    back = client.get(f"/fhir/Patient/{rid}").json()
    assert back["meta"]["versionId"] == "1" and back["active"] is True


def test_a_transaction_with_one_bad_entry_commits_nothing(client: Fhir) -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "gender": "female"},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "ServiceRequest", "status": "active", "intent": "wish",
                      "subject": {"reference": "Patient/p1"}},
         "request": {"method": "POST", "url": "ServiceRequest"}},
        {"resource": {"resourceType": "Patient", "id": "p2", "active": 1},
         "request": {"method": "PUT", "url": "Patient/p2"}},
    ]}
    r = client.post("/fhir", json=bundle)
    assert r.status_code == 400, r.text
    issue = r.json()["issue"][0]
    assert issue["diagnostics"].startswith("Bundle.entry[")
    assert issue["expression"] in (["ServiceRequest.intent"], ["Patient.active"])
    assert _count(client, "Patient") == 0 and _count(client, "ServiceRequest") == 0


def test_a_batch_refuses_the_bad_entry_alone(client: Fhir) -> None:
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": {"resourceType": "Patient", "gender": "female"},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "DiagnosticReport", "status": "done",
                      "code": {"text": "x"}},
         "request": {"method": "POST", "url": "DiagnosticReport"}},
    ]}
    out = client.post("/fhir", json=bundle).json()
    assert [e["response"]["status"][:3] for e in out["entry"]] == ["201", "400"]
    assert _expressions(out["entry"][1]["response"]["outcome"]) == ["DiagnosticReport.status"]
    assert _count(client, "Patient") == 1 and _count(client, "DiagnosticReport") == 0


def test_validate_reports_base_errors_with_their_expression(client: Fhir) -> None:
    r = client.post("/fhir/Patient/$validate", json={"resourceType": "Patient",
                                                     "gender": "maybe", "active": "yes"})
    assert r.status_code == 200
    outcome = r.json()
    assert {i["severity"] for i in outcome["issue"]} == {"error"}
    assert sorted(_expressions(outcome)) == ["Patient.active", "Patient.gender"]
    assert not any("réussie" in i["diagnostics"] for i in outcome["issue"])
    inside = client.post("/fhir/Observation/$validate", json={
        "resourceType": "Parameters", "parameter": [{"name": "resource", "resource": {
            "resourceType": "Observation", "status": "bogus", "code": {"text": "x"}}}]}).json()
    assert _expressions(inside) == ["Observation.status"]
    ok = client.post("/fhir/Patient/$validate", json={"resourceType": "Patient",
                                                      "gender": "female"}).json()
    assert any("réussie" in i["diagnostics"] for i in ok["issue"])


def test_profile_violations_stay_422(client: Fhir) -> None:
    """Base-valid but breaking a profile it claims: Unprocessable Entity, not Bad Request."""
    body = {"resourceType": "Patient", "gender": "female",
            "meta": {"profile": [f"{BASE}/StructureDefinition/tlm-patient"]}}
    r = client.post("/fhir/Patient", json=body)
    assert r.status_code == 422, r.text
    assert "Patient.birthDate" in _expressions(r.json())


def test_server_built_resources_are_held_to_the_same_rules(secured: FhirServer) -> None:
    """An adapter or the workflow writing through ``save`` cannot store an invalid
    resource either: it is the server's fault (500) and nothing is written."""
    from fhir_server.core.errors import FhirError

    with pytest.raises(FhirError) as caught, secured.store.write():
        save(secured, "Flag", "f1", {"resourceType": "Flag", "status": "raised",
                                     "code": {"text": "x"}, "subject": {"reference": "Patient/1"}})
    assert caught.value.status == 500
    assert caught.value.issues[0].expression == ["Flag.status"]
    assert secured.store.read("Flag", "f1") is None


def _store_check(secured: FhirServer) -> check.Report:
    return check.scan(secured.store)


def test_store_check_lists_what_would_now_be_refused(client: Fhir, secured: FhirServer
                                                     ) -> None:
    client.create({"resourceType": "Patient", "gender": "female"})
    client.create({"resourceType": "Observation", "status": "final", "code": {"text": "x"}})
    clean = _store_check(secured)
    assert clean.ok and clean.by_type["Patient"] == 1 and clean.by_type["Observation"] == 1
    # written before this release: what the old, lax validation let through
    store = secured.store
    with store.write():
        store_version(secured, store, "Patient", "old-1", {"resourceType": "Patient",
                                                          "active": "yes"}, "PUT", None,
                      checked=True)
        store_version(secured, store, "DiagnosticReport", "old-2", {
            "resourceType": "DiagnosticReport", "status": "done", "code": {"text": "x"}},
            "PUT", None, checked=True)
    before = {(t, i): store.read(t, i) for t, i in [("Patient", "old-1"),
                                                    ("DiagnosticReport", "old-2")]}
    seen: list[tuple[str, int]] = []
    report = check.scan(store, progress=lambda rtype, n: seen.append((rtype, n)))
    # the AuditEvents the server wrote for these requests are checked too, and pass
    audit = report.by_type["AuditEvent"]
    assert audit > 0 and not report.ok and report.checked == 4 + audit
    assert [(r.type, r.id, r.version, r.status, r.issues[0].expression)
            for r in report.refused] == [
        ("Patient", "old-1", 1, 400, ["Patient.active"]),
        ("DiagnosticReport", "old-2", 1, 400, ["DiagnosticReport.status"])]
    assert sum(n for _, n in seen) == report.checked
    assert {(t, i): store.read(t, i) for t, i in before} == before  # nothing changed
    line = report.refused[0].line()
    assert line.startswith("Patient/old-1 version 1: 400 Patient.active: ")


def _cli(args: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="teleimagerie")
    check.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(args)


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_store_check_command_exit_status(store: Any, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TELEIMG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("TELEIMG_STORE_URL", raising=False)
    server = FhirServer(store)
    with store.write():
        store_version(server, store, "Patient", "ok", {"resourceType": "Patient"}, "PUT", None)
    args = _cli(["store", "check"])
    assert args.func is check.run
    assert check.run(args) == 0
    assert "1 current version(s) checked: all would be accepted" in capsys.readouterr().out
    with store.write():
        store_version(server, store, "Patient", "bad", {"resourceType": "Patient",
                                                       "gender": "maybe"}, "PUT", None,
                      checked=True)
    assert check.run(_cli(["store", "check"])) == 1
    out = capsys.readouterr().out
    assert "Patient/bad version 1: 400 Patient.gender" in out and "1 would be refused" in out
    assert check.run(_cli(["store", "check", "--type", "Observation", "--json"])) == 0
    assert check.run(_cli(["store", "check", "--type", "Nope"])) == 2
