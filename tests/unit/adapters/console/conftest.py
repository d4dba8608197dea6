"""In-process console fixtures (issue 30): the served app over a secured core on SQLite,
and ``signed(role, …)``: a TestClient signed in through the development sign-in page."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_server.server.dispatch import FhirServer
from tests.conftest import make_store, secured_core, serve

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(page: str) -> str:
    found = CSRF.search(page)
    assert found, "no CSRF token on the page"
    return found.group(1)


def sign_in(client: TestClient, role: str, rpps: str = "", finess: str = "",
            name: str = "") -> TestClient:
    """The development sign-in, as the page's form posts it."""
    page = client.get("/console/connexion")
    r = client.post("/console/connexion/dev", data={
        "csrf": csrf_of(page.text), "role": role, "rpps": rpps, "finess": finess,
        "name": name or role}, follow_redirects=False)
    assert r.status_code == 303, r.text
    assert "/connexion" not in r.headers["location"], r.headers["location"]
    return client


@pytest.fixture
def core(tmp_path: Path) -> Iterator[FhirServer]:
    server = secured_core(make_store("sqlite", tmp_path), tmp_path)
    yield server
    assert server.audit is not None
    server.audit.close()


@pytest.fixture
def signed(core: FhirServer, tmp_path: Path) -> Callable[..., TestClient]:
    def make(role: str, rpps: str = "", finess: str = "", **kw: Any) -> TestClient:
        return sign_in(serve(core, tmp_path, None), role, rpps, finess, **kw)

    return make
