"""Liveness and readiness (issue 29, item 1): ``GET /health/live``, ``GET /health/ready``.

Both are unauthenticated and say nothing about anyone: component names, states, and
for a failing one a short reason (an exception type, a free-space figure). Readiness is
200 when every component is ``up`` (or ``disabled``/``not-managed``), 503 otherwise:

* ``store`` — the store answers and is migrated: for the embedded SQLite store the file
  is opened afresh, read-only, and its ``user_version`` compared with the newest
  migration (a removed or corrupt file is seen even while workers hold it open);
* ``audit`` — the audit chain head is readable (``disabled`` under TELEIMG_AUDIT=off);
* ``mllp``, ``dicom``, ``delivery`` — the listener processes ``serve`` started
  (``TELEIMG_SERVE_LISTENERS``, set by ``serve`` for its workers): each writes a
  heartbeat file, ``<data dir>/run/<name>.heartbeat`` (its pid and the time), every
  second; a listener is ``up`` while its file is younger than
  ``TELEIMG_HEARTBEAT_MAX_AGE`` seconds (default 10) and its pid alive. Files, not port
  probes: every uvicorn worker (``--workers`` > 1) reads the same answer, a hung
  listener (its loop stuck, its port still accepting in the kernel) is seen, and nobody
  opens MLLP or DICOM connections that the peers' logs would show;
* ``disk`` — free space of the data directory at or above ``TELEIMG_MIN_FREE_DISK_MB``
  (default 500).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fhir_server.logs import redact

if TYPE_CHECKING:
    from fastapi import FastAPI

    from fhir_server.config import Settings
    from fhir_server.store.base import Store

LISTENERS_ENV = "TELEIMG_SERVE_LISTENERS"
# the listener module's package -> component name
COMPONENTS = {"hl7v2": "mllp", "dicom": "dicom", "delivery": "delivery"}
OK_STATES = ("up", "disabled", "not-managed")


def _data_dir() -> Path:
    return Path(os.environ.get("TELEIMG_DATA_DIR", "data"))


def heartbeat_path(name: str, data_dir: Path | None = None) -> Path:
    return (data_dir or _data_dir()) / "run" / f"{name}.heartbeat"


def beat(name: str, data_dir: Path | None = None) -> None:
    """Say that listener ``name`` is running (atomically replaced; errors ignored: a full
    disk shows in readiness anyway)."""
    path = heartbeat_path(name, data_dir)
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "at": time.time()}))
        os.replace(tmp, path)


def _reason(exc: BaseException) -> str:
    return redact(f"{type(exc).__name__}: {exc}")[:200]


def _latest_migration() -> int:
    from fhir_server.store.sqlite import MIGRATIONS

    return max((int(p.name.split("_", 1)[0]) for p in MIGRATIONS.glob("*.sql")), default=0)


def check_store(settings: Settings, store: Store | None) -> dict[str, Any]:
    url = settings.store_url
    if url is None or url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):]) if url else settings.data_dir / "teleimagerie.db"
        if not path.is_file():
            return {"state": "down", "reason": "store file missing"}
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
            try:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
                version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            finally:
                conn.close()
        except sqlite3.Error as exc:
            return {"state": "down", "reason": _reason(exc)}
        latest = _latest_migration()
        if version < latest:
            return {"state": "down", "reason": f"schema version {version}, expected {latest}"}
        return {"state": "up"}
    if store is None:
        return {"state": "down", "reason": "no store"}
    try:
        store.journal_last()
    except Exception as exc:  # a MongoDB that does not answer
        return {"state": "down", "reason": _reason(exc)}
    return {"state": "up"}


def check_audit(settings: Settings, store: Store | None) -> dict[str, Any]:
    if not settings.audit:
        return {"state": "disabled"}
    if store is None:
        return {"state": "down", "reason": "no store"}
    from fhir_server.audit.chain import head

    try:
        head(store)
    except Exception as exc:
        return {"state": "down", "reason": _reason(exc)}
    return {"state": "up"}


def check_listener(name: str, data_dir: Path, max_age: float) -> dict[str, Any]:
    path = heartbeat_path(name, data_dir)
    try:
        beat_ = json.loads(path.read_text())
        pid, at = int(beat_["pid"]), float(beat_["at"])
    except (OSError, ValueError, KeyError, TypeError):
        return {"state": "down", "reason": "no heartbeat"}
    age = time.time() - at
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return {"state": "down", "reason": "process gone"}
    except PermissionError:
        pass
    if age > max_age:
        return {"state": "down", "reason": f"no heartbeat for {age:.0f} s"}
    return {"state": "up"}


def check_disk(data_dir: Path, min_mb: int) -> dict[str, Any]:
    try:
        free = shutil.disk_usage(data_dir).free // (1024 * 1024)
    except OSError as exc:
        return {"state": "down", "reason": _reason(exc)}
    state = "up" if free >= min_mb else "down"
    return {"state": state, "free_mb": free, "min_mb": min_mb}


def check_env() -> None:
    """``serve`` refuses a bad threshold before anything starts (one line, exit 2)."""
    for name in ("TELEIMG_MIN_FREE_DISK_MB", "TELEIMG_HEARTBEAT_MAX_AGE"):
        value = os.environ.get(name) or "1"
        if not value.isdigit() or (name == "TELEIMG_HEARTBEAT_MAX_AGE" and int(value) < 1):
            raise SystemExit(f"{name} must be a positive integer, got {value!r}")


def managed_listeners() -> list[str]:
    """The listener components ``serve`` started (none when run otherwise)."""
    value = os.environ.get(LISTENERS_ENV, "")
    return [COMPONENTS.get(v, v) for v in value.split(",") if v]


def readiness(settings: Settings, store: Store | None) -> tuple[bool, dict[str, Any]]:
    """(ready, body) — the body names every component and its state."""
    max_age = float(os.environ.get("TELEIMG_HEARTBEAT_MAX_AGE") or 10)
    min_mb = int(os.environ.get("TELEIMG_MIN_FREE_DISK_MB") or 500)
    components: dict[str, dict[str, Any]] = {
        "store": check_store(settings, store),
        "audit": check_audit(settings, store),
    }
    for name in managed_listeners():
        components[name] = check_listener(name, settings.data_dir, max_age)
    components["disk"] = check_disk(settings.data_dir, min_mb)
    ready = all(c["state"] in OK_STATES for c in components.values())
    return ready, {"status": "ready" if ready else "not-ready", "components": components}


def mount(app: FastAPI, settings: Settings, store: Store | None) -> None:
    """Add ``/health/live`` and ``/health/ready`` to the HTTP app (outside ``/fhir``:
    no token, no audit)."""
    from fastapi.responses import Response
    from starlette.concurrency import run_in_threadpool

    async def live() -> Response:
        return Response(content=b'{"status":"live"}', media_type="application/json",
                        headers={"Cache-Control": "no-store"})

    async def ready() -> Response:
        ok, body = await run_in_threadpool(readiness, settings, store)
        return Response(content=json.dumps(body).encode(), status_code=200 if ok else 503,
                        media_type="application/json", headers={"Cache-Control": "no-store"})

    app.add_api_route("/health/live", live, methods=["GET"], include_in_schema=False)
    app.add_api_route("/health/ready", ready, methods=["GET"], include_in_schema=False)
