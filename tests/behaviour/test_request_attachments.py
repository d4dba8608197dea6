"""The request's extra data are attached to it and archived with it (R-REQ-4): prior
imaging, biology results and documents in ``supportingInfo``, free text in ``note``,
every version kept; both stores."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from fhir_server.server.dispatch import FhirServer
from tests.behaviour.workflow_world import World


@pytest.fixture
def world(secured: FhirServer, tmp_path: Path) -> World:
    return World(secured, tmp_path)


def _create(world: World, resource: dict[str, Any]) -> str:
    r = world.ris.post(f"/fhir/{resource['resourceType']}", json=resource)
    assert r.status_code == 201, r.text
    return f"{resource['resourceType']}/{r.json()['id']}"


def test_extra_data_are_attached_to_the_request_and_archived_R_REQ_4(world: World) -> None:
    patient = {"reference": world.refs["patient"]}
    creatinine = _create(world, {
        "resourceType": "Observation", "status": "final", "subject": patient,
        "code": {"coding": [{"system": "http://loinc.org", "code": "2160-0"}]},
        "valueQuantity": {"value": 1.9, "unit": "mg/dL", "system": "http://unitsofmeasure.org",
                          "code": "mg/dL"}})
    prior = world.study(world.request("CT"))
    note = "Scanner cérébral de 2025 disponible au PACS du site ; patiente claustrophobe."
    sr = world.request("CT", supportingInfo=[{"reference": creatinine},
                                             {"reference": f"ImagingStudy/{prior}"}],
                       note=[{"text": note}])
    stored = world.ris.get(f"/fhir/ServiceRequest/{sr}").json()
    assert [s["reference"] for s in stored["supportingInfo"]] == [
        creatinine, f"ImagingStudy/{prior}"]
    assert stored["note"] == [{"text": note}]
    # a document arrives later (the scanned prescription): attached by an update
    scan = _create(world, {
        "resourceType": "DocumentReference", "status": "current", "subject": patient,
        "description": "ordonnance numérisée",
        "content": [{"attachment": {"contentType": "application/pdf",
                                    "data": base64.b64encode(b"%PDF-1.4 ordonnance").decode(),
                                    "title": "ordonnance.pdf"}}]})
    updated = {**stored, "supportingInfo": [*stored["supportingInfo"], {"reference": scan}]}
    r = world.ris.put(f"/fhir/ServiceRequest/{sr}", json=updated)
    assert r.status_code == 200, r.text
    # archived: each version keeps what it was sent with, and what it points to is kept
    history = world.ris.get(f"/fhir/ServiceRequest/{sr}/_history").json()["entry"]
    attached = [[s["reference"] for s in e["resource"]["supportingInfo"]] for e in history]
    assert attached == [[creatinine, f"ImagingStudy/{prior}", scan],
                        [creatinine, f"ImagingStudy/{prior}"]]
    assert all(e["resource"]["note"] == [{"text": note}] for e in history)
    document = world.ris.get(f"/fhir/{scan}").json()
    assert base64.b64decode(document["content"][0]["attachment"]["data"]).startswith(b"%PDF")
    assert world.ris.get(f"/fhir/{creatinine}").json()["valueQuantity"]["value"] == 1.9
