"""End to end: the real server (``teleimagerie serve``, uvicorn, 2 worker processes) over HTTP."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from fhir_server.security.devissuer import DevIssuer
from fhir_server.security.roles import SYSTEM_ROLES
from tests.e2e.harness import free_port, server_env, start, stop

pytestmark = pytest.mark.e2e
INS = "urn:oid:1.2.250.1.213.1.4.8"


def _auth(data: Path, roles: list[str] | None = None, **claims: object) -> dict[str, str]:
    """Headers with a development-issuer token (what ``teleimagerie token`` prints)."""
    roles = roles or ["ris"]
    # a person's token asks for user/ scopes: system/ ones are refused (R-SEC-1, issue 27)
    scope = "system/*.cruds" if set(roles) <= SYSTEM_ROLES else "user/*.cruds"
    token = DevIssuer(data).mint(sub="e2e", roles=roles, scopes=[scope],
                                 **claims)  # type: ignore[arg-type]
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def api(data_dir: Path) -> Iterator[httpx.Client]:
    with httpx.Client(headers=_auth(data_dir)) as client:
        yield client


@pytest.fixture(scope="module")
def base_url(data_dir: Path) -> Iterator[str]:
    port = free_port()
    proc = start(server_env(data_dir, port), workers=2)
    try:
        yield f"http://127.0.0.1:{port}/fhir"
    finally:
        stop(proc)


def test_metadata_and_crud_over_http(base_url: str, api: httpx.Client) -> None:
    cs = httpx.get(f"{base_url}/metadata").json()
    assert cs["fhirVersion"] == "4.0.1"
    assert httpx.get(f"{base_url}/Patient").status_code == 401  # R-SEC-1
    r = api.post(f"{base_url}/Patient", json={"resourceType": "Patient", "gender": "male"},
                   headers={"content-type": "application/fhir+json"})
    assert r.status_code == 201
    assert r.headers["location"].startswith(base_url + "/Patient/")
    rid = r.json()["id"]
    assert api.get(f"{base_url}/Patient/{rid}").json()["gender"] == "male"
    assert api.get(f"{base_url}/Patient?_id={rid}").json()["total"] == 1
    assert api.delete(f"{base_url}/Patient/{rid}").status_code == 200
    assert api.get(f"{base_url}/Patient/{rid}").status_code == 410


def test_concurrent_conditional_creates_across_processes(base_url: str, data_dir: Path,
                                                         api: httpx.Client) -> None:
    barrier = threading.Barrier(10)
    body = {"resourceType": "Patient", "identifier": [{"system": INS, "value": "e2e-race"}]}

    def go(_: int) -> int:
        with httpx.Client(headers=_auth(data_dir)) as c:
            barrier.wait()
            return c.post(f"{base_url}/Patient", json=body,
                          headers={"If-None-Exist": f"identifier={INS}|e2e-race"}).status_code

    with ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(go, range(10)))
    assert statuses.count(201) == 1 and statuses.count(200) == 9
    total = api.get(f"{base_url}/Patient?identifier={INS}|e2e-race&_summary=count").json()
    assert total["total"] == 1


def test_acknowledged_write_survives_a_kill(tmp_path: Path) -> None:
    """synchronous=FULL: what was answered 201 is there after SIGKILL and restart."""
    port = free_port()
    env = server_env(tmp_path, port)
    url = f"http://127.0.0.1:{port}/fhir"
    proc = start(env)
    auth = _auth(tmp_path)
    ids = [httpx.post(f"{url}/Organization", headers=auth,
                      json={"resourceType": "Organization", "name": f"O{i}"}).json()["id"]
           for i in range(20)]
    proc.kill()
    proc.wait()
    proc = start(env)
    try:
        assert all(httpx.get(f"{url}/Organization/{i}", headers=auth).status_code == 200
                   for i in ids)
    finally:
        stop(proc)


def test_writes_answered_under_group_commit_survive_a_kill_mid_load(tmp_path: Path) -> None:
    """Issue 32: eight clients write at once, so units share commits; SIGKILL while they
    still write: every create answered 201 is there after the restart (R-INT-2)."""
    port = free_port()
    env = server_env(tmp_path, port)
    url = f"http://127.0.0.1:{port}/fhir"
    proc = start(env)
    auth = _auth(tmp_path)
    answered: list[str] = []
    enough = threading.Event()

    def client(k: int) -> None:
        with httpx.Client(headers=auth, timeout=30) as http:
            for i in range(200):
                try:
                    r = http.post(f"{url}/Organization", json={
                        "resourceType": "Organization", "name": f"K{k}-{i}"})
                except httpx.HTTPError:
                    return  # the server is gone: unanswered, may or may not be there
                if r.status_code == 201:
                    answered.append(r.json()["id"])
                if len(answered) >= 120:
                    enough.set()

    with ThreadPoolExecutor(8) as pool:
        for k in range(8):
            pool.submit(client, k)
        enough.wait(120)
        proc.kill()  # while the clients still send
        proc.wait()
    assert len(answered) >= 120
    proc = start(env)
    try:
        with httpx.Client(headers=auth, timeout=30) as http:
            missing = [i for i in answered
                       if http.get(f"{url}/Organization/{i}").status_code != 200]
        assert missing == []
    finally:
        stop(proc)


def test_workflow_over_http_request_to_final_report(base_url: str, api: httpx.Client,
                                                     data_dir: Path) -> None:
    """Issue 5 end to end on the served configuration (mandatory profiles, audit): a
    request goes received → validated → scheduled → in progress → images available →
    final report, each step leaving a Provenance and an update AuditEvent."""
    from tests.behaviour.workflow_world import CONSENT_CAT, R38, RPPS, example, parameters

    def created(resource: dict) -> str:
        r = api.post(f"{base_url}/{resource['resourceType']}", json=resource)
        assert r.status_code == 201, r.text
        return f"{resource['resourceType']}/{r.json()['id']}"

    imager = created({"resourceType": "Practitioner", "identifier": [
        {"system": RPPS, "value": "810000000777"}], "name": [{"family": "IMAGEUR"}],
        "qualification": [{"code": {"coding": [{"system": R38, "code": "SM44"}]}}]})
    # a qualified identity with its INS traits: the report's CDA must pass the ANS rules
    # (issue 26), which require them; the address is how to reach her (R-REQ-1)
    patient = created({**example("tlm-patient"), "address": [
        {"line": ["1 rue du Port"], "city": "Brest", "postalCode": "29200"}]})
    site = created({"resourceType": "Organization", "name": "CH E2E", "identifier": [
        {"system": "urn:oid:1.2.250.1.71.4.2.2", "value": "290000017"}]})
    sr = example("tlm-service-request")
    sr.update(subject={"reference": patient}, requester={"reference": imager},
              performer=[{"reference": imager}, {"reference": site}])
    request = created(sr)
    consent = example("tlm-consent")
    consent.update(patient={"reference": patient}, performer=[{"reference": patient}],
                   category=[{"coding": [{"system": CONSENT_CAT, "code": c}]}
                             for c in ("acte", "teleimagerie")],
                   provision={"type": "permit", "data": [
                       {"meaning": "related", "reference": {"reference": request}}]})
    created(consent)
    as_imager = _auth(data_dir, ["remote-imager"], id_nat_ps="810000000777")
    r = httpx.post(f"{base_url}/{request}/$accept", json=parameters(), headers=as_imager)
    assert r.status_code == 200, r.text
    for name, values in (("schedule", {"occurrence": "2026-11-23T09:00:00+01:00"}),
                         ("start", {})):
        r = api.post(f"{base_url}/{request}/${name}", json=parameters(**values))
        assert r.status_code == 200, r.text
    r = api.post(f"{base_url}/{request}/$start", json=parameters())
    assert r.status_code == 409  # already started
    study = example("tlm-imaging-study")
    study.update(subject={"reference": patient}, basedOn=[{"reference": request}])
    study_ref = created(study)
    dose = example("tlm-dose-observation")
    dose.update(subject={"reference": patient}, partOf=[{"reference": study_ref}])
    dose_ref = created(dose)
    report = example("tlm-diagnostic-report")
    report.update(subject={"reference": patient}, basedOn=[{"reference": request}],
                  imagingStudy=[{"reference": study_ref}], result=[{"reference": dose_ref}],
                  performer=[{"reference": imager}])
    # the first final report of a server compiles the ANS schematrons (20-30 s, more on
    # a loaded machine) unless it warmed them (not in these short-lived servers)
    r = httpx.post(f"{base_url}/DiagnosticReport", json=report, headers=as_imager,
                   timeout=180)
    assert r.status_code == 201, r.text
    tasks = api.get(f"{base_url}/Task?focus={request}").json()["entry"]
    task = tasks[0]["resource"]
    assert task["businessStatus"]["coding"][0]["code"] == "cr-definitif"
    provenance = api.get(f"{base_url}/Provenance?target=Task/{task['id']}").json()
    assert provenance["total"] == 5
    audit = httpx.get(f"{base_url}/AuditEvent?entity={request}&action=U", headers=_auth(
        data_dir, ["auditor"], id_nat_ps="899999999999")).json()
    assert audit["total"] >= 3
