"""``make bench-soak``: mixed HTTP + MLLP + DICOM load against ``teleimagerie serve`` for
TELEIMG_SOAK_SECONDS (default 1800) at ~80 % of a quickly measured maximum rate
(issue 27 item 9; R-SEC-6 availability).

It starts the real server (every listener) on a fresh data dir, measures the HTTP mix's
and the MLLP channel's maximum rate closed-loop for a few seconds, then paces each at
80 % of it (DICOM: one C-STORE association of 3 images every TELEIMG_SOAK_DICOM_EVERY
seconds, default 2). Every TELEIMG_SOAK_SAMPLE seconds (default 10) it prints the RSS
of every process of the server and its private part (RssAnon: SQLite maps its database
file, whose pages count in RSS as the database grows — the kernel's page cache, shared
and reclaimable, not memory the process holds); every TELEIMG_SOAK_WINDOW seconds
(default 60) the p50/p99 of each channel. After the warm-up (TELEIMG_SOAK_WARMUP
seconds, default 10 % of the run, at least 30 s) it fails (exit 1) when a process's
private RSS grew by more than 10 % or a channel's p99 in the last window is more than
twice its p99 in the first.

Not part of ``make test``: ``TELEIMG_SOAK_SECONDS=120 make bench-soak`` for a quick one.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchmarks.hl7 import message
from tests.e2e.harness import free_port, server_env, start, stop

SECONDS = float(os.environ.get("TELEIMG_SOAK_SECONDS", "1800"))
WINDOW = float(os.environ.get("TELEIMG_SOAK_WINDOW", "60"))
SAMPLE = float(os.environ.get("TELEIMG_SOAK_SAMPLE", "10"))
WARMUP = float(os.environ.get("TELEIMG_SOAK_WARMUP", str(max(30.0, SECONDS / 10))))
DICOM_EVERY = float(os.environ.get("TELEIMG_SOAK_DICOM_EVERY", "2"))
LOAD = 0.8  # of the measured maximum
HTTP_WORKERS = 4
RSS_GROWTH = 0.10
P99_DRIFT = 2.0


@dataclass
class Channel:
    """Latencies of one channel, by window since the start of the paced run."""

    name: str
    lat: dict[int, list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, window: int, seconds: float, error: str | None = None) -> None:
        with self.lock:
            self.lat.setdefault(window, []).append(seconds)
            if error:
                self.errors[error] = self.errors.get(error, 0) + 1


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


# -- processes --------------------------------------------------------------------------

def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return sorted(out)


def _rss(pid: int) -> tuple[str, tuple[int, int]] | None:
    """(label, (RSS, private RSS)) of a process: RssAnon is what it holds itself; the
    rest is mapped files (SQLite maps its database: the kernel's page cache, shared by
    the workers and given back under pressure, growing with the database)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    fields = {line.split(":")[0]: int(line.split()[1]) * 1024
              for line in status.splitlines() if line.endswith(" kB")}
    words = [w.decode(errors="replace") for w in cmd if w]
    text = " ".join(words)
    label = "http-worker" if "multiprocessing.spawn" in text else "resource-tracker" \
        if "resource_tracker" in text else next(
            (w for w in words if w.startswith(("fhir_server", "adapters"))), words[0][-30:])
    return f"{pid} {label}", (fields.get("VmRSS", 0), fields.get("RssAnon", 0))


def _sample(root: int) -> dict[str, tuple[int, int]]:
    return dict(filter(None, (_rss(pid) for pid in _tree(root))))


# -- channels ---------------------------------------------------------------------------

class Http:
    """The HTTP mix: creates, reads, searches, includes, refusals, 256 KiB bodies."""

    def __init__(self, port: int, token: str) -> None:
        self.base = f"http://127.0.0.1:{port}/fhir"
        self.auth = {"Authorization": f"Bearer {token}"}
        self.ids: list[str] = []
        self.blob = b"A" * (256 * 1024)

    def one(self, client: httpx.Client, i: int) -> str | None:
        """One request; an error text for anything unexpected, else None."""
        pick = random.random()
        if pick < 0.25 or not self.ids:
            r = client.post(f"{self.base}/Patient", headers=self.auth, json={
                "resourceType": "Patient", "name": [{"family": f"SOAK{i % 500}"}],
                "gender": "female", "birthDate": "1980-05-17"})
            if r.status_code == 201:
                self.ids.append(r.json()["id"])
                del self.ids[:-2000]
            return None if r.status_code == 201 else f"POST {r.status_code}"
        pid = random.choice(self.ids)
        if pick < 0.55:
            r = client.get(f"{self.base}/Patient/{pid}", headers=self.auth)
            expected = (200,)
        elif pick < 0.75:
            r = client.get(f"{self.base}/Patient?family=SOAK{i % 500}&_count=10",
                           headers=self.auth)
            expected = (200,)
        elif pick < 0.85:
            r = client.get(f"{self.base}/Patient?_id={pid}&_revinclude:iterate=*",
                           headers=self.auth)
            expected = (200, 400)
        elif pick < 0.93:  # a different bad token each time (the token cache, the audit)
            r = client.get(f"{self.base}/Patient/{pid}",
                           headers={"Authorization": f"Bearer x.{i}.y"})
            expected = (401,)
        else:
            r = client.post(f"{self.base}/Binary", headers={
                **self.auth, "Content-Type": "application/octet-stream"}, content=self.blob)
            expected = (201, 400, 403, 415, 422)
        return None if r.status_code in expected else f"{r.request.method} {r.status_code}"


def _mllp(sock: socket.socket, i: int) -> str | None:
    sock.sendall(b"\x0b" + message(i) + b"\x1c\r")
    data = b""
    while not data.endswith(b"\x1c\r"):
        chunk = sock.recv(65536)
        if not chunk:
            return "MLLP closed"
        data += chunk
    return None if b"MSA|AA" in data else "MLLP " + data[data.find(b"MSA"):][:12].decode(
        errors="replace")


def _dicom(port: int, n: int) -> str | None:
    from pydicom.uid import generate_uid
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage

    from tests.behaviour.dicom_world import ct_images

    ae = AE(ae_title="SOAK")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="TELEIMAGERIE")
    if not assoc.is_established:
        return "DICOM association refused"
    try:
        statuses = [assoc.send_c_store(ds).Status
                    for ds in ct_images(generate_uid(), 3, placer=f"SOAK-{n}")]
    finally:
        assoc.release()
    bad = [s for s in statuses if s not in (0x0000, 0xB000, 0xB007, 0xB006)]
    return f"DICOM status {bad[0]:#06x}" if bad else None


# -- the run ----------------------------------------------------------------------------

class Soak:
    def __init__(self, http: Http, mllp_port: int, dicom_port: int) -> None:
        self.http = http
        self.mllp_port = mllp_port
        self.dicom_port = dicom_port
        self.channels = {n: Channel(n) for n in ("http", "mllp", "dicom")}
        self.begin = 0.0
        self.until = 0.0
        self.counter = 0
        self.lock = threading.Lock()

    def _next(self) -> int:
        with self.lock:
            self.counter += 1
            return self.counter

    def window(self) -> int:
        return int((time.monotonic() - self.begin) // WINDOW)

    def http_loop(self, interval: float) -> None:
        with httpx.Client(timeout=60) as client:
            due = time.monotonic()
            while time.monotonic() < self.until:
                i = self._next()
                t = time.perf_counter()
                try:
                    error = self.http.one(client, i)
                except httpx.HTTPError as exc:
                    error = type(exc).__name__
                self.channels["http"].add(self.window(), time.perf_counter() - t, error)
                due += interval
                time.sleep(max(0.0, due - time.monotonic()))

    def mllp_loop(self, interval: float) -> None:
        sock = socket.create_connection(("127.0.0.1", self.mllp_port), timeout=60)
        due = time.monotonic()
        try:
            while time.monotonic() < self.until:
                i = 10_000_000 + self._next()
                t = time.perf_counter()
                try:
                    error = _mllp(sock, i)
                except OSError as exc:
                    error = type(exc).__name__
                    sock.close()
                    sock = socket.create_connection(("127.0.0.1", self.mllp_port), timeout=60)
                self.channels["mllp"].add(self.window(), time.perf_counter() - t, error)
                due += interval
                time.sleep(max(0.0, due - time.monotonic()))
        finally:
            sock.close()

    def dicom_loop(self) -> None:
        while time.monotonic() < self.until:
            t = time.perf_counter()
            try:
                error = _dicom(self.dicom_port, self._next())
            except Exception as exc:  # a soak reports every failure, never stops on one
                error = type(exc).__name__
            self.channels["dicom"].add(self.window(), time.perf_counter() - t, error)
            time.sleep(max(0.0, DICOM_EVERY - (time.perf_counter() - t)))

    def run(self, seconds: float, http_interval: float, mllp_interval: float,
            dicom: bool = True) -> list[threading.Thread]:
        self.begin = time.monotonic()
        self.until = self.begin + seconds
        threads = [threading.Thread(target=self.http_loop, args=(http_interval,))
                   for _ in range(HTTP_WORKERS)]
        threads.append(threading.Thread(target=self.mllp_loop, args=(mllp_interval,)))
        if dicom:
            threads.append(threading.Thread(target=self.dicom_loop))
        for t in threads:
            t.start()
        return threads


def _max_rate(http: Http, mllp_port: int, dicom_port: int, seconds: float = 8
              ) -> tuple[float, float]:
    """Requests per second of the HTTP mix (HTTP_WORKERS closed loops) and of MLLP."""
    probe = Soak(http, mllp_port, dicom_port)
    for t in probe.run(seconds, 0.0, 0.0, dicom=False):
        t.join()
    count = {n: sum(len(v) for v in c.lat.values()) for n, c in probe.channels.items()}
    return count["http"] / seconds, count["mllp"] / seconds


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    http_port, dicom_port, mllp_port = free_port(), free_port(), free_port()
    env = server_env(work / "data", http_port, TELEIMG_MLLP_PORT=str(mllp_port),
                     TELEIMG_DICOM_PORT=str(dicom_port), TELEIMG_LOG_LEVEL="error")
    proc = start(env, workers=int(os.environ.get("TELEIMG_SOAK_WORKERS", "2")))
    failures: list[str] = []
    try:
        from fhir_server.security.devissuer import DevIssuer

        token = DevIssuer(work / "data").mint(sub="soak:ris", roles=["ris"],
                                              scopes=["system/*.cruds"], lifetime=4 * 3600)
        http = Http(http_port, token)
        http_max, mllp_max = _max_rate(http, mllp_port, dicom_port)
        http_interval = HTTP_WORKERS / (LOAD * http_max)
        mllp_interval = 1 / (LOAD * mllp_max)
        print(f"max: HTTP {http_max:.0f}/s, MLLP {mllp_max:.0f}/s; soak {SECONDS:.0f} s at "
              f"{LOAD:.0%} (HTTP {LOAD * http_max:.0f}/s, MLLP {LOAD * mllp_max:.0f}/s, "
              f"DICOM 3 images every {DICOM_EVERY:g} s), warm-up {WARMUP:.0f} s", flush=True)
        soak = Soak(http, mllp_port, dicom_port)
        threads = soak.run(SECONDS, http_interval, mllp_interval)
        samples: list[tuple[float, dict[str, tuple[int, int]]]] = []
        printed = 0
        while any(t.is_alive() for t in threads):
            now = time.monotonic() - soak.begin
            rss = _sample(proc.pid)
            samples.append((now, rss))
            print(f"[{now:6.0f} s] RSS (private) MiB: " + ", ".join(
                f"{k}={v[0] / 2**20:.0f} ({v[1] / 2**20:.0f})" for k, v in sorted(rss.items())),
                flush=True)
            done = soak.window()
            for w in range(printed, done):
                _print_window(soak, w)
            printed = max(printed, done)
            time.sleep(min(SAMPLE, max(0.0, soak.until - time.monotonic()) + 0.1))
        for w in range(printed, int(SECONDS // WINDOW) + 1):
            _print_window(soak, w)
        failures += _rss_failures(samples)
        failures += _latency_failures(soak)
        for channel in soak.channels.values():
            if channel.errors:
                print(f"{channel.name} unexpected answers: {channel.errors}")
    finally:
        stop(proc)
        shutil.rmtree(work, ignore_errors=True)
    for failure in failures:
        print("FAIL:", failure)
    print("soak", "failed" if failures else "passed")
    return 1 if failures else 0


def _print_window(soak: Soak, w: int) -> None:
    parts = []
    for channel in soak.channels.values():
        lat = channel.lat.get(w, [])
        if lat:
            parts.append(f"{channel.name} n={len(lat)} p50={_pct(lat, .5) * 1000:.0f} ms "
                         f"p99={_pct(lat, .99) * 1000:.0f} ms")
    if parts:
        print(f"window {w} ({w * WINDOW:.0f}-{(w + 1) * WINDOW:.0f} s): " + "; ".join(parts),
              flush=True)


def _rss_failures(samples: list[tuple[float, dict[str, tuple[int, int]]]]) -> list[str]:
    """A process whose private RSS grew more than 10 % after the warm-up (mapped
    database pages are reported, not held against it)."""
    after = [rss for t, rss in samples if t >= WARMUP]
    if len(after) < 2:
        return []
    first, last = after[0], after[-1]
    out = []
    for name, (total, size) in first.items():
        end = last.get(name)
        if end is not None and end[1] > size * (1 + RSS_GROWTH):
            out.append(f"private RSS of {name} grew {size / 2**20:.0f} -> "
                       f"{end[1] / 2**20:.0f} MiB after the warm-up (> {RSS_GROWTH:.0%})")
        elif end is not None:
            print(f"{name}: RSS {total / 2**20:.0f} -> {end[0] / 2**20:.0f} MiB, private "
                  f"{size / 2**20:.0f} -> {end[1] / 2**20:.0f} MiB after the warm-up")
    return out


def _latency_failures(soak: Soak) -> list[str]:
    out = []
    first_window = int(-(-WARMUP // WINDOW))  # the first window wholly after the warm-up
    for channel in soak.channels.values():
        windows = sorted(w for w in channel.lat if w >= first_window and
                         (w + 1) * WINDOW <= SECONDS + 1e-6 and len(channel.lat[w]) >= 20)
        if len(windows) < 2:
            continue
        first = _pct(channel.lat[windows[0]], .99)
        last = _pct(channel.lat[windows[-1]], .99)
        if last > P99_DRIFT * first and last - first > 0.05:
            out.append(f"{channel.name} p99 drifted {first * 1000:.0f} -> "
                       f"{last * 1000:.0f} ms (> {P99_DRIFT:g}x)")
    return out


if __name__ == "__main__":
    sys.exit(main())
