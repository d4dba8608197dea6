"""Bulk Data Access IG v2 ``$export`` (issue 31), on both stores: kick-off, status,
manifest, files; ``_type``, ``_since``, ``_typeFilter``; cancel, expiry; the guard (the
files hold what the same search returns); the auditor's AuditEvent export; the audit."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from fhir_server.server.dispatch import FhirServer
from tests.conftest import Fhir, mint, serve

RPPS = "urn:oid:1.2.250.1.71.4.2.1"
DR_A, DR_B = "810000000001", "810000000002"
ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}


@pytest.fixture
def world(secured: FhirServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
          ) -> dict[str, Any]:
    """Two patients with an Observation each; Dr A is party to patient 1's request only;
    a Group of patient 2."""
    monkeypatch.setenv("TELEIMG_EXPORT_DIR", str(tmp_path / "exports"))
    monkeypatch.delenv("TELEIMG_EXPORT_RETENTION", raising=False)
    ris = Fhir(serve(secured, tmp_path, mint(tmp_path, ["ris"], ["system/*.cruds"])))
    w: dict[str, Any] = {"dir": tmp_path, "core": secured, "ris": ris}
    w["pracA"] = ris.create({"resourceType": "Practitioner", "identifier": [
        {"system": RPPS, "value": DR_A}]})["id"]
    for n in ("1", "2"):
        w[f"pat{n}"] = ris.create({"resourceType": "Patient",
                                   "name": [{"family": f"Patient{n}"}]})["id"]
        w[f"obs{n}"] = ris.create({
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": f"code-{n}"}]},
            "subject": {"reference": f"Patient/{w[f'pat{n}']}"}})["id"]
    ris.create({"resourceType": "ServiceRequest", "status": "active", "intent": "order",
                "subject": {"reference": f"Patient/{w['pat1']}"},
                "requester": {"reference": f"Practitioner/{w['pracA']}"}})
    w["group"] = ris.create({"resourceType": "Group", "type": "person", "actual": True,
                             "member": [{"entity": {"reference": f"Patient/{w['pat2']}"}}]
                             })["id"]
    return w


def _user(w: dict[str, Any], roles: list[str], scopes: list[str], **claims: Any
          ) -> TestClient:
    return serve(w["core"], w["dir"], mint(w["dir"], roles, scopes, **claims))


def kickoff(http: TestClient, path: str = "$export", **params: str) -> str:
    r = http.get(f"/fhir/{path}", params=params, headers=ASYNC)
    assert r.status_code == 202, r.text
    return str(r.headers["Content-Location"])


def wait(http: TestClient, location: str) -> dict[str, Any]:
    """Poll as a client does (Retry-After), until the manifest."""
    for _ in range(400):
        r = http.get(location)
        if r.status_code == 200:
            assert r.headers["Expires"]
            return dict(r.json())
        assert r.status_code == 202, r.text
        assert r.headers["Retry-After"] and r.headers["X-Progress"]
        time.sleep(0.05)
    raise AssertionError("the export did not finish")


def files(http: TestClient, manifest: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for item in manifest["output"]:
        r = http.get(item["url"], headers={"Accept": "application/fhir+ndjson"})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/fhir+ndjson")
        lines = [orjson.loads(line) for line in r.content.splitlines()]
        assert len(lines) == item["count"]
        out.setdefault(item["type"], []).extend(lines)
    return out


def ids(found: dict[str, list[dict[str, Any]]], rtype: str) -> set[str]:
    return {r["id"] for r in found.get(rtype, [])}


def test_kickoff_status_manifest_and_files(world: dict[str, Any]) -> None:
    ris = world["ris"].http
    location = kickoff(ris)
    manifest = wait(ris, location)
    assert manifest["requiresAccessToken"] is True
    assert manifest["request"].endswith("/$export")
    assert manifest["transactionTime"].endswith("Z") and manifest["error"] == []
    found = files(ris, manifest)
    assert ids(found, "Patient") == {world["pat1"], world["pat2"]}
    assert ids(found, "Observation") == {world["obs1"], world["obs2"]}
    assert ids(found, "Group") == {world["group"]}
    assert "AuditEvent" not in found  # the trail is the auditor's
    # stored bytes, as a read serves them
    url = next(o["url"] for o in manifest["output"] if o["type"] == "Observation")
    line = ris.get(url).content.splitlines()[0]
    assert ris.get(f"/fhir/Observation/{orjson.loads(line)['id']}").content == line
    # the token is required, and another principal's job is as absent
    anonymous = serve(world["core"], world["dir"], None)
    assert anonymous.get(url).status_code == 401
    other = _user(world, ["ris"], ["system/*.rs"], sub="another-ris")
    assert other.get(url).status_code == 404
    assert other.get(location).status_code == 404


def test_kickoff_refusals(world: dict[str, Any]) -> None:
    ris = world["ris"].http
    assert ris.get("/fhir/$export").status_code == 400  # no Prefer: respond-async
    for params in ({"_outputFormat": "text/csv"}, {"_type": "Nope"},
                   {"_since": "yesterday"}, {"_typeFilter": "Observation?nope=1"},
                   {"_typeFilter": "Observation?_sort=date"}, {"patient": "x"}):
        r = ris.get("/fhir/$export", params=params, headers=ASYNC)
        assert r.status_code == 400, (params, r.text)
        assert r.json()["resourceType"] == "OperationOutcome"
    r = ris.get("/fhir/$export", params={"_type": "AuditEvent"}, headers=ASYNC)
    assert r.status_code == 403  # a named type without the search right
    assert ris.get("/fhir/Observation/$export", headers=ASYNC).status_code == 404
    assert ris.delete("/fhir/$meta").status_code == 405


def test_type_and_type_filter_and_output_format(world: dict[str, Any]) -> None:
    ris = world["ris"].http
    manifest = wait(ris, kickoff(ris, _type="Observation,Patient",
                                 _outputFormat="application/ndjson"))
    assert {o["type"] for o in manifest["output"]} == {"Observation", "Patient"}
    manifest = wait(ris, kickoff(
        ris, _type="Observation", _typeFilter="Observation?code=http://loinc.org|code-2"))
    assert ids(files(ris, manifest), "Observation") == {world["obs2"]}
    # POST with a Parameters body (export.html#kick-off-request)
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "_type", "valueString": "Patient"},
        {"name": "_outputFormat", "valueString": "ndjson"}]}
    r = ris.post("/fhir/$export", json=body, headers=ASYNC)
    assert r.status_code == 202, r.text
    assert ids(files(ris, wait(ris, r.headers["Content-Location"])), "Patient") == {
        world["pat1"], world["pat2"]}


def test_since_exports_only_what_changed(world: dict[str, Any]) -> None:
    ris = world["ris"].http
    first = wait(ris, kickoff(ris, _type="Observation"))
    assert len(ids(files(ris, first), "Observation")) == 2
    new = world["ris"].create({"resourceType": "Observation", "status": "final",
                               "code": {"text": "new"},
                               "subject": {"reference": f"Patient/{world['pat1']}"}})["id"]
    again = wait(ris, kickoff(ris, _type="Observation", _since=first["transactionTime"]))
    assert ids(files(ris, again), "Observation") == {new}
    nothing = wait(ris, kickoff(ris, _type="Observation", _since=again["transactionTime"]))
    assert nothing["output"] == []


def test_cancel_and_expiry(world: dict[str, Any], tmp_path: Path) -> None:
    ris = world["ris"].http
    location = kickoff(ris)
    r = ris.delete(location)
    assert r.status_code == 202
    assert ris.get(location).status_code == 404
    assert ris.delete(location).status_code == 404
    # expiry: a finished job older than the retention is gone, with its files
    location = kickoff(ris, _type="Patient")
    manifest = wait(ris, location)
    job = next((tmp_path / "exports").iterdir())
    record = orjson.loads((job / "job.json").read_bytes())
    record["ended"] = time.time() - 25 * 3600  # past the default 24 h
    (job / "job.json").write_bytes(orjson.dumps(record))
    assert ris.get(manifest["output"][0]["url"]).status_code == 404
    assert ris.get(location).status_code == 404
    assert not job.exists()


def test_a_job_interrupted_by_a_restart_fails_cleanly(world: dict[str, Any],
                                                      tmp_path: Path) -> None:
    ris = world["ris"].http
    location = kickoff(ris, _type="Patient")
    wait(ris, location)
    job = next((tmp_path / "exports").iterdir())
    record = orjson.loads((job / "job.json").read_bytes())
    record.update(status="in-progress", beat=time.time() - 3600, ended=None)
    (job / "job.json").write_bytes(orjson.dumps(record))  # as a dead worker left it
    r = ris.get(location)
    assert r.status_code == 500 and "interrupted" in r.text
    assert not list(job.glob("*.ndjson"))


def test_the_guard_applies_to_every_file_R_SEC_2(world: dict[str, Any]) -> None:
    dr_a = _user(world, ["requesting-physician"], ["user/*.rs"], id_nat_ps=DR_A)
    found = files(dr_a, wait(dr_a, kickoff(dr_a)))
    assert ids(found, "Patient") == {world["pat1"]}
    assert ids(found, "Observation") == {world["obs1"]}
    assert "Group" not in found  # patient 2's cohort
    # a professional outside every care relationship exports no patient data at all
    dr_b = _user(world, ["requesting-physician"], ["user/*.rs"], id_nat_ps=DR_B)
    found = files(dr_b, wait(dr_b, kickoff(dr_b)))
    assert not {"Patient", "Observation", "ServiceRequest", "Group"} & set(found)
    assert dr_b.get(f"/fhir/Group/{world['group']}/$export",
                    headers=ASYNC).status_code == 404
    # a patient: their own compartment (Patient/$export)
    patient = _user(world, ["patient"], ["patient/*.rs"], patient=world["pat2"])
    found = files(patient, wait(patient, kickoff(patient, "Patient/$export")))
    assert ids(found, "Patient") == {world["pat2"]}
    assert ids(found, "Observation") == {world["obs2"]}


def test_group_export_is_the_members_compartment(world: dict[str, Any]) -> None:
    ris = world["ris"].http
    found = files(ris, wait(ris, kickoff(ris, f"Group/{world['group']}/$export")))
    assert ids(found, "Patient") == {world["pat2"]}
    assert ids(found, "Observation") == {world["obs2"]}
    assert "Practitioner" not in found  # not in the Patient compartment
    assert ris.get("/fhir/Group/nope/$export", headers=ASYNC).status_code == 404


def test_the_auditor_exports_audit_events_for_a_period_and_exports_are_audited(
        world: dict[str, Any]) -> None:
    ris = world["ris"].http
    manifest = wait(ris, kickoff(ris, _type="Patient"))
    files(ris, manifest)
    world["core"].audit.flush()
    auditor = _user(world, ["auditor"], ["user/*.rs"], id_nat_ps="899999999999")
    location = kickoff(auditor, _type="AuditEvent", _since="2000-01-01T00:00:00Z",
                       _typeFilter="AuditEvent?date=lt2100-01-01")
    events = files(auditor, wait(auditor, location))["AuditEvent"]
    operations = [d.get("valueString") for e in events for entity in e.get("entity", [])
                  for d in entity.get("detail", [])]
    assert "$export" in operations and "$export-file" in operations
    # the auditor reaches no patient data: a system export gives the trail and directory
    found = files(auditor, wait(auditor, kickoff(auditor)))
    assert "Patient" not in found and "AuditEvent" in found


def test_export_is_in_the_capability_statement(world: dict[str, Any]) -> None:
    cs = world["ris"].get("/fhir/metadata").json()
    rest = cs["rest"][0]
    assert {"name": "export", "definition":
            "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"} in rest["operation"]
    types = {r["type"]: r for r in rest["resource"]}
    assert {o["name"] for o in types["Patient"]["operation"]} >= {"export", "everything"}
    assert "export" in {o["name"] for o in types["Group"]["operation"]}
    assert "member" in {p["name"] for p in types["Group"]["searchParam"]}


def test_cli_export_writes_a_directory(world: dict[str, Any], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from fhir_server.interactions.bulk import command

    out = tmp_path / "out"
    args = argparse.Namespace(type="Patient,Observation", since=None, type_filter=[],
                              patients=False, group=None, quiet=False)
    assert command.export(world["core"], args, out) == 0
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    counts = {o["type"]: o["count"] for o in manifest["output"]}
    assert counts == {"Patient": 2, "Observation": 2}
    lines = (out / "Observation-1.ndjson").read_bytes().splitlines()
    assert {orjson.loads(line)["id"] for line in lines} == {world["obs1"], world["obs2"]}
    assert "4 resources" in capsys.readouterr().err
    assert not list((tmp_path / "exports").iterdir())  # the job is removed
