"""Authentication over HTTP, on both stores (issue 27 items 4, 10, 12).

R-SEC-1: a person is strongly authenticated (``acr``) before reaching patient data, and
whether a token is a person's or a connector's is decided by its *role*, never by the
scope it asks for; every JWT header parameter and claim is type-checked, so a malformed
token is a 401, never a 500. R-SEC-3 / R-INT-2: every refusal — on any path, STOW-RS
included — leaves an AuditEvent.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from jose import jwt

from fhir_server.config import Settings
from fhir_server.security.devissuer import DEFAULT_AUDIENCE, DEV_ISSUER, DevIssuer
from fhir_server.security.jwks import KeySet
from fhir_server.security.policy import SecurityPolicy
from fhir_server.security.roles import ROLES, SYSTEM_ROLES
from fhir_server.security.tokens import AuthSettings, Issuer, TokenValidator
from fhir_server.server.dispatch import FhirServer
from tests.conftest import Fhir, mint, serve

RPPS = "urn:oid:1.2.250.1.71.4.2.1"
DOCTOR = "810000000001"  # idNatPs of the practitioner every human token here names
CONTEXTS = ("user", "patient", "system")
ACRS = (None, "eidas1", "eidas2")  # none, weak, strong (TELEIMG_AUTH_STRONG_ACR)


@pytest.fixture
def world(secured: FhirServer, tmp_path: Path) -> dict[str, Any]:
    """A patient with a request from DOCTOR: every care role acting as DOCTOR reaches it."""
    ris = Fhir(serve(secured, tmp_path, mint(tmp_path, ["ris"])))
    doctor = ris.create({"resourceType": "Practitioner",
                         "identifier": [{"system": RPPS, "value": DOCTOR}]})["id"]
    patient = ris.create({"resourceType": "Patient", "name": [{"family": "SECRET"}]})["id"]
    ris.create({"resourceType": "ServiceRequest", "status": "active", "intent": "order",
                "subject": {"reference": f"Patient/{patient}"},
                "requester": {"reference": f"Practitioner/{doctor}"}})
    return {"core": secured, "dir": tmp_path, "patient": patient, "ris": ris}


def _client(world: dict[str, Any], token: str | None) -> TestClient:
    return serve(world["core"], world["dir"], token)


def _token(world: dict[str, Any], roles: list[str], scopes: list[str],
           acr: str | None = "eidas2", **claims: Any) -> str:
    return mint(world["dir"], roles, scopes, acr=acr, id_nat_ps=DOCTOR,
                patient=world["patient"], sub=f"test:{'+'.join(roles)}:{acr}:{scopes[0]}",
                **claims)


def _audited(world: dict[str, Any], request_id: str) -> list[dict[str, Any]]:
    """The AuditEvents of one request (by its X-Request-Id), read as the auditor."""
    world["core"].audit.flush()
    auditor = _client(world, mint(world["dir"], ["auditor"], ["user/AuditEvent.rs"],
                                  id_nat_ps="899999999999", sub="test:auditor"))
    r = auditor.get("/fhir/AuditEvent?outcome=4&_count=1000")
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", [])
            if any(x.get("what", {}).get("identifier", {}).get("value") == request_id
                   for x in e["resource"].get("entity", []))]


def _get(client: TestClient, url: str) -> tuple[Any, str]:
    request_id = str(uuid.uuid4())
    return client.get(url, headers={"X-Request-Id": request_id}), request_id


def _expected(role: str, context: str, acr: str | None) -> tuple[int, str]:
    """What reading the patient must answer, and a word of the reason."""
    definition = ROLES[role]
    if not definition.system and context == "system":
        return 403, "system/ scopes are for connectors"
    if "r" not in definition.letters("Patient"):
        return 403, "may not read Patient"
    if not definition.system and acr != "eidas2":
        return 403, "strong authentication"
    return 200, ""


def test_role_decides_person_or_connector_for_every_role_scope_and_acr_R_SEC_1(
        world: dict[str, Any]) -> None:
    """Every role × scope context × acr: a person asking for ``system/`` scopes is refused
    (audited), a person needs a strong acr, a connector never does (R-SEC-1, R-SEC-3)."""
    wrong: list[str] = []
    refused_ids: list[str] = []
    for role in sorted(ROLES):
        for context in CONTEXTS:
            for acr in ACRS:
                client = _client(world, _token(world, [role], [f"{context}/*.rs"], acr))
                r, request_id = _get(client, f"/fhir/Patient/{world['patient']}")
                status, reason = _expected(role, context, acr)
                text = r.json()["issue"][0]["diagnostics"] if r.status_code >= 400 else ""
                if r.status_code != status or reason not in text:
                    wrong.append(f"{role} {context}/ acr={acr}: {r.status_code} {text!r}, "
                                 f"expected {status} {reason!r}")
                if r.status_code == 200:
                    assert "SECRET" in r.text
                else:
                    assert r.json()["resourceType"] == "OperationOutcome"
                    assert "SECRET" not in r.text
                if reason.startswith("system/"):
                    refused_ids.append(request_id)
    assert not wrong, "\n".join(wrong)
    assert len(refused_ids) == 3 * (len(ROLES) - len(SYSTEM_ROLES))
    for request_id in refused_ids[:6]:  # audited, with the reason (R-SEC-3)
        events = _audited(world, request_id)
        assert events and "system/ scopes" in events[0]["outcomeDesc"]


@pytest.mark.parametrize("role", sorted(set(ROLES) - SYSTEM_ROLES))
def test_a_person_asking_for_system_scopes_writes_nothing_R_SEC_1(
        world: dict[str, Any], role: str) -> None:
    """The issue's example: a remote imager with ``system/*.cruds`` and no acr created
    Observations. Now every human role is refused, whatever it asks (R-SEC-1)."""
    for acr in (None, "eidas3"):
        client = _client(world, _token(world, [role], ["system/*.cruds"], acr))
        r = client.post("/fhir/Observation", json={
            "resourceType": "Observation", "status": "final", "code": {"text": "x"},
            "subject": {"reference": f"Patient/{world['patient']}"}})
        assert r.status_code == 403, r.text
        assert "system/ scopes are for connectors" in r.text
        also_user = _token(world, [role], ["user/*.rs", "system/Patient.r"], acr)
        assert _client(world, also_user).get(
            f"/fhir/Patient/{world['patient']}").status_code == 403
    assert world["ris"].search("Observation")["total"] == 0


def test_a_token_mixing_person_and_connector_roles_is_refused_R_SEC_1(
        world: dict[str, Any]) -> None:
    for roles, scopes in ((["remote-imager", "ris"], ["system/*.rs"]),
                          (["remote-imager", "ris"], ["user/*.rs"]),
                          (["patient", "document-consumer"], ["patient/*.rs"])):
        client = _client(world, _token(world, roles, scopes, acr=None))
        r, request_id = _get(client, f"/fhir/Patient/{world['patient']}")
        assert r.status_code == 403 and "mixes human roles" in r.text, (roles, r.text)
        assert _audited(world, request_id)


def test_connector_scopes_of_a_person_kind_only_narrow_R_SEC_1(world: dict[str, Any]) -> None:
    """A connector with ``patient/`` scopes stays a connector (no acr) limited to its
    patient: the scope never widens and never turns it into a person."""
    other = world["ris"].create({"resourceType": "Patient"})["id"]
    narrow = _client(world, _token(world, ["ris"], ["patient/*.rs"], acr=None))
    assert narrow.get(f"/fhir/Patient/{world['patient']}").status_code == 200
    assert narrow.get(f"/fhir/Patient/{other}").status_code == 404
    assert narrow.post("/fhir/Patient", json={"resourceType": "Patient"}).status_code == 403


def _registered_core(world: dict[str, Any]) -> FhirServer:
    """The same store behind an issuer that registers its backend clients."""
    issuer = DevIssuer(world["dir"])
    settings = Settings(data_dir=world["dir"])
    validator = TokenValidator(AuthSettings(issuers=(Issuer(
        DEV_ISSUER, KeySet(str(issuer.jwks_path)), DEFAULT_AUDIENCE,
        system_clients=frozenset({"ris-backend"})),)))
    return FhirServer(world["core"].store, settings.limits,
                      security=SecurityPolicy(validator), audit=world["core"].audit)


def test_system_roles_come_only_from_registered_system_clients_R_SEC_1(
        world: dict[str, Any]) -> None:
    core = _registered_core(world)
    url = f"/fhir/Patient/{world['patient']}"
    cases = [(["ris"], "system/*.rs", "ris-backend", 200),
             (["ris"], "system/*.rs", "teleimagerie-cli", 403),  # a person's app
             (["remote-imager"], "user/*.rs", "teleimagerie-cli", 200),
             (["remote-imager"], "user/*.rs", "ris-backend", 403)]  # a backend as a person
    for roles, scope, client_id, status in cases:
        token = _token(world, roles, [scope], extra={"azp": client_id})
        r = serve(core, world["dir"], token).get(url)
        assert r.status_code == status, (roles, client_id, r.text)


# -- header and claim types (item 10, 12) ---------------------------------------------------

def _signed(world: dict[str, Any], header: dict[str, Any] | None = None,
            **claims: Any) -> str:
    """A token signed by the development issuer's real key, with any header and claims."""
    issuer = DevIssuer(world["dir"])
    now = int(time.time())
    body = {"iss": DEV_ISSUER, "aud": DEFAULT_AUDIENCE, "sub": "test:malformed",
            "iat": now, "exp": now + 600, "roles": ["ris"], "scope": "system/*.rs"}
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not ...}
    return jwt.encode(body, issuer.private_path.read_text(), algorithm="ES256",
                      headers={"kid": issuer.kid, **(header or {})})


NOW = int(time.time())
MALFORMED: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "alg with CR LF (header injection)": ({"alg": "ES256\r\nSet-Cookie: a=b"}, {}),
    "alg not ASCII": ({"alg": "é°\u0000"}, {}),
    "alg list": ({"alg": ["ES256"]}, {}),
    "kid list": ({"kid": ["a"]}, {}),
    "kid object": ({"kid": {"k": 1}}, {}),
    "kid number": ({"kid": 7}, {}),
    "kid bool": ({"kid": True}, {}),
    "typ number": ({"typ": 5}, {}),
    "typ of another kind of JWT": ({"typ": "secevent+jwt"}, {}),
    "crit": ({"crit": ["exp"]}, {}),
    "nested (cty)": ({"cty": "JWT"}, {}),
    "exp string": ({}, {"exp": str(NOW + 600)}),
    "exp 1e300": ({}, {"exp": 1e300}),
    "exp infinity": ({}, {"exp": float("inf")}),
    "exp NaN": ({}, {"exp": float("nan")}),
    "exp beyond year 9999": ({}, {"exp": 253402300800}),
    "exp negative": ({}, {"exp": -1}),
    "exp bool": ({}, {"exp": True}),
    "exp list": ({}, {"exp": [NOW + 600]}),
    "exp object": ({}, {"exp": {"v": NOW + 600}}),
    "iat string": ({}, {"iat": str(NOW)}),
    "iat missing": ({}, {"iat": ...}),
    "nbf float string": ({}, {"nbf": "1.5"}),
    "aud object": ({}, {"aud": {"a": DEFAULT_AUDIENCE}}),
    "aud list of numbers": ({}, {"aud": [1, 2]}),
    "iss list": ({}, {"iss": [DEV_ISSUER]}),
    "sub number": ({}, {"sub": 42}),
    "sub empty": ({}, {"sub": ""}),
    "sub with NUL": ({}, {"sub": "a\u0000b"}),
    "scope number": ({}, {"scope": 5}),
    "scope list of objects": ({}, {"scope": [{"s": "system/*.rs"}]}),
    "roles object": ({}, {"roles": {"ris": True}}),
    "roles list of numbers": ({}, {"roles": [1]}),
    "azp list": ({}, {"azp": ["x"]}),
    "client_id object": ({}, {"client_id": {"x": 1}}),
    "SubjectNameID number": ({}, {"SubjectNameID": 810000000001}),
    "acr list": ({}, {"acr": ["eidas2"]}),
    "patient number": ({}, {"patient": 1}),
    "finess object": ({}, {"finess": {"a": "b"}}),
}
PATHS = ("/fhir/Patient/x", "/fhir/Patient?_count=1", "/fhir/Medication/1",  # unsupported
         "/fhir/no/such/path/at/all", "/fhir/_history/x")


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_header_or_claim_is_401_and_audited_R_SEC_1_R_SEC_3(
        world: dict[str, Any], case: str) -> None:
    header, claims = MALFORMED[case]
    client = _client(world, _signed(world, header, **claims))
    for path in PATHS:
        r, request_id = _get(client, path)
        assert r.status_code == 401, (case, path, r.status_code, r.text)
        assert r.json()["resourceType"] == "OperationOutcome"
        challenge = r.headers["WWW-Authenticate"]
        assert challenge.startswith('Bearer realm="teleimagerie"')
        assert all(" " <= c <= "~" for c in challenge), challenge  # RFC 6750 §3
        if path == PATHS[0]:
            assert _audited(world, request_id), (case, "not audited")
    # STOW-RS (R-INT-2): the same refusal, before the upload is read, audited
    request_id = str(uuid.uuid4())
    r = client.post("/dicomweb/studies", content=b"--x--", headers={
        "Content-Type": 'multipart/related; type="application/dicom"; boundary=x',
        "X-Request-Id": request_id})
    assert r.status_code == 401 and r.json()["resourceType"] == "OperationOutcome", r.text
    assert _audited(world, request_id)


def test_well_typed_edge_values_are_accepted(world: dict[str, Any]) -> None:
    """The checks refuse types, not valid tokens: float dates, a list audience, a
    space-separated role string, typ at+jwt (R-SEC-1)."""
    now = int(time.time())  # not the module's NOW: the suite may outlast a token's life
    for header, claims in (({"typ": "at+jwt"}, {}), ({"typ": "JWT"}, {}),
                           ({}, {"exp": now + 600.5, "iat": now - 0.5}),
                           ({}, {"aud": [DEFAULT_AUDIENCE, "other"]}),
                           ({}, {"exp": 253402300799}),
                           ({}, {"roles": "ris", "scp": ["system/*.rs"], "scope": ...})):
        r = _client(world, _signed(world, header, **claims)).get(
            f"/fhir/Patient/{world['patient']}")
        assert r.status_code == 200, (header, claims, r.text)


BAD_TOKEN_CALLS = [
    ("GET", "/fhir/Medication"), ("GET", "/fhir/Medication/1/_history/2"),
    ("POST", "/fhir/Medication"), ("DELETE", "/fhir/Medication/1"),
    ("GET", "/fhir/Patient/1/2/3/4/5"), ("TRACE", "/fhir/Patient"),
    ("OPTIONS", "/fhir/Patient"), ("PUT", "/fhir/Patient"), ("PATCH", "/fhir/_history"),
    ("POST", "/fhir"), ("POST", "/fhir/"), ("GET", "/fhir"), ("POST", "/fhir/metadata"),
    ("DELETE", "/fhir/metadata"), ("GET", "/fhir/metadata/extra"), ("GET", "/fhir/$nope"),
    ("POST", "/fhir/Patient/$nope"), ("GET", "/fhir/.well-known/other"),
    ("GET", "/fhir/Patient/x/_history/99999999999999999999"),
    ("GET", "/fhir/Patient?_count=%C2%B2"),
]


@pytest.mark.parametrize("token", ["garbage", None])
def test_bad_token_is_401_audited_before_any_404_405_or_400_R_SEC_1_R_SEC_3(
        world: dict[str, Any], token: str | None) -> None:
    """Authenticate first, on every path under /fhir: a bad token never learns which
    types, paths or methods exist, and the attempt is traced (item 12)."""
    client = _client(world, token)
    for method, path in BAD_TOKEN_CALLS:
        request_id = str(uuid.uuid4())
        r = client.request(method, path, content=b"{not json", headers={
            "Content-Type": "application/fhir+json", "X-Request-Id": request_id})
        assert r.status_code == 401, (method, path, r.status_code, r.text)
        assert r.json()["resourceType"] == "OperationOutcome"
        assert _audited(world, request_id), (method, path, "not audited")
    assert client.get("/fhir/metadata").status_code == 200  # the one public resource


def test_system_clients_are_configured_per_deployment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TELEIMG_AUTH_SYSTEM_CLIENTS registers the issuers' backend clients (R-SEC-1)."""
    from fhir_server.runtime import auth_settings

    monkeypatch.setenv("TELEIMG_AUTH_ISSUERS", f"https://idp.example|{tmp_path}/jwks.json")
    monkeypatch.setenv("TELEIMG_AUTH_SYSTEM_CLIENTS", "ris-backend, pacs-backend")
    monkeypatch.setenv("TELEIMG_DATA_DIR", str(tmp_path))
    issuers = auth_settings(Settings.from_env()).issuers
    configured = [i for i in issuers if i.issuer == "https://idp.example"]
    assert configured[0].system_clients == frozenset({"ris-backend", "pacs-backend"})
    monkeypatch.delenv("TELEIMG_AUTH_SYSTEM_CLIENTS")
    issuers = auth_settings(Settings.from_env()).issuers
    assert all(i.system_clients is None for i in issuers)
