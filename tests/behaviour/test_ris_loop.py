"""Who asked gets the report back, whatever the entry point (issue 24; R-REQ-1, R-REP-5,
R-REP-6, R-INT-2), on both stores.

The requesting structure is resolved once (``fhir_server/workflow/origin.py``) and
recorded on the request's Task; the RIS delivery is always planned from it: sent when a
route exists for its FINESS, held visibly (``canal-non-configure``, naming the FINESS or
saying none is known) otherwise — never silently left out.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hl7
import pytest

from fhir_server.server.dispatch import FhirServer
from fhir_server.workflow import origin
from tests.behaviour.hl7_world import PLACER_OID, Hl7World, orm
from tests.behaviour.test_report_delivery import Rig, state
from tests.behaviour.workflow_world import FINESS, TASK, _now


class LoopRig(Rig):
    """The delivery rig with an HL7 receiver in front (orders come from the RIS)."""

    def __init__(self, core: FhirServer, tmp: Path) -> None:
        super().__init__(core, tmp)
        self.hl7_world = Hl7World.__new__(Hl7World)
        # the same world (users, directory) as the rig, with the HL7 receiver's parts
        self.hl7_world.__dict__.update(self.world.__dict__)
        from adapters.hl7v2.outbox import Outbox
        from adapters.hl7v2.receiver import Receiver
        from adapters.hl7v2.records import register_all

        register_all()
        self.hl7_world.settings = self.hl7
        assert core.workflow is not None
        Outbox(self.hl7).subscribe(core.workflow.events)
        self.hl7_world.receiver = Receiver(core, self.hl7)

    def order(self, placer: str = "DEM-LOOP") -> str:
        """A flux 1 order received over HL7; the id of its ServiceRequest."""
        ack = self.hl7_world.send(orm(control=f"C-{placer}", placer=placer))
        assert ack["MSA"][1] == "AA", ack
        r = self.world.ris.get(f"/fhir/ServiceRequest?identifier=urn:oid:{PLACER_OID}|"
                               f"{placer}")
        return str(r.json()["entry"][0]["resource"]["id"])

    def report_on(self, sr: str) -> None:
        w = self.world
        # the request's patient (an HL7 order brings its own) is the one the steps name
        subject = w.ris.get(f"/fhir/ServiceRequest/{sr}").json()["subject"]["reference"]
        w.refs["patient"] = subject
        w.consent("acte", "teleimagerie")
        for client, name, values in ((w.imager, "accept", {}),
                                     (w.ris, "schedule", {"occurrence": _now()}),
                                     (w.ris, "start", {})):
            r = w.op(client, sr, name, **values)
            assert r.status_code == 200, r.text
        study = w.study(sr, "CT")
        report = w.report(sr, study, result=[{"reference": w.dose(study)}])
        r = w.imager.post("/fhir/DiagnosticReport", json=report)
        assert r.status_code == 201, r.text


@pytest.fixture
def loop(secured: FhirServer, tmp_path: Path) -> Iterator[LoopRig]:
    rig = LoopRig(secured, tmp_path)
    yield rig
    rig.close()


def site_of(w: Any, sr: str) -> str | None:
    return origin.recorded(w.task(sr))


def test_an_order_received_over_hl7_gets_its_report_back_over_mllp(loop: LoopRig) -> None:
    """R-REP-5, R-INT-2: ORC-21's structure is the request's origin; the final report is
    planned to its RIS and the fake RIS receives one MDM^T02 whose PID-3 keeps the
    patient's identifiers as separate repetitions (parsed with python-hl7)."""
    sr = loop.order()
    w = loop.world
    structure = site_of(w, sr)
    assert structure is not None
    org = w.ris.get(f"/fhir/{structure}").json()
    assert origin.finess(org) == "750000001"
    loop.report_on(sr)
    found = loop.deliveries()
    assert ("ris", structure) in found, sorted(found)
    loop.run()
    assert state(loop.deliveries()[("ris", structure)]) == "envoye"
    mdm = [m for m in loop.ris.messages if b"MDM^T02" in m]
    assert len(mdm) == 1
    parsed = hl7.parse(mdm[0].decode("utf-8"))
    assert str(parsed.segment("MSH")[5]) == "RIS" and str(parsed.segment("MSH")[6]) == \
        "750000001"
    assert str(parsed.segment("ORC")[2][0][0]) == "DEM-LOOP"
    ids = parsed.segment("PID")[3]
    assert len(ids) == 2, str(ids)  # IPP and INS: two repetitions, not one escaped value
    # flux 3: the acceptance went into the HL7 outbox for the same structure
    oru = loop.hl7_world.receiver.messages.find([("hl7-type", "ORU^R01")])
    assert [r.destination for r in oru] == ["750000001"]


def test_a_fhir_request_from_a_practitioner_role_is_routed_to_its_structure(
        loop: LoopRig) -> None:
    """The requester's PractitionerRole.organization is the origin; its FINESS has no
    route: the RIS delivery waits in canal-non-configure naming that FINESS."""
    w = loop.world
    other = w._create({"resourceType": "Organization", "identifier": [
        {"system": FINESS, "value": "450000009"}], "name": "CH d'Orléans"})
    role = w._create({"resourceType": "PractitionerRole", "active": True,
                      "practitioner": {"reference": w.refs["requester"]},
                      "organization": {"reference": other}})
    sr = w.request(requester={"reference": role},
                   performer=[{"reference": w.refs["imager"]}])
    assert site_of(w, sr) == other
    loop.report_on(sr)
    loop.run()
    ris = loop.deliveries()[("ris", other)]
    assert state(ris) == "canal-non-configure"
    assert "450000009" in ris["businessStatus"]["text"]
    assert loop.ris.messages == []


def test_a_request_that_names_no_structure_is_refused(loop: LoopRig) -> None:
    """R-REQ-1: no Organization anywhere (requester a Practitioner with no role, no
    performer Organization) -> 422 naming ServiceRequest.requester."""
    w = loop.world
    sr = _request_body(w, performer=[{"reference": w.refs["imager"]}])
    r = w.ris.post("/fhir/ServiceRequest", json=sr)
    assert r.status_code == 422, r.text
    issue = r.json()["issue"][0]
    assert issue["expression"] == ["ServiceRequest.requester"]
    assert "R-REQ-1" in issue["diagnostics"]


def test_a_request_stored_without_structure_says_so_in_its_delivery(loop: LoopRig) -> None:
    """A request kept from before R-REQ-1 was enforced (written straight to the store):
    the RIS delivery is still planned and held, saying what is missing — never silently
    left out."""
    from fhir_server.workflow.records import body, save, task_id, view

    w = loop.world
    sr = w.request()
    raw = view(loop.core)
    stored = body(raw.read("ServiceRequest", sr)) or {}
    task = body(raw.read("Task", task_id(sr))) or {}
    with raw.write():
        save(loop.core, "ServiceRequest", sr,
             {**stored, "performer": [{"reference": w.refs["imager"]}]})
        save(loop.core, "Task", task_id(sr), origin.with_site(task, None))
    assert site_of(w, sr) is None
    loop.report_on(sr)
    loop.run()
    held = [t for (channel, _), t in loop.deliveries().items() if channel == "ris"]
    assert len(held) == 1 and state(held[0]) == "canal-non-configure"
    assert "structure demandeuse inconnue" in held[0]["businessStatus"]["text"]


def test_a_request_whose_patient_cannot_be_reached_is_refused(loop: LoopRig) -> None:
    """R-REQ-1: the patient's (or representative's) contact, or the coded reason for its
    absence (data-absent-reason) — each form accepted, none refused."""
    w = loop.world
    bare = w._create({"resourceType": "Patient", "name": [{"family": "SANS"}],
                      "gender": "male", "birthDate": "1970-01-01"})
    r = w.ris.post("/fhir/ServiceRequest", json=_request_body(w, subject={"reference": bare}))
    assert r.status_code == 422, r.text
    assert r.json()["issue"][0]["expression"] == ["ServiceRequest.subject"]
    for contact in (
            {"address": [{"line": ["1 rue du Port"], "city": "Brest", "postalCode": "29200"}]},
            {"contact": [{"relationship": [{"text": "mère"}],
                          "telecom": [{"system": "phone", "value": "+33298000000"}]}]},
            {"telecom": [{"extension": [{
                "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                "valueCode": "asked-declined"}]}]}):
        patient = w._create({"resourceType": "Patient", "name": [{"family": "AVEC"}],
                             "gender": "male", "birthDate": "1970-01-01", **contact})
        r = w.ris.post("/fhir/ServiceRequest",
                       json=_request_body(w, subject={"reference": patient}))
        assert r.status_code == 201, (contact, r.text)


def _request_body(w: Any, **changes: Any) -> dict[str, Any]:
    """The world's request, not posted (to see the refusal)."""
    captured: dict[str, Any] = {}

    def keep(resource: dict[str, Any]) -> str:
        captured.update(resource)
        return "ServiceRequest/x"

    create, w._create = w._create, keep
    try:
        w.request(**changes)
    finally:
        w._create = create
    return captured


def test_a_practitioner_with_one_structure_is_taken_and_two_are_not_guessed(
        loop: LoopRig) -> None:
    """Source 4 of workflow.origin: the requester's only active role names the structure;
    with roles in two structures nothing is guessed."""
    w = loop.world
    w._create({"resourceType": "PractitionerRole", "active": True,
               "practitioner": {"reference": w.refs["gp"]},
               "organization": {"reference": w.refs["site"]}})
    sr = w.request(requester={"reference": w.refs["gp"]},
                   performer=[{"reference": w.refs["imager"]}])
    assert site_of(w, sr) == w.refs["site"]
    other = w._create({"resourceType": "Organization", "identifier": [
        {"system": FINESS, "value": "450000009"}], "name": "CH d'Orléans"})
    w._create({"resourceType": "PractitionerRole", "active": True,
               "practitioner": {"reference": w.refs["gp"]},
               "organization": {"reference": other}})
    r = w.ris.post("/fhir/ServiceRequest", json=_request_body(
        w, requester={"reference": w.refs["gp"]}, performer=[{"reference": w.refs["imager"]}]))
    assert r.status_code == 422, r.text  # ambiguous: no structure, R-REQ-1


def test_the_recorded_structure_follows_an_update_of_the_request(loop: LoopRig) -> None:
    """A request corrected to name another structure gets it on its Task (one record)."""
    w = loop.world
    other, role = _orleans(w)
    sr = w.request(requester={"reference": role}, performer=[{"reference": w.refs["imager"]}])
    assert site_of(w, sr) == other
    current = w.ris.get(f"/fhir/ServiceRequest/{sr}").json()
    current["requester"] = {"reference": w.refs["requester"]}
    current["performer"] = [{"reference": w.refs["site"]}]
    r = w.ris.put(f"/fhir/ServiceRequest/{sr}", json=current)
    assert r.status_code == 200, r.text
    assert site_of(w, sr) == w.refs["site"]
    r = w.ris.get(f"/fhir/Task?code={TASK}|realisation-interpretation&tlm-site="
                  f"{w.refs['site']}")
    assert [e["resource"]["focus"]["reference"] for e in r.json()["entry"]] == \
        [f"ServiceRequest/{sr}"]


def test_a_structure_cannot_be_removed_from_an_active_request(loop: LoopRig) -> None:
    """R-REQ-1 on update too; the Task keeps the structure it recorded."""
    w = loop.world
    sr = w.request(performer=[{"reference": w.refs["imager"]}, {"reference": w.refs["site"]}])
    assert site_of(w, sr) == w.refs["site"]
    current = w.ris.get(f"/fhir/ServiceRequest/{sr}").json()
    current["performer"] = [{"reference": w.refs["imager"]}]
    r = w.ris.put(f"/fhir/ServiceRequest/{sr}", json=current)
    assert r.status_code == 422, r.text
    assert site_of(w, sr) == w.refs["site"]


def test_an_ended_practitioner_role_does_not_speak_for_its_structure(loop: LoopRig) -> None:
    """An inactive PractitionerRole is not an origin (the practitioner left)."""
    w = loop.world
    role = w._create({"resourceType": "PractitionerRole", "active": False,
                      "practitioner": {"reference": w.refs["requester"]},
                      "organization": {"reference": w.refs["site"]}})
    r = w.ris.post("/fhir/ServiceRequest", json=_request_body(
        w, requester={"reference": role}, performer=[{"reference": w.refs["imager"]}]))
    assert r.status_code == 422, r.text
    assert r.json()["issue"][0]["expression"] == ["ServiceRequest.requester"]


def test_a_structure_without_finess_is_not_a_route_key(loop: LoopRig) -> None:
    """Only a FINESS keys a RIS route: a local identifier would send to the wrong RIS."""
    assert origin.finess({"identifier": [{"system": "urn:oid:1.2.3.4", "value": "X1"}]}) == ""
    assert origin.finess({"identifier": [{"system": FINESS, "value": "750000001"}]}) \
        == "750000001"


def test_a_request_corrected_after_its_report_redirects_the_waiting_ris_delivery(
        loop: LoopRig) -> None:
    """R-REP-5: the report was signed while the request named the wrong structure (one
    without a RIS route: delivery held); the request is corrected afterwards — the held
    delivery follows and is sent to the right structure's RIS, once."""
    w = loop.world
    _, role = _orleans(w)
    sr = w.request(requester={"reference": role}, performer=[{"reference": w.refs["imager"]}])
    loop.report_on(sr)
    loop.run()
    held = [t for (channel, _), t in loop.deliveries().items() if channel == "ris"]
    assert len(held) == 1 and state(held[0]) == "canal-non-configure"
    assert "450000009" in held[0]["businessStatus"]["text"]
    current = w.ris.get(f"/fhir/ServiceRequest/{sr}").json()
    assert current["status"] == "completed"
    current["requester"] = {"reference": w.refs["requester"]}
    current["performer"] = [{"reference": w.refs["imager"]}, {"reference": w.refs["site"]}]
    r = w.ris.put(f"/fhir/ServiceRequest/{sr}", json=current)
    assert r.status_code == 200, r.text
    assert site_of(w, sr) == w.refs["site"]
    loop.run()
    ris = [t for (channel, _), t in loop.deliveries().items() if channel == "ris"]
    assert len(ris) == 1 and state(ris[0]) == "envoye", ris
    assert ris[0]["owner"]["reference"] == w.refs["site"]
    assert len([m for m in loop.ris.messages if b"MDM^T02" in m]) == 1


def _orleans(w: Any) -> tuple[str, str]:
    """A second structure (FINESS 450000009, no RIS route) and a requester's role there."""
    other = w._create({"resourceType": "Organization", "identifier": [
        {"system": FINESS, "value": "450000009"}], "name": "CH d'Orléans"})
    role = w._create({"resourceType": "PractitionerRole", "active": True,
                      "practitioner": {"reference": w.refs["requester"]},
                      "organization": {"reference": other}})
    return other, role


def test_a_transaction_that_adds_the_contact_with_the_request_is_accepted(
        loop: LoopRig) -> None:
    """R-REQ-1 is judged on the whole transaction: a Bundle that creates the request and,
    in a later-processed PUT, gives the patient a phone passes; without that PUT it is
    refused naming the request's entry — and nothing of it is kept."""
    w = loop.world
    bare = w._create({"resourceType": "Patient", "name": [{"family": "SANS"}],
                      "gender": "male", "birthDate": "1970-01-01"})
    patient = w.ris.get(f"/fhir/{bare}").json()
    sr = _request_body(w, subject={"reference": bare})
    post = {"fullUrl": "urn:uuid:6f1c2a4e-0d7b-4b8e-9f51-3c2d8e7a1b90", "resource": sr,
            "request": {"method": "POST", "url": "ServiceRequest"}}
    put = {"fullUrl": f"{w.ris.base_url}/fhir/{bare}",
           "resource": {**patient, "telecom": [{"system": "phone", "value": "+33298000000"}]},
           "request": {"method": "PUT", "url": bare}}
    r = w.ris.post("/fhir", json={"resourceType": "Bundle", "type": "transaction",
                                  "entry": [post]})
    assert r.status_code == 422, r.text
    assert r.json()["issue"][0]["expression"] == ["ServiceRequest.subject"]
    assert "Bundle.entry[0]" in r.json()["issue"][0]["diagnostics"]
    r = w.ris.post("/fhir", json={"resourceType": "Bundle", "type": "transaction",
                                  "entry": [post, put]})
    assert r.status_code == 200, r.text
