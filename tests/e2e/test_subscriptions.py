"""End to end (issue 31): ``teleimagerie serve`` notifies a real rest-hook receiver —
the handshake activates the subscription, then a new Patient matching its criteria is
POSTed as an id-only notification Bundle numbered 1, with the subscription's header."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhir_server.security.devissuer import DevIssuer
from tests.e2e.harness import eventually, free_port, server_env, start, stop


class Receiver:
    """An EHR's endpoint: records every POST, answers 200."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, Any], dict[str, str]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers["Content-Length"]))
                outer.received.append((json.loads(data), dict(self.headers)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[str, Path, Receiver]]:
    receiver = Receiver()
    port = free_port()
    # the receiver is on loopback: allowed by name only
    env = server_env(tmp_path / "data", port, TELEIMG_SUBSCRIPTION_HOSTS="127.0.0.1")
    proc = start(env)
    try:
        yield f"http://127.0.0.1:{port}", tmp_path / "data", receiver
    finally:
        stop(proc)
        receiver.close()


def test_rest_hook_notified_by_the_running_server(
        running: tuple[str, Path, Receiver]) -> None:
    base, data, receiver = running
    token = DevIssuer(data).mint(sub="e2e:ris", roles=["ris"], scopes=["system/*.cruds"])
    http = httpx.Client(base_url=base, timeout=30,
                        headers={"Authorization": f"Bearer {token}"})
    r = http.post("/fhir/Subscription", json={
        "resourceType": "Subscription", "status": "requested", "reason": "e2e",
        "criteria": "Patient?family=E2E",
        "channel": {"type": "rest-hook",
                    "endpoint": f"http://127.0.0.1:{receiver.port}/hook",
                    "header": ["X-Ehr-Key: k1"]}})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    assert eventually(lambda: http.get(f"/fhir/Subscription/{sid}").json()["status"] == "active")
    r = http.post("/fhir/Patient", json={"resourceType": "Patient",
                                         "name": [{"family": "E2E"}]})
    assert r.status_code == 201, r.text
    patient = r.json()["id"]
    assert eventually(lambda: len(receiver.received) >= 2)
    handshake, (bundle, headers) = receiver.received[0], receiver.received[1]
    status = {p["name"]: p for p in bundle["entry"][0]["resource"]["parameter"]}
    assert status["type"]["valueCode"] == "event-notification"
    assert status["events-since-subscription-start"]["valueString"] == "1"
    assert bundle["entry"][1]["fullUrl"].endswith(f"/Patient/{patient}")
    assert "resource" not in bundle["entry"][1]  # id-only
    assert headers["X-Ehr-Key"] == "k1"
    hs = {p["name"]: p for p in handshake[0]["entry"][0]["resource"]["parameter"]}
    assert hs["type"]["valueCode"] == "handshake"
