"""The care relationship (R-SEC-2) and break-the-glass (R-SEC-2, R-SEC-3; issue 27 item 3).

The attack: a remote imager, who may not create requests (POST → 403), did
``PUT ServiceRequest/<new id>`` naming patient C and themselves as performer → 201, then
read Patient/C and C's other requests. Update-as-create is a create on every path; a
request someone makes themselves party to opens what comes after it, never what
existed before; a request someone else made them party to opens the whole record; and
a declared, justified break-the-glass opens one record for a limited time, alerting the
auditor.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_server.search.values import format_instant, now_us
from fhir_server.security.care import BREAK_GLASS, SELF_ASSERTED
from fhir_server.server.dispatch import FhirServer
from fhir_server.store.versions import store_version
from tests.conftest import Fhir, mint, serve

RPPS = "urn:oid:1.2.250.1.71.4.2.1"
IMAGER, DOCTOR, OTHER = "810000000201", "810000000202", "810000000203"
ALERT = "http://dicom.nema.org/resources/ontology/DCM|110127"
JSON_PATCH = {"content-type": "application/json-patch+json"}


@pytest.fixture
def world(secured: FhirServer, store: Any, tmp_path: Path) -> dict[str, Any]:
    """Patient C with a record (an Observation, a request from another doctor); an
    imager and a requesting doctor with no relationship to C yet."""
    ris = Fhir(serve(secured, tmp_path, mint(tmp_path, ["ris"])))
    w: dict[str, Any] = {"core": secured, "store": store, "dir": tmp_path, "ris": ris}
    for name, rpps in (("imager", IMAGER), ("doctor", DOCTOR), ("other", OTHER)):
        w[name] = ris.create({"resourceType": "Practitioner", "identifier": [
            {"system": RPPS, "value": rpps}], "name": [{"family": name}]})["id"]
    w["C"] = ris.create({"resourceType": "Patient", "name": [{"family": "PAT-C"}]})["id"]
    w["obs"] = ris.create({"resourceType": "Observation", "status": "final",
                           "code": {"text": "créatinine"},
                           "subject": {"reference": f"Patient/{w['C']}"}})["id"]
    w["earlier"] = ris.create(_request(w, f"Practitioner/{w['other']}"))["id"]
    return w


def _request(w: dict[str, Any], requester: str, *performers: str,
             rid: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "ServiceRequest", "status": "active",
                            "intent": "order", "subject": {"reference": f"Patient/{w['C']}"},
                            "requester": {"reference": requester}}
    if performers:
        body["performer"] = [{"reference": p} for p in performers]
    if rid:
        body["id"] = rid
    return body


def _user(w: dict[str, Any], role: str, rpps: str, **claims: Any) -> TestClient:
    return serve(w["core"], w["dir"], mint(w["dir"], [role], ["user/*.cruds"],
                                           id_nat_ps=rpps, sub=f"{role}-{rpps}", **claims))


def imager(w: dict[str, Any]) -> TestClient:
    return _user(w, "remote-imager", IMAGER)


def doctor(w: dict[str, Any]) -> TestClient:
    return _user(w, "requesting-physician", DOCTOR)


def _record_closed(http: TestClient, w: dict[str, Any]) -> None:
    """C's earlier record is absent — read, searched, counted."""
    for url in (f"/fhir/Patient/{w['C']}", f"/fhir/Observation/{w['obs']}",
                f"/fhir/ServiceRequest/{w['earlier']}", f"/fhir/Patient/{w['C']}/$everything"):
        assert http.get(url).status_code == 404, url
    r = http.get(f"/fhir/Observation?subject=Patient/{w['C']}")
    assert r.status_code == 200 and w["obs"] not in r.text
    r = http.get(f"/fhir/ServiceRequest?subject=Patient/{w['C']}")
    assert r.status_code == 200 and w["earlier"] not in r.text
    assert r.json()["total"] == len(r.json().get("entry", []))
    assert http.get("/fhir/Patient?name=PAT-C").json()["total"] == 0


def _record_open(http: TestClient, w: dict[str, Any]) -> None:
    for url in (f"/fhir/Patient/{w['C']}", f"/fhir/Observation/{w['obs']}",
                f"/fhir/ServiceRequest/{w['earlier']}"):
        assert http.get(url).status_code == 200, url


# -- update-as-create is a create ----------------------------------------------------------

def test_update_as_create_is_checked_as_a_create_on_every_path_R_SEC_2(
        world: dict[str, Any]) -> None:
    """The imager may update requests, not create them: no verb creates one."""
    http = imager(world)
    mine = f"Practitioner/{world['imager']}"
    assert http.post("/fhir/ServiceRequest", json=_request(world, mine, mine)
                     ).status_code == 403
    new = str(uuid.uuid4())
    body = _request(world, mine, mine, rid=new)
    r = http.put(f"/fhir/ServiceRequest/{new}", json=body)
    assert r.status_code == 403 and "create" in r.text, r.text
    assert http.put("/fhir/ServiceRequest?identifier=urn:x|1", json=body).status_code == 403
    entry = {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": body,
             "request": {"method": "PUT", "url": f"ServiceRequest/{new}"}}
    assert http.post("/fhir", json={"resourceType": "Bundle", "type": "transaction",
                                    "entry": [entry]}).status_code == 403
    r = http.post("/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": [entry]})
    assert r.json()["entry"][0]["response"]["status"].startswith("403")
    # PATCH never creates
    assert http.patch(f"/fhir/ServiceRequest/{new}", headers=JSON_PATCH, json=[
        {"op": "replace", "path": "/status", "value": "active"}]).status_code == 404
    assert world["ris"].get(f"/fhir/ServiceRequest/{new}").status_code == 404
    _record_closed(http, world)


def test_a_deleted_request_is_not_revived_by_an_update_R_SEC_2(world: dict[str, Any]) -> None:
    mine = f"Practitioner/{world['imager']}"
    rid = world["ris"].create(_request(world, mine, mine))["id"]
    assert world["ris"].delete(f"/fhir/ServiceRequest/{rid}").status_code == 200
    r = imager(world).put(f"/fhir/ServiceRequest/{rid}", json=_request(world, mine, mine,
                                                                         rid=rid))
    assert r.status_code == 403, r.text


# -- who made them party --------------------------------------------------------------------

def test_a_request_they_make_themselves_opens_only_what_comes_after_it_R_SEC_2(
        world: dict[str, Any]) -> None:
    http = doctor(world)
    mine = f"Practitioner/{world['doctor']}"
    created = http.post("/fhir/ServiceRequest", json=_request(world, mine))
    assert created.status_code == 201, created.text
    request = created.json()
    assert {"system": SELF_ASSERTED, "code": DOCTOR} in [
        {k: t[k] for k in ("system", "code")} for t in request["meta"]["tag"]]
    assert http.get(f"/fhir/ServiceRequest/{request['id']}").status_code == 200
    _record_closed(http, world)
    # what is created for C from now on is theirs to see: their own and others'
    own = http.post("/fhir/Observation", json={
        "resourceType": "Observation", "status": "final", "code": {"text": "poids"},
        "subject": {"reference": f"Patient/{world['C']}"}})
    assert own.status_code == 201, own.text
    later = world["ris"].create({"resourceType": "DiagnosticReport", "status": "final",
                                 "code": {"text": "scanner"},
                                 "basedOn": [{"reference": f"ServiceRequest/{request['id']}"}],
                                 "subject": {"reference": f"Patient/{world['C']}"}})
    found = http.get(f"/fhir/Observation?subject=Patient/{world['C']}").json()
    assert [e["resource"]["id"] for e in found["entry"]] == [own.json()["id"]]
    assert http.get(f"/fhir/DiagnosticReport/{later['id']}").status_code == 200
    # updating their request keeps it theirs (and keeps the record closed)
    request["note"] = [{"text": "urgent"}]
    assert http.put(f"/fhir/ServiceRequest/{request['id']}", json=request).status_code == 200
    _record_closed(http, world)


def test_a_request_someone_else_made_them_party_to_opens_the_whole_record_R_SEC_2(
        world: dict[str, Any]) -> None:
    _record_closed(imager(world), world)
    mine = f"Practitioner/{world['doctor']}"
    assigned = f"Practitioner/{world['imager']}"
    r = doctor(world).post("/fhir/ServiceRequest", json=_request(world, mine, assigned))
    assert r.status_code == 201, r.text
    _record_open(imager(world), world)  # the doctor made the imager party
    _record_closed(doctor(world), world)  # the doctor made themselves party
    # a RIS order naming the doctor opens the record to them too
    world["ris"].create(_request(world, mine))
    _record_open(doctor(world), world)


def test_clients_cannot_forge_or_drop_the_servers_tags_R_SEC_2(world: dict[str, Any]) -> None:
    http = doctor(world)
    mine = f"Practitioner/{world['doctor']}"
    forged = {**_request(world, mine, f"Practitioner/{world['imager']}"),
              "meta": {"tag": [{"system": SELF_ASSERTED, "code": IMAGER},
                               {"system": "urn:local", "code": "kept"}]}}
    r = http.post("/fhir/ServiceRequest", json=forged)
    assert r.status_code == 201, r.text
    request = r.json()
    assert sorted((t["system"], t["code"]) for t in request["meta"]["tag"]) == [
        (SELF_ASSERTED, DOCTOR), ("urn:local", "kept")]
    _record_open(imager(world), world)  # the forged tag did not close the imager's access
    del request["meta"]["tag"]  # nor does dropping the doctor's own open their access
    assert http.put(f"/fhir/ServiceRequest/{request['id']}", json=request).status_code == 200
    assert [t["code"] for t in http.get(f"/fhir/ServiceRequest/{request['id']}").json()[
        "meta"]["tag"]] == [DOCTOR]
    _record_closed(http, world)
    # a break-the-glass grant cannot be written by a client either
    pacs = serve(world["core"], world["dir"], mint(world["dir"], ["pacs"]))
    flag = {"resourceType": "Flag", "status": "active", "code": {"text": "x"},
            "subject": {"reference": f"Patient/{world['C']}"},
            "meta": {"tag": [{"system": BREAK_GLASS, "code": DOCTOR}]},
            "period": {"start": "2020-01-01", "end": "2999-01-01"}}
    assert pacs.post("/fhir/Flag", json=flag).status_code == 201
    with_label = {**flag, "meta": {**flag["meta"], "security": [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "BTG"}]}}
    assert pacs.post("/fhir/Flag", json=with_label).status_code == 403
    _record_closed(http, world)


def test_a_patient_they_register_is_theirs_to_see_R_SEC_2(world: dict[str, Any]) -> None:
    http = doctor(world)
    new = http.post("/fhir/Patient", json={"resourceType": "Patient",
                                           "name": [{"family": "NOUVEAU"}]})
    assert new.status_code == 201, new.text
    assert http.get(f"/fhir/Patient/{new.json()['id']}").status_code == 200
    # another doctor did not register them
    assert _user(world, "requesting-physician", OTHER).get(
        f"/fhir/Patient/{new.json()['id']}").status_code == 404


def test_a_care_role_cannot_write_for_a_patient_outside_its_care_R_SEC_2(
        world: dict[str, Any]) -> None:
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
           "subject": {"reference": f"Patient/{world['C']}"}}
    assert imager(world).post("/fhir/Observation", json=obs).status_code == 403
    # naming someone else as requester is no relationship of one's own
    r = doctor(world).post("/fhir/ServiceRequest", json=_request(
        world, f"Practitioner/{world['other']}"))
    assert r.status_code == 403


# -- break-the-glass --------------------------------------------------------------------------

def _alerts(w: dict[str, Any]) -> list[dict[str, Any]]:
    w["core"].audit.flush()
    auditor = _user(w, "auditor", "899999999999")
    r = auditor.get(f"/fhir/AuditEvent?subtype={ALERT}")
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", [])]


def test_break_the_glass_opens_one_record_for_a_time_and_alerts_the_auditor_R_SEC_2_R_SEC_3(
        world: dict[str, Any]) -> None:
    http = doctor(world)
    other = world["ris"].create({"resourceType": "Patient", "name": [{"family": "PAT-D"}]})
    assert _alerts(world) == []
    r = http.get(f"/fhir/Patient/{world['C']}",
                 headers={"X-Break-Glass": "Urgence vitale, patient inconscient"})
    assert r.status_code == 200 and r.json()["name"][0]["family"] == "PAT-C"
    _record_open(http, world)  # later requests need no header while the grant runs
    assert http.get(f"/fhir/Patient/{other['id']}").status_code == 404  # one record only
    _record_closed(imager(world), world)  # nobody else's
    [alert] = _alerts(world)
    assert alert["purposeOfEvent"][0]["coding"][0]["code"] == "BTG"
    assert alert["purposeOfEvent"][0]["text"] == "Urgence vitale, patient inconscient"
    assert alert["type"]["code"] == "110113" and alert["outcome"] == "0"
    assert {"reference": f"Patient/{world['C']}"} in [e["what"] for e in alert["entity"]]
    assert alert["agent"][0]["who"]["identifier"]["value"] == DOCTOR
    # the grant is a Flag the patient's care team sees; when it ends, the record closes
    [flag] = world["ris"].search(f"Flag?patient=Patient/{world['C']}")["entry"]
    grant = flag["resource"]
    assert grant["code"]["text"] == "Urgence vitale, patient inconscient"
    grant["period"]["end"] = format_instant(now_us() - 1_000_000)
    store = world["store"]
    current = store.read("Flag", grant["id"])
    with store.write():
        store_version(None, store, "Flag", grant["id"], grant, "PUT", current)
    _record_closed(http, world)


@pytest.mark.parametrize(("role", "rpps", "headers", "url", "status"), [
    ("requesting-physician", DOCTOR, {"X-Break-Glass": "   "}, "Patient/{C}", 400),
    ("requesting-physician", DOCTOR, {"X-Break-Glass": "x" * 501}, "Patient/{C}", 400),
    ("requesting-physician", DOCTOR, {"X-Break-Glass": "urgence"}, "Observation/{obs}", 400),
    ("requesting-physician", DOCTOR, {"X-Break-Glass": "urgence"},
     "Observation?subject=Patient/{C}", 400),
    ("requesting-physician", DOCTOR, {"X-Break-Glass": "urgence"}, "Patient/unknown", 404),
    ("secretary", DOCTOR, {"X-Break-Glass": "urgence"}, "Patient/{C}", 403),
])
def test_break_the_glass_is_refused_unless_justified_on_one_patient_by_a_clinician_R_SEC_2(
        world: dict[str, Any], role: str, rpps: str, headers: dict[str, str], url: str,
        status: int) -> None:
    http = _user(world, role, rpps)
    r = http.get(f"/fhir/{url.format(C=world['C'], obs=world['obs'])}", headers=headers)
    assert r.status_code == status, r.text
    assert _alerts(world) == []
    assert http.get(f"/fhir/Patient/{world['C']}").status_code == 404  # nothing granted


def test_break_the_glass_needs_strong_authentication_and_a_person_R_SEC_1_R_SEC_2(
        world: dict[str, Any]) -> None:
    weak = _user(world, "requesting-physician", DOCTOR, acr="eidas1")
    glass = {"X-Break-Glass": "urgence"}
    assert weak.get(f"/fhir/Patient/{world['C']}", headers=glass).status_code == 403
    connector = serve(world["core"], world["dir"], mint(world["dir"], ["dmp-connector"],
                                                         ["system/*.rs"]))
    assert connector.get(f"/fhir/Patient/{world['C']}", headers=glass).status_code == 403
    assert _alerts(world) == []
    granted = world["ris"].search(
        "Flag?_security=http://terminology.hl7.org/CodeSystem/v3-ActReason|BTG")
    assert granted["total"] == 0  # no grant was written


def test_a_self_made_request_cannot_be_moved_to_another_patient_R_SEC_2(
        world: dict[str, Any]) -> None:
    """Moving a request made long ago onto C would open what C received since then."""
    http = doctor(world)
    mine = f"Practitioner/{world['doctor']}"
    other = http.post("/fhir/Patient", json={"resourceType": "Patient",
                                             "name": [{"family": "AUTRE"}]}).json()
    request = http.post("/fhir/ServiceRequest", json={
        **_request(world, mine), "subject": {"reference": f"Patient/{other['id']}"}}).json()
    request["subject"] = {"reference": f"Patient/{world['C']}"}
    r = http.put(f"/fhir/ServiceRequest/{request['id']}", json=request)
    assert r.status_code == 403, r.text
    r = http.patch(f"/fhir/ServiceRequest/{request['id']}", headers=JSON_PATCH, json=[
        {"op": "replace", "path": "/subject/reference", "value": f"Patient/{world['C']}"}])
    assert r.status_code == 403, r.text
    # nor can a patient they register claim to be C
    linked = {"resourceType": "Patient", "link": [
        {"other": {"reference": f"Patient/{world['C']}"}, "type": "seealso"}]}
    assert http.post("/fhir/Patient", json=linked).status_code == 403
    _record_closed(http, world)


# -- registering a patient (adversarial finding, issue 27) -----------------------------------

INS = "urn:oid:1.2.250.1.213.1.4.8"


def _register(http: TestClient, ins: str) -> str:
    r = http.post("/fhir/Patient", json={"resourceType": "Patient", "name": [
        {"family": "INSCRIT"}], "identifier": [{"system": INS, "value": ins}]})
    assert r.status_code == 201, r.text
    assert {"system": SELF_ASSERTED, "code": DOCTOR} in [
        {k: t[k] for k in ("system", "code")} for t in r.json()["meta"]["tag"]]
    return str(r.json()["id"])


def test_a_patient_they_register_opens_that_patient_only_not_what_others_write_R_SEC_2(
        world: dict[str, Any]) -> None:
    """The attack: register a person (by INS) before the RIS does, then read the order
    and clinical notes the RIS attaches to that Patient."""
    http = doctor(world)
    ins = "1234567890123"
    patient = _register(http, ins)
    ris = world["ris"]
    order = ris.create({"resourceType": "ServiceRequest", "status": "active",
                        "intent": "order", "subject": {"reference": f"Patient/{patient}"},
                        "requester": {"reference": f"Practitioner/{world['other']}"},
                        "performer": [{"reference": f"Practitioner/{world['imager']}"}]})
    note = ris.create({"resourceType": "Observation", "status": "final",
                       "code": {"text": "renseignements cliniques"},
                       "basedOn": [{"reference": f"ServiceRequest/{order['id']}"}],
                       "subject": {"reference": f"Patient/{patient}"}})
    # the Patient they registered stays theirs: read, update, history
    current = http.get(f"/fhir/Patient/{patient}")
    assert current.status_code == 200, current.text
    body = current.json()
    body["gender"] = "female"
    assert http.put(f"/fhir/Patient/{patient}", json=body).status_code == 200
    history = http.get(f"/fhir/Patient/{patient}/_history").json()
    assert len(history["entry"]) == 2
    # what the RIS wrote for that patient is absent: read, searched, counted, included
    for url in (f"/fhir/ServiceRequest/{order['id']}", f"/fhir/Observation/{note['id']}",
                f"/fhir/ServiceRequest/{order['id']}/_history"):
        assert http.get(url).status_code == 404, url
    for query in (f"ServiceRequest?subject=Patient/{patient}",
                  f"Observation?subject=Patient/{patient}",
                  f"Observation?subject=Patient/{patient}&_summary=count",
                  f"ServiceRequest?subject:Patient.identifier={INS}|{ins}",
                  f"Observation?subject:Patient.identifier={INS}|{ins}&_summary=count",
                  f"Observation?based-on=ServiceRequest/{order['id']}",
                  f"Patient?_has:ServiceRequest:subject:requester=Practitioner/{world['other']}",
                  "Patient?_has:Observation:subject:code:text=renseignements"):
        r = http.get(f"/fhir/{query}")
        assert r.status_code == 200 and r.json()["total"] == 0, (query, r.text)
    r = http.get(f"/fhir/Patient?_id={patient}&_revinclude=ServiceRequest:subject"
                 "&_revinclude=Observation:subject")
    assert r.status_code == 200, r.text
    assert [e["resource"]["id"] for e in r.json()["entry"]] == [patient]
    r = http.get(f"/fhir/Patient/{patient}/$everything")
    assert r.status_code == 200, r.text
    assert [e["resource"]["id"] for e in r.json().get("entry", [])] == [patient]
    # registering opens no writes for that patient either: data comes through requests
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
           "subject": {"reference": f"Patient/{patient}"}}
    assert http.post("/fhir/Observation", json=obs).status_code == 403
    # the imager, made party by the RIS, reaches the whole record
    assert imager(world).get(f"/fhir/Observation/{note['id']}").status_code == 200


def test_register_then_request_naming_oneself_opens_what_comes_after_it_R_SEC_2(
        world: dict[str, Any]) -> None:
    http = doctor(world)
    patient = _register(http, "2234567890123")
    mine = f"Practitioner/{world['doctor']}"
    request = http.post("/fhir/ServiceRequest", json={
        **_request(world, mine), "subject": {"reference": f"Patient/{patient}"}})
    assert request.status_code == 201, request.text
    rid = request.json()["id"]
    own = http.post("/fhir/Observation", json={
        "resourceType": "Observation", "status": "final", "code": {"text": "poids"},
        "subject": {"reference": f"Patient/{patient}"}})
    assert own.status_code == 201, own.text
    later = world["ris"].create({"resourceType": "DiagnosticReport", "status": "final",
                                 "code": {"text": "scanner"},
                                 "basedOn": [{"reference": f"ServiceRequest/{rid}"}],
                                 "subject": {"reference": f"Patient/{patient}"}})
    for url in (f"/fhir/Patient/{patient}", f"/fhir/ServiceRequest/{rid}",
                f"/fhir/Observation/{own.json()['id']}",
                f"/fhir/DiagnosticReport/{later['id']}"):
        assert http.get(url).status_code == 200, url
    found = http.get(f"/fhir/DiagnosticReport?subject=Patient/{patient}").json()
    assert [e["resource"]["id"] for e in found["entry"]] == [later["id"]]
    r = http.get(f"/fhir/Patient?_id={patient}&_revinclude=ServiceRequest:subject")
    assert sorted(e["resource"]["id"] for e in r.json()["entry"]) == sorted([patient, rid])
