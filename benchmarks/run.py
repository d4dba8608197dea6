"""``make bench``: the real server (uvicorn, production settings) on the embedded store with a
≥100 000-resource data set, driven by wrk; each figure beside a FastAPI static baseline
measured in the same run. Results go to ``benchmarks/results/`` with machine info.

Environment: BENCH_N (resources, default 100000), BENCH_SECONDS (per scenario, default 10),
BENCH_CONNECTIONS (default 16), BENCH_WORKERS (uvicorn workers, default 2).

``python -m benchmarks.run --only create`` runs only the scenarios whose name contains one
of the ``--only`` words (repeatable), beside the same static baseline; the audit-off
repetitions then only cover the selected reads.

The reads and searches are then run twice more, back to back on the same data: with the
metrics off (``TELEIMG_METRICS_PORT=off``) and on — the cost of the metrics (issue 29).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks.dataset import INS_NIR, counts, generate, ins
from fhir_server.security.devissuer import DevIssuer
from fhir_server.store.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parent
WORK = ROOT / ".work"
RESULTS = ROOT / "results"
N = int(os.environ.get("BENCH_N", "100000"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "16"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))

BENCH_PATIENT = json.dumps({"resourceType": "Patient", "gender": "female",
                            "name": [{"family": "Bench", "given": ["Anne"]}],
                            "identifier": [{"system": INS_NIR, "value": "299999999999999"}]})

LUA = """
local paths = {%s}
local method = "%s"
local body = %s
local token = "%s"
local i = 0
request = function()
  i = i + 1
  local headers = {["Content-Type"] = "application/fhir+json",
                   ["Authorization"] = "Bearer " .. token}
  return wrk.format(method, paths[(i %% #paths) + 1], headers, body)
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT {\\"rps\\": %%f, \\"p50\\": %%f, \\"p95\\": %%f, "
    .. "\\"p99\\": %%f, \\"errors\\": %%d, \\"non2xx\\": %%d}\\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(95) / 1000, latency:percentile(99) / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
"""


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    if os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=False,
                       stdout=subprocess.DEVNULL)
    path = shutil.which("wrk")
    if not path:
        raise SystemExit("wrk is needed for make bench: apt-get install wrk")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load_dataset(data_dir: Path) -> float:
    """Load N resources through the FHIR core in 500-entry transactions; seconds taken."""
    from fhir_server.core.model import FhirRequest, Interaction
    from fhir_server.server.dispatch import FhirServer
    from fhir_server.store import open_store

    server = FhirServer(open_store(None, data_dir))
    start = time.perf_counter()
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
            for r in batch]}
        resp = server.handle(FhirRequest(Interaction.BATCH, body=bundle))
        assert resp.status == 200, resp.resource
        batch.clear()

    for i, resource in enumerate(generate(N)):
        batch.append(resource)
        if len(batch) == 500:
            flush()
        if i and i % 20000 == 0:
            print(f"  loaded {i} resources ({time.perf_counter() - start:.0f} s)", flush=True)
    if batch:
        flush()
    server.store.close()
    return time.perf_counter() - start


def base_costs(rounds: int = 500) -> dict[str, float]:
    """µs of CPU to check one resource against the base R4 specification (issue 25: the
    element-wise check of JSON types, formats and required bindings, plus the R4B model),
    on the create scenarios' Patient and on our profiles' valid examples, and the share
    of the element-wise check in it."""
    from fhir_server.validation.base_spec import check
    from fhir_server.validation.resource import validate_resource

    samples = [("bench-patient", json.loads(BENCH_PATIENT))] + [
        (path.stem.split("--")[0], json.loads(path.read_text()))
        for path in sorted((ROOT.parent / "profiles" / "examples").glob("*--valid.json"))]
    out: dict[str, float] = {}
    whole = walk = 0.0
    for name, resource in samples:
        validate_resource(resource)
        began = time.process_time()
        for _ in range(rounds):
            validate_resource(resource)
        out[name] = (time.process_time() - began) / rounds * 1e6
        whole += out[name]
        began = time.process_time()
        for _ in range(rounds):
            check(resource)
        walk += (time.process_time() - began) / rounds * 1e6
    out["element-wise share %"] = 100 * walk / whole
    return out


def metrics_cost(rounds: int = 50_000) -> float:
    """µs of CPU the HTTP metrics add to a request (classification, a counter and a
    histogram in prometheus-client's multiprocess mode, as under ``serve``): a figure the
    machine's other load does not blur, unlike the req/s of the on/off repetitions."""
    code = (
        "import asyncio, time\n"
        "from fhir_server import metrics\n"
        "async def app(scope, receive, send):\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': b''})\n"
        "async def sink(message): pass\n"
        "async def receive(): return {}\n"
        "async def run(target, n):\n"
        "    scope = {'type': 'http', 'method': 'GET', 'path': '/fhir/Patient/p1',\n"
        "             'query_string': b''}\n"
        "    began = time.process_time()\n"
        "    for _ in range(n):\n"
        "        await target(scope, receive, sink)\n"
        "    return (time.process_time() - began) / n * 1e6\n"
        f"n = {rounds}\n"
        "asyncio.run(run(metrics.Observe(app), n))\n"
        "print(asyncio.run(run(metrics.Observe(app), n)) - asyncio.run(run(app, n)))\n")
    with tempfile.TemporaryDirectory() as folder:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, cwd=ROOT.parent,
                             env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": folder}).stdout
    return float(out.strip().splitlines()[-1])


def profile_costs(rounds: int = 500) -> dict[str, float]:
    """µs of CPU to validate one resource against its profile (issue 4), per profile,
    compiled validators (the first validation of each profile compiles it)."""
    from fhir_server.validation.registry import ProfileRegistry

    registry = ProfileRegistry()
    out: dict[str, float] = {}
    for path in sorted((ROOT.parent / "profiles" / "examples").glob("*--valid.json")):
        resource = json.loads(path.read_text())
        registry.validate(resource)
        began = time.process_time()
        for _ in range(rounds):
            registry.validate(resource)
        out[path.stem.split("--")[0]] = (time.process_time() - began) / rounds * 1e6
    return out


def catch_up(data_dir: Path) -> dict[str, float]:
    """The indexing the audited run left for idle time: how much, and how fast it goes."""
    store = SqliteStore(data_dir / "teleimagerie.db")
    try:
        backlog = store.journal_backlog()
        began = time.perf_counter()
        while store.index_journal(1000):
            pass
        seconds = time.perf_counter() - began
    finally:
        store.close()
    return {"backlog": backlog, "seconds": seconds,
            "events_per_s": backlog / seconds if seconds else 0.0}


def start(cmd: list[str], env: dict[str, str], url: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT.parent, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            httpx.get(url, timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"server did not start: {' '.join(cmd)}")


def wrk(base: str, paths: list[str], method: str = "GET", body: str | None = None,
        token: str = "", connections: int | None = None,
        seconds: int | None = None) -> dict[str, float]:
    """One wrk run (BENCH_CONNECTIONS, BENCH_SECONDS unless given): req/s, latency
    percentiles in ms, errors."""
    connections = connections or CONNECTIONS
    lua_paths = ",".join(json.dumps(p) for p in paths)
    lua_body = "nil" if body is None else "[==[" + body + "]==]"
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(LUA % (lua_paths, method, lua_body, token))
    # wrk wants at least as many connections as threads
    out = subprocess.run([ensure_wrk(), f"-t{min(2, connections)}", f"-c{connections}",
                          f"-d{seconds or SECONDS}s", "--timeout",
                          "30s", "-s", f.name,
                          base], capture_output=True, text=True, check=True).stdout
    os.unlink(f.name)
    line = next(ln for ln in out.splitlines() if ln.startswith("RESULT "))
    return dict(json.loads(line[len("RESULT "):]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run")
    parser.add_argument("--only", action="append", default=[], metavar="WORD",
                        help="run only the scenarios whose name contains WORD (repeatable)")
    only: list[str] = parser.parse_args(argv).only
    ensure_wrk()
    rnd = random.Random(7)
    pristine = WORK / f"data-{N}"
    load_seconds = None
    if not (pristine / "teleimagerie.db").exists():
        shutil.rmtree(pristine, ignore_errors=True)
        print(f"generating and loading {N} resources into {pristine} …", flush=True)
        load_seconds = load_dataset(pristine)
        print(f"  done in {load_seconds:.0f} s ({N / load_seconds:.0f} resources/s)")
    # every run starts from the loaded data set: creates and audit events of earlier runs
    # would otherwise pile up and make runs incomparable
    data_dir = WORK / f"run-{N}"
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    for db in pristine.glob("teleimagerie*.db"):  # the clinical file and the audit journal's
        shutil.copy2(db, data_dir / db.name)
    c = counts(N)
    port, bport = free_port(), free_port()
    env = {**os.environ, "TELEIMG_DATA_DIR": str(data_dir), "TELEIMG_HTTP_PORT": str(port),
           "TELEIMG_LOG_LEVEL": "warning", "TELEIMG_METRICS_PORT": str(free_port()),
           "TELEIMG_MLLP_PORT": str(free_port())}  # not 2575: another instance may hold it
    issuer = DevIssuer(data_dir)
    issuer.ensure()
    # a RIS connector token: full rights, no care-relationship lookups
    token = issuer.mint(sub="bench", roles=["ris"], scopes=["system/*.cruds"], acr=None)
    serve_cmd = [sys.executable, "-m", "teleimagerie.cli", "serve", "--workers", str(WORKERS),
                 "--no-access-log"]
    server = start(serve_cmd, env, f"http://127.0.0.1:{port}/fhir/metadata")
    baseline = start([sys.executable, "-m", "uvicorn", "benchmarks.baseline:app", "--port",
                      str(bport), "--workers", str(WORKERS), "--no-access-log", "--log-level",
                      "warning"], dict(os.environ), f"http://127.0.0.1:{bport}/fhir/Patient/x")
    base = f"http://127.0.0.1:{port}"
    pids = [rnd.randrange(c["Patient"]) for _ in range(2000)]
    patient = BENCH_PATIENT
    tx = json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": json.loads(patient), "request": {"method": "POST", "url": "Patient"}}
        for _ in range(100)]})
    days = [f"2024-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}" for _ in range(500)]
    scenarios: list[tuple[str, str, list[str], str, str | None, int]] = [
        ("read", "GET", [f"/fhir/Patient/p{i}" for i in pids], "GET", None, 1),
        ("create (single)", "POST", ["/fhir/Patient"], "POST", patient, 1),
        ("create (100-entry transaction)", "POST", ["/fhir"], "POST", tx, 100),
        ("search token (identifier)", "GET",
         [f"/fhir/Patient?identifier={INS_NIR}|{ins(i)}" for i in pids], "GET", None, 1),
        ("search reference (subject)", "GET",
         [f"/fhir/ServiceRequest?subject=Patient/p{i}" for i in pids], "GET", None, 1),
        ("search date range (1 day)", "GET",
         [f"/fhir/ServiceRequest?authored=ge{d}&authored=lt{d}T23:59:59Z" for d in days],
         "GET", None, 1),
        ("search chained (subject:Patient.identifier)", "GET",
         [f"/fhir/ServiceRequest?subject:Patient.identifier={INS_NIR}|{ins(i)}" for i in pids],
         "GET", None, 1),
    ]
    if only:
        scenarios = [s for s in scenarios if any(word in s[0] for word in only)]
        if not scenarios:
            raise SystemExit(f"no scenario matches {only}")
    rows = []
    try:
        static = wrk(f"http://127.0.0.1:{bport}", [f"/fhir/Patient/p{i}" for i in pids])
        rows.append({"scenario": "baseline: FastAPI static response", **static,
                     "ratio": 1.0, "resources_per_s": static["rps"]})
        audit_index = {"backlog": 0.0, "seconds": 0.0}
        for name, _, paths, method, body, per in scenarios:
            res = wrk(base, paths, method, body, token)
            # Each audited scenario starts with nothing left to index: the indexing an
            # earlier scenario deferred (ADR 0007) is not charged to the next one. What
            # each left, and how fast it is indexed, is reported beside it.
            index = catch_up(data_dir)
            audit_index["backlog"] += index["backlog"]
            audit_index["seconds"] += index["seconds"]
            rows.append({"scenario": name, **res, "ratio": res["rps"] / static["rps"],
                         "resources_per_s": res["rps"] * per,
                         "deferred_events": index["backlog"],
                         # as if the deferred indexing had been done in the same time
                         # (one process: a pessimistic figure for a saturated server)
                         "rps_with_indexing": res["rps"] * SECONDS
                         / (SECONDS + index["seconds"])})
        audit_index["events_per_s"] = audit_index["backlog"] / audit_index["seconds"] \
            if audit_index["seconds"] else 0.0
        server.terminate()
        server.wait()
        # the same reads and searches with the audit trail off: its cost (issue #3)
        reads = [s for s in scenarios if s[3] == "GET"]
        if reads:
            server = start(serve_cmd, {**env, "TELEIMG_AUDIT": "off"},
                           f"http://127.0.0.1:{port}/fhir/metadata")
        for name, _, paths, method, body, per in reads:
            res = wrk(base, paths, method, body, token)
            rows.append({"scenario": f"{name} — audit off", **res,
                         "ratio": res["rps"] / static["rps"], "resources_per_s": res["rps"] * per})
        # the same reads and searches with the metrics off, then on again (issue 29): their
        # cost, each pair measured back to back on the same data (audit on in both)
        for label, metrics_env in (("metrics off", {"TELEIMG_METRICS_PORT": "off"}),
                                   ("metrics on", {})):
            if not reads:
                break
            server.terminate()
            server.wait()
            server = start(serve_cmd, {**env, **metrics_env},
                           f"http://127.0.0.1:{port}/fhir/metadata")
            for name, _, paths, method, body, per in reads:
                res = wrk(base, paths, method, body, token)
                catch_up(data_dir)
                rows.append({"scenario": f"{name} — {label}", **res,
                             "ratio": res["rps"] / static["rps"],
                             "resources_per_s": res["rps"] * per})
    finally:
        server.terminate()
        baseline.terminate()
        server.wait()
        baseline.wait()
    machine = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(), "python": platform.python_version(),
        "cpus": os.cpu_count(), "sqlite": sqlite3.sqlite_version, "resources": N,
        "workers": WORKERS, "connections": CONNECTIONS, "seconds_per_scenario": SECONDS,
        "load_seconds": load_seconds, "audit_index": audit_index, "only": only,
    }
    table = ["| scenario | req/s | × static | resources/s | p50 ms | p95 ms | p99 ms | errors "
             "| AuditEvents deferred | req/s incl. their indexing |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        deferred = f"{r['deferred_events']:.0f} | {r['rps_with_indexing']:.0f}" \
            if "deferred_events" in r else " | "
        table.append(f"| {r['scenario']} | {r['rps']:.0f} | {r['ratio']:.2f} | "
                     f"{r['resources_per_s']:.0f} | {r['p50']:.1f} | {r['p95']:.1f} | "
                     f"{r['p99']:.1f} | {int(r['errors'] + r['non2xx'])} | {deferred} |")
    base = base_costs()
    machine["base_validation_us"] = base
    table.append("")
    table.append("Base R4 validation, µs of CPU per resource: " + ", ".join(
        f"{name} {us:.0f}" for name, us in base.items()))
    costs = profile_costs()
    machine["profile_validation_us"] = costs
    machine["metrics_us_per_request"] = metrics_us = metrics_cost()
    table.append("")
    table.append(f"HTTP metrics, µs of CPU added to each request (issue 29): {metrics_us:.1f}")
    table.append("")
    table.append("Profile validation, µs of CPU per resource (compiled once): " + ", ".join(
        f"{name} {us:.0f}" for name, us in costs.items()))
    table.append("")
    table.append(f"AuditEvents left unindexed by the audited scenarios (ADR 0007), indexed "
                 f"after each: {audit_index['backlog']:.0f} in all, at "
                 f"{audit_index['events_per_s']:.0f} events/s "
                 f"({audit_index['seconds']:.1f} s, one process)")
    text = "\n".join(table)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"{stamp}.json").write_text(json.dumps({"machine": machine, "rows": rows},
                                                      indent=1))
    (RESULTS / f"{stamp}.md").write_text(
        f"# make bench {machine['date']}\n\n```\n{json.dumps(machine, indent=1)}\n```\n\n"
        f"{text}\n")


if __name__ == "__main__":
    main()
