"""Request bodies are bounded while they arrive, and cost a bounded multiple of their size
(issue 27 item 8; R-SEC-6).

Over a real socket to a one-worker server in a subprocess (its memory is its own):
a ``Content-Length`` over the limit is answered 413 before a byte of the body is sent;
a chunked body over the limit is answered 413 as soon as it is over, and the connection
closed; a 15 MiB body under the limit raises the server's peak RSS by less than five
times its size, and four of them in a row do not leave it growing.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.e2e.harness import free_port

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 16 * 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    data = tmp_path_factory.mktemp("body")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.reliability.body_server",
                             str(data), str(port), str(LIMIT)], cwd=ROOT)
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, "the server died"
        assert time.monotonic() < deadline, "the server did not start"
        try:
            httpx.get(f"http://127.0.0.1:{port}/fhir/metadata", timeout=5)
            break
        except httpx.TransportError:
            time.sleep(0.1)
    try:
        yield port, proc.pid
    finally:
        proc.terminate()
        proc.wait(20)


def _response(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (or 10 s pass)."""
    sock.settimeout(10)
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return out


def test_content_length_over_the_limit_is_refused_before_the_body_is_sent(
        server: tuple[int, int]) -> None:
    port, _ = server
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /fhir/Binary HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/fhir+json\r\n"
                     b"Expect: 100-continue\r\n"
                     b"Content-Length: %d\r\n\r\n" % (256 * 1024 * 1024))
        answer = _response(sock)  # no body sent at all
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"100 Continue" not in head  # never told to send it
    assert b"connection: close" in head.lower()
    issue = orjson.loads(body)["issue"][0]
    assert issue["code"] == "too-long" and "TELEIMG_MAX_BODY_BYTES" in issue["diagnostics"]


def test_a_chunked_body_over_the_limit_is_refused_while_it_arrives(
        server: tuple[int, int]) -> None:
    port, _ = server
    chunk = b"x" * (1024 * 1024)
    sent = 0
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /fhir/Binary HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/fhir+json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        try:
            while sent < 4 * LIMIT:  # a client that would send 64 MiB
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed by the server: what is expected
        answer = _response(sock)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert sent < 4 * LIMIT  # the server did not read it all
    assert b"connection: close" in answer.lower().partition(b"\r\n\r\n")[0]


def _status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            out[key] = int(value.split()[0]) * 1024
    return out


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux /proc only")
def test_a_15_mib_body_costs_less_than_five_times_its_size(server: tuple[int, int]) -> None:
    port, pid = server
    size = 15 * 1024 * 1024
    data = base64.b64encode(os.urandom(size * 3 // 4 - 100)).decode()
    body = orjson.dumps({"resourceType": "Binary", "contentType": "application/pdf",
                         "data": data})
    assert size - 1024 < len(body) <= size
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
        small = orjson.dumps({"resourceType": "Binary", "contentType": "text/plain",
                              "data": "AAAA"})
        for _ in range(3):  # warm up: imports, caches, connections
            assert http.post("/fhir/Binary", content=small, headers={
                "Content-Type": "application/fhir+json"}).status_code == 201
        rss = []
        for _ in range(4):
            before = _status(pid)["VmRSS"]
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset the peak (VmHWM)
            r = http.post("/fhir/Binary", content=body,
                          headers={"Content-Type": "application/fhir+json"})
            assert r.status_code == 201, r.text[:300]
            peak = _status(pid)["VmHWM"]
            cost = peak - before
            print(f"15 MiB body: RSS {before / 2**20:.0f} -> peak {peak / 2**20:.0f} MiB, "
                  f"cost {cost / len(body):.2f}x")
            assert cost < 5 * len(body)
            rss.append(_status(pid)["VmRSS"])
    # given back: the fourth body does not leave the process larger than the second
    assert rss[-1] < rss[1] + len(body)
