"""``make bench-validation``: µs of CPU to validate one resource on the write path (issue
32, ADR 0027) — ``validate_resource`` (the base specification: the element-wise walk and,
where it cannot vouch, the R4B model) and ``ProfileRegistry.check_write`` (the profiles) —
per resource type, on realistic resources: those an HL7 ORM^O01 makes (captured from the
adapter), our profiles' valid examples, the scale data set's and the create scenario's.

Before and after in the same run: ``--against REV`` (default ``BENCH_VALIDATION_AGAINST``)
measures the tree of ``REV`` (``git archive``) in alternation with this one, each in its
own process, and keeps each figure's best round. It also reports the share of a create
(``FhirServer.handle``, embedded store) spent in validation. Results go to
``benchmarks/results/validation-*.md``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
RESULTS = ROOT / "results"
ROUNDS = int(os.environ.get("BENCH_VALIDATION_ROUNDS", "3"))

# run in the measured tree (its own ``fhir_server``), so it uses only what both trees have
MEASURE = r"""
import json, sys, tempfile, time, uuid
from pathlib import Path
from fhir_server.validation.resource import validate_resource
from fhir_server.validation.registry import DEFAULT_REQUIRED, ProfileRegistry

corpus = json.loads(Path(sys.argv[1]).read_text())
mode = sys.argv[2]
registry = ProfileRegistry(DEFAULT_REQUIRED)

def cost(fn, n):
    fn()
    best = float("inf")
    for _ in range(3):
        began = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, (time.process_time() - began) / n * 1e6)
    return best

out = {}
if mode == "validate":
    for label, resource in corpus:
        base = cost(lambda: validate_resource(resource), 200)
        whole = cost(lambda: (validate_resource(resource), registry.check_write(resource)), 200)
        out.setdefault(resource["resourceType"], []).append([base, whole])
else:
    from fhir_server.core.model import FhirRequest, Interaction
    from fhir_server.server.dispatch import FhirServer
    from fhir_server.store import open_store
    with tempfile.TemporaryDirectory() as folder:
        server = FhirServer(open_store(None, Path(folder)))
        for label, resource in corpus:
            rtype = resource["resourceType"]
            def create():
                body = {k: v for k, v in resource.items() if k not in ("id", "meta")}
                return server.handle(FhirRequest(Interaction.CREATE, resource_type=rtype,
                                                 body=body))
            if create().status != 201:
                continue
            validation = cost(lambda: (validate_resource(resource),
                                       server.profiles.check_write(resource)), 100)
            began, wall = time.process_time(), time.perf_counter()
            for _ in range(100):
                create()
            cpu = (time.process_time() - began) / 100 * 1e6
            out.setdefault(rtype, []).append([validation, cpu,
                                              (time.perf_counter() - wall) / 100 * 1e6])
        server.store.close()
print(json.dumps(out))
"""


def corpus() -> list[tuple[str, dict[str, Any]]]:
    """(source, resource): an ORM^O01 NW's resources as the adapter validates them, our
    profiles' valid examples, one resource per type of the scale data set, the create
    scenario's Patient."""
    from benchmarks.dataset import generate
    from benchmarks.run import BENCH_PATIENT

    out = [("hl7", r) for r in hl7_resources()]
    out += [("example", json.loads(p.read_text()))
            for p in sorted((REPO / "profiles" / "examples").glob("*--valid.json"))]
    seen: set[str] = set()
    for resource in generate(200):
        if resource["resourceType"] not in seen:
            seen.add(resource["resourceType"])
            out.append(("dataset", resource))
    out.append(("bench-patient", json.loads(BENCH_PATIENT)))
    return [(source, r) for source, r in out if accepted(r)]


def accepted(resource: dict[str, Any]) -> bool:
    """Valid under the default policy: the figures are those of resources that are
    stored (the scale data set's requests, studies and reports lack what our required
    profiles ask)."""
    from fhir_server.core.errors import FhirError
    from fhir_server.validation.registry import DEFAULT_REQUIRED, ProfileRegistry
    from fhir_server.validation.resource import validate_resource

    try:
        validate_resource(copy.deepcopy(resource))
        ProfileRegistry(DEFAULT_REQUIRED).check_write(resource)
    except FhirError:
        return False
    return True


def hl7_resources() -> list[dict[str, Any]]:
    """What one ORM^O01 NW (benchmarks/hl7.py's message) hands to ``base_issues`` on its
    way to the store, captured from the adapter on a secured core."""
    import fhir_server.store.versions as versions
    import fhir_server.validation.resource as resource_module
    from benchmarks.hl7 import message
    from tests.behaviour.hl7_world import Hl7World
    from tests.conftest import make_store, secured_core

    seen: list[dict[str, Any]] = []
    original = resource_module.base_issues

    def capture(body: dict[str, Any], rtype: str) -> Any:
        seen.append(copy.deepcopy(body))
        return original(body, rtype)

    with tempfile.TemporaryDirectory() as folder:
        store = make_store("sqlite", Path(folder))
        core = secured_core(store, Path(folder))
        world = Hl7World(core, Path(folder))
        resource_module.base_issues = capture  # type: ignore[assignment]
        versions.base_issues = capture  # type: ignore[attr-defined]
        try:
            world.send(message(1))
        finally:
            resource_module.base_issues = original
            versions.base_issues = original  # type: ignore[attr-defined]
            assert core.audit is not None
            core.audit.close()
            store.close()
    return seen


def measure(tree: Path, corpus_file: Path, mode: str) -> dict[str, list[list[float]]]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, "-c", MEASURE, str(corpus_file), mode], cwd=tree,
                          env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"measuring {tree} failed:\n{done.stderr[-2000:]}")
    out = done.stdout
    result: dict[str, list[list[float]]] = json.loads(out.strip().splitlines()[-1])
    return result


def best(runs: list[dict[str, list[list[float]]]]) -> dict[str, list[float]]:
    """Per type: each column's mean over the samples, best round."""
    out: dict[str, list[float]] = {}
    for run in runs:
        for rtype, samples in run.items():
            means = [sum(col) / len(col) for col in zip(*samples, strict=True)]
            old = out.get(rtype)
            out[rtype] = means if old is None else [min(a, b) for a, b in
                                                    zip(old, means, strict=True)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default=os.environ.get("BENCH_VALIDATION_AGAINST"),
                        help="a git revision to measure in the same run (before)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        corpus_file = work / "corpus.json"
        items = corpus()
        corpus_file.write_text(json.dumps(items))
        trees = {"after": REPO}
        if args.against:
            before = work / "before"
            before.mkdir()
            archive = subprocess.run(["git", "archive", args.against], cwd=REPO,
                                     capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
            trees = {"before": before, **trees}
        runs: dict[str, dict[str, list[dict[str, list[list[float]]]]]] = {
            name: {"validate": [], "create": []} for name in trees}
        for _ in range(ROUNDS):  # alternate, so both trees see the same machine load
            for name, tree in trees.items():
                for mode in ("validate", "create"):
                    runs[name][mode].append(measure(tree, corpus_file, mode))
    report(items, {name: {mode: best(r) for mode, r in modes.items()}
                   for name, modes in runs.items()}, args.against)


def report(items: list[tuple[str, dict[str, Any]]],
           figures: dict[str, dict[str, dict[str, list[float]]]], against: str | None) -> None:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                          capture_output=True, text=True).stdout.strip()
    counts: dict[str, int] = {}
    for _, r in items:
        counts[r["resourceType"]] = counts.get(r["resourceType"], 0) + 1
    lines = [f"# Validation micro-benchmark — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
             "", f"{platform.machine()}, {os.cpu_count()} cores, Python "
             f"{platform.python_version()}; after = {head}"
             + (f", before = {against}" if against else "")
             + f"; load average {os.getloadavg()[0]:.1f}; best of {ROUNDS} alternating "
             "rounds, µs of CPU per resource (mean over the samples of the type)", "",
             "| type | samples | before: base | before: base + profiles | after: base | "
             "after: base + profiles | gain |", "|---|---:|---:|---:|---:|---:|---:|"]
    after = figures["after"]["validate"]
    before = figures.get("before", {}).get("validate", {})
    for rtype in sorted(after):
        b = before.get(rtype)
        a = after[rtype]
        gain = f"×{b[1] / a[1]:.1f}" if b else ""
        lines.append(f"| {rtype} | {counts[rtype]} | {b[0]:.0f} | {b[1]:.0f} | {a[0]:.0f} | "
                     f"{a[1]:.0f} | {gain} |" if b else
                     f"| {rtype} | {counts[rtype]} | | | {a[0]:.0f} | {a[1]:.0f} | |")
    lines += ["", "Share of a create (``FhirServer.handle``, embedded SQLite store, no audit) "
              "spent in validation (µs of CPU; wall µs includes the commit's fsync):", "",
              "| type | tree | validation | create CPU | share of CPU | create wall |",
              "|---|---|---:|---:|---:|---:|"]
    for name in figures:
        for rtype, (validation, cpu, wall) in sorted(figures[name]["create"].items()):
            lines.append(f"| {rtype} | {name} | {validation:.0f} | {cpu:.0f} | "
                         f"{100 * validation / cpu:.0f} % | {wall:.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"validation-{datetime.now(UTC):%Y%m%d-%H%M}.md").write_text(text)


if __name__ == "__main__":
    main()
