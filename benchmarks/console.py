"""The console's worklist measured in the browser (issue 30): ``python -m
benchmarks.console``.

Loads 10 000 open requests (ServiceRequest + its fulfilment Task as the workflow writes
them, 3 000 patients, 20 sites, the imager performer of all of them) straight into a
fresh embedded store with their index rows, starts ``teleimagerie serve`` on it, signs a
headless Chromium in as the imager (development sign-in) and loads the worklist: the
first page of 50 by due time, with the guarded ``_total`` of all 10 000. Prints the
browser's Navigation Timing (time to first byte, DOM ready, load) per case, median of
``CONSOLE_BENCH_RUNS`` (default 7), and the htmx refresh (the rows fragment) timed from
the page itself. Environment: CONSOLE_BENCH_N (default 10000), CONSOLE_BENCH_DATA (the
data directory of an earlier run, not loaded again).
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from fhir_server.search.extract import extract  # noqa: E402
from fhir_server.store import open_store  # noqa: E402
from fhir_server.store.base import Stored  # noqa: E402
from fhir_server.workflow import search as workflow_search  # noqa: E402
from fhir_server.workflow.machine import STATE_SYSTEM, STATES, TASK_SYSTEM  # noqa: E402

N = int(os.environ.get("CONSOLE_BENCH_N", "10000"))
RUNS = int(os.environ.get("CONSOLE_BENCH_RUNS", "7"))
PATIENTS, SITES = 3000, 20
OPEN = ["recue", "validee", "planifiee", "en-cours", "images-disponibles", "cr-preliminaire"]
MODALITIES = ["CT", "MR", "CR", "DX", "NM", "PT"]
RPPS = "urn:oid:1.2.250.1.71.4.2.1"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
EXT = "https://teleimagerie.fr/fhir/StructureDefinition/"
IMAGER = "810000000101"


def _resources(rnd: random.Random) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    out: list[dict[str, Any]] = [
        {"resourceType": "Practitioner", "id": "im", "identifier": [
            {"system": RPPS, "value": IMAGER}], "name": [{"family": "IMAGEUR",
                                                         "given": ["Anne"]}]},
        {"resourceType": "Practitioner", "id": "req", "name": [{"family": "DEMANDEUR"}]}]
    out += [{"resourceType": "Organization", "id": f"site{s}", "name": f"Site {s:02d}",
             "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.2",
                             "value": f"7500{s:05d}"}]} for s in range(SITES)]
    out += [{"resourceType": "Patient", "id": f"p{p}", "gender": rnd.choice(["female", "male"]),
             "birthDate": f"19{rnd.randint(30, 99)}-0{rnd.randint(1, 9)}-1{rnd.randint(0, 9)}",
             "name": [{"use": "official", "family": f"PATIENT{p:05d}", "given": ["Bench"]}]}
            for p in range(PATIENTS)]
    for i in range(N):
        state, modality = rnd.choice(OPEN), rnd.choice(MODALITIES)
        authored = now - timedelta(minutes=rnd.randint(0, 3 * 24 * 60))
        due = authored + timedelta(hours=rnd.choice([1, 4, 24, 72]))
        patient, site = f"Patient/p{rnd.randrange(PATIENTS)}", f"Organization/site{i % SITES}"
        out.append({
            "resourceType": "ServiceRequest", "id": f"sr{i}", "status": "active",
            "intent": "order", "priority": rnd.choice(["routine", "urgent", "stat"]),
            "extension": [{"url": f"{EXT}tlm-modality", "valueCoding": {"system": DCM,
                                                                          "code": modality}}],
            "code": {"text": f"Examen {modality} {i}"}, "subject": {"reference": patient},
            "authoredOn": authored.isoformat(timespec="seconds"),
            "requester": {"reference": "Practitioner/req"},
            "performer": [{"reference": site}, {"reference": "Practitioner/im"}]})
        out.append({
            "resourceType": "Task", "id": f"t{i}", "status": STATES[state].task_status,
            "businessStatus": {"coding": [{"system": STATE_SYSTEM, "code": state}]},
            "intent": "order", "priority": out[-1]["priority"],
            "code": {"coding": [{"system": TASK_SYSTEM, "code": "realisation-interpretation"}]},
            "focus": {"reference": f"ServiceRequest/sr{i}"},
            "basedOn": [{"reference": f"ServiceRequest/sr{i}"}],
            "for": {"reference": patient}, "authoredOn": authored.isoformat(timespec="seconds"),
            "restriction": {"period": {"end": due.isoformat(timespec="seconds")}},
            "input": [{"type": {"coding": [{"system": TASK_SYSTEM, "code": "modalite"}]},
                       "valueCoding": {"system": DCM, "code": modality}},
                      {"type": {"coding": [{"system": TASK_SYSTEM, "code": "site"}]},
                       "valueReference": {"reference": site}}]})
    return out


def load(data: Path) -> float:
    """The data set, straight into the store with its index rows (as the workflow would
    have written it; the benchmark is of the reading)."""
    workflow_search.register_all()
    store = open_store(None, data)
    began = time.perf_counter()
    resources = _resources(random.Random(30))
    for start in range(0, len(resources), 2000):
        with store.write():
            for resource in resources[start:start + 2000]:
                resource["meta"] = {"versionId": "1", "lastUpdated": datetime.now(UTC)
                                    .isoformat(timespec="seconds")}
                store.put(Stored(resource["resourceType"], resource["id"], 1, 1, False,
                                 orjson.dumps(resource), "POST"), extract(resource))
    store.close()
    return time.perf_counter() - began


TIMING = """const t = performance.getEntriesByType('navigation')[0];
return [t.responseStart - t.requestStart, t.domContentLoadedEventEnd, t.loadEventEnd,
        document.querySelectorAll('#demandes tbody tr[data-request]').length,
        (document.getElementById('compte') || {}).textContent];"""
# the htmx refresh, timed in the page: the rows fragment fetched and swapped
REFRESH = """const done = arguments[arguments.length - 1];
const began = performance.now();
document.body.addEventListener('htmx:afterSwap', function once() {
  document.body.removeEventListener('htmx:afterSwap', once);
  done(performance.now() - began);
});
htmx.ajax('GET', document.getElementById('liste').getAttribute('hx-get'),
          {target: '#liste', swap: 'outerHTML'});"""


def main() -> None:
    from selenium.webdriver.common.by import By

    from tests.browser.harness import browser_paths, chrome
    from tests.e2e.harness import free_port, server_env, start, stop

    paths = browser_paths()
    if isinstance(paths, str):
        raise SystemExit(paths)
    kept = os.environ.get("CONSOLE_BENCH_DATA")  # a data dir of an earlier run, reused
    work = Path(kept).parent if kept else Path(tempfile.mkdtemp(prefix="console-bench-"))
    if not kept:
        print(f"loading {N} open requests ({PATIENTS} patients) …", flush=True)
        print(f"  done in {load(work / 'data'):.1f} s (CONSOLE_BENCH_DATA={work / 'data'} "
              "reuses it)", flush=True)
    http = free_port()
    proc = start(server_env(work / "data", http, TELEIMG_CONSOLE_POLL_SECONDS="3600"),
                 log=work / "server.log")
    driver = chrome(*paths)
    base = f"http://127.0.0.1:{http}/console"
    try:
        driver.get(f"{base}/connexion")
        driver.find_element(By.CSS_SELECTOR, 'button[data-role="remote-imager"]').click()
        driver.implicitly_wait(30)
        driver.find_element(By.ID, "demandes")
        cases = {"worklist, open requests (first 50 by due time)": "/demandes",
                 "worklist, one modality (CT)": "/demandes?modalite=CT",
                 "worklist, one site": "/demandes?site=site3",
                 "worklist, late only": "/demandes?retard=1"}
        print(f"\n| {N} open requests, Chromium headless | TTFB ms | DOM ready ms | "
              "load ms | rows | count |")
        print("|---|---:|---:|---:|---:|---|")
        for name, path in cases.items():
            runs = []
            for _ in range(RUNS):
                driver.get(base + path)
                runs.append(driver.execute_script(TIMING))
            med = [statistics.median(r[k] for r in runs) for k in range(3)]
            print(f"| {name} | {med[0]:.0f} | {med[1]:.0f} | {med[2]:.0f} | {runs[-1][3]} | "
                  f"{(runs[-1][4] or '').strip()} |", flush=True)
        driver.get(base + "/demandes")
        driver.set_script_timeout(60)
        refresh = [driver.execute_async_script(REFRESH) for _ in range(RUNS)]
        print(f"| live refresh (htmx rows fragment, in the page) | | | "
              f"{statistics.median(refresh):.0f} | | |")
    finally:
        driver.quit()
        stop(proc)


if __name__ == "__main__":
    main()
