"""The console's foundation (issue 30; R-SEC-1, R-SEC-3): sign-in, the session cookie,
CSRF on every POST, sign-in and sign-out audited, security headers, no CDN."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from adapters.console.settings import ConsoleSettings
from fhir_server.config import AuthConfig, Settings
from fhir_server.server.dispatch import FhirServer
from tests.conftest import mint, serve
from tests.unit.adapters.console.conftest import csrf_of


def test_pages_need_a_session(core: FhirServer, tmp_path: Path) -> None:
    client = serve(core, tmp_path, None)
    r = client.get("/console/profil", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/console/connexion?suite=%2Fconsole%2Fprofil"
    # an htmx fragment asks the whole page to go
    r = client.get("/console/profil", headers={"HX-Request": "true"}, follow_redirects=False)
    assert r.headers["HX-Redirect"].startswith("/console/connexion")
    # a bearer token is not a session: the console reads its cookie only
    r = client.get("/console/profil", headers={
        "Authorization": f"Bearer {mint(tmp_path, ['remote-imager'], ['user/*.cruds'])}"},
        follow_redirects=False)
    assert r.status_code == 303


def test_session_cookie_is_http_only_and_same_site(core: FhirServer, tmp_path: Path) -> None:
    client = serve(core, tmp_path, None)
    page = client.get("/console/connexion")
    r = client.post("/console/connexion/dev", data={
        "csrf": csrf_of(page.text), "role": "remote-imager", "rpps": "810000000101"},
        follow_redirects=False)
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/console" in cookie
    assert "810000000101" not in r.headers["set-cookie"]  # sealed, not just signed
    assert client.get("/console/profil").status_code == 200
    # a tampered cookie is no session
    client.cookies.set("teleimg_console", client.cookies["teleimg_console"][:-4] + "AAAA",
                       path="/console")
    assert client.get("/console/profil", follow_redirects=False).status_code == 303


def test_every_post_needs_the_csrf_token(signed: Callable[..., TestClient]) -> None:
    client = signed("remote-imager", "810000000101")
    assert client.post("/console/deconnexion", data={}).status_code == 403
    assert client.post("/console/deconnexion", data={"csrf": "forged"}).status_code == 403
    page = client.get("/console/profil")
    r = client.post("/console/deconnexion", headers={"X-CSRF-Token": csrf_of(page.text)},
                    follow_redirects=False)
    assert r.status_code == 303
    # signed out: the session cookie is gone
    assert client.get("/console/profil", follow_redirects=False).status_code == 303


def test_sign_in_page_needs_its_own_csrf(core: FhirServer, tmp_path: Path) -> None:
    client = serve(core, tmp_path, None)
    r = client.post("/console/connexion/dev", data={"role": "remote-imager"})
    assert r.status_code == 403


def test_a_system_role_cannot_sign_in(core: FhirServer, tmp_path: Path) -> None:
    client = serve(core, tmp_path, None)
    page = client.get("/console/connexion")
    r = client.post("/console/connexion/dev", data={"csrf": csrf_of(page.text),
                                                     "role": "ris"}, follow_redirects=False)
    assert "erreur" in r.headers["location"]


def test_no_open_redirect_after_sign_in(core: FhirServer, tmp_path: Path) -> None:
    client = serve(core, tmp_path, None)
    page = client.get("/console/connexion?suite=https://evil.example/")
    r = client.post("/console/connexion/dev", data={
        "csrf": csrf_of(page.text), "role": "auditor", "suite": "//evil.example/"},
        follow_redirects=False)
    assert r.headers["location"].startswith("/console/")


def test_sign_in_and_out_are_audited(core: FhirServer, tmp_path: Path,
                                     signed: Callable[..., TestClient]) -> None:
    client = signed("remote-imager", "810000000101", name="Anne IMAGEUR")
    page = client.get("/console/profil")
    client.post("/console/deconnexion", data={"csrf": csrf_of(page.text)})
    refused = serve(core, tmp_path, None)
    refused.post("/console/connexion/dev", data={
        "csrf": csrf_of(refused.get("/console/connexion").text), "role": "ris"})
    assert core.audit is not None
    core.audit.flush()
    auditor = serve(core, tmp_path, mint(tmp_path, ["auditor"], ["user/*.cruds"]))
    found = auditor.get("/fhir/AuditEvent", params={"type": "110114", "_count": "50"})
    assert found.status_code == 200, found.text
    events = [e["resource"] for e in found.json().get("entry", [])]
    seen = sorted((e["subtype"][0]["code"], e["outcome"]) for e in events)
    assert seen == [("110122", "0"), ("110122", "4"), ("110123", "0")], seen
    login = next(e for e in events if e["subtype"][0]["code"] == "110122" and
                 e["outcome"] == "0")
    assert login["agent"][0]["who"]["identifier"]["value"] == "810000000101"
    assert any(c["code"] == "console" for c in login["source"]["type"])


def test_security_headers_and_vendored_assets(signed: Callable[..., TestClient]) -> None:
    client = signed("auditor")
    r = client.get("/console/profil")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["cache-control"] == "no-store"
    assert "<script src=\"http" not in r.text  # no CDN: every asset is ours
    for asset in ("vendor/htmx-2.0.11.min.js", "vendor/uPlot-1.6.32.iife.min.js",
                  "vendor/uPlot-1.6.32.min.css", "console.css", "console.js"):
        assert client.get(f"/console/static/{asset}").status_code == 200, asset


def test_production_needs_a_session_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    production = Settings(environment="production",
                          auth=AuthConfig(issuers=(("https://psc", "jwks.json"),),
                                          dev_issuer=False))
    monkeypatch.delenv("TELEIMG_CONSOLE_SECRET", raising=False)
    with pytest.raises(SystemExit):
        ConsoleSettings.from_env(production)
    monkeypatch.setenv("TELEIMG_CONSOLE_SECRET", "a long random secret")
    assert not ConsoleSettings.from_env(production).dev_signin
