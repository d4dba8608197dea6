"""Start-up on a new data directory (issue 27 item 13; R-INT-2): the processes of
``teleimagerie serve`` (HTTP workers, MLLP listener, delivery sender, DICOM SCP) open
the same new database together; its migrations run once, under a lock, and every start
comes up healthy. Before the fix a process re-running the idempotent migration 0005 set
the version back after another had run 0006, which then failed
(``no such view: main.audit_history``).
"""

from __future__ import annotations

import multiprocessing
import socket
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo.errors import OperationFailure
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from adapters.hl7v2.mllp import FrameDecoder, frame
from fhir_server.security.devissuer import DevIssuer
from fhir_server.store import mongo
from fhir_server.store.sqlite import MIGRATIONS, SqliteStore
from tests.e2e.harness import free_port, server_env, start, stop

LATEST = max(int(p.name.split("_", 1)[0]) for p in MIGRATIONS.glob("*.sql"))
OPENERS = 6  # processes opening one new file at once
ROUNDS = 5  # fresh files; the race hit 4 batches in 10 before the fix


def _open(path: str, barrier: Any, results: Any) -> None:
    barrier.wait()  # every process opens the new file at the same moment
    try:
        SqliteStore(Path(path)).close()
        results.put("ok")
    except Exception as exc:  # reported to the test, which names it
        results.put(f"{type(exc).__name__}: {exc}")


def test_migration_runs_once_when_processes_open_a_new_file_together(
        tmp_path: Path) -> None:
    """R-INT-2: N processes open one fresh SQLite file at the same instant: each opens it
    without error and the schema ends at the latest version, every table present."""
    ctx = multiprocessing.get_context("fork")
    for n in range(ROUNDS):
        path = tmp_path / f"round{n}" / "teleimagerie.db"
        path.parent.mkdir()
        barrier, results = ctx.Barrier(OPENERS), ctx.Queue()
        procs = [ctx.Process(target=_open, args=(str(path), barrier, results))
                 for _ in range(OPENERS)]
        for p in procs:
            p.start()
        outcomes = [results.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(30)
        assert outcomes == ["ok"] * OPENERS, outcomes
        db = sqlite3.connect(path)
        db.execute("ATTACH DATABASE ? AS journal", (str(path.with_name(
            "teleimagerie-audit.db")),))
        assert db.execute("PRAGMA user_version").fetchone()[0] == LATEST
        # 0006 dropped the main file's journal tables; 0005/0007 made the journal file's
        assert db.execute("SELECT count(*) FROM main.sqlite_master WHERE name = "
                          "'audit_history'").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM journal.sqlite_master WHERE name IN "
                          "('audit_history', 'audit_record')").fetchone()[0] == 2
        db.close()


class _Flaky:
    """A document whose first index creations draw the answer a concurrent build gives."""

    def __init__(self, code: int, failures: int) -> None:
        self.code, self.failures, self.calls = code, failures, 0

    def ensure_indexes(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise OperationFailure("index build already in progress", code=self.code)


def test_mongo_index_creation_tolerates_a_concurrent_first_start() -> None:
    """R-INT-2: IndexBuildAlreadyInProgress (276) and the other transient answers of a
    racing createIndexes are retried; a real conflict of index options (85) is not."""
    flaky = _Flaky(276, 2)
    mongo.ensure_indexes((flaky,), pause=0.001)  # type: ignore[arg-type]
    assert flaky.calls == 3
    conflict = _Flaky(85, 1)
    with pytest.raises(OperationFailure):
        mongo.ensure_indexes((conflict,), pause=0.001)  # type: ignore[arg-type]
    assert conflict.calls == 1
    endless = _Flaky(112, 100)
    with pytest.raises(OperationFailure):
        mongo.ensure_indexes((endless,), pause=0.001)  # type: ignore[arg-type]
    assert endless.calls == mongo.INDEX_ATTEMPTS


def test_mongo_store_opens_twice_on_one_new_database() -> None:
    """A second start on the database the first one created finds its indexes."""
    url = f"mongomock://localhost/teleimg_startup_{uuid.uuid4().hex[:8]}"
    mongo.MongoStore(url).close()
    store = mongo.MongoStore(url)
    indexes = store.res.index_information()
    store.close()
    assert indexes["pk_1"].get("unique") is True, indexes


# -- teleimagerie serve, every listener, fresh data directories ---------------------------
STARTS = 5  # ~25 s on an idle 2-core machine; no time assertion: CI machines are shared


def _mllp_answers(port: int) -> bytes:
    message = (b"MSH|^~\\&|SANTE|TEST|TLR|TLR|20260101120000||ADT^A31^ADT_A05|"
               b"START-1|P|2.5.1\rEVN|A31|20260101120000\r")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(frame(message))
        decoder = FrameDecoder(1 << 20)
        while True:
            data = sock.recv(65536)
            assert data, "MLLP listener closed without an answer"
            frames = decoder.feed(data)
            if frames:
                return bytes(frames[0].payload)


@pytest.mark.e2e
def test_serve_with_every_listener_comes_up_healthy_on_fresh_data_dirs(
        tmp_path: Path) -> None:
    """R-INT-2 (issue 27 item 13): ``serve`` with HTTP (two workers), MLLP, delivery and
    DICOM, started on a new data directory again and again (the embedded store, and a
    ``sqlite:///`` URL that ``serve`` does not migrate before its children start): each
    start answers on every listener, writes through the store, and logs no error."""
    for n in range(STARTS):
        data = tmp_path / f"start{n}"
        data.mkdir()
        mllp, dicom, http = free_port(), free_port(), free_port()
        extra = {"TELEIMG_MLLP_PORT": str(mllp), "TELEIMG_DICOM_PORT": str(dicom),
                 "TELEIMG_LOG_LEVEL": "info"}
        if n % 2:
            extra["TELEIMG_STORE_URL"] = f"sqlite:///{data / 'url.db'}"
        log = data / "serve.log"
        proc = start(server_env(data, http, **extra), workers=2, log=log)
        try:
            token = DevIssuer(data).mint(sub="startup:ris", roles=["ris"],
                                         scopes=["system/*.cruds"])
            base = f"http://127.0.0.1:{http}/fhir"
            auth = {"Authorization": f"Bearer {token}"}
            created = httpx.post(f"{base}/Patient", headers=auth, timeout=30, json={
                "resourceType": "Patient", "name": [{"family": f"DEMARRAGE{n}"}]})
            assert created.status_code == 201, created.text
            read = httpx.get(f"{base}/Patient/{created.json()['id']}", headers=auth,
                             timeout=30)
            assert read.status_code == 200, read.text
            assert b"MSA|" in _mllp_answers(mllp)
            ae = AE(ae_title="STARTUP")
            ae.add_requested_context(Verification)
            assoc = ae.associate("127.0.0.1", dicom, ae_title="TELEIMAGERIE")
            assert assoc.is_established
            assert assoc.send_c_echo().Status == 0x0000
            assoc.release()
            assert proc.poll() is None
        finally:
            stop(proc)
        text = log.read_text(errors="replace")
        assert "Traceback" not in text and "OperationalError" not in text, text[-3000:]
