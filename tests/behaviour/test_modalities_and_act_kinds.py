"""What a téléimagerie request may be: the radiology and nuclear-medicine modalities
(R-SCOPE-1) and one of the two kinds of act, each with its own workflow (R-SCOPE-3);
both stores."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhir_server.server.dispatch import FhirServer
from tests.behaviour.workflow_world import NUCLEAR, TASK, World, example

ELIGIBLE = {"qualite_images": True, "images_anterieures": True,
            "donnees_identification": True, "donnees_medicales": True}


@pytest.fixture
def world(secured: FhirServer, tmp_path: Path) -> World:
    return World(secured, tmp_path)


@pytest.mark.parametrize("modality", ["CR", "DX", "CT", "MR", "XA", "RF", "NM", "PT"])
def test_radiology_and_nuclear_medicine_modalities_are_accepted_R_SCOPE_1(
        world: World, modality: str) -> None:
    sr = world.request(modality)  # created (201) by the world, else it fails here
    request = world.ris.get(f"/fhir/ServiceRequest/{sr}").json()
    assert not any(t.get("code") == "hors-perimetre"
                   for t in request.get("meta", {}).get("tag", []))
    world.consent("acte", "teleimagerie")
    # radiology is validated by a radiologist, NM/PT by a nuclear physician (R-ACT-2)
    imager = world.user(["remote-imager"], NUCLEAR) if modality in ("NM", "PT") \
        else world.imager
    r = world.op(imager, sr, "accept")
    assert r.status_code == 200, r.text
    assert world.state(sr) == "validee"


def test_a_request_without_its_kind_of_act_is_refused_R_SCOPE_3(world: World) -> None:
    sr = example("tlm-service-request")
    sr["extension"] = [e for e in sr["extension"] if not e["url"].endswith("tlm-act-kind")]
    sr.update(subject={"reference": world.refs["patient"]},
              requester={"reference": world.refs["requester"]})
    r = world.ris.post("/fhir/ServiceRequest", json=sr)
    assert r.status_code == 422, r.text
    assert any("ServiceRequest.extension" in e
               for i in r.json()["issue"] for e in i.get("expression", [])), r.text


def test_each_kind_of_act_follows_its_own_workflow_R_SCOPE_3(world: World) -> None:
    world.consent("acte", "teleimagerie")
    remote = world.request("CT", kind="telediagnostic")
    expertise = world.request("CT", kind="teleexpertise")
    # the request carries its kind; its fulfilment Task is of that kind's workflow
    for sr, task_code in ((remote, "realisation-interpretation"),
                          (expertise, "teleexpertise")):
        coding = world.task(sr)["code"]["coding"][0]
        assert (coding["system"], coding["code"]) == (TASK, task_code)
    kinds = {world.ris.get(f"/fhir/ServiceRequest/{sr}").json()["extension"][0][
        "valueCodeableConcept"]["coding"][0]["code"] for sr in (remote, expertise)}
    assert kinds == {"telediagnostic", "teleexpertise"}
    # remote interpretation: validated, then an exam is scheduled and performed on site
    assert world.op(world.imager, remote, "accept").status_code == 200
    r = world.op(world.ris, remote, "schedule", occurrence="2026-11-23T09:00:00+01:00")
    assert r.status_code == 200, r.text
    # second opinion: eligibility is checked at validation, and there is no exam to run
    r = world.op(world.imager, expertise, "accept")
    assert r.status_code == 422, r.text
    assert world.op(world.imager, expertise, "accept", **ELIGIBLE).status_code == 200
    r = world.op(world.ris, expertise, "schedule", occurrence="2026-11-23T09:00:00+01:00")
    assert r.status_code == 409 and "teleexpertise" in r.text
    assert world.op(world.ris, expertise, "start").status_code == 409
