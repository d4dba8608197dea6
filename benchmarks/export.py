"""Benchmark of Bulk Data ``$export`` (issue 31) on 100 000 resources: ``make bench-export``.

Loads (once, cached under ``benchmarks/.work``) the seeded data set of
:mod:`benchmarks.dataset` — patients, practitioners, requests, studies, reports —
straight into the embedded store with their index rows; then runs a system-level
``$export`` through the FHIR core as a RIS connector (``system/*.rs``: the guard, the
audit and the job as served) and times it from the kick-off to the completed manifest,
three times. Prints resources per second (target: at least 20 000/s).
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from benchmarks.dataset import generate  # noqa: E402
from fhir_server.core.model import FhirRequest, Interaction, RequestContext  # noqa: E402
from fhir_server.interactions.bulk import run  # noqa: E402
from fhir_server.search.extract import extract  # noqa: E402
from fhir_server.security.principal import Principal  # noqa: E402
from fhir_server.security.scopes import parse_scopes  # noqa: E402
from fhir_server.server.dispatch import FhirServer  # noqa: E402
from fhir_server.store import open_store  # noqa: E402
from fhir_server.store.base import Stored  # noqa: E402

N = int(os.environ.get("BENCH_EXPORT_N", "100000"))
WORK = ROOT / ".work" / f"export-{N}"
TARGET = 20_000  # resources per second (issue 31)
CONNECTOR = Principal(sub="bench:ris", issuer="bench", roles=("ris",),
                      scopes=parse_scopes("system/*.rs"), name="bench connector")


def load(store: Any) -> float:
    began = time.perf_counter()
    batch: list[tuple[Stored, Any]] = []

    def flush() -> None:
        with store.write():
            for item, rows in batch:
                store.put(item, rows)
        batch.clear()

    for resource in generate(N):
        resource["meta"] = {"versionId": "1", "lastUpdated": "2026-11-22T00:00:00.000Z"}
        batch.append((Stored(resource["resourceType"], resource["id"], 1, 1, False,
                             orjson.dumps(resource), "POST"), extract(resource)))
        if len(batch) >= 2000:
            flush()
    if batch:
        flush()
    return time.perf_counter() - began


def export_once(server: FhirServer) -> tuple[float, int]:
    """Kick off, wait for the job, check the manifest: (seconds, resources)."""
    req = FhirRequest(Interaction.OPERATION, operation="export", method="GET",
                      headers={"prefer": "respond-async"},
                      context=RequestContext(principal=CONNECTOR, request_id="bench"))
    began = time.perf_counter()
    resp = server.handle(req)
    assert resp.status == 202, resp.resource
    job = resp.headers["Content-Location"].rsplit("=", 1)[1]
    thread = run._RUNNING.get(job)
    if thread is not None:
        thread.join()
    elapsed = time.perf_counter() - began
    poll = FhirRequest(Interaction.OPERATION, operation="export-poll-status", method="GET",
                       params=[("_jobId", job)],
                       context=RequestContext(principal=CONNECTOR, request_id="bench"))
    manifest = server.handle(poll)
    assert manifest.status == 200 and manifest.resource is not None, manifest.resource
    return elapsed, sum(o["count"] for o in manifest.resource["output"])


def main() -> None:
    fresh = not (WORK / "teleimagerie.db").exists()
    WORK.mkdir(parents=True, exist_ok=True)
    store = open_store(None, WORK)
    if fresh:
        print(f"loading {N} resources …", flush=True)
        print(f"  done in {load(store):.0f} s", flush=True)
    out = Path(tempfile.mkdtemp(prefix="bench-export-"))
    os.environ["TELEIMG_EXPORT_DIR"] = str(out)
    server = FhirServer(store)
    rates = []
    try:
        for _ in range(3):
            elapsed, count = export_once(server)
            assert count == N, f"exported {count} of {N}"
            rates.append(count / elapsed)
            print(f"  {count} resources in {elapsed:.2f} s: {count / elapsed:,.0f}/s",
                  flush=True)
    finally:
        shutil.rmtree(out, ignore_errors=True)
        store.close()
    median = statistics.median(rates)
    print(f"| $export, {N} resources, embedded store | {median:,.0f} resources/s "
          f"(best {max(rates):,.0f}) | target {TARGET:,}/s |")
    if median < TARGET:
        print("below the target", file=sys.stderr)


if __name__ == "__main__":
    main()
