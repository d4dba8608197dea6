"""End to end: Bulk Data ``$export`` (issue 31) against the real server (``teleimagerie
serve``, 2 worker processes: the kick-off, the polls and the downloads may each reach
another process), driven by a client that follows the IG with httpx — no Bulk Data
client library on PyPI installs cleanly here (README, "Bulk Data export")."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhir_server.security.devissuer import DevIssuer
from tests.e2e.harness import free_port, server_env, start, stop

pytestmark = pytest.mark.e2e


class BulkClient:
    """The client side of export.html: kick-off, poll honouring Retry-After, download."""

    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.http = httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def kickoff(self, path: str = "$export", **params: str) -> str:
        r = self.http.get(f"{self.base}/{path}", params=params, headers={
            "Accept": "application/fhir+json", "Prefer": "respond-async"})
        assert r.status_code == 202, r.text
        return r.headers["Content-Location"]

    def wait(self, status_url: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.http.get(status_url)
            if r.status_code == 200:
                manifest: dict[str, Any] = r.json()
                return manifest
            assert r.status_code == 202, r.text
            assert "X-Progress" in r.headers
            time.sleep(min(float(r.headers.get("Retry-After", "1")), 0.2))
        raise AssertionError("the export did not complete")

    def download(self, manifest: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for item in manifest["output"]:
            headers = {"Accept": "application/fhir+ndjson"}
            with self.http.stream("GET", item["url"], headers=headers) as r:
                assert r.status_code == 200
                assert r.headers["content-type"].startswith("application/fhir+ndjson")
                lines = [json.loads(line) for line in r.iter_lines() if line]
            assert len(lines) == item["count"]
            out.setdefault(item["type"], []).extend(lines)
        return out


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    data = tmp_path_factory.mktemp("data")
    port = free_port()
    proc = start(server_env(data, port), workers=2)
    try:
        yield f"http://127.0.0.1:{port}/fhir", data
    finally:
        stop(proc)


def test_bulk_export_over_http(server: tuple[str, Path]) -> None:
    base, data = server
    token = DevIssuer(data).mint(sub="e2e-export", roles=["ris"], scopes=["system/*.cruds"])
    client = BulkClient(base, token)
    patients = []
    for n in range(3):
        r = client.http.post(f"{base}/Patient", json={"resourceType": "Patient",
                                                      "name": [{"family": f"Bulk{n}"}]})
        assert r.status_code == 201, r.text
        patients.append(r.json()["id"])
    manifest = client.wait(client.kickoff(_type="Patient"))
    assert manifest["requiresAccessToken"] is True
    assert {p["id"] for p in client.download(manifest)["Patient"]} >= set(patients)
    # a file needs the token
    assert httpx.get(manifest["output"][0]["url"]).status_code == 401
    # incremental: only what changed after the last transactionTime
    r = client.http.post(f"{base}/Patient", json={"resourceType": "Patient",
                                                  "name": [{"family": "Later"}]})
    later = r.json()["id"]
    again = client.wait(client.kickoff(_type="Patient", _since=manifest["transactionTime"]))
    assert [p["id"] for p in client.download(again)["Patient"]] == [later]
    # cancel
    status_url = client.kickoff()
    assert client.http.delete(status_url).status_code == 202
    assert client.http.get(status_url).status_code == 404
