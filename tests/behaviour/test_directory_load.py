"""Directory provisioning (issue 24 item 7): ``teleimagerie directory load FILE`` from a CSV
or a FHIR Bundle, through the core, idempotent, all or nothing; both stores."""

from __future__ import annotations

import argparse
import codecs
import json
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from adapters.provisioning import add_parser, r38
from adapters.provisioning.loader import (
    ROLE_SYSTEM,
    Loader,
    LoadError,
    Problems,
    Summary,
    load,
    parse_csv,
)
from fhir_server.server.dispatch import FhirServer
from fhir_server.workflow.engine import Workflow
from fhir_server.workflow.machine import QUALIFYING, SPECIALTY_SYSTEMS
from teleimagerie.wiring import build_core
from tests.behaviour.workflow_world import World
from tests.conftest import mint, serve

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "examples" / "directory"
CSV = SAMPLES / "directory.csv"
BUNDLE = SAMPLES / "directory.json"
DOC = ROOT / "docs" / "provisioning.md"
FINESS = "urn:oid:1.2.250.1.71.4.2.2"
RPPS = "urn:oid:1.2.250.1.71.4.2.1"
PLATFORM, SITE = "410000004", "370000002"
DURAND, LEROY, NGUYEN, MOREAU = "899700000104", "899700000203", "899700000302", "899700000401"
MSS = ("mssante.fr",)


@pytest.fixture
def core(secured: FhirServer) -> FhirServer:
    secured.workflow = Workflow()  # as build_core assembles it
    return secured


@pytest.fixture
def ris(core: FhirServer, tmp_path: Path) -> TestClient:
    return serve(core, tmp_path, mint(tmp_path, ["ris"]))


def _load(core: FhirServer, path: Path, **kw: Any) -> Summary:
    return load(core, path, mss_domains=MSS, **kw)


def _all(client: TestClient, query: str) -> list[dict[str, Any]]:
    r = client.get(f"/fhir/{query}{'&' if '?' in query else '?'}_count=200")
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", []) if e["search"]["mode"] == "match"]


def _versions(client: TestClient) -> dict[str, str]:
    return {f"{res['resourceType']}/{res['id']}": res["meta"]["versionId"]
            for t in ("Organization", "Practitioner", "PractitionerRole")
            for res in _all(client, t)}


def _one(client: TestClient, query: str) -> dict[str, Any]:
    found = _all(client, query)
    assert len(found) == 1, found
    return found[0]


def _write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


# -- CSV ----------------------------------------------------------------------------------------

def test_csv_sample_creates_the_directory_readable_over_fhir(core: FhirServer,
                                                            ris: TestClient) -> None:
    summary = _load(core, CSV)
    assert summary.counts() == {
        "Organization": {"created": 2, "updated": 0, "unchanged": 0},
        "Practitioner": {"created": 5, "updated": 0, "unchanged": 0},
        "PractitionerRole": {"created": 6, "updated": 0, "unchanged": 0}}
    assert not summary.warnings
    assert all(c.ref for c in summary.changes)
    # the structures by FINESS, with their type
    platform = _one(ris, f"Organization?identifier={FINESS}|{PLATFORM}")
    assert platform["name"] == "Plateforme de téléimagerie Val de Loire"
    assert platform["type"][0]["coding"][0]["code"] == "PLATEFORME_TLR"
    assert "tlm-organization" in platform["meta"]["profile"][0]
    # the imager by idNatPs (8 + RPPS) and RPPS, qualified in TRE_R38
    durand = _one(ris, f"Practitioner?identifier={RPPS}|{DURAND}")
    assert {(i["system"], i["value"]) for i in durand["identifier"]} == {
        (RPPS, DURAND), ("https://rpps.esante.gouv.fr", DURAND[1:])}
    assert durand["name"] == [{"family": "DURAND", "given": ["Claire"]}]
    [qualification] = durand["qualification"]
    assert qualification["code"]["coding"][0]["system"] in SPECIALTY_SYSTEMS
    assert qualification["code"]["coding"][0]["code"] == "SM44"
    # the roles of a structure, as docs/provisioning.md checks them with curl
    roles = _all(ris, f"PractitionerRole?organization.identifier={FINESS}|{PLATFORM}")
    assert {r["identifier"][0]["value"] for r in roles} == {
        f"{DURAND}@{PLATFORM}", f"{LEROY}@{PLATFORM}", f"{NGUYEN}@{PLATFORM}"}
    r = ris.get(f"/fhir/PractitionerRole?organization.identifier={FINESS}|{PLATFORM}"
                "&_include=PractitionerRole:practitioner")
    assert r.status_code == 200, r.text
    assert sorted(e["resource"]["resourceType"] for e in r.json()["entry"]) == \
        ["Practitioner"] * 3 + ["PractitionerRole"] * 3
    mine = next(r for r in roles if r["identifier"][0]["value"].startswith(DURAND))
    assert mine["practitioner"] == {"reference": f"Practitioner/{durand['id']}"}
    assert mine["organization"] == {"reference": f"Organization/{platform['id']}"}
    assert mine["code"][0]["coding"][0]["code"] == "remote-imager"
    assert {"system": "email", "value": "claire.durand@tlr-valdeloire.mssante.fr",
            "use": "work"} in mine["telecom"]
    assert mine["active"] is True
    # one professional at two structures: one Practitioner, two roles, both addresses
    nguyen = _one(ris, f"Practitioner?identifier={RPPS}|{NGUYEN}")
    assert len(_all(ris, f"PractitionerRole?practitioner=Practitioner/{nguyen['id']}")) == 2
    assert [t["value"] for t in nguyen["telecom"]] == [
        "sophie.nguyen@ch-proximite.mssante.fr", "sophie.nguyen@tlr-valdeloire.mssante.fr"]


def test_second_load_writes_nothing(core: FhirServer, ris: TestClient) -> None:
    _load(core, CSV)
    before = _versions(ris)
    again = _load(core, CSV)
    assert again.written == 0
    assert {a for c in again.counts().values() for a, n in c.items() if n} == {"unchanged"}
    assert "nothing to do" in "\n".join(again.lines())
    assert _versions(ris) == before  # same resources, same versions
    assert len(before) == 13


def test_a_changed_row_updates_only_what_changed(core: FhirServer, ris: TestClient,
                                                 tmp_path: Path) -> None:
    _load(core, CSV)
    before = _versions(ris)
    text = CSV.read_text(encoding="utf-8")
    text = text.replace("02 61 91 00 41", "02 61 91 00 99")  # Claire DURAND's phone
    text = text.replace("thomas.leroy@tlr-valdeloire", "t.leroy@tlr-valdeloire")
    text = text.replace("99700000500,PETIT,Julie,,radiographer,,02 61 91 00 38,oui",
                        "99700000500,PETIT,Julie,,radiographer,,02 61 91 00 38,non")
    summary = _load(core, _write(tmp_path, "changed.csv", text))
    assert summary.counts() == {
        "Organization": {"created": 0, "updated": 0, "unchanged": 2},
        "Practitioner": {"created": 0, "updated": 1, "unchanged": 4},
        "PractitionerRole": {"created": 0, "updated": 3, "unchanged": 3}}
    updated = {(c.rtype, c.key): c.elements for c in summary.changes if c.action == "updated"}
    assert updated == {("Practitioner", LEROY): ["telecom"],
                       ("PractitionerRole", f"{DURAND}@{PLATFORM}"): ["telecom"],
                       ("PractitionerRole", f"{LEROY}@{PLATFORM}"): ["telecom"],
                       ("PractitionerRole", f"899700000500@{SITE}"): ["active"]}
    after = _versions(ris)
    assert {ref for ref in after if after[ref] != before[ref]} == {
        c.ref for c in summary.changes if c.action == "updated"}
    assert all(after[c.ref] == "2" for c in summary.changes if c.action == "updated")
    role = _one(ris, f"PractitionerRole?identifier={ROLE_SYSTEM}|{DURAND}@{PLATFORM}")
    assert {"system": "phone", "value": "02 61 91 00 99", "use": "work"} in role["telecom"]
    leroy = _one(ris, f"Practitioner?identifier={RPPS}|{LEROY}")
    assert [t["value"] for t in leroy["telecom"]] == ["t.leroy@tlr-valdeloire.mssante.fr"]


def test_what_the_file_does_not_give_is_kept(core: FhirServer, ris: TestClient) -> None:
    """An element added over the API (a radioprotection training, a fax) survives a load;
    the specialty the file gives replaces the stored one."""
    _load(core, CSV)
    durand = _one(ris, f"Practitioner?identifier={RPPS}|{DURAND}")
    durand["qualification"].append({"code": {"text": "Radioprotection des patients"}})
    durand["telecom"] = [{"system": "fax", "value": "02 61 91 00 00"}]
    r = ris.put(f"/fhir/Practitioner/{durand['id']}", json=durand)
    assert r.status_code == 200, r.text
    summary = _load(core, CSV)
    assert [c.key for c in summary.changes if c.action == "updated"] == [DURAND]
    durand = _one(ris, f"Practitioner?identifier={RPPS}|{DURAND}")
    assert [t["system"] for t in durand["telecom"]] == ["fax", "email"]
    assert [q["code"].get("text") for q in durand["qualification"]] == [
        None, "Radioprotection des patients"]
    assert _load(core, CSV).written == 0


def test_a_change_made_meanwhile_is_not_overwritten(core: FhirServer, ris: TestClient,
                                                   tmp_path: Path) -> None:
    """Updates are conditional on the identifier *and* the version read (If-Match): a
    resource changed between the load's read and its write fails the whole load."""
    _load(core, CSV)
    text = CSV.read_text(encoding="utf-8").replace("02 61 91 00 41", "02 61 91 00 99")
    problems = Problems()
    items = parse_csv(text, "changed.csv", problems, MSS)
    loader = Loader(core, problems)
    loader.plan(items)
    role = _one(ris, f"PractitionerRole?identifier={ROLE_SYSTEM}|{DURAND}@{PLATFORM}")
    role["availabilityExceptions"] = "fermé le dimanche"
    assert ris.put(f"/fhir/PractitionerRole/{role['id']}", json=role).status_code == 200
    with pytest.raises(LoadError) as caught:
        loader.commit(items)
    assert "(412)" in caught.value.errors[0] and "run the load again" in caught.value.errors[1]
    assert "changed.csv:5" in caught.value.errors[0]
    role = _one(ris, f"PractitionerRole?identifier={ROLE_SYSTEM}|{DURAND}@{PLATFORM}")
    assert role["meta"]["versionId"] == "2" and role["availabilityExceptions"]
    summary = _load(core, _write(tmp_path, "changed.csv", text))  # again: merged, kept
    assert [c.elements for c in summary.changes if c.action == "updated"] == [["telecom"]]


def test_bad_rows_are_reported_by_line_and_column_and_nothing_is_written(
        core: FhirServer, ris: TestClient, tmp_path: Path) -> None:
    path = _write(tmp_path, "bad.csv", "\n".join([
        "finess,structure_name,rpps,family,given,specialty,role,mssante",
        f"{PLATFORM},Plateforme,99700000104,DURAND,Claire,SM44,remote-imager,",  # fine
        "41000000,Plateforme,99700000203,LEROY,Thomas,SM44,remote-imager,",
        f"{PLATFORM},Plateforme,9970000020,LEROY,Thomas,SM44,remote-imager,",
        f"{PLATFORM},Plateforme,99700000302,NGUYEN,Sophie,SM99,remote-imager,",
        f"{PLATFORM},Plateforme,99700000401,MOREAU,Paul,SM59,chef,",
        f"{PLATFORM},Plateforme,99700000500,PETIT,Julie,,radiographer,julie@gmail.com",
        f"{PLATFORM},Plateforme,99700000609,MARTIN,Léa,SM54,remote-imager,",
        f"{SITE},CH,99700000609,MARTIN,Léa,SM44,requesting-physician,",
        f"{PLATFORM},Autre nom,99700000708,BERNARD,Luc,SM44,remote-imager,",
        f"{PLATFORM},Plateforme,99700000104,DURAND,Claire,SM44,remote-imager,",
        f"{PLATFORM},Plateforme,,DURAND,Claire,SM44,remote-imager,",
    ]) + "\n")
    with pytest.raises(LoadError) as caught:
        _load(core, path)
    errors = "\n".join(caught.value.errors)
    assert not caught.value.usage
    expected = [
        (3, "finess", "is not 9 characters"),
        (4, "rpps", "is not 11 digits"),
        (5, "specialty", "unknown specialty 'SM99'"),
        (6, "role", "unknown role 'chef'"),
        (7, "mssante", "is not an MSSanté address"),
        (9, "specialty", "'SM44' differs from 'SM54' given for RPPS 99700000609 on line 8"),
        (10, "structure_name", "differs from 'Plateforme' given for FINESS"),
        (12, "rpps", "required, empty")]
    for line, column, text in expected:
        assert re.search(rf"bad\.csv:{line}: column {column}: .*{re.escape(text)}", errors), \
            (line, column, errors)
    assert f"bad.csv:11: RPPS 99700000104 at FINESS {PLATFORM} already on line 2" in errors
    assert "bad.csv:8: column specialty: role remote-imager needs a specialty" in errors
    # the error names what qualifies, so nobody has to read machine.py
    assert "SM44 Radio-diagnostic (SM) → CR CT DX MR RF XA" in errors
    assert "SM28 Médecine nucléaire (SM) → NM PT" in errors
    assert len(caught.value.errors) == len(expected) + 2
    assert _all(ris, "Practitioner") == [] and _all(ris, "Organization") == []


def test_header_errors_and_unreadable_files(core: FhirServer, tmp_path: Path) -> None:
    with pytest.raises(LoadError) as caught:
        _load(core, _write(tmp_path, "h.csv", "finess,nom,rpps,colour\n1,2,3,4\n"))
    assert caught.value.errors == [
        "%s:1: unknown column(s) 'colour'; known: finess, structure_name, structure_type, "
        "rpps, family, given, specialty, role, mssante, phone, active" % (tmp_path / "h.csv"),
        "%s:1: missing column(s) structure_name, role (the header line names the columns: "
        "finess, structure_name, structure_type, rpps, family, given, specialty, role, "
        "mssante, phone, active)" % (tmp_path / "h.csv")]
    with pytest.raises(LoadError) as caught:
        _load(core, tmp_path / "absent.csv")
    assert caught.value.usage and "cannot read the file" in caught.value.errors[0]
    with pytest.raises(LoadError) as caught:
        _load(core, _write(tmp_path, "broken.json", '{"resourceType": "Bundle",'))
    assert caught.value.usage and "not valid JSON" in caught.value.errors[0]


def test_french_spreadsheet_export_loads(core: FhirServer, ris: TestClient,
                                         tmp_path: Path) -> None:
    """Semicolons, French headers, Windows-1252, an idNatPs in the RPPS column."""
    path = _write(tmp_path, "annuaire.csv", "\r\n".join([
        "FINESS;Raison sociale;Type structure;RPPS;Nom;Prénom;Spécialité;Rôle;"
        "BAL MSSanté;Téléphone;Actif",
        f"{SITE};CH de proximité;structure_imagerie;{MOREAU};MOREAU;Paul;SM59;"
        "requesting-physician;paul.moreau@ch-proximite.mssante.fr;;oui"]) + "\r\n",
        encoding="cp1252")
    summary = _load(core, path)
    assert summary.counts()["PractitionerRole"]["created"] == 1
    assert any("Windows-1252" in w for w in summary.warnings)
    assert _one(ris, f"Organization?identifier={FINESS}|{SITE}")["name"] == "CH de proximité"
    assert _one(ris, f"Practitioner?identifier={RPPS}|{MOREAU}")["name"][0]["given"] == \
        ["Paul"]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
def test_a_unicode_text_export_with_its_byte_order_mark_loads(
        core: FhirServer, ris: TestClient, tmp_path: Path, encoding: str) -> None:
    """Excel's "Texte Unicode" export is UTF-16 with a BOM: read as such, not as 1252."""
    text = "\r\n".join([
        "FINESS;Raison sociale;Type structure;RPPS;Nom;Prénom;Spécialité;Rôle;Actif",
        f"{SITE};CH de proximité;structure_imagerie;{MOREAU};MOREAU;Paul;SM59;"
        "requesting-physician;oui"]) + "\r\n"
    raw = text.encode(encoding)
    if encoding == "utf-16-be":
        raw = codecs.BOM_UTF16_BE + raw
    path = tmp_path / "annuaire.csv"
    path.write_bytes(raw)
    summary = _load(core, path)
    assert summary.warnings == [] or not any("1252" in w for w in summary.warnings)
    assert _one(ris, f"Organization?identifier={FINESS}|{SITE}")["name"] == "CH de proximité"


def test_dry_run_checks_and_plans_without_writing(core: FhirServer, ris: TestClient) -> None:
    summary = _load(core, CSV, dry_run=True)
    assert summary.dry_run and summary.count("PractitionerRole", "created") == 6
    assert "would create 6" in "\n".join(summary.lines())
    assert _all(ris, "PractitionerRole") == []


# -- Bundle -------------------------------------------------------------------------------------

def test_bundle_sample_loads_and_describes_the_same_directory_as_the_csv(
        core: FhirServer, ris: TestClient) -> None:
    summary = _load(core, BUNDLE)
    assert summary.form == "bundle"
    assert {t: n["created"] for t, n in summary.counts().items()} == {
        "Organization": 2, "Practitioner": 5, "PractitionerRole": 6}
    assert not summary.warnings
    before = _versions(ris)
    assert _load(core, CSV).written == 0  # the two samples are the same directory
    assert _load(core, BUNDLE).written == 0
    assert _versions(ris) == before


def test_bundle_sample_is_also_a_plain_fhir_transaction(ris: TestClient) -> None:
    """POSTed as it is to /fhir, it creates what is missing (conditional creates)."""
    bundle = json.loads(BUNDLE.read_text(encoding="utf-8"))
    for _ in range(2):
        r = ris.post("/fhir", json=bundle)
        assert r.status_code == 200, r.text
    assert len(_all(ris, "PractitionerRole")) == 6


def test_bundle_derives_role_identifiers_resolves_references_and_keeps_endpoints(
        core: FhirServer, ris: TestClient, tmp_path: Path) -> None:
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "urn:uuid:1", "resource": {
            "resourceType": "Organization", "id": "site",
            "identifier": [{"system": FINESS, "value": PLATFORM}], "name": "Plateforme",
            "endpoint": [{"reference": "Endpoint/wado"}]}},
        {"resource": {"resourceType": "Endpoint", "id": "wado", "status": "active",
                      "identifier": [{"system": "urn:ietf:rfc:3986",
                                      "value": "https://pacs.example/wado"}],
                      "connectionType": {"system": "http://terminology.hl7.org/CodeSystem/"
                                         "endpoint-connection-type", "code": "dicom-wado-rs"},
                      "payloadType": [{"text": "DICOM"}],
                      "address": "https://pacs.example/wado",
                      "managingOrganization": {"reference": "urn:uuid:1"}}},
        {"resource": {"resourceType": "Practitioner",  # the RPPS alone
                      "identifier": [{"system": "https://rpps.esante.gouv.fr",
                                      "value": LEROY[1:]}],
                      "name": [{"family": "LEROY"}],
                      "qualification": [{"code": {"coding": [{
                          "system": "urn:oid:1.2.250.1.213.1.1.4.5",
                          "code": "G15_10/SM44"}]}}]}},
        {"resource": {"resourceType": "PractitionerRole",
                      "practitioner": {"reference": f"Practitioner?identifier={RPPS}|"
                                                   f"{LEROY}"},
                      "organization": {"reference": "Organization/site"},
                      "telecom": [{"system": "email", "value": "leroy@example.org"}]}}]}
    path = _write(tmp_path, "b.json", json.dumps(bundle))
    summary = _load(core, path)
    assert summary.counts() == {t: {"created": 1, "updated": 0, "unchanged": 0} for t in (
        "Organization", "Endpoint", "Practitioner", "PractitionerRole")}
    assert summary.warnings == [
        f"{path}: Bundle.entry[3] (PractitionerRole): e-mail 'leroy@example.org' is not on "
        "an MSSanté domain (mssante.fr): reports will not be sent to it (R-SEC-5)"]
    org = _one(ris, f"Organization?identifier={FINESS}|{PLATFORM}")
    endpoint = _one(ris, "Endpoint")
    assert org["endpoint"] == [{"reference": f"Endpoint/{endpoint['id']}"}]
    assert endpoint["managingOrganization"] == {"reference": f"Organization/{org['id']}"}
    leroy = _one(ris, f"Practitioner?identifier={RPPS}|{LEROY}")
    role = _one(ris, f"PractitionerRole?identifier={ROLE_SYSTEM}|{LEROY}@{PLATFORM}")
    assert role["practitioner"] == {"reference": f"Practitioner/{leroy['id']}"}
    assert _load(core, path).written == 0


def test_bundle_errors_name_the_entry(core: FhirServer, ris: TestClient,
                                      tmp_path: Path) -> None:
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient"}},
        {"resource": {"resourceType": "Organization", "name": "sans FINESS"}},
        {"resource": {"resourceType": "Practitioner",
                      "identifier": [{"system": RPPS, "value": DURAND}],
                      "qualification": [{"code": {"coding": [{"system": r38.SYSTEM,
                                                              "code": "SM00"}]}}]}},
        {"resource": {"resourceType": "PractitionerRole",
                      "practitioner": {"reference": f"Practitioner?identifier={RPPS}|"
                                                   "899999999999"},
                      "organization": {"reference": f"Organization?identifier={FINESS}|"
                                                    f"{PLATFORM}"}}}]}
    path = _write(tmp_path, "b.json", json.dumps(bundle))
    with pytest.raises(LoadError) as caught:
        _load(core, path)
    errors = caught.value.errors
    assert errors[0] == f"{path}: Bundle.entry[0]: Patient is not a directory resource " \
        "(Organization, Endpoint, Practitioner, PractitionerRole)"
    assert errors[1].startswith(f"{path}: Bundle.entry[1] (Organization): the structure "
                                f"needs its FINESS: identifier with system {FINESS}")
    assert errors[2].startswith(f"{path}: Bundle.entry[2] (Practitioner): unknown specialty "
                                "'SM00'")
    assert len(errors) == 3
    # fixed those, the role still points at nobody; the profile wants a name
    bundle["entry"] = bundle["entry"][2:]
    bundle["entry"][0]["resource"].pop("qualification")
    with pytest.raises(LoadError) as caught:
        _load(core, _write(tmp_path, "b.json", json.dumps(bundle)))
    errors = caught.value.errors
    assert any(e.startswith(f"{path}: Bundle.entry[1] (PractitionerRole): "
                            f"PractitionerRole.practitioner 'Practitioner?identifier={RPPS}|"
                            "899999999999': no Practitioner") for e in errors), errors
    assert any(e.startswith(f"{path}: Bundle.entry[0] (Practitioner): ") and
               "Practitioner.name" in e for e in errors), errors
    assert _all(ris, "Practitioner") == []


# -- through the core -----------------------------------------------------------------------

def test_the_load_is_audited_as_the_cli_principal(core: FhirServer, tmp_path: Path) -> None:
    _load(core, CSV)
    assert core.audit is not None
    core.audit.flush()
    auditor = serve(core, tmp_path, mint(tmp_path, ["auditor"], ["user/*.cruds"],
                                         id_nat_ps="899999999999", acr="eidas2"))
    events = _all(auditor, "AuditEvent?altid=cli:directory-load&action=C")
    assert len(events) == 13
    agent = next(a for a in events[0]["agent"] if a.get("requestor"))
    assert agent["altId"] == "cli:directory-load"


def test_a_loaded_imager_can_accept_a_ct_and_others_cannot(core: FhirServer,
                                                           tmp_path: Path) -> None:
    world = World(core, tmp_path)
    _load(core, CSV)
    durand = _one(world.ris, f"Practitioner?identifier={RPPS}|{DURAND}")
    moreau = _one(world.ris, f"Practitioner?identifier={RPPS}|{MOREAU}")
    world.refs["imager"] = f"Practitioner/{durand['id']}"
    world.refs["requester"] = f"Practitioner/{moreau['id']}"
    sr = world.request("CT")
    world.consent("acte", "teleimagerie")
    # the requester (SM59, médecine d'urgence) is party to the request, not qualified for CT
    r = world.op(world.user(["remote-imager"], MOREAU), sr, "accept")
    assert r.status_code == 403 and "SM44" in r.text, r.text
    r = world.op(world.user(["remote-imager"], DURAND), sr, "accept")
    assert r.status_code == 200, r.text
    assert r.json()["owner"] == {"reference": world.refs["imager"]}


# -- the command --------------------------------------------------------------------------------

def test_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TELEIMG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("TELEIMG_STORE_URL", raising=False)
    parser = argparse.ArgumentParser(prog="teleimagerie")
    add_parser(parser.add_subparsers(dest="command", required=True), build_core)

    def run(*argv: str) -> int:
        args = parser.parse_args(["directory", "load", *argv])
        result: int = args.func(args)
        return result

    assert run(str(CSV), "--dry-run") == 0
    assert "would create 6" in capsys.readouterr().out
    assert run(str(CSV)) == 0
    out = capsys.readouterr().out
    assert "PractitionerRole  created 6, updated 0, unchanged 0" in out
    assert run(str(BUNDLE), "--json") == 0
    counts = json.loads(capsys.readouterr().out)["counts"]
    assert counts["Practitioner"] == {"created": 0, "updated": 0, "unchanged": 5}
    bad = _write(tmp_path, "bad.csv", CSV.read_text(encoding="utf-8").replace(
        "99700000104,DURAND", "9970000010,DURAND"))
    assert run(str(bad)) == 1
    err = capsys.readouterr().err
    assert f"error: {bad}:5: column rpps:" in err and "nothing was written" in err
    assert run(str(tmp_path / "absent.csv")) == 2


# -- the documentation --------------------------------------------------------------------------

def test_doc_qualification_table_matches_the_workflow() -> None:
    """docs/provisioning.md tells which R38 codes qualify for which modality: the table must
    say what machine.QUALIFYING enforces."""
    text = DOC.read_text(encoding="utf-8")
    block = text.split("<!-- qualifying:begin -->")[1].split("<!-- qualifying:end -->")[0]
    table: dict[str, frozenset[str]] = {}
    for line in block.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not re.fullmatch(r"[A-Z]{2}", cells[0]):
            continue
        table[cells[0]] = frozenset(re.findall(r"\b(?:SM|SI|SCD)\d{2}\b", cells[1]))
    assert table == QUALIFYING
    for system in SPECIALTY_SYSTEMS:
        assert system in text
    for code in set().union(*QUALIFYING.values()):
        assert r38.SPECIALTIES[code].removesuffix(" (SM)") in block
    assert r38.SYSTEM in SPECIALTY_SYSTEMS
