"""``make bench-hl7`` (also run by ``make bench``): ORM^O01 NW -> FHIR committed -> AA over
MLLP, end to end, on the embedded store with the audit on (production settings).

The listener runs as ``teleimagerie hl7 listen`` in its own process; each message is a
new order for a new patient (Patient, PractitionerRole and directory lookups, request,
3 Observations, the workflow Task, the message store, AuditEvents). Measured with one
connection sending and waiting (latency) and with BENCH_HL7_CONNECTIONS concurrent
connections (throughput). Results go to ``benchmarks/results/hl7-*.md``.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters.hl7v2.message import Message
from adapters.hl7v2.mllp import MllpClient
from tests.behaviour.hl7_world import orm, pid

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
SECONDS = float(os.environ.get("BENCH_SECONDS", "10"))
CONNECTIONS = int(os.environ.get("BENCH_HL7_CONNECTIONS", "8"))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def message(i: int, enhanced: bool = False) -> bytes:
    ins = f"1{i:014d}"
    return orm(control=f"B{i}", placer=f"BENCH-{i}",
               patient=pid(ins=ins, ipp=f"IPP{i}", family=f"NOM{i}"),
               ack_types=("AL", "NE") if enhanced else ("", ""))


async def _connection(port: int, start: int, step: int, until: float,
                      latencies: list[float], errors: list[str], enhanced: bool) -> None:
    async with MllpClient("127.0.0.1", port, timeout=60) as client:
        i = start
        while time.perf_counter() < until:
            t = time.perf_counter()
            ack = Message(await client.send(message(i, enhanced)))
            latencies.append(time.perf_counter() - t)
            if ack.require("MSA").get(1) != ("CA" if enhanced else "AA"):
                errors.append(ack.raw.decode(errors="replace")[:300])
            i += step


def _backlog(data: Path) -> int:
    """Messages committed in enhanced mode and not processed yet (read from the store)."""
    from adapters.hl7v2.records import MessageStore
    from fhir_server.config import Settings
    from teleimagerie.wiring import build_core

    os.environ["TELEIMG_DATA_DIR"] = str(data)
    return len(MessageStore(build_core(Settings.from_env())).find(
        [("hl7-status", "received")], limit=100_000))


async def scenario(port: int, connections: int, offset: int, enhanced: bool = False,
                   data: Path | None = None) -> dict[str, Any]:
    latencies: list[float] = []
    errors: list[str] = []
    begin = time.perf_counter()
    until = begin + SECONDS
    await asyncio.gather(*(_connection(port, offset + c, connections, until, latencies,
                                       errors, enhanced) for c in range(connections)))
    elapsed = time.perf_counter() - begin
    processed_per_s = None
    if enhanced and data is not None:  # the worker's own rate, once the backlog is gone
        while await asyncio.to_thread(_backlog, data):
            await asyncio.sleep(0.5)
        processed_per_s = len(latencies) / (time.perf_counter() - begin)
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    if errors:
        print(f"{len(errors)} non-AA answers, first: {errors[0]}", file=sys.stderr)
    return {"mode": "enhanced (CA)" if enhanced else "original (AA)",
            "connections": connections, "messages": len(latencies),
            "processed_per_s": processed_per_s,
            "msg_per_s": len(latencies) / elapsed, "p50_ms": q[49] * 1000,
            "p95_ms": q[94] * 1000, "p99_ms": q[98] * 1000, "errors": len(errors)}


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-hl7-"))
    port = _port()
    env = {**os.environ, "TELEIMG_DATA_DIR": str(work), "TELEIMG_MLLP_PORT": str(port),
           "TELEIMG_LOG_LEVEL": "warning"}
    proc = subprocess.Popen([sys.executable, "-m", "teleimagerie.cli", "hl7", "listen"],
                            env=env, cwd=ROOT.parent)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("listener did not start") from None
                time.sleep(0.2)
        rows = [asyncio.run(scenario(port, 1, 0)),
                asyncio.run(scenario(port, CONNECTIONS, 10_000_000)),
                asyncio.run(scenario(port, CONNECTIONS, 20_000_000, True, work))]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    info = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
            "platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "seconds_per_scenario": SECONDS, "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    lines = [f"# make bench-hl7 {info['date']}", "", "ORM^O01 NW over MLLP, embedded store, "
             "audit on, one listener process. Original mode: ACK after FHIR committed. "
             "Enhanced mode: CA once the message is durably kept; *processed/s* counts "
             "until the worker has committed every message's FHIR effects.", "",
             "| mode | connections | messages | ACK/s | processed/s | p50 ms | p95 ms | "
             "p99 ms | errors |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['mode']} | {r['connections']} | {r['messages']} | {r['msg_per_s']:.0f} "
              f"| {r['processed_per_s'] or r['msg_per_s']:.0f} | {r['p50_ms']:.1f} | "
              f"{r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} |" for r in rows]
    text = "\n".join(lines) + "\n"
    (RESULTS / f"hl7-{stamp}.md").write_text(text + "\n```\n" + json.dumps(info, indent=1)
                                             + "\n```\n")
    print(text)


if __name__ == "__main__":
    main()
