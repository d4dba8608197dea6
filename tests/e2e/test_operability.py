"""Operability end to end (issue 29): ``teleimagerie serve`` with two workers, its MLLP,
DICOM and delivery listeners, JSON logs and the metrics server — health and readiness
(flipping when a listener hangs or the store file goes), metrics after a scripted
HL7 + HTTP + DICOM run, JSON log lines carrying the request id the response header and
the AuditEvent carry, and no patient identifier or name anywhere in the run's logs."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from pydicom import dcmread
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from adapters.hl7v2.message import Message
from adapters.hl7v2.mllp import MllpClient
from fhir_server.security.devissuer import DevIssuer
from tests.behaviour.dicom_world import ct_images, write
from tests.behaviour.hl7_world import orm, pid
from tests.e2e.harness import ROOT, free_port, server_env, start, stop

pytestmark = pytest.mark.e2e
# the patients of the run: none of these may reach a log line (R-SEC-6)
HL7_PATIENT = {"ins": "183057512345612", "ipp": "IPPZ7781", "family": "QUIMPERLE",
               "given": "Eulalie", "born": "19620314"}
HTTP_PATIENT = {"family": "ZORGLUBIAN", "given": "Berthilde", "birthDate": "1971-09-23",
                "ipp": "IPPHTTP5531"}
DICOM_NAME = "CompressedSamples"  # CT_small's PatientName, kept in the CT headers sent


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    data = tmp_path_factory.mktemp("ops")
    http_port, mllp_port, dicom_port, metrics_port = (free_port() for _ in range(4))
    env = server_env(data, http_port, TELEIMG_MLLP_PORT=str(mllp_port),
                     TELEIMG_DICOM_PORT=str(dicom_port), TELEIMG_DICOM_AE_TITLE="TLR-SCP",
                     TELEIMG_DICOM_ALLOWED_AES="MODALITE1",
                     TELEIMG_METRICS_PORT=str(metrics_port), TELEIMG_LOG_FORMAT="json",
                     TELEIMG_LOG_LEVEL="info", TELEIMG_HEARTBEAT_MAX_AGE="3")
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = data.parent / f"{data.name}.log"

    def listening() -> bool:
        for port in (mllp_port, dicom_port):
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
        return True

    proc = start(env, workers=2, ready=listening, log=log, access_log=True)
    token = DevIssuer(data).mint(sub="e2e:ris", roles=["ris"], scopes=["system/*.cruds"])
    api = httpx.Client(base_url=f"http://127.0.0.1:{http_port}",
                       headers={"Authorization": f"Bearer {token}"}, timeout=30)
    try:
        yield {"api": api, "data": data, "log": log, "mllp": mllp_port, "dicom": dicom_port,
               "metrics": f"http://127.0.0.1:{metrics_port}/metrics",
               "base": f"http://127.0.0.1:{http_port}"}
    finally:
        stop(proc)


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(url, timeout=30).text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(v for (n, ls), v in samples.items()
               if n == name and set(labels.items()) <= ls)


def ready(base: str) -> httpx.Response:
    return httpx.get(f"{base}/health/ready", timeout=10)


def wait_for(base: str, status: int, timeout: float = 20.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        answer = ready(base)
        if answer.status_code == status or time.monotonic() > deadline:
            return answer
        time.sleep(0.3)


def test_live_and_ready_without_a_token(system: dict[str, Any]) -> None:
    live = httpx.get(f"{system['base']}/health/live", timeout=10)
    assert live.status_code == 200 and live.json() == {"status": "live"}
    answer = wait_for(system["base"], 200)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "ready"
    assert {name: c["state"] for name, c in body["components"].items()} == {
        "store": "up", "audit": "up", "mllp": "up", "delivery": "up", "dicom": "up",
        "disk": "up"}
    # the metrics are not on the public port
    assert httpx.get(f"{system['base']}/metrics", timeout=10).status_code == 404


def test_metrics_count_a_scripted_hl7_http_dicom_run(system: dict[str, Any]) -> None:
    api: httpx.Client = system["api"]
    before = scrape(system["metrics"])
    # HL7: an ORM^O01 accepted and garbage refused, on one connection
    message = orm(control="ops1", placer="OPS-1", patient=pid(**HL7_PATIENT))

    async def send() -> list[bytes]:
        async with MllpClient("127.0.0.1", system["mllp"], timeout=30) as client:
            return [await client.send(m) for m in (message, b"MSH|^~\\&|X")]

    acks = [Message(a).require("MSA").get(1) for a in asyncio.run(send())]
    assert acks == ["AA", "AE"]
    # HTTP: a create and three reads
    created = api.post("/fhir/Patient", json={
        "resourceType": "Patient", "gender": "female", "birthDate": HTTP_PATIENT["birthDate"],
        "name": [{"family": HTTP_PATIENT["family"], "given": [HTTP_PATIENT["given"]]}],
        "identifier": [{"system": "urn:oid:1.2.250.1.999.2",
                        "value": HTTP_PATIENT["ipp"]}]})
    assert created.status_code == 201, created.text
    for _ in range(3):
        assert api.get(f"/fhir/Patient/{created.json()['id']}").status_code == 200
    # DICOM: one association, two instances
    ae = AE(ae_title="MODALITE1")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", system["dicom"], ae_title="TLR-SCP")
    assert assoc.is_established
    files = [write(ds, system["data"] / "in") for ds in ct_images(generate_uid(), 2)]
    statuses = [assoc.send_c_store(dcmread(f)).Status for f in files]
    assoc.release()
    assert statuses == [0, 0]
    time.sleep(1.0)  # the released event is handled in the SCP's thread

    after = scrape(system["metrics"])

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("teleimg_hl7_messages_total", message_type="ORM", event="O01",
                 ack_code="AA") == 1
    assert delta("teleimg_hl7_messages_total", message_type="other", ack_code="AE") == 1
    assert delta("teleimg_mllp_connections_total") == 1
    assert delta("teleimg_http_requests_total", interaction="create", type="Patient",
                 status="201") == 1
    assert delta("teleimg_http_requests_total", interaction="read", type="Patient",
                 status="200") == 3
    assert delta("teleimg_http_request_duration_seconds_count", interaction="read",
                 type="Patient") == 3
    assert delta("teleimg_dicom_associations_total", event="accepted") == 1
    assert delta("teleimg_dicom_associations_total", event="released") == 1
    assert delta("teleimg_dicom_instances_total", outcome="stored") == 2
    assert delta("teleimg_audit_records_appended_total") >= 4  # create, reads, HL7, DICOM
    assert delta("teleimg_store_write_duration_seconds_count") >= 2
    assert value(after, "teleimg_ready_all") == 1
    assert value(after, "teleimg_ready", component="mllp") == 1
    # scrape-time gauges, every delivery channel and HL7 state present
    for channel in ("dmp", "ris", "mssante"):
        assert (("teleimg_dead_letters", frozenset({("queue", "delivery"),
                                                    ("channel", channel)}))) in after
    assert value(after, "teleimg_queue_items", queue="hl7", state="dead") == 0
    assert ("teleimg_audit_index_backlog", frozenset()) in after
    # no label value is an id: the created Patient's id, the placer, the UIDs
    labels = {v for (_, ls) in after for _, v in ls}
    assert created.json()["id"] not in labels and "OPS-1" not in labels
    # every metric the shipped dashboard and alert rules use exists in the scrape
    names = {n for (n, _) in after}
    dashboard = json.loads((ROOT / "ops" / "grafana-dashboard.json").read_text())
    rules = yaml.safe_load((ROOT / "ops" / "prometheus-alerts.yml").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]] + \
        [r["expr"] for g in rules["groups"] for r in g["rules"]]
    used = {m for e in exprs for m in re.findall(r"\bteleimg_\w+", e)}
    assert used and used <= names, used - names


def test_json_logs_carry_the_request_id_of_the_header_and_audit(
        system: dict[str, Any]) -> None:
    api: httpx.Client = system["api"]
    answer = api.get("/fhir/Patient", params={"family": HTTP_PATIENT["family"]},
                     headers={"X-Request-Id": "ops-req-4711"})
    assert answer.status_code == 200 and answer.headers["X-Request-Id"] == "ops-req-4711"
    generated = api.get("/fhir/metadata").headers["X-Request-Id"]
    time.sleep(0.5)
    lines = [json.loads(x) for x in system["log"].read_text().splitlines()
             if x.startswith("{")]
    [line] = [x for x in lines if x.get("request_id") == "ops-req-4711"]
    assert line["logger"] == "teleimagerie.access" and line["level"] == "info"
    assert (line["interaction"], line["type"], line["status"]) == ("search-type", "Patient",
                                                                   200)
    assert line["principal"] == "e2e:ris" and line["duration_ms"] > 0
    assert {"time", "message"} <= set(line)
    assert any(x.get("request_id") == generated and x["interaction"] == "capabilities"
               for x in lines)
    # the AuditEvent of the search names the same request id (BALP XrequestId entity)
    auditor = DevIssuer(system["data"]).mint(sub="e2e:auditor", roles=["auditor"],
                                             scopes=["user/AuditEvent.rs"],
                                             id_nat_ps="899999999999")
    events = httpx.get(f"{system['base']}/fhir/AuditEvent?_count=100&_sort=-date",
                       headers={"Authorization": f"Bearer {auditor}"}, timeout=30).json()
    ids = {e["what"]["identifier"]["value"] for entry in events.get("entry", [])
           for e in entry["resource"].get("entity", [])
           if e.get("type", {}).get("code") == "XrequestId"}
    assert "ops-req-4711" in ids


def test_readiness_flips_when_a_listener_hangs_and_back(system: dict[str, Any]) -> None:
    beat = json.loads((system["data"] / "run" / "mllp.heartbeat").read_text())
    os.kill(beat["pid"], signal.SIGSTOP)  # alive, port open in the kernel, but hung
    try:
        down = wait_for(system["base"], 503)
        assert down.status_code == 503
        assert down.json()["components"]["mllp"]["state"] == "down"
        assert down.json()["components"]["store"]["state"] == "up"
        assert value(scrape(system["metrics"]), "teleimg_ready", component="mllp") == 0
    finally:
        os.kill(beat["pid"], signal.SIGCONT)
    assert wait_for(system["base"], 200).status_code == 200


def test_readiness_flips_when_the_store_file_goes_and_back(system: dict[str, Any]) -> None:
    db = system["data"] / "teleimagerie.db"
    moved = db.with_name("moved-away.db")
    db.rename(moved)
    try:
        down = ready(system["base"])
        assert down.status_code == 503
        assert down.json()["components"]["store"] == {"state": "down",
                                                      "reason": "store file missing"}
    finally:
        moved.rename(db)
    assert ready(system["base"]).status_code == 200
    db.rename(moved)  # in its place, a file that is not SQLite: a corrupt store
    db.write_bytes(b"this is not a database!" + b"\0" * 4073)
    try:
        down = ready(system["base"])
        assert down.status_code == 503
        assert down.json()["components"]["store"]["state"] == "down"
        assert "DatabaseError" in down.json()["components"]["store"]["reason"]
    finally:
        moved.replace(db)
    assert ready(system["base"]).status_code == 200


def test_no_patient_data_in_the_whole_run_log(system: dict[str, Any]) -> None:
    text = system["log"].read_text()
    assert "teleimagerie.access" in text and "\"request_id\"" in text  # the run was logged
    lines = [x for x in text.splitlines() if x.strip()]
    assert all(x.startswith("{") for x in lines), [x for x in lines if not x.startswith("{")]
    for line in lines:
        json.loads(line)
    born = HL7_PATIENT["born"]
    for needle in (*HL7_PATIENT.values(), f"{born[:4]}-{born[4:6]}-{born[6:]}",
                   *HTTP_PATIENT.values(), DICOM_NAME):
        assert needle.lower() not in text.lower(), needle


def test_metrics_directory_is_under_the_data_dir(system: dict[str, Any]) -> None:
    files = list(Path(system["data"], "metrics").glob("*.db"))
    assert files  # prometheus-client's multiprocess files, one set per process


def test_one_worker_serve_exports_its_http_metrics(tmp_path: Path) -> None:
    """Found from outside: with one worker the HTTP app runs in the serve process, whose
    prometheus_client was imported before the multiprocess directory was set — its
    requests were never exported. Now they are, as with several workers."""
    http_port, metrics_port = free_port(), free_port()
    env = server_env(tmp_path / "one", http_port, TELEIMG_METRICS_PORT=str(metrics_port),
                     TELEIMG_DELIVERY="off", TELEIMG_DICOM_PORT="off")
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = start(env, workers=1)
    try:
        for _ in range(3):
            assert httpx.get(f"http://127.0.0.1:{http_port}/fhir/metadata",
                             timeout=30).status_code == 200
        samples = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
        assert value(samples, "teleimg_http_requests_total") >= 3, sorted(
            n for n, _ in samples)[:40]
    finally:
        stop(proc)
