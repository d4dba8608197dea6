"""End to end: the API documentation works offline (issue 29 item 4). ``/docs`` from a
running ``teleimagerie serve`` refers only to files the server itself serves (Swagger UI
from the installed ``swagger-ui-bundle``), each answering 200, and the document it loads
is the server's ``/openapi.json``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest

from tests.e2e.harness import free_port, server_env, start, stop

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data: Path = tmp_path_factory.mktemp("docs")
    port = free_port()
    proc = start(server_env(data, port, TELEIMG_DELIVERY="off",
                            TELEIMG_METRICS_PORT=str(free_port())))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def test_docs_use_only_local_assets_and_they_are_served(base: str) -> None:
    page = httpx.get(f"{base}/docs", timeout=10)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    refs = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert len(refs) >= 3  # stylesheet, bundle, preset, init script
    for ref in refs:
        assert not re.match(r"^(https?:)?//", ref), f"{ref}: not served by the server"
        asset = httpx.get(urljoin(f"{base}/docs", ref), timeout=10)
        assert asset.status_code == 200, ref
        assert asset.content, ref
    bundle = httpx.get(f"{base}/docs/assets/swagger-ui-bundle.js", timeout=10)
    assert "SwaggerUIBundle" in bundle.text
    init = httpx.get(f"{base}/docs/assets/docs-init.js", timeout=10).text
    assert '"/openapi.json"' in init
    # nothing else from the package folder by a path trick
    assert httpx.get(f"{base}/docs/assets/..%2F__init__.py", timeout=10).status_code == 404


def test_the_document_docs_load_is_the_real_one(base: str) -> None:
    doc = httpx.get(f"{base}/openapi.json", timeout=30)
    assert doc.status_code == 200
    paths = doc.json()["paths"]
    assert "/fhir/ServiceRequest/{id}/$accept" in paths and "/fhir/$indicators" in paths
