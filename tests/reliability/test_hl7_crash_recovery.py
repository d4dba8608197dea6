"""A crash in the middle of an HL7 burst loses nothing and applies nothing twice (issue 27
item 2; R-INT-2: acknowledged only once safely stored).

``teleimagerie serve`` runs in a subprocess; a RIS sends a burst of ADT^A28 (one new
patient each) over MLLP, in original mode (MSH-15/16 empty: ACK after processing) or in
enhanced mode (MSH-15/16 ``AL``: CA once stored, processed after, AA queued back). After
part of the burst is acknowledged every process of the server is killed with SIGKILL;
the server is started again and the RIS sends again what was not answered, as a RIS
does. Then, over FHIR REST only:

- lost: a message answered AA/CA, or resent and answered, whose patient is missing;
- duplicated: more than one inbound record per message, a record settled twice (its
  versions), or more than one application ACK per message (one is queued in the unit
  that processes the message, so two mean it was processed twice).

Recovery works in pages of ``TELEIMG_HL7_RECOVERY_BATCH``, set low here so that the
enhanced-mode backlog left by the crash spans many pages (before the fix, recovery
queued 1 000 at most and a resend answered "committed already" without processing:
1 540 of 4 000 committed messages were never applied).
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest

from adapters.hl7v2.mllp import FrameDecoder, frame
from adapters.hl7v2.records import INBOUND, KIND_SYSTEM, MessageStore, register_all
from fhir_server.core.limits import Limits
from fhir_server.security.devissuer import DevIssuer
from fhir_server.store import open_store
from tests.e2e.harness import free_port, server_env, start

pytestmark = pytest.mark.e2e
# messages per burst: more than a recovery page many times over; the kill comes after
# KILL_AT of them were answered
MESSAGES = int(os.environ.get("TELEIMG_TEST_CRASH_MESSAGES", "600"))
BATCH = 25
KILL_AT = 0.6
IPP_SYSTEM = "urn:oid:1.2.250.1.999.7"


def _adt(mode: str, n: int) -> bytes:
    """ADT^A28 creating patient ``n`` (its own IPP: never the same patient twice)."""
    ack_types = "AL|AL" if mode == "enhanced" else "|"
    control = f"{mode[0].upper()}{n:06d}"
    return (f"MSH|^~\\&|RIS-CRASH|CH-CRASH|TLRapp|TLRfacility|20261122093000||"
            f"ADT^A28^ADT_A05|{control}|P|2.5^FRA^2.11|||{ack_types}|FRA|UNICODE UTF-8\r"
            "EVN||20261122090000\r"
            f"PID|||CR{n}^^^CH-CRASH&1.2.250.1.999.7&ISO^PI||CRASH{n}^Test^^^^^L||19800101|M"
            + "|" * 24 + "PROV\r"
            "PV1|1|O\r").encode()


class Ris:
    """Sends messages on ``connections`` connections at once (each its own slice, in
    order, as a RIS's outbound queues do); records the MSA-1 of each answer by message
    number. A connection that fails stops its slice (the server died)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.answers: dict[int, str] = {}
        self._lock = threading.Lock()

    def send(self, mode: str, numbers: list[int], connections: int = 1) -> list[threading.Thread]:
        slices = [numbers[i::connections] for i in range(connections)]
        threads = [threading.Thread(target=self._run, args=(mode, part), daemon=True)
                   for part in slices if part]
        for t in threads:
            t.start()
        return threads

    def _run(self, mode: str, numbers: list[int]) -> None:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
                decoder = FrameDecoder(1 << 20)
                for n in numbers:
                    sock.sendall(frame(_adt(mode, n)))
                    frames: list[Any] = []
                    while not frames:
                        data = sock.recv(65536)
                        if not data:
                            return
                        frames = decoder.feed(data)
                    msa = next(s for s in frames[0].payload.split(b"\r")
                               if s.startswith(b"MSA"))
                    with self._lock:
                        self.answers[n] = msa.split(b"|")[1].decode()
        except OSError:
            return  # killed: what was not answered is sent again after the restart


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (the listener processes of ``serve``)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _kill_all(proc: Any) -> None:
    """SIGKILL to the MLLP listener (and every other child) first, then to ``serve``."""
    for pid in _descendants(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.kill()
    proc.wait(10)


def _store_counts(data: Path) -> dict[str, int]:
    """Inbound records by status, read from the store the killed server left."""
    register_all()
    store = open_store(None, data)
    try:
        messages = MessageStore(cast(Any, SimpleNamespace(store=store, limits=Limits())))
        counts: dict[str, int] = {}
        for status in ("received", "processed"):
            cursor, n = None, 0
            while True:
                page, cursor = messages.page([("code", f"{KIND_SYSTEM}|{INBOUND}"),
                                              ("hl7-status", status)], 1000, cursor)
                n += len(page)
                if cursor is None or not page:
                    break
            counts[status] = n
        return counts
    finally:
        store.close()


def _total(api: httpx.Client, url: str) -> int:
    r = api.get(url)
    assert r.status_code == 200, r.text
    return int(r.json()["total"])


def _client(data: Path, role: str) -> httpx.Client:
    """The RIS (a system) or the interfaces administrator (a person, eIDAS 2)."""
    system = role == "ris"
    claims: dict[str, Any] = {} if system else {"id_nat_ps": "810000000999"}
    token = DevIssuer(data).mint(sub=f"crash:{role}", roles=[role],
                                 scopes=["system/*.cruds" if system else "user/*.cruds"],
                                 acr=None if system else "eidas2", **claims)
    return httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=60)


@pytest.mark.parametrize("mode", ["original", "enhanced"])
def test_kill_9_mid_burst_loses_nothing_and_applies_nothing_twice(
        tmp_path: Path, mode: str) -> None:
    began = time.monotonic()
    data = tmp_path / "data"
    http, mllp = free_port(), free_port()
    env = server_env(data, http, TELEIMG_MLLP_PORT=str(mllp), TELEIMG_DELIVERY="off",
                     TELEIMG_HL7_RECOVERY_BATCH=str(BATCH),
                     # application ACKs have no route here: one attempt each, not a storm
                     TELEIMG_HL7_RETRY_BASE="3600")

    def listening() -> bool:
        with socket.create_connection(("127.0.0.1", mllp), timeout=1):
            return True

    numbers = list(range(MESSAGES))
    ris = Ris(mllp)
    proc = start(env, ready=listening, log=tmp_path / "serve.log")
    try:
        # four connections: several messages in flight when the kill comes, and in
        # enhanced mode commits outpace the one worker, so a backlog builds up
        threads = ris.send(mode, numbers, connections=4)
        deadline = time.monotonic() + 60
        while len(ris.answers) < KILL_AT * MESSAGES and time.monotonic() < deadline:
            time.sleep(0.005)
        answered_before = len(ris.answers)
        _kill_all(proc)
    finally:
        if proc.poll() is None:
            _kill_all(proc)
    for t in threads:
        t.join(10)
    assert answered_before >= KILL_AT * MESSAGES, "the burst was too slow to reach the kill"
    assert len(ris.answers) < MESSAGES, "the kill came after the whole burst"
    assert set(ris.answers.values()) == {"CA" if mode == "enhanced" else "AA"}
    crashed = _store_counts(data)
    if mode == "enhanced":  # CA'd and never processed: what recovery must take, in pages
        assert crashed["received"] > 3 * BATCH, crashed

    proc = start(env, ready=listening, log=tmp_path / "serve.log")
    try:
        unanswered = [n for n in numbers if n not in ris.answers]
        for t in ris.send(mode, unanswered):
            t.join(120)
        assert len(ris.answers) == MESSAGES  # every message answered in the end
        assert set(ris.answers.values()) == {"CA" if mode == "enhanced" else "AA"}

        ris_api, admin = _client(data, "ris"), _client(data, "admin")
        base = f"http://127.0.0.1:{http}/fhir"
        inbound = f"{base}/Basic?code={KIND_SYSTEM}|{INBOUND}"
        deadline = time.monotonic() + 90
        while _total(admin, f"{inbound}&hl7-status=received&_summary=count") and \
                time.monotonic() < deadline:
            time.sleep(0.5)
        patients = _total(ris_api, f"{base}/Patient?identifier={IPP_SYSTEM}|"
                                   "&_summary=count")
        records = _total(admin, f"{inbound}&_summary=count")
        processed = _total(admin, f"{inbound}&hl7-status=processed&_summary=count")
        lost, extra_records = MESSAGES - patients, records - MESSAGES
        print(f"\n{mode}: {MESSAGES} messages, {answered_before} answered before the kill, "
              f"{crashed['received']} committed unprocessed at the crash, "
              f"{len(unanswered)} resent; lost {lost}, extra records {extra_records}, "
              f"{time.monotonic() - began:.1f} s")
        assert lost == 0
        assert patients == MESSAGES and processed == MESSAGES and records == MESSAGES
        if mode == "enhanced":
            # one application ACK queued per processing: more would be a double
            acks = _total(admin, f"{base}/Basic?code={KIND_SYSTEM}|hl7v2-outbound"
                                 "&hl7-type=ACK&_summary=count")
            assert acks == MESSAGES
        else:
            # each inbound record: stored (received), then settled once — two versions
            versions = _total(admin, f"{base}/Basic/_history?_count=1")
            assert versions == 2 * MESSAGES
    finally:
        proc.terminate()
        proc.wait(15)
