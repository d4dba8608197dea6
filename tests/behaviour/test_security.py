"""Authentication, habilitations and patient-level access (R-SEC-1, R-SEC-2, R-ACT-1, R-SEC-4).

Every attack is refused with the right status, leaks nothing and leaves an AuditEvent.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from jose import jwt

from fhir_server.security.devissuer import DEFAULT_AUDIENCE, DEV_ISSUER
from fhir_server.server.dispatch import FhirServer
from tests.conftest import Fhir, mint, serve

RPPS = "urn:oid:1.2.250.1.71.4.2.1"
FINESS = "urn:oid:1.2.250.1.71.4.2.2"
DR_A, DR_B = "810000000001", "810000000002"


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": DEV_ISSUER, "aud": DEFAULT_AUDIENCE, "sub": "attacker", "iat": now,
              "exp": now + 600, "roles": ["ris"], "scope": "system/*.cruds"}
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


def _dev_sign(data_dir: Path, claims: dict[str, Any], kid: str | None = None) -> str:
    jwks = json.loads((data_dir / "dev-issuer" / "jwks.json").read_text())
    pem = (data_dir / "dev-issuer" / "private-key.pem").read_text()
    return jwt.encode(claims, pem, algorithm="ES256",
                      headers={"kid": kid or jwks["keys"][0]["kid"]})


@pytest.fixture
def world(secured: FhirServer, tmp_path: Path) -> dict[str, Any]:
    """Two practitioners, two patients, each patient with a request from one of them."""
    ris = Fhir(serve(secured, tmp_path, mint(tmp_path, ["ris"])))
    ids: dict[str, Any] = {"dir": tmp_path, "core": secured, "ris": ris}
    for name, rpps in (("A", DR_A), ("B", DR_B)):
        ids[f"prac{name}"] = ris.create({"resourceType": "Practitioner", "identifier": [
            {"system": RPPS, "value": rpps}], "name": [{"family": f"Dr {name}"}]})["id"]
    ids["org"] = ris.create({"resourceType": "Organization", "identifier": [
        {"system": FINESS, "value": "750000001"}], "name": "CH Site"})["id"]
    ids["roleB"] = ris.create({"resourceType": "PractitionerRole",
                               "practitioner": {"reference": f"Practitioner/{ids['pracB']}"},
                               "organization": {"reference": f"Organization/{ids['org']}"}
                               })["id"]
    for name in ("1", "2", "3"):
        ids[f"pat{name}"] = ris.create({"resourceType": "Patient",
                                        "name": [{"family": f"Patient{name}"}]})["id"]
        ids[f"obs{name}"] = ris.create({
            "resourceType": "Observation", "status": "final", "code": {"text": "poids"},
            "subject": {"reference": f"Patient/{ids[f'pat{name}']}"}})["id"]
    for pat, requester in (("1", f"Practitioner/{ids['pracA']}"),
                           ("2", f"Practitioner/{ids['pracB']}"),
                           ("3", f"PractitionerRole/{ids['roleB']}")):
        ris.create({"resourceType": "ServiceRequest", "status": "active", "intent": "order",
                    "subject": {"reference": f"Patient/{ids[f'pat{pat}']}"},
                    "requester": {"reference": requester}})
    return ids


def _user(world: dict[str, Any], roles: list[str], scopes: list[str] | None = None,
          **claims: Any) -> TestClient:
    token = mint(world["dir"], roles, scopes or ["user/*.cruds"], **claims)
    return serve(world["core"], world["dir"], token)


def _audit(world: dict[str, Any], query: str) -> list[dict[str, Any]]:
    """AuditEvents matching ``query``, read as the auditor would."""
    world["core"].audit.flush()
    auditor = _user(world, ["auditor"], id_nat_ps="899999999999")
    r = auditor.get(f"/fhir/AuditEvent?{query}&_count=500")
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", [])]


def _refusals(world: dict[str, Any]) -> int:
    return len(_audit(world, "outcome=4"))


# -- authentication (R-SEC-1) --------------------------------------------------------------

ATTACKS = {
    "no token": lambda d: None,
    "garbage token": lambda d: "not.a.jwt",
    "alg none": lambda d: _b64({"alg": "none", "typ": "JWT"}) + "." + _b64(_claims()) + ".",
    "HS256 signed with the public key": lambda d: jwt.encode(
        _claims(), (d / "dev-issuer" / "jwks.json").read_text(), algorithm="HS256"),
    "unknown kid": lambda d: jwt.encode(
        _claims(), ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()).decode(), algorithm="ES256",
        headers={"kid": "rotated-away"}),
    "expired": lambda d: _dev_sign(d, _claims(exp=int(time.time()) - 3600,
                                              iat=int(time.time()) - 7200)),
    "not yet valid": lambda d: _dev_sign(d, _claims(nbf=int(time.time()) + 3600)),
    "missing exp": lambda d: _dev_sign(d, _claims(exp=None)),
    "missing sub": lambda d: _dev_sign(d, _claims(sub=None)),
    "wrong issuer": lambda d: _dev_sign(d, _claims(iss="https://evil.example")),
    "wrong audience": lambda d: _dev_sign(d, _claims(aud="another-api")),
    "oversized token": lambda d: _dev_sign(d, _claims(pad="x" * 20000)),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_invalid_tokens_are_refused_with_401_and_audited_R_SEC_1(
        world: dict[str, Any], attack: str) -> None:
    token = ATTACKS[attack](world["dir"])
    http = serve(world["core"], world["dir"], token)
    before = _refusals(world)
    for url in (f"/fhir/Patient/{world['pat1']}", "/fhir/Patient?_count=5"):
        r = http.get(url)
        assert r.status_code == 401, (attack, r.text)
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        assert r.json()["resourceType"] == "OperationOutcome"
        assert "Patient1" not in r.text
    assert http.post("/fhir/Patient", json={"resourceType": "Patient"}).status_code == 401
    assert _refusals(world) == before + 3


def test_metadata_and_smart_configuration_need_no_token(world: dict[str, Any]) -> None:
    anonymous = serve(world["core"], world["dir"], None)
    assert anonymous.get("/fhir/metadata").status_code == 200
    smart = anonymous.get("/fhir/.well-known/smart-configuration").json()
    assert "permission-v2" in smart["capabilities"] and smart["issuer"] == DEV_ISSUER


def test_weak_authentication_cannot_reach_patient_data_R_SEC_1(world: dict[str, Any]) -> None:
    weak = _user(world, ["requesting-physician"], id_nat_ps=DR_A, acr="eidas1")
    r = weak.get(f"/fhir/Patient/{world['pat1']}")
    assert r.status_code == 403 and "strong authentication" in r.text
    assert weak.post("/fhir/Observation", json={
        "resourceType": "Observation", "status": "final", "code": {"text": "x"}}
                     ).status_code == 403
    # the directory is not patient data
    assert weak.get(f"/fhir/Practitioner/{world['pracA']}").status_code == 200


# -- authorisation: roles and scopes (R-ACT-1, R-SEC-2) ------------------------------------

def test_scopes_and_roles_are_both_required(world: dict[str, Any]) -> None:
    only_obs = _user(world, ["ris"], ["system/Observation.rs"])
    assert only_obs.get(f"/fhir/Observation/{world['obs1']}").status_code == 200
    r = only_obs.get(f"/fhir/Patient/{world['pat1']}")
    assert r.status_code == 403 and "scope" in r.text
    assert only_obs.post("/fhir/Observation", json={"resourceType": "Observation"}
                         ).status_code == 403
    v1 = _user(world, ["ris"], ["system/Patient.read"])
    assert v1.get(f"/fhir/Patient/{world['pat1']}").status_code == 200
    assert v1.delete(f"/fhir/Patient/{world['pat1']}").status_code == 403
    no_role = _user(world, [], ["system/*.cruds"], sub="nobody")
    assert no_role.get(f"/fhir/Practitioner/{world['pracA']}").status_code == 403
    admin = _user(world, ["admin"], id_nat_ps="899999999990")
    assert admin.get(f"/fhir/Organization/{world['org']}").status_code == 200
    assert admin.get(f"/fhir/Patient/{world['pat1']}").status_code == 403  # minimum necessary


def test_audit_trail_is_append_only_for_everyone_R_SEC_3(world: dict[str, Any]) -> None:
    event = _audit(world, "_count=1")[0]
    for roles in (["ris"], ["auditor"]):
        http = _user(world, roles, ["system/*.cruds", "user/*.cruds"], id_nat_ps="899999999999")
        assert http.put(f"/fhir/AuditEvent/{event['id']}", json=event).status_code == 403
        assert http.delete(f"/fhir/AuditEvent/{event['id']}").status_code == 403
        assert http.post("/fhir/AuditEvent", json=event).status_code == 403
    assert world["ris"].get("/fhir/AuditEvent").status_code == 403  # auditor only


# -- patient-level limits (R-SEC-2, BOLA) -------------------------------------------------

def test_practitioner_reaches_only_patients_of_their_requests_R_SEC_2(
        world: dict[str, Any]) -> None:
    dr_a = _user(world, ["requesting-physician"], id_nat_ps=DR_A)
    assert dr_a.get(f"/fhir/Patient/{world['pat1']}").status_code == 200
    assert dr_a.get(f"/fhir/Observation/{world['obs1']}").status_code == 200
    for url in (f"/fhir/Patient/{world['pat2']}", f"/fhir/Observation/{world['obs2']}",
                f"/fhir/Patient/{world['pat2']}/_history",
                f"/fhir/Patient/{world['pat2']}/$everything"):
        r = dr_a.get(url)
        assert r.status_code == 404, url  # as if it did not exist: no existence leak
        assert "Patient2" not in r.text
    searched = dr_a.get("/fhir/Observation?_include=Observation:subject").json()
    assert searched["total"] == 1
    assert {e["resource"]["id"] for e in searched["entry"]} == {world["obs1"], world["pat1"]}
    patients = dr_a.get("/fhir/Patient").json()
    assert [e["resource"]["id"] for e in patients["entry"]] == [world["pat1"]]
    chained = dr_a.get("/fhir/Observation?subject.name=Patient2").json()
    assert chained["total"] == 0
    everything = dr_a.get(f"/fhir/Patient/{world['pat1']}/$everything").json()
    assert {e["resource"]["resourceType"] for e in everything["entry"]} == {
        "Patient", "Observation", "ServiceRequest"}


def test_writes_outside_the_care_relationship_are_refused_R_SEC_2(
        world: dict[str, Any]) -> None:
    dr_a = _user(world, ["requesting-physician"], id_nat_ps=DR_A)
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
           "subject": {"reference": f"Patient/{world['pat2']}"}}
    assert dr_a.post("/fhir/Observation", json=obs).status_code == 403
    # another patient's resource is absent on write paths too (issue 27 item 5)
    assert dr_a.put(f"/fhir/Observation/{world['obs2']}", json={**obs, "id": world["obs2"]}
                    ).status_code == 404
    # becoming the requester of a request for that patient opens what comes after it —
    # never what existed before (issue 27 item 3, tests/security/test_care_relationship.py)
    sr = {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
          "subject": {"reference": f"Patient/{world['pat2']}"},
          "requester": {"reference": f"Practitioner/{world['pracA']}"}}
    assert dr_a.post("/fhir/ServiceRequest", json=sr).status_code == 201
    assert dr_a.get(f"/fhir/Patient/{world['pat2']}").status_code == 404
    created = dr_a.post("/fhir/Observation", json=obs)
    assert created.status_code == 201
    assert dr_a.get(f"/fhir/Observation/{created.json()['id']}").status_code == 200
    assert dr_a.get(f"/fhir/Observation/{world['obs2']}").status_code == 404


def test_requesting_site_team_reaches_the_site_requests_R_SEC_2(world: dict[str, Any]) -> None:
    teammate = _user(world, ["secretary"], id_nat_ps="810000000009", finess=["750000001"])
    assert teammate.get(f"/fhir/Patient/{world['pat3']}").status_code == 200
    assert teammate.get(f"/fhir/Patient/{world['pat1']}").status_code == 404
    assert teammate.get(f"/fhir/Observation/{world['obs3']}").status_code == 403  # role


def test_patient_token_reaches_only_its_own_compartment_R_SEC_4(world: dict[str, Any]) -> None:
    me = _user(world, ["patient"], ["patient/*.rs"], patient=world["pat1"],
               sub="patient-1")
    assert me.get(f"/fhir/Patient/{world['pat1']}").status_code == 200
    assert me.get(f"/fhir/Patient/{world['pat2']}").status_code == 404
    assert me.get(f"/fhir/Observation/{world['obs2']}").status_code == 404
    ids = {e["resource"]["id"] for e in me.get("/fhir/Observation").json()["entry"]}
    assert ids == {world["obs1"]}
    # a practitioner token launched in a patient context is limited the same way
    launched = _user(world, ["ris"], ["patient/*.rs"], patient=world["pat2"])
    assert launched.get(f"/fhir/Observation/{world['obs1']}").status_code == 404
    assert launched.get(f"/fhir/Observation/{world['obs2']}").status_code == 200


def test_batch_entries_are_authorised_one_by_one(world: dict[str, Any]) -> None:
    dr_a = _user(world, ["requesting-physician"], id_nat_ps=DR_A)
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"Patient/{world['pat1']}"}},
        {"request": {"method": "GET", "url": f"Patient/{world['pat2']}"}},
        {"request": {"method": "DELETE", "url": f"Patient/{world['pat1']}"}}]}
    r = dr_a.post("/fhir", json=bundle).json()
    assert [e["response"]["status"][:3] for e in r["entry"]] == ["200", "404", "403"]


def test_clients_cannot_set_security_labels(world: dict[str, Any]) -> None:
    ris = world["ris"]
    labelled = {"resourceType": "Patient", "meta": {"security": [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "N"}]}}
    r = ris.post("/fhir/Patient", json=labelled)
    assert r.status_code == 403 and r.json()["issue"][0]["expression"] == ["meta.security"]
    current = ris.get(f"/fhir/Patient/{world['pat1']}").json()
    assert ris.put(f"/fhir/Patient/{world['pat1']}", json=current).status_code == 200
    patch = [{"op": "add", "path": "/meta/security", "value": labelled["meta"]["security"]}]
    assert ris.patch(f"/fhir/Patient/{world['pat1']}", json=patch,
                     headers={"content-type": "application/json-patch+json"}
                     ).status_code == 403
    # server-owned versionId is ignored, not honoured
    stale = {**current, "meta": {"versionId": "999"}}
    assert ris.put(f"/fhir/Patient/{world['pat1']}", json=stale).json()["meta"][
        "versionId"] == "3"


# -- request limits -------------------------------------------------------------------------

def test_oversized_and_abusive_requests_are_refused_cleanly(world: dict[str, Any]) -> None:
    ris = world["ris"]
    big = {"resourceType": "Patient", "name": [{"text": "x" * (17 * 1024 * 1024)}]}
    assert ris.post("/fhir/Patient", content=orjson.dumps(big),
                    headers={"content-type": "application/fhir+json"}).status_code == 413
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Patient?_count=1"}}] * 10_000}
    r = ris.post("/fhir", json=bundle)
    assert r.status_code == 413 and r.json()["issue"][0]["expression"] == ["Bundle.entry"]
    raw = b'{"resourceType":"Patient","extension":' + b"[" * 3000 + b"]" * 3000 + b"}"
    r = ris.post("/fhir/Patient", content=raw,
                 headers={"content-type": "application/fhir+json"})
    assert r.status_code in (400, 422) and r.json()["resourceType"] == "OperationOutcome"
    r = ris.get("/fhir/Observation?_count=100000")
    assert r.status_code == 200 and len(r.json().get("entry", [])) <= 1000
