"""``make bench-scale`` (issue 32, "Scale benchmark"): search latency as the data set grows.

The seeded data set of :mod:`benchmarks.scale_data` is loaded *through the core* — the
transaction Bundles of a trusted system caller through ``FhirServer.handle``, so every
resource gets the validation (base R4, declared and mandatory profiles) and indexing of a
client write — into one embedded store that grows size after size (10 k, 100 k, 1 M).
The load is resumable: a checkpoint after each committed Bundle; rerunning continues
where it stopped, and sizes already measured are reported from the checkpoint.

At each size the real server (``teleimagerie serve``, audit on) answers four searches,
one request at a time (:func:`sequential`; wrk for more connections): token, reference,
date range, chained, beside the static baseline (the machine's floor); their
p50/p95/p99, the load rate, the database size on disk per resource and the growth
p95(largest) ÷ p95(previous size) go to ``benchmarks/results/scale-<timestamp>.md``,
with the machine's description and load average, and the top of a cProfile of the load
(one Bundle) and of one search (in process, through the same core as ``serve``).

Environment: BENCH_SCALE_SIZES (default 10000,100000,1000000), BENCH_SCALE_SECONDS
(per scenario, default 10), BENCH_SCALE_CONNECTIONS (wrk connections, default 1: the
latency of one request, not of a queue), BENCH_SCALE_WORKERS (uvicorn workers, default
1), BENCH_SCALE_BATCH (entries per transaction, default 500), BENCH_SCALE_DIR (the data
set and its checkpoint, default benchmarks/.work/scale; delete it to start over),
BENCH_SCALE_REMEASURE=1 (search the largest size loaded again, e.g. on a quieter
machine; the earlier figures stay in the report).

The load runs without the workflow engine (``FhirServer(workflow=None)``): an import of
a site's history, whose Tasks are part of the data set; replaying each request's
transitions would measure the workflow, not the store.
"""

from __future__ import annotations

import contextlib
import cProfile
import io
import itertools
import json
import os
import platform
import pstats
import random
import shutil
import sqlite3
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from benchmarks.dataset import INS_NIR, ins
from benchmarks.run import RESULTS, free_port, start, wrk
from benchmarks.scale_data import SEED, START, describe, stream
from fhir_server.security.devissuer import DevIssuer

ROOT = Path(__file__).resolve().parent
SIZES = [int(s) for s in os.environ.get("BENCH_SCALE_SIZES",
                                        "10000,100000,1000000").split(",") if s.strip()]
SECONDS = int(os.environ.get("BENCH_SCALE_SECONDS", "10"))
CONNECTIONS = int(os.environ.get("BENCH_SCALE_CONNECTIONS", "1"))
WORKERS = int(os.environ.get("BENCH_SCALE_WORKERS", "1"))
BATCH = int(os.environ.get("BENCH_SCALE_BATCH", "500"))
# search the largest size loaded again (its earlier figures stay in the report)
REMEASURE = os.environ.get("BENCH_SCALE_REMEASURE", "") in ("1", "yes", "on")
WORK = Path(os.environ.get("BENCH_SCALE_DIR", str(ROOT / ".work" / "scale")))
DATA = WORK / "data"
STATE = WORK / "checkpoint.json"
SCENARIOS = ["token", "reference", "date range", "chained"]


# -- the checkpoint ---------------------------------------------------------------------------
def read_state() -> dict[str, Any]:
    if STATE.exists():
        state: dict[str, Any] = json.loads(STATE.read_text())
        if state.get("seed") != SEED:
            raise SystemExit(f"{WORK} holds a data set of another seed: delete it first")
        return state
    return {"seed": SEED, "loaded": 0, "segments": [], "measured": {}, "profiles": {}}


def save_state(state: dict[str, Any]) -> None:
    """Atomically (a kill between two Bundles loses nothing that was committed)."""
    WORK.mkdir(parents=True, exist_ok=True)
    tmp = STATE.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, STATE)


# -- loading ----------------------------------------------------------------------------------
class Progress:
    """A one-line progress bar on stderr: count, rate, time left."""

    def __init__(self, done: int, target: int) -> None:
        self.first, self.target, self.began, self.shown = done, target, time.monotonic(), 0.0

    def show(self, done: int, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.shown < 0.5:
            return
        self.shown = now
        rate = (done - self.first) / max(now - self.began, 1e-9)
        left = (self.target - done) / rate if rate else 0.0
        width = 30
        filled = int(width * done / self.target)
        sys.stderr.write(f"\r  [{'#' * filled}{'.' * (width - filled)}] {done}/{self.target} "
                         f"{rate:.0f} res/s, {left / 60:.1f} min left  ")
        if final:
            sys.stderr.write("\n")
        sys.stderr.flush()


def transaction(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """A transaction Bundle writing ``resources`` at their ids (update as create)."""
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
        for r in resources]}


def loader(data_dir: Path = DATA) -> Any:
    """The core a client's write goes through: the production profile policy and limits
    (``Settings``); no security policy, i.e. a trusted system caller (no principal)."""
    from fhir_server.config import Settings
    from fhir_server.server.dispatch import FhirServer
    from fhir_server.store import open_store
    from fhir_server.validation.registry import ProfileRegistry

    settings = Settings.from_env()
    return FhirServer(open_store(None, data_dir), settings.limits,
                      profiles=ProfileRegistry(settings.required_profiles))


def load(state: dict[str, Any], target: int) -> None:
    """Load the stream up to ``target`` resources, from the checkpoint on."""
    from fhir_server.core.model import FhirRequest, Interaction

    done = state["loaded"]
    if done >= target:
        return
    print(f"loading resources {done}..{target} into {DATA} (through the core, "
          f"{BATCH}-entry transactions; interrupt and rerun to resume)", flush=True)
    core = loader()
    progress = Progress(done, target)
    segment = {"from": done, "to": done, "seconds": 0.0, "cpu_seconds": 0.0}
    state["segments"].append(segment)
    bundles = 0
    try:
        source = itertools.islice(stream(), done, target)
        while batch := list(itertools.islice(source, BATCH)):
            req = FhirRequest(Interaction.BATCH, body=transaction(batch))
            # the second Bundle of each run is profiled (the first compiles the validators)
            profiler = cProfile.Profile(time.thread_time) if bundles == 1 else None
            began, cpu = time.perf_counter(), time.process_time()
            if profiler:
                resp = profiler.runcall(core.handle, req)
            else:
                resp = core.handle(req)
            seconds = time.perf_counter() - began
            cpu = time.process_time() - cpu
            if resp.status != 200:
                raise SystemExit(f"transaction refused at resource {done}: "
                                 f"{json.dumps(resp.resource)[:2000]}")
            if profiler:
                state["profiles"]["load"] = {
                    "at": done, "entries": len(batch), "seconds": seconds,
                    "top": top(profiler, 30)}
            bundles += 1
            done += len(batch)
            segment["to"] = done
            segment["seconds"] += seconds
            # the CPU the core spent (SQLite runs in this thread): a figure the shared
            # machine's other load does not blur, unlike the wall-clock rate
            segment["cpu_seconds"] = segment.get("cpu_seconds", 0.0) + cpu
            state["loaded"] = done
            state["load_seconds"] = state.get("load_seconds", 0.0) + seconds
            save_state(state)
            progress.show(done)
    finally:
        progress.show(done, final=True)
        core.store.close()


def top(profiler: cProfile.Profile, n: int) -> str:
    """The first ``n`` lines of a profile by cumulative time and ``n // 2`` by own time,
    paths shortened. The profilers run on the thread's CPU clock: neither the machine's
    other load nor the process's other threads (the audit sink's indexing) are charged
    to the function that happened to be running."""
    text = ""
    for key, count in (("cumulative", n), ("tottime", n // 2)):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(key).print_stats(count)
        text += f"--- by {key} time\n" + _trim(out.getvalue()) + "\n"
    return text.rstrip()


def _trim(text: str) -> str:
    for prefix in sorted({str(ROOT.parent) + "/", sys.prefix + "/",
                          str(Path(os.__file__).parent) + "/"}, key=len, reverse=True):
        text = text.replace(prefix, "")
    lines = text.splitlines()
    start_at = next((i for i, ln in enumerate(lines) if "ncalls" in ln), 0)
    head = [ln for ln in lines[:start_at] if "function calls" in ln]
    return "\n".join(head + lines[start_at:]).rstrip()


def disk_bytes() -> int:
    """The store's files (database, WAL, audit journal): what a site must provision."""
    return sum(p.stat().st_size for p in DATA.glob("teleimagerie*") if p.is_file())


# -- searching --------------------------------------------------------------------------------
def scenarios(size: int, rnd: random.Random) -> dict[str, list[str]]:
    """The four searches on what the first ``size`` resources hold: 1 000 patients drawn
    among those loaded; 500 complete days of requests."""
    held = describe(size)
    ks = [rnd.randrange(held["patients"]) for _ in range(1000)]
    full_days = max(held["exams"] // 50, 1)
    days = [(START + timedelta(days=rnd.randrange(full_days))).date() for _ in range(500)]
    return {
        "token": [f"/fhir/Patient?identifier={INS_NIR}|{ins(k)}" for k in ks],
        "reference": [f"/fhir/Observation?subject=Patient/p{k}" for k in ks],
        "date range": [f"/fhir/ServiceRequest?authored=ge{d}&authored=lt{d + timedelta(1)}"
                       for d in days],
        "chained": [f"/fhir/Observation?subject:Patient.identifier={INS_NIR}|{ins(k)}"
                    for k in ks],
    }


def sequential(base: str, paths: list[str], bearer: str, seconds: float) -> dict[str, float]:
    """One connection, one request at a time for ``seconds``, each timed (a keep-alive
    httpx client): req/s and p50/p95/p99 in ms, in :func:`benchmarks.run.wrk`'s shape.
    With one connection it replaces wrk, whose tail percentiles here could not be
    squared with its own request count (a p95 of 2.2 s in a 10 s run of 2 000 requests)."""
    took: list[float] = []
    errors = 0
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        began = time.perf_counter()
        i = 0
        while time.perf_counter() - began < seconds:
            t = time.perf_counter()
            r = client.get(paths[i % len(paths)])
            took.append((time.perf_counter() - t) * 1000)
            errors += r.status_code != 200
            i += 1
        elapsed = time.perf_counter() - began
    took.sort()

    def pct(p: float) -> float:
        return took[min(len(took) - 1, int(p / 100 * len(took)))]

    return {"rps": len(took) / elapsed, "p50": pct(50), "p95": pct(95), "p99": pct(99),
            "errors": 0, "non2xx": errors, "requests": len(took)}


def timed(base: str, paths: list[str], bearer: str, seconds: int) -> dict[str, float]:
    """The latency figures of one scenario: :func:`sequential` for one connection, wrk
    for more."""
    if CONNECTIONS == 1:
        return sequential(base, paths, bearer, seconds)
    return wrk(base, paths, token=bearer, connections=CONNECTIONS, seconds=seconds)


def token() -> str:
    issuer = DevIssuer(DATA)
    issuer.ensure()
    # a RIS connector: full rights, no care-relationship look-ups (as benchmarks.run)
    return issuer.mint(sub="bench", roles=["ris"], scopes=["system/*.cruds"], acr=None)


def measure(size: int) -> dict[str, Any]:
    """wrk against ``teleimagerie serve`` on the data set as loaded: the four searches."""
    rnd = random.Random(size)
    paths = scenarios(size, rnd)
    bearer = token()
    port = free_port()
    env = {**os.environ, "TELEIMG_DATA_DIR": str(DATA), "TELEIMG_HTTP_PORT": str(port),
           "TELEIMG_LOG_LEVEL": "warning", "TELEIMG_METRICS_PORT": str(free_port()),
           "TELEIMG_MLLP_PORT": str(free_port()),
           # the report checks' Saxon compilation would run beside the first scenario
           "TELEIMG_SCHEMATRON_WARM": "off"}
    cmd = [sys.executable, "-m", "teleimagerie.cli", "serve", "--workers", str(WORKERS),
           "--no-access-log"]
    server = start(cmd, env, f"http://127.0.0.1:{port}/fhir/metadata")
    base = f"http://127.0.0.1:{port}"
    out: dict[str, Any] = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
                           "loadavg_before": os.getloadavg(), "rows": {},
                           "client": "sequential" if CONNECTIONS == 1 else "wrk"}
    # the machine's floor at the time: the FastAPI static response (benchmarks/baseline.py),
    # 1 worker, the same connections; on a shared machine its tail is the scheduler's
    bport = free_port()
    static = start([sys.executable, "-m", "uvicorn", "benchmarks.baseline:app", "--port",
                    str(bport), "--workers", "1", "--no-access-log", "--log-level", "warning"],
                   dict(os.environ), f"http://127.0.0.1:{bport}/fhir/Patient/x")
    try:
        out["static"] = timed(f"http://127.0.0.1:{bport}", ["/fhir/Patient/p1"], "",
                              min(SECONDS, 5))
    finally:
        static.terminate()
        static.wait()
    try:
        for name in SCENARIOS:  # a short warm-up: caches, the first page of the indexes
            timed(base, paths[name][:50], bearer, 1)
        for name in SCENARIOS:
            out["rows"][name] = timed(base, paths[name], bearer, SECONDS)
            print(f"  {size}: {name}: {out['rows'][name]}", flush=True)
    finally:
        server.terminate()
        server.wait()
    out["loadavg_after"] = os.getloadavg()
    try:  # a failing profile loses neither the figures above nor the checkpoint
        out["search_profile"] = profile_search(paths["chained"][:200], bearer)
        out["http_profile"] = profile_http(paths["chained"][:200], bearer,
                                           {name: ps[:200] for name, ps in paths.items()})
    except Exception as exc:
        out.setdefault("search_profile", {"searches": 0, "ms_each": 0.0, "top": ""})
        out["profile_error"] = repr(exc)
    return out


@contextlib.contextmanager
def served_env() -> Iterator[None]:
    """The environment ``serve`` gets in :func:`measure`, for an in-process core."""
    names = ("TELEIMG_DATA_DIR", "TELEIMG_SCHEMATRON_WARM", "TELEIMG_METRICS_PORT")
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update(TELEIMG_DATA_DIR=str(DATA), TELEIMG_SCHEMATRON_WARM="off",
                      TELEIMG_METRICS_PORT="off")
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


async def asgi_get(app: Any, path: str, bearer: str) -> None:
    """One GET through the ASGI ``app``, as uvicorn calls it; asserts a 200."""
    import asyncio

    route, _, query = path.partition("?")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": route,
             "raw_path": route.encode(), "query_string": query.encode(),
             "root_path": "", "client": ("127.0.0.1", 50000),
             "server": ("127.0.0.1", 8080),
             "headers": [(b"host", b"127.0.0.1:8080"),
                         (b"authorization", f"Bearer {bearer}".encode())]}
    status: list[int] = []
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:  # a client that stays connected (as under uvicorn)
            await asyncio.Event().wait()
        sent = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(scope, receive, send)
    assert status == [200], (path, status)


def profile_http(paths: list[str], bearer: str,
                 scenarios_cpu: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """cProfile (thread CPU clock) of ``len(paths)`` chained searches through the served ASGI
    application (:func:`teleimagerie.wiring.create_asgi`: metrics, read fast path,
    FastAPI, the core, JSON), called in process one after the other — all but uvicorn's
    HTTP parsing. The CPU per search is measured as served (also for each search of
    ``scenarios_cpu``: a figure the machine's other load does not blur); for the profile,
    the endpoint's hop to a worker thread is made inline (cProfile sees one thread)."""
    import asyncio

    import fhir_server.http.app as http_app
    import fhir_server.http.body as http_body

    with served_env():
        from teleimagerie.wiring import create_asgi

        app = create_asgi()

    async def inline(func: Any, *args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    async def cpu_of(some: list[str]) -> float:
        """ms of CPU per search (all the process's threads: with the audit sink's
        indexing of the AuditEvents the searches leave)."""
        for path in some[:20]:  # warm: compiled plans, the worker threads, the pages
            await asgi_get(app, path, bearer)
        began = time.process_time()
        for path in some:
            await asgi_get(app, path, bearer)
        return (time.process_time() - began) / len(some) * 1000

    per_scenario: dict[str, float] = {}

    async def drive() -> tuple[float, cProfile.Profile]:
        for name, some in (scenarios_cpu or {}).items():
            per_scenario[name] = await cpu_of(some)
        cpu = await cpu_of(paths) / 1000 * len(paths)
        modules = (http_app, http_body)
        served = [getattr(m, "run_in_threadpool") for m in modules]  # noqa: B009
        for m in modules:
            setattr(m, "run_in_threadpool", inline)  # noqa: B010
        profiler = cProfile.Profile(time.thread_time)
        try:
            profiler.enable()
            for path in paths:
                await asgi_get(app, path, bearer)
            profiler.disable()
        finally:
            for m, fn in zip(modules, served, strict=True):
                setattr(m, "run_in_threadpool", fn)  # noqa: B010
        return cpu, profiler

    cpu, profiler = asyncio.run(drive())
    core = app_core(app)
    if core is not None:
        if core.audit is not None:
            core.audit.close()
        core.store.close()
    return {"searches": len(paths), "ms_each": cpu / len(paths) * 1000,
            "cpu_ms": per_scenario, "top": top(profiler, 40)}


def app_core(app: Any) -> Any:
    """The core under the ASGI wrappers (to close its store)."""
    for _ in range(5):
        state = getattr(app, "state", None)
        if state is not None and hasattr(state, "fhir"):
            return state.fhir
        app = getattr(app, "app", None)
    return None


def profile_search(paths: list[str], bearer: str) -> dict[str, Any]:
    """cProfile of ``len(paths)`` chained searches in process, through the core ``serve``
    builds (security, audit sink, profiles, workflow): no HTTP, no JSON serialisation."""
    from urllib.parse import parse_qsl, urlsplit

    from fhir_server.config import Settings
    from fhir_server.core.model import FhirRequest, Interaction
    from teleimagerie.wiring import build_core

    with served_env():
        core = build_core(Settings.from_env())

    def run(path: str) -> None:
        parts = urlsplit(path)
        req = FhirRequest(Interaction.SEARCH_TYPE, resource_type=parts.path.rsplit("/", 1)[1],
                          params=parse_qsl(parts.query),
                          headers={"authorization": f"Bearer {bearer}"})
        resp = core.handle(req)
        assert resp.status == 200, resp.resource

    try:
        for path in paths[:20]:
            run(path)
        began = time.process_time()
        for path in paths:
            run(path)
        cpu = time.process_time() - began
        profiler = cProfile.Profile(time.thread_time)
        profiler.enable()
        for path in paths:
            run(path)
        profiler.disable()
    finally:
        if core.audit is not None:
            core.audit.close()
        core.store.close()
    return {"searches": len(paths), "ms_each": cpu / len(paths) * 1000,
            "top": top(profiler, 30)}


# -- the report -------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    return {"date": datetime.now(UTC).isoformat(timespec="seconds"),
            "platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "sqlite": sqlite3.sqlite_version,
            "seed": SEED, "batch": BATCH, "workers": WORKERS, "connections": CONNECTIONS,
            "seconds_per_scenario": SECONDS, "loadavg": os.getloadavg()}


def load_rate(state: dict[str, Any], size: int, lower: int) -> tuple[float, float, float]:
    """(resources/s, seconds, resources per CPU second of the segments that counted it)
    of the loading that brought the data set from ``lower`` to ``size``."""
    count = seconds = cpu_count = cpu = 0.0
    for seg in state["segments"]:
        lo, hi = max(seg["from"], lower), min(seg["to"], size)
        if hi > lo and seg["to"] > seg["from"]:
            share = (hi - lo) / (seg["to"] - seg["from"])
            count += hi - lo
            seconds += seg["seconds"] * share
            if "cpu_seconds" in seg:
                cpu_count += hi - lo
                cpu += seg["cpu_seconds"] * share
    return (count / seconds if seconds else 0.0), seconds, (cpu_count / cpu if cpu else 0.0)


def latency_table(state: dict[str, Any], done: list[int]) -> list[str]:
    """The wrk figures of each size measured, the static baseline's beside them."""
    lines: list[str] = []
    lines += ["", "| size | scenario | req/s | p50 ms | p95 ms | p99 ms | errors "
              "| load avg (1 min) before→after |", "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for size in done:
        m = state["measured"][str(size)]
        rows = dict(m["rows"])
        if "static" in m:
            rows["(static baseline: the machine's floor)"] = m["static"]
        for name, r in rows.items():
            lines.append(f"| {size} | {name} | {r['rps']:.0f} | {r['p50']:.1f} "
                         f"| {r['p95']:.1f} | {r['p99']:.1f} | "
                         f"{int(r['errors'] + r['non2xx'])} | "
                         f"{m['loadavg_before'][0]:.1f}→{m['loadavg_after'][0]:.1f} |")
    return lines


def report(state: dict[str, Any], sizes: list[int], notes: list[str]) -> str:
    info = machine()
    lines = [f"# make bench-scale {info['date']}", "", "```", json.dumps(info, indent=1),
             "```", ""]
    lines += [f"- {note}" for note in notes]
    done = [s for s in sizes if str(s) in state["measured"]]
    lines += latency_table(state, done)
    lines += ["", "| size | measured | load rate up to this size (resources/s) | load time (s) "
              "| resources per CPU second | on disk (MB) | bytes per resource "
              "| chained search, ms of CPU: core / ASGI app |",
              "|---:|---|---:|---:|---:|---:|---:|---|"]
    for lower, size in zip([0, *done], done, strict=False):
        m = state["measured"][str(size)]
        rate, seconds, per_cpu = load_rate(state, size, lower)
        lines.append(f"| {size} | {m['date']} | {rate:.0f} | {seconds:.0f} | "
                     + (f"{per_cpu:.0f} | " if per_cpu else "— | ")
                     + f"{m['disk_bytes'] / 1e6:.0f} | {m['disk_bytes'] / size:.0f} | "
                     f"{m['search_profile']['ms_each']:.2f} / "
                     + (f"{m['http_profile']['ms_each']:.2f} |" if "http_profile" in m
                        else "— |"))
    cpu = {size: state["measured"][str(size)].get("http_profile", {}).get("cpu_ms")
           for size in done}
    if any(cpu.values()):
        lines += ["", "ms of CPU per search through the served ASGI app, in process (200 "
                  "searches each, one after the other; not blurred by the machine's load):",
                  "", "| size | " + " | ".join(SCENARIOS) + " |",
                  "|---:|" + "---:|" * len(SCENARIOS)]
        lines += [f"| {size} | " + " | ".join(f"{c.get(n, 0):.2f}" for n in SCENARIOS) + " |"
                  for size, c in cpu.items() if c]
    for size in done:
        for e in state.get("earlier", {}).get(str(size), []):
            lines += ["", f"Measured earlier at {size} ({e['date']}, "
                      f"{e.get('client', 'wrk')}, load average "
                      f"{e['loadavg_before'][0]:.1f}→{e['loadavg_after'][0]:.1f}), "
                      "p50/p95/p99 ms: " + "; ".join(
                          f"{n} {r['p50']:.1f}/{r['p95']:.1f}/{r['p99']:.1f}"
                          for n, r in e["rows"].items())]
    for a, b in itertools.pairwise(done):
        pa, pb = state["measured"][str(a)]["rows"], state["measured"][str(b)]["rows"]
        lines += ["", f"Growth p95({b}) ÷ p95({a}): " + ", ".join(
            f"{n} {pb[n]['p95'] / pa[n]['p95']:.2f}" for n in SCENARIOS
            if n in pa and n in pb and pa[n]["p95"])]
        ca, cb = cpu.get(a), cpu.get(b)
        if ca and cb:
            lines += ["", f"Growth of the CPU per search ({b} ÷ {a}): " + ", ".join(
                f"{n} {cb[n] / ca[n]:.2f}" for n in SCENARIOS if ca.get(n))]
    if "load" in state["profiles"]:
        p = state["profiles"]["load"]
        lines += ["", f"## Profile of the load: one {p['entries']}-entry transaction at "
                  f"resource {p['at']} ({p['seconds']:.2f} s under cProfile)", "", "```",
                  p["top"], "```"]
    if done:
        size = done[-1]
        p = state["measured"][str(size)]["search_profile"]
        lines += ["", f"## Profile of a search at {size}: {p['searches']} chained searches "
                  f"in process through the core `serve` builds ({p['ms_each']:.2f} ms of "
                  "CPU each unprofiled; no HTTP, no JSON)", "", "```", p["top"], "```"]
        h = state["measured"][str(size)].get("http_profile")
        if h:
            lines += ["", f"## Profile of the same searches through the served ASGI app at "
                      f"{size} ({h['ms_each']:.2f} ms of CPU each unprofiled; in process, "
                      "no uvicorn; the worker-thread hop made inline for the profile)", "",
                      "```", h["top"], "```"]
    return "\n".join(lines) + "\n"


def main() -> None:
    state = read_state()
    notes = [f"data set: seed {SEED}, {WORK}; the stream's composition at each size: "
             + "; ".join(f"{s}: {describe(s)['types']}" for s in SIZES)]
    try:
        for size in sorted(SIZES):
            earlier = state["measured"].get(str(size))
            if earlier is not None and REMEASURE and state["loaded"] == size:
                # searched again on the same data (e.g. on a quieter machine); the earlier
                # figures stay in the report
                state.setdefault("earlier", {}).setdefault(str(size), []).append(
                    {k: v for k, v in earlier.items() if "profile" not in k})
                del state["measured"][str(size)]
            elif earlier is not None:
                print(f"{size}: measured on {earlier['date']} (from the checkpoint)")
                continue
            if state["loaded"] > size:
                notes.append(f"{size}: not measured, the data set already holds "
                             f"{state['loaded']} resources (delete {WORK} to measure it)")
                continue
            load(state, size)
            # as loaded (a measurement adds the AuditEvents of its searches)
            held = earlier["disk_bytes"] if earlier is not None else disk_bytes()
            print(f"{size}: {held / 1e6:.0f} MB on disk; searching …", flush=True)
            m = measure(size)
            m["disk_bytes"] = held
            state["measured"][str(size)] = m
            save_state(state)
    finally:
        text = report(state, sorted(SIZES), notes)
        RESULTS.mkdir(exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        path = RESULTS / f"scale-{stamp}.md"
        path.write_text(text)
        print(text)
        print(f"written to {path}")


if __name__ == "__main__":
    if shutil.which("wrk") is None:
        print("wrk is needed: apt-get install wrk", file=sys.stderr)
    main()
