"""End to end over real sockets: ``teleimagerie serve`` with its C-STORE SCP, a modality
(pynetdicom SCU) sending a CT series and its dose report, a STOW-RS upload and the
``teleimagerie dicom import`` command (issue 7; R-REP-3, R-REP-7)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    Verification,
    XRayRadiationDoseSRStorage,
)

from fhir_server.security.devissuer import DevIssuer
from tests.behaviour.dicom_world import PLACER_SYSTEM, ct_images, ct_rdsr, write
from tests.behaviour.workflow_world import example
from tests.e2e.harness import ROOT, free_port, server_env, start, stop

pytestmark = pytest.mark.e2e
WADO = "https://pacs.example.fr/dicom-web"


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    data = tmp_path_factory.mktemp("dicom")
    http_port, dicom_port = free_port(), free_port()
    env = server_env(data, http_port, TELEIMG_DICOM_PORT=str(dicom_port),
                     TELEIMG_DICOM_AE_TITLE="TLR-SCP", TELEIMG_DICOM_ALLOWED_AES="MODALITE1",
                     TELEIMG_DICOM_WADO_URL=WADO)

    def listening() -> bool:
        with socket.create_connection(("127.0.0.1", dicom_port), timeout=1):
            return True

    proc = start(env, ready=listening)
    token = DevIssuer(data).mint(sub="e2e:ris", roles=["ris"], scopes=["system/*.cruds"])
    api = httpx.Client(base_url=f"http://127.0.0.1:{http_port}",
                       headers={"Authorization": f"Bearer {token}"}, timeout=30)
    try:
        yield {"api": api, "port": dicom_port, "data": data, "env": env, "dir": data / "in"}
    finally:
        stop(proc)


def _request(api: httpx.Client, placer: str) -> str:
    def created(resource: dict[str, Any]) -> str:
        r = api.post(f"/fhir/{resource['resourceType']}", json=resource)
        assert r.status_code == 201, r.text
        return f"{resource['resourceType']}/{r.json()['id']}"

    patient = created({"resourceType": "Patient", "name": [{"family": "MARTIN"}],
                       "gender": "female", "birthDate": "1980-05-17",
                       "telecom": [{"system": "phone", "value": "+33238000001"}]})
    site = created({"resourceType": "Organization", "name": "CH de proximité",
                    "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.2",
                                    "value": "750000001"}]})
    requester = created({"resourceType": "Practitioner", "name": [{"family": "DEMANDEUR"}],
                         "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.1",
                                         "value": f"8{uuid.uuid4().int % 10**10:010d}"}]})
    sr = example("tlm-service-request")
    sr.pop("id", None)
    sr.update(subject={"reference": patient}, requester={"reference": requester},
              performer=[{"reference": site}], identifier=[{
                  "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                 "v2-0203", "code": "PLAC"}]},
                  "system": PLACER_SYSTEM, "value": placer}])
    return created(sr)


def _study(api: httpx.Client, uid: str, wait: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + wait
    while True:
        found = api.get(f"/fhir/ImagingStudy?identifier=urn:dicom:uid|urn:oid:{uid}").json()
        if found.get("entry") or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert found.get("entry"), found
    return dict(found["entry"][0]["resource"])


def test_modality_sends_series_and_rdsr_over_c_store(system: dict[str, Any]) -> None:
    api = system["api"]
    request = _request(api, "E2E-DCM-1")
    uid = generate_uid()
    files = [write(ds, system["dir"]) for ds in
             [*ct_images(uid, 3, placer="E2E-DCM-1"),
              ct_rdsr(uid, [(11.0, 420.0)], 420.0, placer="E2E-DCM-1")]]
    ae = AE(ae_title="MODALITE1")
    for context in (CTImageStorage, XRayRadiationDoseSRStorage, Verification):
        ae.add_requested_context(context)
    assoc = ae.associate("127.0.0.1", system["port"], ae_title="TLR-SCP")
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    statuses = [assoc.send_c_store(dcmread(f)).Status for f in files]
    assoc.release()
    assert statuses == [0x0000] * 4
    study = _study(api, uid)
    assert study["basedOn"] == [{"reference": request}]
    assert study["numberOfInstances"] == 4 and study["numberOfSeries"] == 2
    dose = api.get(f"/fhir/Observation?part-of=ImagingStudy/{study['id']}&code="
                   "http://dicom.nema.org/resources/ontology/DCM|113813").json()
    assert dose["entry"][0]["resource"]["valueQuantity"]["value"] == 420
    assert not list((system["data"] / "dicom-spool").glob("*/*.dcm"))  # spool emptied
    auditor = DevIssuer(system["data"]).mint(sub="e2e:auditor", roles=["auditor"],
                                             scopes=["user/AuditEvent.rs"],
                                             id_nat_ps="899999999999")
    events = httpx.get(f"{api.base_url}/fhir/AuditEvent?entity={study['subject']['reference']}"
                       "&type=http://dicom.nema.org/resources/ontology/DCM|110104",
                       headers={"Authorization": f"Bearer {auditor}"}).json()
    [event] = [e["resource"] for e in events["entry"]]  # R-INT-2: the exchange itself
    assert event["agent"][0]["who"]["display"] == "MODALITE1"
    assert event["entity"][0]["what"]["identifier"]["value"] == f"urn:oid:{uid}"
    assert event["outcome"] == "0" and "C-STORE" in event["entity"][0]["description"]


def test_calling_ae_not_allowed_is_rejected(system: dict[str, Any]) -> None:
    ae = AE(ae_title="INTRUS")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", system["port"], ae_title="TLR-SCP")
    assert not assoc.is_established and assoc.is_rejected


def test_stow_rs_multipart_upload(system: dict[str, Any]) -> None:
    api = system["api"]
    _request(api, "E2E-DCM-2")
    uid = generate_uid()
    files = [write(ds, system["dir"]) for ds in ct_images(uid, 2, placer="E2E-DCM-2")]
    boundary = "limite-" + uuid.uuid4().hex
    body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n"
                    + part + b"\r\n" for part in [*(f.read_bytes() for f in files),
                                                  b"pas du DICOM"])
    body += b"--" + boundary.encode() + b"--\r\n"
    r = api.post("/dicomweb/studies", content=body, headers={
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})
    assert r.status_code == 202, r.text  # two stored, one part refused
    answer = r.json()
    assert len(answer["00081199"]["Value"]) == 2
    assert answer["00081198"]["Value"][0]["00081197"]["Value"] == [0xC000]
    assert "pas un fichier DICOM" in r.headers["Warning"]
    assert _study(api, uid, wait=0)["numberOfInstances"] == 2
    anonymous = httpx.post(f"{api.base_url}/dicomweb/studies", content=files[0].read_bytes(),
                           headers={"Content-Type": "application/dicom"})
    assert anonymous.status_code == 401


def test_cli_import_prints_a_summary(system: dict[str, Any], tmp_path: Path) -> None:
    api = system["api"]
    _request(api, "E2E-DCM-3")
    uid = generate_uid()
    folder = tmp_path / "cd"
    for ds in ct_images(uid, 5, placer="E2E-DCM-3"):
        write(ds, folder)
    (folder / "LISEZMOI.txt").write_text("notice")
    done = subprocess.run([sys.executable, "-m", "teleimagerie.cli", "dicom", "import",
                           "--json", str(folder)], env=system["env"], cwd=ROOT,
                          capture_output=True, timeout=120)
    summary = json.loads(done.stdout)
    assert done.returncode == 0, done.stderr  # a file that is not DICOM is skipped (issue 29)
    assert summary["files"] == 6 and summary["imported"] == 5 and not summary["failed"]
    assert [Path(p).name for p in summary["skipped"]] == ["LISEZMOI.txt"]
    assert "LISEZMOI.txt n'est pas un fichier DICOM" in done.stderr.decode()
    assert _study(api, uid, wait=0)["numberOfInstances"] == 5
