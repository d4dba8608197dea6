"""Start the real server (``teleimagerie serve``) for end-to-end tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(data: Path, http_port: int, **extra: str) -> dict[str, str]:
    """The server's environment; the MLLP listener gets a free port unless given one."""
    return {**os.environ, "TELEIMG_DATA_DIR": str(data), "TELEIMG_HTTP_PORT": str(http_port),
            "TELEIMG_LOG_LEVEL": "warning", "TELEIMG_MLLP_PORT": str(free_port()),
            # short-lived servers: no 20-30 s schematron compilation each unless they report
            "TELEIMG_SCHEMATRON_WARM": "off", "TELEIMG_SCHEMATRON_ISOLATED": "on",
            # servers run side by side (xdist): each its own metrics port
            "TELEIMG_METRICS_PORT": str(free_port()), **extra}


def start(env: dict[str, str], workers: int = 1,
          ready: Callable[[], bool] | None = None, log: Path | None = None,
          access_log: bool = False) -> subprocess.Popen[bytes]:
    """Run ``teleimagerie serve`` and wait until /metadata answers (and ``ready()``);
    with ``log``, everything every process of it prints goes to that file."""
    out = log.open("ab") if log is not None else None
    proc = subprocess.Popen([sys.executable, "-m", "teleimagerie.cli", "serve", "--workers",
                             str(workers), *([] if access_log else ["--no-access-log"])],
                            env=env, cwd=ROOT, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{env['TELEIMG_HTTP_PORT']}/fhir/metadata"
    # generous: under a loaded CI (2 cores, xdist, browsers) a start took over 30 s; a
    # server that dies is seen at once through proc.poll()
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200 and (ready is None or ready()):
                return proc
        except (httpx.HTTPError, OSError):
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("server did not start")
        time.sleep(0.2)


def eventually(condition: Callable[[], bool], seconds: float = 30) -> bool:
    """Whether ``condition()`` holds within ``seconds`` (polled): for what the running
    server does after it answered (a delivery, a notification)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(timeout=15)


@contextmanager
def in_thread(app: Any) -> Iterator[int]:
    """``app`` served by uvicorn on a real socket in a thread of this process (so that
    an in-process core — mongomock too — is behind it); yields its port."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)
