"""``make bench-subscriptions`` (also run by ``make bench``): what subscription matching
costs a write (issue 31: at most 10 % with 1 000 active subscriptions).

On the embedded store, BENCH_SUBS_WRITES Patient creates (default 1500) go through the
core's create interaction (index extraction, one write unit) four ways, interleaved in
rounds so the machine's load hits each alike: no subscription matcher; the matcher with
1 000 active criteria subscriptions anchored on a value (``Patient?identifier=…``, each
another patient's: the common case); with 1 000 bounded ones
(``Patient?birthdate=lt<year>-01-01``, years 0 to 999: found by bisection); with 1 000
substring ones (``Patient?name:contains=zz<i>``: nothing to index, every predicate
evaluated on every write — the worst case).
None matches, so the cost measured is matching, not notifying. Results go to
``benchmarks/results/subscriptions-*.md``.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters.subscriptions.outbox import Notifier
from adapters.subscriptions.settings import SubscriptionSettings
from fhir_server.interactions.routing import route
from fhir_server.server.dispatch import FhirServer
from fhir_server.store import open_store
from fhir_server.store.versions import WriteObserver, store_version

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
WRITES = int(os.environ.get("BENCH_SUBS_WRITES", "1500"))
SUBSCRIPTIONS = int(os.environ.get("BENCH_SUBS_COUNT", "1000"))
ROUNDS = 5


def core(tmp: Path, criteria: str | None) -> FhirServer:
    server = FhirServer(open_store(None, tmp))
    if criteria is None:
        return server
    with server.store.write():
        for i in range(SUBSCRIPTIONS):
            store_version(None, server.store, "Subscription", f"s{i}", {
                "resourceType": "Subscription", "status": "active", "reason": "bench",
                "criteria": criteria.format(i=f"{i:04}"),
                "channel": {"type": "rest-hook", "endpoint": "https://hook.example/x"}},
                "PUT", None)
    server.write_observers.append(Timed(Notifier(SubscriptionSettings(
        hosts=("hook.example",)))))
    return server


class Timed:
    """The notifier, timed: what matching adds to each write, measured inside it (the
    shared machine's noise cancels out of this one)."""

    def __init__(self, inner: WriteObserver) -> None:
        self.inner = inner
        self.seconds = 0.0

    def __call__(self, *args: Any) -> None:
        started = time.perf_counter()
        self.inner(*args)
        self.seconds += time.perf_counter() - started


def writes(server: FhirServer, n: int, tag: str) -> float:
    """Seconds per create (mean over ``n``)."""
    started = time.perf_counter()
    for i in range(n):
        req = route("POST", "Patient", [], body={
            "resourceType": "Patient", "gender": "female", "birthDate": "1980-05-17",
            "identifier": [{"system": "urn:bench", "value": f"{tag}-{i}"}],
            "name": [{"family": "MARTIN", "given": ["Claire"]}]})
        resp = server.handle(req)
        assert resp.status == 201, resp.status
    return (time.perf_counter() - started) / n


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-subs-"))
    try:
        scenarios = {
            "none": core(tmp / "none", None),
            "anchored": core(tmp / "anchored", "Patient?identifier=urn:bench|other-{i}"),
            # each its own date: no two subscriptions share a condition
            "ranged": core(tmp / "ranged", "Patient?birthdate=lt{i}-01-01"),
            # a substring search: nothing to index, every predicate evaluated
            "scanned": core(tmp / "scanned", "Patient?name:contains=zz{i}"),
        }
        for name, server in scenarios.items():
            writes(server, 100, f"warm-{name}")  # caches, the registry loaded
        per: dict[str, list[float]] = {name: [] for name in scenarios}
        matching: dict[str, list[float]] = {name: [] for name in scenarios}
        for r in range(ROUNDS):
            for name, server in scenarios.items():
                timed = [o for o in server.write_observers if isinstance(o, Timed)]
                for o in timed:
                    o.seconds = 0.0
                per[name].append(writes(server, WRITES // ROUNDS, f"{name}-{r}"))
                matching[name].append(sum(o.seconds for o in timed) / (WRITES // ROUNDS))
        base = min(per["none"])
        lines = [f"# Subscription matching cost — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
                 "", f"{platform.node()}, Python {platform.python_version()}, load "
                 f"{os.getloadavg()[0]:.1f}; embedded store, {WRITES} Patient creates per "
                 f"scenario in {ROUNDS} interleaved rounds (best round), {SUBSCRIPTIONS} "
                 "active subscriptions, none matching. *matching* is the notifier's time "
                 "inside each write (measured in the write); *overhead* = matching / the "
                 "write without it.", "",
                 "| scenario | µs per write | matching µs | overhead | wall vs none |",
                 "|---|---:|---:|---:|---:|"]
        for name, values in per.items():
            value, spent = min(values), statistics.median(matching[name])
            lines.append(f"| {name} | {value * 1e6:.0f} | {spent * 1e6:.0f} | "
                         f"{spent / max(value - spent, 1e-9) * 100:.1f} % | "
                         f"{(value / base - 1) * 100:+.1f} % |")
        for server in scenarios.values():
            server.store.close()
        text = "\n".join(lines) + "\n"
        print(text)
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"subscriptions-{datetime.now(UTC):%Y%m%d-%H%M%S}.md").write_text(text)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
