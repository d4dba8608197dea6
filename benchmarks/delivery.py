"""``make bench-delivery`` (also run by ``make bench``): report delivery on the embedded
store with the audit on, against local peers (XDS.b repository, MLLP RIS, SMTP relay).

BENCH_DELIVERY_N requests (default 20) are carried to their final report through the
workflow (the report builds its N3 + N1 CDA and plans its deliveries in the same write
unit), then the sender works the outbox until every delivery is settled. Reports the
workflow rate and the deliveries sent per second. Results go to
``benchmarks/results/delivery-*.md``.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from tests.behaviour.test_report_delivery import Rig, final, qualify
from tests.conftest import make_store, secured_core

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
N = int(os.environ.get("BENCH_DELIVERY_N", "20"))


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
        lines = [
            f"# Report delivery benchmark — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            "", f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            "embedded store, audit on, local peers (XDS.b HTTP, MLLP, aiosmtpd)", "",
            f"- {N} requests carried to their final report over the in-process HTTP API "
            "(request, consents, accept, schedule, start, study, dose, report: the last "
            "write builds CDA N3 + N1 and plans the deliveries) in "
            f"{write:.2f} s: **{N / write:.1f} workflows/s**",
            f"- {delivered} deliveries sent in {send:.2f} s: **{delivered / send:.1f} "
            "deliveries/s** (one sender, sequential)", "",
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
