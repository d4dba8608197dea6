"""Benchmark of ``$indicators`` (issue 5, R-EVAL-1) on 100 000 requests: ``make
bench-indicators``.

Loads (once, cached under ``benchmarks/.work``) 100 000 request Tasks as the workflow
writes them — states, owners, sites, modalities, refusal reasons, turnaround, late flags
— and their reports (remote ones tagged, plus on-site reports), straight into the
embedded store with their index rows; then times the operation through the FHIR core,
unfiltered, with each filter and with the console's monthly series (issue 30), and
prints milliseconds per call; ``python -m benchmarks.indicators answers.json`` also
writes the answers (to compare two versions of the operation).
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from fhir_server.core.model import FhirRequest, Interaction  # noqa: E402
from fhir_server.search.extract import extract  # noqa: E402
from fhir_server.server.dispatch import FhirServer  # noqa: E402
from fhir_server.store import open_store  # noqa: E402
from fhir_server.store.base import Stored  # noqa: E402
from fhir_server.workflow.engine import Workflow  # noqa: E402
from fhir_server.workflow.machine import (  # noqa: E402
    EXT_LATE,
    EXT_TURNAROUND,
    FLAG_SYSTEM,
    REFUSAL_SYSTEM,
    STATE_SYSTEM,
    STATES,
    TASK_SYSTEM,
)

N = 100_000
WORK = ROOT / ".work" / f"indicators-{N}"
IMAGERS, SITES = 40, 20
MODALITIES = ["CT", "MR", "CR", "DX", "NM", "PT", "XA"]
REASONS = ["indication-non-justifiee", "informations-insuffisantes", "doublon",
           "contre-indication", "realisation-distance-impossible"]


def _task(i: int, rnd: random.Random) -> tuple[dict[str, Any], str | None]:
    kind = "teleexpertise" if rnd.random() < 0.1 else "realisation-interpretation"
    roll = rnd.random()
    state = ("cr-definitif" if roll < 0.7 else "refusee" if roll < 0.78 else
             "annulee" if roll < 0.81 else rnd.choice(["recue", "validee", "planifiee",
                                                       "images-disponibles"]))
    imager = f"Practitioner/im{rnd.randrange(IMAGERS)}"
    day = f"2026-{rnd.randint(1, 11):02d}-{rnd.randint(1, 28):02d}T10:00:00Z"
    task: dict[str, Any] = {
        "resourceType": "Task", "id": f"t{i}", "status": STATES[state].task_status,
        "businessStatus": {"coding": [{"system": STATE_SYSTEM, "code": state}]},
        "intent": "order", "authoredOn": day,
        "code": {"coding": [{"system": TASK_SYSTEM, "code": kind}]},
        "focus": {"reference": f"ServiceRequest/sr{i}"},
        "for": {"reference": f"Patient/p{rnd.randrange(N // 3)}"},
        "restriction": {"period": {"end": day}},
        "input": [{"type": {"coding": [{"system": TASK_SYSTEM, "code": "modalite"}]},
                   "valueCoding": {"system": "http://dicom.nema.org/resources/ontology/DCM",
                                   "code": rnd.choice(MODALITIES)}},
                  {"type": {"coding": [{"system": TASK_SYSTEM, "code": "site"}]},
                   "valueReference": {"reference": f"Organization/site{rnd.randrange(SITES)}"}}],
    }
    if state not in ("recue", "refusee", "annulee"):
        task["owner"] = {"reference": imager}
    if state == "refusee":
        task["statusReason"] = {"coding": [{"system": REFUSAL_SYSTEM,
                                            "code": rnd.choice(REASONS)}], "text": "bench"}
    if state == "cr-definitif":
        steps = {"validation": rnd.expovariate(1 / 30), "examen": rnd.expovariate(1 / 240),
                 "interpretation": rnd.expovariate(1 / 60)}
        steps["total"] = sum(steps.values())
        task["extension"] = [
            {"url": EXT_TURNAROUND, "extension": [
                {"url": k, "valueQuantity": {"value": round(v, 1), "unit": "min",
                                             "system": "http://unitsofmeasure.org",
                                             "code": "min"}} for k, v in steps.items()]},
            {"url": EXT_LATE, "valueBoolean": steps["total"] > 24 * 60}]
        return task, imager
    return task, None


def _report(i: int, imager: str, remote: bool) -> dict[str, Any]:
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport", "id": f"dr{i}", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "18748-4"}]},
        "performer": [{"reference": imager}], "effectiveDateTime": "2026-06-01T10:00:00Z"}
    if remote:
        report["meta"] = {"tag": [{"system": FLAG_SYSTEM, "code": "teleimagerie"}]}
    return report


def _flush(store: Any, batch: list[tuple[Stored, Any]]) -> None:
    with store.write():
        for item, rows in batch:
            store.put(item, rows)
    batch.clear()


def load(store: Any) -> float:
    rnd = random.Random(5)
    began = time.perf_counter()
    batch: list[tuple[Stored, Any]] = []
    reports = 0

    def add(resource: dict[str, Any]) -> None:
        resource["meta"] = {"versionId": "1", "lastUpdated": "2026-11-22T00:00:00Z",
                            **resource.get("meta", {})}
        batch.append((Stored(resource["resourceType"], resource["id"], 1, 1, False,
                             orjson.dumps(resource), "POST"), extract(resource)))
        if len(batch) >= 2000:
            _flush(store, batch)

    for i in range(N):
        task, imager = _task(i, rnd)
        add(task)
        if imager:
            add(_report(reports, imager, True))
            reports += 1
        if rnd.random() < 0.4:  # on-site activity of the same imagers
            add(_report(reports, f"Practitioner/im{rnd.randrange(IMAGERS)}", False))
            reports += 1
    _flush(store, batch)
    return time.perf_counter() - began


def main() -> None:
    fresh = not (WORK / "teleimagerie.db").exists()
    WORK.mkdir(parents=True, exist_ok=True)
    store = open_store(None, WORK)
    server = FhirServer(store, workflow=Workflow())
    if fresh:
        print(f"loading {N} request Tasks and their reports …", flush=True)
        print(f"  done in {load(store):.0f} s")
    cases: dict[str, list[tuple[str, str]]] = {
        "whole year": [], "one site": [("site", "Organization/site3")],
        "one imager": [("imager", "Practitioner/im7")], "one modality": [("modality", "CT")],
        "one month": [("start", "2026-03-01"), ("end", "2026-04-01")],
        "whole year, monthly series (console)": [("series", "month")]}
    dump = {}
    began = time.perf_counter()  # a database of an older version fills its summaries
    filled = 0
    while n := store.fill_summaries():
        filled += n
    if filled:
        print(f"summary rows filled for {filled} resources stored before them: "
              f"{time.perf_counter() - began:.0f} s")
    print("| $indicators on 100 000 requests | median ms | min ms | CPU ms (median) |")
    print("|---|---:|---:|---:|")
    for name, params in cases.items():
        times, cpu = [], []
        for _ in range(5):
            query = {"start": "2026-01-01", "end": "2027-01-01", **dict(params)}
            req = FhirRequest(Interaction.OPERATION, operation="indicators",
                              params=list(query.items()))
            began, used = time.perf_counter(), time.process_time()
            resp = server.handle(req)
            times.append((time.perf_counter() - began) * 1000)
            cpu.append((time.process_time() - used) * 1000)
            assert resp.status == 200, resp.resource
        dump[name] = resp.resource
        print(f"| {name} | {statistics.median(times):.0f} | {min(times):.0f} | "
              f"{statistics.median(cpu):.0f} |", flush=True)
    store.close()
    if len(sys.argv) > 1:  # the answers, to compare two versions of the operation
        Path(sys.argv[1]).write_bytes(orjson.dumps(dump, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
