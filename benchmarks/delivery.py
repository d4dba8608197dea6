"""``make bench-delivery`` (also run by ``make bench``): report delivery on the embedded
store with the audit on, against local peers (XDS.b repository, MLLP RIS, SMTP relay).

BENCH_DELIVERY_N requests (default 20) are carried to their final report through the
workflow (the report builds its N3 + N1 CDA and plans its deliveries in the same write
unit), then the sender works the outbox until every delivery is settled. Reports the
workflow rate and the deliveries sent per second; then a DMP connector pulls the stored
documents over IHE MHD (ITI-67 searches by INS, ITI-68 retrieves of the CDA bytes) for
BENCH_MHD_SECONDS each (default 3). Results go to ``benchmarks/results/delivery-*.md``.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson

from tests.behaviour.test_report_delivery import INS, Rig, final, qualify
from tests.conftest import make_store, secured_core

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
N = int(os.environ.get("BENCH_DELIVERY_N", "20"))
MHD_SECONDS = float(os.environ.get("BENCH_MHD_SECONDS", "3"))


def rate(call: Callable[[], object]) -> float:
    """Calls per second of ``call`` over MHD_SECONDS (sequential)."""
    done, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < MHD_SECONDS:
        call()
        done += 1
    return done / elapsed


def mhd(rig: Rig) -> list[str]:
    """ITI-67 and ITI-68 as a DMP connector, through the transport-agnostic core (token
    validation, access, audit and rendering included; no HTTP): the server's own cost."""
    from fhir_server.interactions.routing import route, split_url
    from tests.conftest import mint

    # patient.identifier is a chain: it needs the Patient search right (issue 27)
    token = mint(rig.world.dir, ["dmp-connector"], ["system/DocumentReference.rs",
                                                    "system/Patient.rs", "system/Binary.r"])

    def call(url: str, accept: str = "application/fhir+json") -> bytes:
        path, params = split_url(url)
        req = route("GET", path, params, base_url="http://bench/fhir", headers={
            "authorization": f"Bearer {token}", "accept": accept})
        rendered = rig.core.render(req, rig.core.handle(req))
        assert rendered.status == 200, rendered.body[:300]
        return rendered.body

    find = ("DocumentReference?patient.identifier=urn:oid:1.2.250.1.213.1.4.8|"
            f"{INS}&status=current&_count=20")
    first = orjson.loads(call(find))
    url = first["entry"][0]["resource"]["content"][0]["attachment"]["url"]
    searches = rate(lambda: call(find))
    retrieves = rate(lambda: call(url, "application/hl7-cda+xml"))
    return [f"- MHD ITI-67 (`patient.identifier=INS&status=current`, {first['total']} "
            f"documents, pages of 20): **{searches:.0f} searches/s**; ITI-68 (Binary in "
            f"application/hl7-cda+xml): **{retrieves:.0f} retrieves/s** — core only "
            "(token, access, audit, rendering; no HTTP), one at a time"]


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-delivery-"))
    core = secured_core(make_store("sqlite", work), work)
    rig = Rig(core, work)
    try:
        qualify(rig.world)
        started = time.perf_counter()
        for _ in range(N):
            final(rig.world)
        write = time.perf_counter() - started
        outbox = rig.sender.outbox
        sent: Counter[str] = Counter()
        started = time.perf_counter()
        while True:
            examined = asyncio.run(rig.sender.run_once())
            if not examined or not outbox.find([("status", "requested")], limit=1):
                break
        send = time.perf_counter() - started
        for d in outbox.find([("_count", "1000")], limit=1000):
            sent[f"{d.channel} {d.state}"] += 1
        delivered = sum(v for k, v in sent.items() if k.endswith("envoye"))
        pulled = mhd(rig)
        lines = [
            f"# Report delivery benchmark — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            "", f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            "embedded store, audit on, local peers (XDS.b HTTP, MLLP, aiosmtpd)", "",
            f"- {N} requests carried to their final report over the in-process HTTP API "
            "(request, consents, accept, schedule, start, study, dose, report: the last "
            "write builds CDA N3 + N1 and plans the deliveries) in "
            f"{write:.2f} s: **{N / write:.1f} workflows/s**",
            f"- {delivered} deliveries sent in {send:.2f} s: **{delivered / send:.1f} "
            "deliveries/s** (one sender, sequential)", *pulled, "",
            "| channel state | count |", "|---|---|",
            *[f"| {k} | {v} |" for k, v in sorted(sent.items())]]
        text = "\n".join(lines) + "\n"
        print(text)
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"delivery-{datetime.now(UTC):%Y%m%d-%H%M}.md").write_text(text)
    finally:
        rig.close()
        if core.audit is not None:
            core.audit.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
