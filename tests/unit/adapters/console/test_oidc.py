"""Production sign-in (issue 30; R-SEC-1): OpenID Connect authorization code + PKCE
against a stand-in issuer — the verifier proves the code, the state and the nonce are
checked, and the access token the issuer returns is validated by the core's validator
before a session starts."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from jose import jwt

from fhir_server.config import AuthConfig, Settings
from fhir_server.server.dispatch import FhirServer
from teleimagerie.wiring import create_app
from tests.conftest import mint
from tests.e2e.harness import in_thread


class Issuer:
    """The token endpoint of a stand-in OIDC provider (its tokens: the dev issuer's)."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.challenge = ""
        self.nonce = ""
        self.seen: list[dict[str, str]] = []
        self.app = FastAPI()
        self.app.add_api_route("/token", self.token, methods=["POST"])

    async def token(self, request: Request) -> JSONResponse:
        form = {k: str(v) for k, v in (await request.form()).items()}
        self.seen.append(form)
        verifier = form.get("code_verifier", "")
        proof = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()
                                         ).rstrip(b"=").decode()
        if form.get("code") != "le-code" or proof != self.challenge:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        return JSONResponse({
            "access_token": mint(self.data, ["remote-imager"], ["user/*.cruds"],
                                 id_nat_ps="810000000101", name="Anne IMAGEUR",
                                 acr="eidas2", sub="psc:anne"),
            "id_token": jwt.encode({"nonce": self.nonce, "sub": "psc:anne"}, "k" * 32),
            "token_type": "Bearer", "expires_in": 3600})


def _app(core: FhirServer, tmp: Path, token_url: str) -> TestClient:
    settings = Settings(data_dir=tmp, auth=AuthConfig(
        authorize_url="https://psc.example/auth", token_url=token_url))
    return TestClient(create_app(settings, server=core))


def _authorize(client: TestClient, issuer: Issuer) -> dict[str, Any]:
    r = client.get("/console/connexion/oidc?suite=%2Fconsole%2Fprofil",
                   follow_redirects=False)
    assert r.status_code == 303
    url = urlsplit(r.headers["location"])
    assert f"{url.scheme}://{url.netloc}{url.path}" == "https://psc.example/auth"
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert query["response_type"] == "code" and query["code_challenge_method"] == "S256"
    assert query["redirect_uri"].endswith("/console/connexion/retour")
    issuer.challenge, issuer.nonce = query["code_challenge"], query["nonce"]
    return query


def test_code_flow_with_pkce(core: FhirServer, tmp_path: Path) -> None:
    issuer = Issuer(tmp_path)
    with in_thread(issuer.app) as port:
        client = _app(core, tmp_path, f"http://127.0.0.1:{port}/token")
        page = client.get("/console/connexion")
        assert "/console/connexion/oidc" in page.text
        query = _authorize(client, issuer)
        r = client.get(f"/console/connexion/retour?code=le-code&state={query['state']}",
                       follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/console/profil", \
            r.headers["location"]
        assert "Anne IMAGEUR" in client.get("/console/profil").text
        assert issuer.seen[-1]["grant_type"] == "authorization_code"


def test_state_and_verifier_are_checked(core: FhirServer, tmp_path: Path) -> None:
    issuer = Issuer(tmp_path)
    with in_thread(issuer.app) as port:
        client = _app(core, tmp_path, f"http://127.0.0.1:{port}/token")
        _authorize(client, issuer)
        r = client.get("/console/connexion/retour?code=le-code&state=forged",
                       follow_redirects=False)
        assert "erreur" in r.headers["location"] and not issuer.seen
        # another browser (no pending cookie): no verifier, the issuer refuses the code
        query = _authorize(client, issuer)
        other = _app(core, tmp_path, f"http://127.0.0.1:{port}/token")
        r = other.get(f"/console/connexion/retour?code=le-code&state={query['state']}",
                      follow_redirects=False)
        assert "erreur" in r.headers["location"]
        assert other.get("/console/profil", follow_redirects=False).status_code == 303
        # the issuer's own refusal is said
        r = client.get("/console/connexion/retour?error=access_denied",
                       follow_redirects=False)
        assert "access_denied" in r.headers["location"]
