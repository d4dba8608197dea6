"""Justification is joint, but in case of disagreement the performer decides (R-VAL-2,
CSP R.1333-52): only the remote imager validates or refuses a request, sets the imaging
protocol, and the requester cannot overturn the decision; both stores."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhir_server.server.dispatch import FhirServer
from tests.behaviour.workflow_world import REFUSAL, REQUESTER, TASK, World


@pytest.fixture
def world(secured: FhirServer, tmp_path: Path) -> World:
    return World(secured, tmp_path)


def test_the_requester_cannot_validate_nor_refuse_R_VAL_2(world: World) -> None:
    sr = world.request("CT")
    world.consent("acte", "teleimagerie")
    requester = world.user(["requesting-physician"], REQUESTER)
    assert world.op(requester, sr, "accept").status_code == 403
    reason = {"system": REFUSAL, "code": "informations-insuffisantes"}
    assert world.op(requester, sr, "refuse", reason=reason,
                    text="je préfère un autre imageur").status_code == 403
    assert world.state(sr) == "recue"
    # the imager decides the technique: the protocol goes on the Task, for the site
    r = world.op(world.imager, sr, "accept", protocol="IRM cérébrale sans injection")
    assert r.status_code == 200, r.text
    protocol = [i["valueString"] for i in world.task(sr)["input"]
                if i["type"]["coding"][0] == {"system": TASK, "code": "protocole-imagerie"}]
    assert protocol == ["IRM cérébrale sans injection"]


def test_the_imagers_refusal_stands_against_the_requester_R_VAL_2(world: World) -> None:
    sr = world.request("CT")
    reason = {"system": REFUSAL, "code": "informations-insuffisantes"}
    r = world.op(world.imager, sr, "refuse", reason=reason, text="indication non justifiée")
    assert r.status_code == 200, r.text
    requester = world.user(["requesting-physician"], REQUESTER)
    request = requester.get(f"/fhir/ServiceRequest/{sr}").json()
    assert request["status"] == "revoked"
    # neither reopening the request, nor validating it, nor editing the Task overturns it
    r = requester.put(f"/fhir/ServiceRequest/{sr}", json={**request, "status": "active"})
    assert r.status_code == 409 and "operations" in r.text, r.text
    world.consent("acte", "teleimagerie")
    assert world.op(requester, sr, "accept").status_code in (403, 409)  # role or state
    task = world.task(sr)
    r = requester.put(f"/fhir/Task/{task['id']}", json={**task, "status": "accepted"})
    assert r.status_code == 403, r.text
    assert world.state(sr) == "refusee"
    assert world.task(sr)["statusReason"]["text"] == "indication non justifiée"
