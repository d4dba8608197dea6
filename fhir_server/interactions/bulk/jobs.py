"""Export jobs: one directory per job under the export directory, holding the job record
(``job.json``) and the NDJSON files it produced (ADR 0025).

The record lives with its files, not in the store: the files are the job's output and
expire with it (``TELEIMG_EXPORT_RETENTION``), every worker process of ``serve`` reads the
same directory, and a cancel is one directory removal. A record is replaced atomically
(write to a temporary file, ``os.replace``); a state change is flushed to disk first.
A job whose worker stopped beating (its process ended: a restart) is failed cleanly at
the next poll — the client kicks it off again.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

ACCEPTED, RUNNING, COMPLETED, FAILED = "accepted", "in-progress", "completed", "failed"
RECORD = "job.json"
DEFAULT_RETENTION = 24 * 3600.0  # seconds the files and the job are kept after the end
# a worker writes its record after every page; one silent for this long has ended
STALE_SECONDS = 120.0
_JOB_ID = re.compile(r"[0-9a-f]{32}")
_FILE = re.compile(r"[A-Za-z]+-[0-9]+\.ndjson|errors\.ndjson")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
_UNIT = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_retention(text: str | None) -> float:
    """``TELEIMG_EXPORT_RETENTION``: seconds, or a number with ``s``/``m``/``h``/``d``
    (``90m``, ``24h``, ``2d``); the IG leaves the duration to the server."""
    if not text:
        return DEFAULT_RETENTION
    found = _DURATION.fullmatch(text.strip().lower())
    if found is None or float(found[1]) <= 0:
        raise ValueError(f"TELEIMG_EXPORT_RETENTION: {text!r} is not a duration "
                         "(seconds, or a number with s, m, h or d)")
    return float(found[1]) * _UNIT[found[2]]


@dataclass(frozen=True)
class ExportSettings:
    """Where the files go and how long they stay (R-xxx: issue 31)."""

    directory: Path
    retention: float = DEFAULT_RETENTION

    @classmethod
    def from_env(cls) -> ExportSettings:
        """``TELEIMG_EXPORT_DIR``, else ``exports`` in ``TELEIMG_DATA_DIR`` (the data
        directory, like the store); ``TELEIMG_EXPORT_RETENTION`` (default 24 h)."""
        env = os.environ
        directory = env.get("TELEIMG_EXPORT_DIR") or \
            str(Path(env.get("TELEIMG_DATA_DIR", "data")) / "exports")
        return cls(Path(directory), parse_retention(env.get("TELEIMG_EXPORT_RETENTION")))


class Gone(Exception):
    """The job's directory is gone: cancelled or expired while it ran."""


class Jobs:
    """The job records of one export directory."""

    def __init__(self, settings: ExportSettings) -> None:
        self.settings = settings
        self.root = settings.directory

    def new_id(self) -> str:
        return secrets.token_hex(16)

    def path(self, job_id: str) -> Path:
        if not _JOB_ID.fullmatch(job_id):
            raise KeyError(job_id)
        return self.root / job_id

    def create(self, record: dict[str, Any]) -> None:
        folder = self.path(record["id"])
        folder.mkdir(parents=True, mode=0o700)
        self.save(record, flush=True)

    def load(self, job_id: str) -> dict[str, Any] | None:
        """The record, or None when there is none (unknown, cancelled, expired)."""
        try:
            data: dict[str, Any] = orjson.loads((self.path(job_id) / RECORD).read_bytes())
        except (KeyError, FileNotFoundError, NotADirectoryError, orjson.JSONDecodeError):
            return None
        if self.expired(data):
            self.remove(job_id)
            return None
        return data

    def save(self, record: dict[str, Any], flush: bool = False) -> None:
        """Replace the record atomically; :class:`Gone` when its directory was removed
        (a cancel) — never recreated."""
        folder = self.path(record["id"])
        temporary = folder / f".{RECORD}.{os.getpid()}.tmp"
        try:
            with temporary.open("wb") as out:
                out.write(orjson.dumps(record))
                if flush:
                    out.flush()
                    os.fsync(out.fileno())
            os.replace(temporary, folder / RECORD)
        except FileNotFoundError:
            raise Gone(record["id"]) from None

    def remove(self, job_id: str) -> bool:
        """Delete the job and its files (a cancel, an expiry); False when none."""
        try:
            folder = self.path(job_id)
        except KeyError:
            return False
        # moved aside first, atomically: a worker writing its record meanwhile finds its
        # directory gone (:class:`Gone`) instead of recreating a file in it
        trash = self.root / f".removed-{job_id}-{secrets.token_hex(4)}"
        try:
            os.rename(folder, trash)
        except (FileNotFoundError, NotADirectoryError):
            return False
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def file(self, job_id: str, name: str) -> Path | None:
        """A produced file of a live job, never a path outside its directory."""
        if not _FILE.fullmatch(name) or self.load(job_id) is None:
            return None
        path = self.path(job_id) / name
        return path if path.is_file() else None

    def expired(self, record: dict[str, Any], now: float | None = None) -> bool:
        """Past its retention: counted from its end (a finished job), else from its
        kick-off (a job that never finished is kept no longer either)."""
        since = record.get("ended") or record.get("created") or 0.0
        return (now or time.time()) > float(since) + self.settings.retention

    def stale(self, record: dict[str, Any], now: float | None = None) -> bool:
        return record.get("status") in (ACCEPTED, RUNNING) and \
            (now or time.time()) - float(record.get("beat") or 0) > STALE_SECONDS

    def sweep(self) -> int:
        """Remove the expired jobs (at every kick-off and poll); how many."""
        removed = 0
        with contextlib.suppress(FileNotFoundError):
            for folder in self.root.iterdir():
                if folder.name.startswith(".removed-"):  # a removal cut short
                    shutil.rmtree(folder, ignore_errors=True)
                    continue
                if not _JOB_ID.fullmatch(folder.name):
                    continue
                try:
                    data = orjson.loads((folder / RECORD).read_bytes())
                except (FileNotFoundError, NotADirectoryError, orjson.JSONDecodeError):
                    # a job being created has its directory first: only an old one goes
                    if time.time() - folder.stat().st_mtime > self.settings.retention:
                        shutil.rmtree(folder, ignore_errors=True)
                    continue
                if self.expired(data):
                    shutil.rmtree(folder, ignore_errors=True)
                    removed += 1
        return removed
