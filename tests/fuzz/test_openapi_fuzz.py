"""Schemathesis over the served OpenAPI: bounded random requests never get a 5xx (issue 3).

The OpenAPI document has a path per type, interaction and operation (issue 29): some
300 operations, too many to fuzz each on every run, so the system paths, STOW-RS and
the paths of three types (Patient, ServiceRequest and its workflow operations, ValueSet
and its terminology ones) are; the grammar of every FHIR route (types, ids, versions,
operations, Bundles, the MHD reads) is fuzzed by ``test_route_fuzz.py``, tokens by
``test_jwt_fuzz.py`` (issue 27).
A fixed seed and no example database keep every run the same.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, seed, settings
from schemathesis.checks import not_a_server_error

from fhir_server.config import Settings
from fhir_server.http.app import ReadFastPath
from teleimagerie.wiring import create_app
from tests.conftest import make_store, mint, secured_core

# one directory per process: both xdist workers import this module at collection, and a
# shared path let one worker delete the other's store and dev-issuer keys (flaky 500s)
DATA = Path(tempfile.mkdtemp(prefix="teleimg-fuzz-"))


class _NoLifespan:
    """Schemathesis runs each call in its own client; keep the store open across them."""

    def __init__(self, app: ReadFastPath) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            message = await receive()
            while message["type"] != "lifespan.shutdown":
                await send({"type": message["type"] + ".complete"})
                message = await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        await self.app(scope, receive, send)


def _app() -> ReadFastPath:
    import shutil

    shutil.rmtree(DATA, ignore_errors=True)
    store = make_store("sqlite", DATA)
    core = secured_core(store, DATA / "data")
    return ReadFastPath(create_app(Settings(data_dir=DATA / "data"), server=core), core, None)


APP = _app()
TOKEN = mint(DATA / "data", ["ris"])
FUZZED = r"^/(dicomweb/|fhir$|fhir/(metadata|_search|_history|\$|Patient|ServiceRequest|ValueSet))"
schema = schemathesis.openapi.from_asgi("/openapi.json", _NoLifespan(APP)).include(
    path_regex=FUZZED)


@schema.parametrize()
@seed(20270003)
@settings(max_examples=25, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: schemathesis.Case) -> None:
    for headers in ({"Authorization": f"Bearer {TOKEN}"}, {}):
        response = case.call(headers=headers)
        case.validate_response(response, checks=[not_a_server_error])


@pytest.fixture(scope="module", autouse=True)
def _cleanup() -> object:
    yield None
    import shutil

    shutil.rmtree(DATA, ignore_errors=True)
