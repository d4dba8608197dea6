"""SMART / OAuth discovery (issue 29 item 5): ``.well-known/smart-configuration`` at the
root and under ``/fhir`` is complete in development mode (the dev issuer, whose public
JWKS the server serves) and with configured issuers and endpoints; the
CapabilityStatement's ``rest.security`` says the same (SMART coding, oauth-uris, cors)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from jose import jwt

from fhir_server.config import Settings
from fhir_server.interactions.capabilities import OAUTH_URIS
from fhir_server.security.devissuer import DEV_ISSUER
from teleimagerie.wiring import create_app
from tests.conftest import make_store, mint, secured_core

ISSUER = "https://psc.example.test/auth/realms/esante-wallet"
JWKS = "https://psc.example.test/auth/realms/esante-wallet/protocol/openid-connect/certs"
AUTHORIZE = "https://psc.example.test/auth/authorize"
TOKEN = "https://psc.example.test/auth/token"
REQUIRED = {"issuer", "jwks_uri", "scopes_supported", "capabilities",
            "code_challenge_methods_supported", "grant_types_supported",
            "token_endpoint_auth_methods_supported", "response_types_supported"}
SMART_CODING = {"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                "code": "SMART-on-FHIR"}


def _client(tmp: Path, settings: Settings) -> TestClient:
    core = secured_core(make_store("sqlite", tmp), tmp / "data")
    return TestClient(create_app(settings, server=core))


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[TestClient]:
    with _client(tmp_path, Settings(data_dir=tmp_path / "data")) as http:
        yield http


@pytest.fixture
def configured(tmp_path: Path) -> Iterator[TestClient]:
    base = Settings(data_dir=tmp_path / "data")
    auth = dataclasses.replace(base.auth, issuers=((ISSUER, JWKS),), dev_issuer=False,
                               authorize_url=AUTHORIZE, token_url=TOKEN)
    settings = dataclasses.replace(base, auth=auth, cors_origins=("https://viewer.test",),
                                   base_url="https://pacs.example.test/fhir")
    with _client(tmp_path, settings) as http:
        yield http


def _security(http: TestClient) -> dict[str, Any]:
    statement = http.get("/fhir/metadata")
    assert statement.status_code == 200
    security: dict[str, Any] = statement.json()["rest"][0]["security"]
    codings = [c for s in security["service"] for c in s["coding"]]
    assert any(SMART_CODING.items() <= c.items() for c in codings), codings
    return security


@pytest.mark.parametrize("path", ["/.well-known/smart-configuration",
                                  "/fhir/.well-known/smart-configuration"])
def test_development_mode_names_the_dev_issuer_and_serves_its_keys(
        dev: TestClient, path: str, tmp_path: Path) -> None:
    answer = dev.get(path)  # no token
    assert answer.status_code == 200
    doc = answer.json()
    assert REQUIRED <= set(doc), REQUIRED - set(doc)
    assert doc["issuer"] == DEV_ISSUER
    assert doc["jwks_uri"] == "http://testserver/fhir/.well-known/jwks.json"
    assert "S256" in doc["code_challenge_methods_supported"]
    assert "authorization_endpoint" not in doc and "token_endpoint" not in doc
    # the JWKS it names is served, public keys only, and verifies a dev token
    keys = dev.get(httpx.URL(doc["jwks_uri"]).path)
    assert keys.status_code == 200
    jwks = keys.json()
    assert jwks["keys"] and all("d" not in k for k in jwks["keys"])
    token = mint(tmp_path / "data", ["ris"])
    key = next(k for k in jwks["keys"] if k["kid"] == jwt.get_unverified_header(token)["kid"])
    claims = jwt.decode(token, key, algorithms=[key["alg"]],
                        options={"verify_aud": False})
    assert claims["iss"] == DEV_ISSUER


def test_development_mode_capability_statement_security(dev: TestClient) -> None:
    security = _security(dev)
    assert security["cors"] is False
    assert "extension" not in security  # no endpoints configured: no oauth-uris


def test_configured_issuer_and_endpoints(configured: TestClient) -> None:
    for path in ("/.well-known/smart-configuration", "/fhir/.well-known/smart-configuration"):
        doc = configured.get(path).json()
        assert REQUIRED <= set(doc)
        assert doc["issuer"] == ISSUER and doc["jwks_uri"] == JWKS
        assert doc["authorization_endpoint"] == AUTHORIZE
        assert doc["token_endpoint"] == TOKEN
    # no development issuer: its JWKS is not served
    assert configured.get("/fhir/.well-known/jwks.json").status_code == 404
    security = _security(configured)
    assert security["cors"] is True
    (oauth,) = [e for e in security["extension"] if e["url"] == OAUTH_URIS]
    assert {(e["url"], e["valueUri"]) for e in oauth["extension"]} == {
        ("authorize", AUTHORIZE), ("token", TOKEN)}
