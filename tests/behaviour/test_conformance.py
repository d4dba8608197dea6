"""The shipped implementation guide over HTTP: read-only conformance resources, the
terminology operations and $validate, and profile enforcement on writes (issue 4)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fhir_server.server.dispatch import FhirServer
from fhir_server.validation.registry import DEFAULT_REQUIRED, ProfileRegistry
from tests.conftest import Fhir, serve

BASE = "https://teleimagerie.fr/fhir"
EXAMPLES = Path(__file__).resolve().parents[2] / "profiles" / "examples"
CCAM = "https://smt.esante.gouv.fr/terminologie-ccam"
DCM = "http://dicom.nema.org/resources/ontology/DCM"


def _example(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EXAMPLES / f"{name}.json").read_text())
    return data


def _param(params: dict[str, Any], name: str) -> Any:
    for p in params["parameter"]:
        if p["name"] == name:
            return next((v for k, v in p.items() if k.startswith("value")), p.get("part"))
    return None


@pytest.fixture
def served(store: Any, tmp_path: Path) -> Fhir:
    """The core with the production profile policy (mandatory téléimagerie profiles)."""
    core = FhirServer(store, profiles=ProfileRegistry(DEFAULT_REQUIRED))
    return Fhir(serve(core, tmp_path, None))


def test_structure_definitions_are_served_read_only_and_searchable_by_url(
        client: Fhir) -> None:
    url = f"{BASE}/StructureDefinition/tlm-service-request"
    found = client.search(f"StructureDefinition?url={url}")
    assert found["total"] == 1
    sd = found["entry"][0]["resource"]
    assert sd["snapshot"]["element"] and sd["differential"]["element"]
    assert client.get("/fhir/StructureDefinition/tlm-patient").json()["type"] == "Patient"
    r = client.put("/fhir/StructureDefinition/tlm-patient", json=sd)
    assert r.status_code == 405
    assert client.get("/fhir/StructureDefinition/nope").status_code == 404
    assert client.search("ValueSet?name=Statut")["total"] >= 1


def test_lookup_and_unknown_system_or_code(client: Fhir) -> None:
    r = client.get(f"/fhir/CodeSystem/$lookup?system={CCAM}&code=QEQK004")
    assert r.status_code == 200, r.text
    assert _param(r.json(), "display") == "Mammographie de dépistage"
    props = [p["part"] for p in r.json()["parameter"] if p["name"] == "property"]
    assert [{"name": "code", "valueCode": "mammographie"},
            {"name": "value", "valueBoolean": True}] in props
    assert client.get(f"/fhir/CodeSystem/$lookup?system={CCAM}&code=ZZZZ999"
                      ).status_code == 404
    r = client.get("/fhir/CodeSystem/$lookup?system=http://example.org/none&code=1")
    assert r.status_code == 404
    assert "unknown code system" in r.json()["issue"][0]["diagnostics"]
    assert client.get("/fhir/CodeSystem/$lookup?code=1").status_code == 400


def test_validate_code_against_value_sets_and_code_systems(client: Fhir) -> None:
    vs = f"{BASE}/ValueSet/modalite-acquisition"
    ok = client.get(f"/fhir/ValueSet/$validate-code?url={vs}&system={DCM}&code=CT").json()
    assert _param(ok, "result") is True
    bad = client.get(f"/fhir/ValueSet/$validate-code?url={vs}&system={DCM}&code=XX").json()
    assert _param(bad, "result") is False and "XX" in _param(bad, "message")
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "url", "valueUri": f"{BASE}/ValueSet/statut-grossesse"},
        {"name": "coding", "valueCoding": {"system": "http://snomed.info/sct",
                                           "code": "77386006"}}]}
    assert _param(client.post("/fhir/ValueSet/$validate-code", json=body).json(),
                  "result") is True
    cs = client.get(f"/fhir/CodeSystem/$validate-code?url={CCAM}&code=ACQK001").json()
    assert _param(cs, "result") is True
    assert client.get("/fhir/ValueSet/$validate-code?url=http://x/vs&code=1"
                      ).status_code == 404


def test_expand_with_filter_count_and_offset(client: Fhir) -> None:
    vs = f"{BASE}/ValueSet/region-anatomique"
    full = client.get(f"/fhir/ValueSet/$expand?url={vs}").json()["expansion"]
    assert full["total"] == len(full["contains"]) >= 10
    page = client.get(f"/fhir/ValueSet/$expand?url={vs}&count=3&offset=2").json()["expansion"]
    assert page["total"] == full["total"] and page["contains"] == full["contains"][2:5]
    membre = client.get(f"/fhir/ValueSet/$expand?url={vs}&filter=membre").json()["expansion"]
    assert membre["total"] == 2
    assert all("membre" in c["display"] for c in membre["contains"])
    inst = client.get("/fhir/ValueSet/ccam-mammographie/$expand").json()["expansion"]
    assert [c["code"] for c in inst["contains"]] == ["QEQK004"]
    assert client.get(f"/fhir/ValueSet/$expand?url={vs}&count=-1").status_code == 400


def test_translate_with_the_shipped_concept_map(client: Fhir) -> None:
    r = client.get("/fhir/ConceptMap/$translate?system=DCM&code=MR").json()
    assert _param(r, "result") is True
    match = next(p["part"] for p in r["parameter"] if p["name"] == "match")
    assert {"name": "concept", "valueCoding": {"system": DCM, "code": "MR",
                                               "display": "Résonance magnétique"}} in match
    none = client.get("/fhir/ConceptMap/$translate?system=DCM&code=ZZ").json()
    assert _param(none, "result") is False
    assert client.get("/fhir/ConceptMap/nope/$translate?system=DCM&code=MR"
                      ).status_code == 404


def test_writes_missing_a_required_element_are_refused_naming_it_R_REQ_3(
        served: Fhir) -> None:
    request = _example("tlm-service-request--invalid-irradiant-sans-statut-grossesse")
    del request["id"], request["meta"]  # the policy applies without a declared profile
    r = served.post("/fhir/ServiceRequest", json=request)
    assert r.status_code == 422
    issue = r.json()["issue"][0]
    assert "statut de grossesse pour un examen irradiant" in issue["diagnostics"]
    assert issue["expression"] == ["ServiceRequest"]
    ok = _example("tlm-service-request--valid")
    del ok["id"]
    assert served.post("/fhir/ServiceRequest", json=ok).status_code == 201
    # a Patient is not under the default policy: plain R4 is accepted
    assert served.post("/fhir/Patient", json={"resourceType": "Patient"}).status_code == 201


def test_validate_operation_type_and_instance_level(served: Fhir) -> None:
    bad = _example("tlm-diagnostic-report--invalid-final-sans-imageur")
    r = served.post("/fhir/DiagnosticReport/$validate", json=bad)
    assert r.status_code == 200
    issues = r.json()["issue"]
    assert any("tlm-dr-1" in i["diagnostics"] and i["expression"] == ["DiagnosticReport"]
               for i in issues)
    good = _example("tlm-diagnostic-report--valid")
    del good["result"]  # optional but mustSupport: reported as information
    r = served.post("/fhir/DiagnosticReport/$validate", json={
        "resourceType": "Parameters", "parameter": [
            {"name": "resource", "resource": good}, {"name": "mode", "valueCode": "create"}]})
    severities = {i["severity"] for i in r.json()["issue"]}
    assert severities == {"information"}  # no error; absent mustSupport elements reported
    assert any("mustSupport" in i["diagnostics"] and
               i["expression"] == ["DiagnosticReport.result"] for i in r.json()["issue"])
    patient = served.create({"resourceType": "Patient", "gender": "female"})
    r = served.get(f"/fhir/Patient/{patient['id']}/$validate"
                   f"?profile={BASE}/StructureDefinition/tlm-patient").json()
    assert any(i.get("expression") == ["Patient.birthDate"] for i in r["issue"])
    broken = served.post("/fhir/Patient/$validate", json={"resourceType": "Patient",
                                                           "gender": 12}).json()
    assert broken["issue"][0]["severity"] == "error"
    assert served.post("/fhir/Patient/$validate?mode=bogus", json={}).status_code == 400


def test_ig_package_export_holds_every_conformance_resource(tmp_path: Path) -> None:
    import tarfile

    from teleimagerie.cli import main

    out = tmp_path / "package.tgz"
    assert main(["ig", "package", "--out", str(out)]) == 0
    with tarfile.open(out) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("package/package.json"))  # type: ignore[arg-type]
        index = json.load(tar.extractfile("package/.index.json"))  # type: ignore[arg-type]
    assert manifest["fhirVersions"] == ["4.0.1"]
    # FR Core (its extensions and code systems), IHE MHD (issue 29)
    assert manifest["dependencies"] == {"hl7.fhir.r4.core": "4.0.1",
                                        "hl7.fhir.fr.core": "2.1.0", "ihe.iti.mhd": "4.2.2"}
    assert "package/StructureDefinition-tlm-service-request.json" in names
    assert "package/ValueSet-statut-grossesse.json" in names
    assert {f"package/{f['filename']}" for f in index["files"]} == \
        set(names) - {"package/package.json", "package/.index.json"}
