"""The peer step of ``make bench`` (issue 32): the same searches on our server and on the
same-stack peer sekmet-fhir (FastAPI + SQLite, PyPI ``PEER``), beside the FastAPI static
baseline, in the same run, one process each.

The peer is installed from PyPI into a temporary venv (``python -m venv`` + ``pip``),
started with its own command (``sekmet serve --config settings.yaml``: the console script
of the package, uvicorn on its app factory), without auth (its default), without its
traffic log (``log_inbound: false``, its own advice for load runs) and without its
workflow simulator (which reacts to ServiceRequest and Task writes). Both servers get
the same resources — the first ``BENCH_PEER_N`` of the scale data set
(:mod:`benchmarks.scale_data`: patients, requests, studies, dose observations, reports,
audit records) — ours through the core, the peer through its own REST API
(transaction Bundles). Ours runs ``teleimagerie serve --workers 1``, audit on.

Scenarios (wrk, BENCH_CONNECTIONS connections, BENCH_SECONDS per run, ``BENCH_PEER_ROUNDS``
rounds alternating which server goes first): a one-result ``Patient?identifier=`` search
and a chained ``Observation?subject:Patient.identifier=`` search; beside req/s, each
server's CPU per request (its processes' user + system time during the run, from
``/proc``), a figure the shared machine's other load does not blur. Each server's answer
to a sample of the searches is compared first (status, number of matches): a scenario the
peer cannot serve is reported as such, with why. If the peer cannot be installed or
started, the results file says why and our figures are still reported.
"""

from __future__ import annotations

import json
import os
import platform
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks.dataset import INS_NIR, ins
from benchmarks.run import CONNECTIONS, RESULTS, SECONDS, WORK, free_port, start, wrk
from benchmarks.scale import loader, transaction
from benchmarks.scale_data import describe, stream
from fhir_server.security.devissuer import DevIssuer

PEER = "sekmet-fhir==0.1.1"
N = int(os.environ.get("BENCH_PEER_N", "20000"))
ROUNDS = int(os.environ.get("BENCH_PEER_ROUNDS", "2"))
BATCH = 500
SCENARIOS = {
    "token (Patient?identifier=)": "/fhir/Patient?identifier={system}|{value}",
    "chained (Observation?subject:Patient.identifier=)":
        "/fhir/Observation?subject:Patient.identifier={system}|{value}",
}


def resources() -> list[list[dict[str, Any]]]:
    """The first N resources of the scale data set, in transaction-sized batches."""
    out: list[list[dict[str, Any]]] = [[]]
    for i, r in enumerate(stream()):
        if i == N:
            break
        if len(out[-1]) == BATCH:
            out.append([])
        out[-1].append(r)
    return out


def ours_data() -> Path:
    """Our data set, loaded once through the core (cached in benchmarks/.work), copied
    fresh for each run as :mod:`benchmarks.run` does."""
    from fhir_server.core.model import FhirRequest, Interaction

    pristine = WORK / f"peer-data-{N}"
    if not (pristine / "teleimagerie.db").exists():
        shutil.rmtree(pristine, ignore_errors=True)
        print(f"loading {N} resources into our store (through the core) …", flush=True)
        core = loader(pristine)
        try:
            for batch in resources():
                resp = core.handle(FhirRequest(Interaction.BATCH, body=transaction(batch)))
                if resp.status != 200:
                    raise SystemExit(f"our core refused the data set: {resp.resource}")
        finally:
            core.store.close()
    run_dir = WORK / f"peer-run-{N}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    for db in pristine.glob("teleimagerie*.db"):
        shutil.copy2(db, run_dir / db.name)
    return run_dir


class Peer:
    """sekmet-fhir in a temporary venv: install, start, load. ``failure`` says why not."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.failure: str | None = None
        self.notes: list[str] = []

    def install(self) -> bool:
        venv = self.folder / "venv"
        began = time.monotonic()
        steps = [[sys.executable, "-m", "venv", str(venv)],
                 [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
                  PEER]]
        for cmd in steps:
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                self.failure = (f"`{' '.join(cmd[-2:])}` failed (exit {done.returncode}): "
                                + " ".join((done.stderr or done.stdout).split())[-600:])
                return False
        version = subprocess.run([str(venv / "bin" / "sekmet"), "--version"],
                                 capture_output=True, text=True, check=False).stdout.strip()
        self.notes.append(f"installed {version or PEER} in a temporary venv in "
                          f"{time.monotonic() - began:.0f} s")
        return True

    def serve(self) -> bool:
        config = self.folder / "settings.yaml"
        # absolute paths: the peer writes its database and keys relative to its cwd
        config.write_text(json.dumps({  # JSON is YAML
            "base_url": f"{self.base}/fhir", "host": "127.0.0.1", "port": self.port,
            "data_dir": str(self.folder / "data"),
            "own_private_key_path": str(self.folder / "keys" / "sekmet_private.pem"),
            "server_auth": {"types": ["none"]}, "simulator": {"enabled": False},
            "log_inbound": False, "validation": {"inbound": "strict"}}))
        cmd = [str(self.folder / "venv" / "bin" / "sekmet"), "serve", "--config", str(config)]
        try:
            self.proc = start(cmd, {**os.environ, "SEKMET_CONFIG": str(config)},
                              f"{self.base}/fhir/metadata")
        except SystemExit as exc:
            self.failure = f"the peer did not start ({exc})"
            return False
        return True

    def load(self, batches: list[list[dict[str, Any]]]) -> bool:
        began = time.monotonic()
        with httpx.Client(base_url=self.base, timeout=300) as client:
            for i, batch in enumerate(batches):
                r = client.post("/fhir", json=transaction(batch),
                                headers={"Content-Type": "application/fhir+json"})
                if r.status_code != 200:
                    self.failure = (f"the peer refused transaction {i} ({r.status_code}): "
                                    + r.text[:600])
                    return False
        seconds = time.monotonic() - began
        self.notes.append(f"loaded {N} resources through its REST API in {seconds:.0f} s "
                          f"({N / seconds:.0f} resources/s, {BATCH}-entry transactions)")
        return True

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait()


def cpu_ticks(pid: int) -> int:
    """CPU (user + system, clock ticks) of process ``pid`` and its descendants: the
    server's own cost per request, which the machine's other load does not blur."""
    total = 0
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
            for task in Path(f"/proc/{current}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError, IndexError):
            continue
    return total


def measured(base: str, paths: list[str], token: str, pid: int) -> dict[str, Any]:
    """wrk on ``paths`` and the server's CPU per request (ms) meanwhile."""
    before = cpu_ticks(pid)
    row = wrk(base, paths, token=token)
    ticks = cpu_ticks(pid) - before
    served = row["rps"] * SECONDS
    row["cpu_ms_per_request"] = ticks / os.sysconf("SC_CLK_TCK") * 1000 / served \
        if served else 0.0
    return row


def matches(base: str, path: str, token: str = "") -> tuple[int, int | None]:
    """(status, number of matches on the first page) of one search."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = httpx.get(base + path, headers=headers, timeout=30)
    if r.status_code != 200:
        return r.status_code, None
    return 200, sum(1 for e in r.json().get("entry", [])
                    if (e.get("search") or {}).get("mode", "match") == "match")


def main() -> None:
    rnd = random.Random(32)
    patients = describe(N)["patients"]
    ks = [rnd.randrange(patients) for _ in range(1000)]
    paths = {name: [p.format(system=INS_NIR, value=ins(k)) for k in ks]
             for name, p in SCENARIOS.items()}
    batches = resources()
    data_dir = ours_data()
    issuer = DevIssuer(data_dir)
    issuer.ensure()
    token = issuer.mint(sub="bench", roles=["ris"], scopes=["system/*.cruds"], acr=None)
    port, bport = free_port(), free_port()
    env = {**os.environ, "TELEIMG_DATA_DIR": str(data_dir), "TELEIMG_HTTP_PORT": str(port),
           "TELEIMG_LOG_LEVEL": "warning", "TELEIMG_METRICS_PORT": str(free_port()),
           "TELEIMG_MLLP_PORT": str(free_port()), "TELEIMG_SCHEMATRON_WARM": "off"}
    ours_base, static_base = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{bport}"
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as folder:
        peer = Peer(Path(folder))
        ok = peer.install() and peer.serve() and peer.load(batches)
        ours = start([sys.executable, "-m", "teleimagerie.cli", "serve", "--workers", "1",
                      "--no-access-log"], env, f"{ours_base}/fhir/metadata")
        static = start([sys.executable, "-m", "uvicorn", "benchmarks.baseline:app", "--port",
                        str(bport), "--workers", "1", "--no-access-log", "--log-level",
                        "warning"], dict(os.environ), f"{static_base}/fhir/Patient/x")
        servers = {"ours": (ours_base, token, ours.pid)}
        unserved: dict[str, str] = {}
        if ok:
            assert peer.proc is not None
            servers["peer"] = (peer.base, "", peer.proc.pid)
            for name, ps in paths.items():  # the same answers, or the peer cannot serve it
                for path in ps[:20]:
                    # every match, whatever each server's page size
                    a = matches(ours_base, path + "&_count=200", token)
                    b = matches(peer.base, path + "&_count=200")
                    if b[0] != 200 or a != b:
                        unserved[name] = (f"{path}: ours {a[0]} with {a[1]} matches, "
                                          f"the peer {b[0]} with {b[1]}")
                        break
        try:
            for round_ in range(ROUNDS):
                base_row = measured(static_base, [f"/fhir/Patient/p{k}" for k in ks], "",
                                    static.pid)
                for name, ps in paths.items():
                    order = list(servers) if round_ % 2 == 0 else list(reversed(servers))
                    row: dict[str, Any] = {"round": round_ + 1, "scenario": name,
                                           "static": base_row,
                                           "loadavg": os.getloadavg()[0]}
                    for who in order:
                        if who == "peer" and name in unserved:
                            continue
                        base, bearer, pid = servers[who]
                        row[who] = measured(base, ps, bearer, pid)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        finally:
            for proc in (ours, static):
                proc.terminate()
                proc.wait()
            peer.stop()
    write(rows, peer, unserved)


def write(rows: list[dict[str, Any]], peer: Peer, unserved: dict[str, str]) -> None:
    info = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
            "platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "sqlite": sqlite3.sqlite_version, "resources": N,
            "connections": CONNECTIONS, "seconds_per_run": SECONDS, "rounds": ROUNDS,
            "workers": 1, "peer": PEER, "loadavg": os.getloadavg()}
    lines = [f"# make bench — peer comparison {info['date']}", "", "```",
             json.dumps(info, indent=1), "```", "",
             f"Same data on both servers: the first {N} resources of the scale data set "
             f"({describe(N)['types']}). Ours: `teleimagerie serve --workers 1`, audit on, "
             "a RIS system token. Peer: `sekmet serve`, 1 process, no auth, no audit, "
             "traffic log and simulator off. Static: benchmarks/baseline.py, 1 worker.", ""]
    if peer.failure:
        lines += [f"**The peer was not measured**: {peer.failure}", ""]
    lines += [f"- {n}" for n in peer.notes]
    lines += [f"- the peer cannot serve {name}: {why}" for name, why in unserved.items()]
    lines += ["", "| round | scenario | static req/s | ours req/s | peer req/s | ours ÷ peer "
              "| ours ÷ static | ours p50/p99 ms | peer p50/p99 ms | errors ours/peer "
              "| server CPU ms/request static/ours/peer | load avg |",
              "|---:|---|---:|---:|---:|---:|---:|---|---|---|---|---:|"]
    totals: dict[str, dict[str, float]] = {}
    for r in rows:
        ours, peer_r, static = r["ours"], r.get("peer"), r["static"]
        t = totals.setdefault(r["scenario"], {"ours": 0.0, "peer": 0.0, "static": 0.0,
                                              "cpu_ours": 0.0, "cpu_peer": 0.0,
                                              "cpu_static": 0.0})
        t["cpu_ours"] += ours.get("cpu_ms_per_request", 0.0)
        t["cpu_static"] += static.get("cpu_ms_per_request", 0.0)
        t["cpu_peer"] += peer_r.get("cpu_ms_per_request", 0.0) if peer_r else 0.0
        t["ours"] += ours["rps"]
        t["static"] += static["rps"]
        t["peer"] += peer_r["rps"] if peer_r else 0.0
        lines.append(
            f"| {r['round']} | {r['scenario']} | {static['rps']:.0f} | {ours['rps']:.0f} | "
            + (f"{peer_r['rps']:.0f} | {ours['rps'] / peer_r['rps']:.2f} | " if peer_r
               else "— | — | ")
            + f"{ours['rps'] / static['rps']:.2f} | {ours['p50']:.1f}/{ours['p99']:.1f} | "
            + (f"{peer_r['p50']:.1f}/{peer_r['p99']:.1f} | " if peer_r else "— | ")
            + f"{int(ours['errors'] + ours['non2xx'])}/"
            + (f"{int(peer_r['errors'] + peer_r['non2xx'])}" if peer_r else "—")
            + f" | {static.get('cpu_ms_per_request', 0):.2f}/"
            + f"{ours.get('cpu_ms_per_request', 0):.2f}/"
            + (f"{peer_r.get('cpu_ms_per_request', 0):.2f}" if peer_r else "—")
            + f" | {r['loadavg']:.1f} |")
    lines += ["", "Over all rounds (sum of req/s): " + "; ".join(
        f"{name}: ours ÷ peer "
        + (f"{t['ours'] / t['peer']:.2f}" if t["peer"] else "—")
        + f", ours ÷ static {t['ours'] / t['static']:.2f}" for name, t in totals.items())]
    lines += ["", "The same ratios from the servers' CPU per request (the inverse of the CPU "
              "each needs; the machine's other load does not blur it): " + "; ".join(
                  f"{name}: ours ÷ peer "
                  + (f"{t['cpu_peer'] / t['cpu_ours']:.2f}" if t["cpu_ours"] and t["cpu_peer"]
                     else "—")
                  + (f", ours ÷ static {t['cpu_static'] / t['cpu_ours']:.2f}"
                     if t["cpu_ours"] else "") for name, t in totals.items())]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"peer-{stamp}.md").write_text(text)
    (RESULTS / f"peer-{stamp}.json").write_text(json.dumps(
        {"machine": info, "rows": rows, "failure": peer.failure, "notes": peer.notes,
         "unserved": unserved}, indent=1))


if __name__ == "__main__":
    main()
