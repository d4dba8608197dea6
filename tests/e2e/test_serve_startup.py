"""End to end: ``teleimagerie serve`` never runs half started, and ``teleimagerie token``
signs with the server's development issuer (issue 24; R-INT-2).

A port that cannot be bound (HTTP, MLLP, DICOM) stops ``serve`` within seconds, exit
status non-zero, with one line on stderr saying which; a listener that dies later stops
the server too.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import ROOT, free_port, server_env, start, stop

pytestmark = pytest.mark.e2e


@pytest.fixture
def taken() -> Iterator[int]:
    """A port something else listens on."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield int(sock.getsockname()[1])


def _serve_fails(env: dict[str, str]) -> tuple[int, list[str]]:
    """Run ``serve`` expecting it to stop by itself: (exit status, stderr lines)."""
    began = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "teleimagerie.cli", "serve",
                           "--no-access-log"], env=env, cwd=ROOT, capture_output=True,
                          timeout=20)
    assert time.monotonic() - began < 15
    lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
    assert "Traceback" not in proc.stderr.decode("utf-8", "replace"), proc.stderr.decode()
    return proc.returncode, lines


def test_mllp_port_taken_stops_serve_with_one_line(tmp_path: Path, taken: int) -> None:
    http = free_port()
    status, lines = _serve_fails(server_env(tmp_path, http, TELEIMG_MLLP_PORT=str(taken),
                                            TELEIMG_DELIVERY="off"))
    assert status != 0
    assert lines[-1] == f"cannot listen on MLLP 127.0.0.1:{taken}: address already in use"
    assert sum("cannot listen" in line for line in lines) == 1
    with pytest.raises(httpx.HTTPError):  # nothing serves HTTP
        httpx.get(f"http://127.0.0.1:{http}/fhir/metadata", timeout=1)


def test_dicom_port_taken_stops_serve_with_one_line(tmp_path: Path, taken: int) -> None:
    status, lines = _serve_fails(server_env(tmp_path, free_port(),
                                            TELEIMG_DICOM_PORT=str(taken)))
    assert status != 0
    assert lines[-1] == f"cannot listen on DICOM 127.0.0.1:{taken}: address already in use"
    assert sum("cannot listen" in line for line in lines) == 1


def test_http_port_taken_stops_serve_with_one_line(tmp_path: Path, taken: int) -> None:
    status, lines = _serve_fails(server_env(tmp_path, taken))
    assert status != 0
    assert lines == [f"cannot listen on HTTP 127.0.0.1:{taken}: address already in use"]


@pytest.mark.parametrize(("name", "value", "says"), [
    ("TELEIMG_STORE_URL", "sqlite:///{tmp}/missing/dir/x.db", "does not exist"),
    ("TELEIMG_LOG_LEVEL", "verbose", "TELEIMG_LOG_LEVEL must be one of"),
    ("TELEIMG_HTTP_PORT", "70000", "TELEIMG_HTTP_PORT must be a TCP port"),
])
def test_a_bad_setting_stops_serve_with_one_line(tmp_path: Path, name: str, value: str,
                                                 says: str) -> None:
    """A wrong value is named in one line (no traceback, no child left running)."""
    env = server_env(tmp_path, free_port(), TELEIMG_DELIVERY="off")
    env[name] = value.format(tmp=tmp_path)
    status, lines = _serve_fails(env)
    assert status != 0
    assert len(lines) == 1 and says in lines[0], lines
    assert not any("Traceback" in line for line in lines)


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of a process's children (Linux /proc)."""
    out = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
        out.append((int(child), cmdline.decode("utf-8", "replace")))
    return out


def test_listener_that_dies_stops_the_server(tmp_path: Path) -> None:
    """No HTTP without the MLLP listener: its death stops ``serve``, status non-zero."""
    mllp = free_port()
    proc = start(server_env(tmp_path, free_port(), TELEIMG_MLLP_PORT=str(mllp),
                            TELEIMG_DELIVERY="off"))
    try:
        [listener] = [pid for pid, cmd in _children(proc.pid) if "adapters.hl7v2.service"
                      in cmd]
        os.kill(listener, signal.SIGKILL)
        assert proc.wait(timeout=15) != 0
    finally:
        if proc.poll() is None:
            stop(proc)


def _token(data: Path, *extra: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "TELEIMG_DATA_DIR": str(data)}
    env.pop("TELEIMG_ENV", None)
    return subprocess.run([sys.executable, "-m", "teleimagerie.cli", "token", "--role", "ris",
                           *extra], env=env, cwd=ROOT, capture_output=True, timeout=20)


def test_token_uses_the_servers_issuer_and_never_makes_a_new_one(tmp_path: Path) -> None:
    """Without the server's data directory: exit 2 and why, no key pair created; with
    it: a token the running server accepts, the issuer and directory named on stderr."""
    elsewhere = tmp_path / "elsewhere"
    done = _token(elsewhere)
    assert done.returncode == 2 and done.stdout == b""
    err = done.stderr.decode()
    assert f"no development issuer in {elsewhere.resolve()}" in err
    assert "teleimagerie serve" in err and "TELEIMG_DATA_DIR" in err
    assert not (elsewhere / "dev-issuer").exists()

    data = tmp_path / "data"
    port = free_port()
    proc = start(server_env(data, port, TELEIMG_MLLP_PORT="0", TELEIMG_DELIVERY="off"))
    try:
        done = _token(data)
        assert done.returncode == 0, done.stderr
        token = done.stdout.decode().strip()
        assert token.count(".") == 2 and "\n" not in token
        assert str(data.resolve()) in done.stderr.decode()
        r = httpx.get(f"http://127.0.0.1:{port}/fhir/Patient",
                      headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert r.status_code == 200, r.text
    finally:
        stop(proc)

    created = _token(elsewhere, "--init")  # asked for: a new issuer
    assert created.returncode == 0 and (elsewhere / "dev-issuer" / "jwks.json").exists()
