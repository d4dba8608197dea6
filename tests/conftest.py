"""Shared fixtures: every behaviour test runs on both stores (README, "Development").

The embedded store runs for real in a temporary directory; MongoDB runs through
mongomock, or against a real server when ``TELEIMG_TEST_MONGODB_URI`` is set.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

warnings.filterwarnings("ignore", category=DeprecationWarning)
from fastapi.testclient import TestClient  # noqa: E402

from fhir_server.audit.sink import AuditSink  # noqa: E402
from fhir_server.config import Settings  # noqa: E402
from fhir_server.http.app import ReadFastPath  # noqa: E402
from fhir_server.runtime import auth_settings  # noqa: E402
from fhir_server.security.devissuer import DevIssuer  # noqa: E402
from fhir_server.security.policy import SecurityPolicy  # noqa: E402
from fhir_server.security.tokens import TokenValidator  # noqa: E402
from fhir_server.server.dispatch import FhirServer  # noqa: E402
from fhir_server.store import open_store  # noqa: E402
from teleimagerie.wiring import create_app  # noqa: E402

REFERENCES = Path(__file__).resolve().parents[2] / "shared" / "references"
BACKENDS = ["sqlite", "mongo"]
# without the session's validation service (below), in-process cores validate CDA in
# their own process: one Saxon compilation per test worker, not two
os.environ.setdefault("TELEIMG_SCHEMATRON_ISOLATED", "off")
_SCHEMATRONS: Any = None  # the session's validation service (ADR 0021 §7)


def pytest_configure(config: pytest.Config) -> None:
    """One schematron validation service for the whole session, started by the
    controller (or the only process) before the workers: every worker, every server and
    CLI the tests start use it (TELEIMG_SCHEMATRON_SERVICE), so Saxon compiles the ANS
    schematrons once per session, not once per process (issue 26). When the session
    runs CDA or end-to-end tests, it compiles them now, while the tests are collected."""
    global _SCHEMATRONS
    from adapters.cda import schematron, service

    if hasattr(config, "workerinput") or service.SETTING in os.environ or \
            not schematron.available():
        return
    _SCHEMATRONS = service.start()
    os.environ[service.SETTING] = _SCHEMATRONS.socket
    if _needs_schematrons(config.args):
        shared = service.shared(schematron.references() or Path("."))
        assert shared is not None
        shared.warm_soon(sorted({n for names in schematron.BY_LEVEL.values()
                                 for n in names}))


def _needs_schematrons(args: list[str]) -> bool:
    for arg in args or ["tests"]:
        path = Path(arg.split("::")[0])
        if "cda" in arg or "e2e" in arg or (path.is_dir() and (
                any(path.rglob("test_cda*.py")) or any(path.rglob("e2e")))):
            return True
    return False


def pytest_unconfigure(config: pytest.Config) -> None:
    if _SCHEMATRONS is not None:
        _SCHEMATRONS.stop()


def mongo_url() -> str:
    real = os.environ.get("TELEIMG_TEST_MONGODB_URI")
    db = f"teleimg_test_{uuid.uuid4().hex[:10]}"
    if real:
        base, _, query = real.partition("?")
        return f"{base.rstrip('/')}/{db}" + (f"?{query}" if query else "")
    return f"mongomock://localhost/{db}"




def _atomic_mongomock() -> None:
    """A MongoDB server applies ``find_one_and_update`` atomically (the store's counters,
    ``MongoStore._next``, rely on it); mongomock does not across threads, so concurrent
    tests could draw one counter value twice. Restore the server's guarantee here."""
    import threading

    import mongomock

    lock = threading.Lock()
    plain = mongomock.collection.Collection.find_one_and_update

    def find_one_and_update(self: Any, *args: Any, **kwargs: Any) -> Any:
        with lock:
            return plain(self, *args, **kwargs)

    mongomock.collection.Collection.find_one_and_update = find_one_and_update  # type: ignore[method-assign]


_atomic_mongomock()

def make_store(backend: str, tmp_path: Path) -> Any:
    if backend == "sqlite":
        return open_store(None, tmp_path / "data")
    return open_store(mongo_url(), tmp_path)


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    st = make_store(request.param, tmp_path)
    yield st
    if request.param == "mongo" and os.environ.get("TELEIMG_TEST_MONGODB_URI"):
        st.client.drop_database(st.res.database.name)
    st.close()


@pytest.fixture
def fhir(store: Any) -> FhirServer:
    return FhirServer(store)


class Fhir:
    """A thin test client speaking FHIR JSON to the in-process ASGI app."""

    def __init__(self, client: TestClient) -> None:
        self.http = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self.http, name)

    def create(self, resource: dict[str, Any], **headers: str) -> dict[str, Any]:
        r = self.http.post(f"/fhir/{resource['resourceType']}", json=resource, headers=headers)
        assert r.status_code in (200, 201), r.text
        return r.json()

    def search(self, query: str) -> dict[str, Any]:
        r = self.http.get(f"/fhir/{query}")
        assert r.status_code == 200, r.text
        return r.json()

    def ids(self, query: str) -> list[str]:
        return [e["resource"]["id"] for e in self.search(query).get("entry", [])
                if e["search"]["mode"] == "match"]


def secured_core(store: Any, data_dir: Path) -> FhirServer:
    """The core as served: token validation (dev issuer in ``data_dir``) and audit trail."""
    settings = Settings(data_dir=data_dir)
    return FhirServer(store, settings.limits,
                      security=SecurityPolicy(TokenValidator(auth_settings(settings))),
                      audit=AuditSink(store, interval=0.05))


def mint(data_dir: Path, roles: list[str], scopes: list[str] | None = None,
         **claims: Any) -> str:
    """A development-issuer token (``teleimagerie token``) for tests."""
    sub = claims.pop("sub", f"test:{roles[0] if roles else 'none'}")
    return DevIssuer(data_dir).mint(sub=sub, roles=roles,
                                    scopes=scopes or ["system/*.cruds"], **claims)


def serve(core: FhirServer, data_dir: Path, token: str | None) -> TestClient:
    # Served as in production: the read fast path in front of the FastAPI app.
    app = ReadFastPath(create_app(Settings(data_dir=data_dir), server=core), core, None)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return TestClient(app, headers=headers)


@pytest.fixture
def secured(store: Any, tmp_path: Path) -> Iterator[FhirServer]:
    core = secured_core(store, tmp_path)
    yield core
    assert core.audit is not None
    core.audit.close()


@pytest.fixture
def client(secured: FhirServer, tmp_path: Path) -> Fhir:
    """A RIS-like system client with full rights (role ``ris``, ``system/*.cruds``)."""
    return Fhir(serve(secured, tmp_path, mint(tmp_path, ["ris"])))


@pytest.fixture
def trusted_client(fhir: FhirServer, tmp_path: Path) -> Fhir:
    """The HTTP app over a core without security or audit (storage-fidelity tests only)."""
    return Fhir(serve(fhir, tmp_path, None))
