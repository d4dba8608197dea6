"""No oracle through chains, ``_has``, counts, write answers or roles (R-SEC-2, R-SEC-4;
issue 27 item 5).

The guard narrows every inner set — each chained target and ``_has`` source by its own
type's guard — and every count; a hidden resource is a 404 on every write path, never a
409 that tells it exists; a role documented as reaching no patient data reads none.
The attacks of the issue are tested by name, then every reference parameter of every
patient-data type (read from the search parameter registry) is tried as a chain and as
a ``_has`` by an unrelated physician and by a patient, with the RIS as the control
that the query does find the hidden data.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_server.server.dispatch import FhirServer
from tests.conftest import Fhir, mint, serve
from tests.security.guard_world import (
    PATIENT_TYPES,
    RPPS,
    created_by,
    instance,
    keys_of,
    patient_keys,
    put,
    reference_params,
    set_reference,
)

ATTACKER, IMAGER = "810000000101", "810000000102"
INS = "urn:oid:1.2.250.1.213.1.4.8"
FINESS = "urn:oid:1.2.250.1.71.4.2.2"


@pytest.fixture
def world(secured: FhirServer, store: Any, tmp_path: Path) -> dict[str, Any]:
    """Patient A in the attacker's care (a RIS order names them); patient B in an
    imager's care only; each with an Observation, a document and its Binary."""
    ris = Fhir(serve(secured, tmp_path, mint(tmp_path, ["ris"])))
    w: dict[str, Any] = {"core": secured, "store": store, "dir": tmp_path, "ris": ris,
                         # the control: the same query without any guard (a trusted core)
                         "trusted": Fhir(serve(FhirServer(store), tmp_path, None))}
    for name, rpps in (("attacker", ATTACKER), ("imager", IMAGER)):
        w[name] = ris.create({"resourceType": "Practitioner", "identifier": [
            {"system": RPPS, "value": rpps}], "name": [{"family": name}]})["id"]
    w["org"] = ris.create({"resourceType": "Organization", "name": "CH B",
                           "identifier": [{"system": FINESS, "value": "750000002"}]})["id"]
    w["role"] = ris.create({"resourceType": "PractitionerRole",
                            "practitioner": {"reference": f"Practitioner/{w['imager']}"},
                            "organization": {"reference": f"Organization/{w['org']}"}})["id"]
    for name, ins in (("A", "1234567890123"), ("B", "2234567890123")):
        w[name] = ris.create({"resourceType": "Patient", "name": [{"family": f"PAT-{name}"}],
                              "identifier": [{"system": INS, "value": ins}]})["id"]
        w[f"obs{name}"] = ris.create({
            "resourceType": "Observation", "status": "final", "code": {"text": "poids"},
            "subject": {"reference": f"Patient/{w[name]}"}})["id"]
        doc = ris.create({"resourceType": "DocumentReference", "status": "current",
                          "subject": {"reference": f"Patient/{w[name]}"},
                          "content": [{"attachment": {"contentType": "text/plain"}}]})
        w[f"binary{name}"] = ris.create({
            "resourceType": "Binary", "contentType": "text/plain", "data": "Y3I=",
            "securityContext": {"reference": f"DocumentReference/{doc['id']}"}})["id"]
    ris.create({"resourceType": "ServiceRequest", "status": "active", "intent": "order",
                "subject": {"reference": f"Patient/{w['A']}"},
                "requester": {"reference": f"Practitioner/{w['attacker']}"}})
    w["srB"] = ris.create({"resourceType": "ServiceRequest", "status": "active",
                           "intent": "order", "subject": {"reference": f"Patient/{w['B']}"},
                           "requester": {"reference": f"PractitionerRole/{w['role']}"},
                           "performer": [{"reference": f"Practitioner/{w['imager']}"}]})["id"]
    return w


def _client(w: dict[str, Any], roles: list[str], scopes: list[str], **claims: Any
            ) -> TestClient:
    return serve(w["core"], w["dir"], mint(w["dir"], roles, scopes, **claims))


def attacker(w: dict[str, Any]) -> TestClient:
    return _client(w, ["requesting-physician"], ["user/*.cruds"], id_nat_ps=ATTACKER,
                   sub="attacker")


def patient_a(w: dict[str, Any]) -> TestClient:
    return _client(w, ["patient"], ["patient/*.rs"], patient=w["A"], sub="patient-a")


def _ids(http: TestClient | Fhir, query: str) -> list[str]:
    r = http.get(f"/fhir/{query}")
    assert r.status_code == 200, (query, r.text)
    return [e["resource"]["id"] for e in r.json().get("entry", [])
            if e["search"]["mode"] == "match"]


def _total(http: TestClient | Fhir, query: str) -> int:
    r = http.get(f"/fhir/{query}")
    assert r.status_code == 200, (query, r.text)
    return int(r.json()["total"])


# -- the attacks of the issue ----------------------------------------------------------

def test_a_chain_does_not_confirm_another_patients_name_or_ins_R_SEC_2(
        world: dict[str, Any]) -> None:
    """``Observation?focus:Patient.name=PAT-B`` on an Observation of the attacker's own
    patient that points at B: the inner Patient set is narrowed too."""
    dr = attacker(world)
    mine = dr.post("/fhir/Observation", json={
        "resourceType": "Observation", "status": "final", "code": {"text": "x"},
        "subject": {"reference": f"Patient/{world['A']}"},
        "focus": [{"reference": f"Patient/{world['B']}"}]})
    assert mine.status_code == 201, mine.text
    for query in ("Observation?focus:Patient.name=PAT-B",
                  f"Observation?focus:Patient.identifier={INS}|2234567890123",
                  "Observation?focus.name=PAT-B&_summary=count"):
        assert world["ris"].search(query)["total"] == 1, query  # the control: it matches
        r = dr.get(f"/fhir/{query}")
        assert r.status_code == 200 and r.json()["total"] == 0, (query, r.text)
    # what the attacker may see through the same chain still works
    assert sorted(_ids(dr, "Observation?subject:Patient.name=PAT-A")) == sorted(
        [world["obsA"], mine.json()["id"]])


def test_has_does_not_reveal_another_patients_imager_R_SEC_2_R_SEC_4(
        world: dict[str, Any]) -> None:
    queries = {f"Practitioner?_has:ServiceRequest:performer:subject=Patient/{world['B']}":
               world["imager"],
               "PractitionerRole?_has:ServiceRequest:requester:patient.name=PAT-B":
               world["role"]}
    for query, found in queries.items():
        assert _ids(world["ris"], query) == [found], query  # the control
        for who in (attacker(world), patient_a(world)):
            assert _ids(who, query) == [], query
            assert _total(who, f"{query}&_summary=count") == 0, query


def test_counts_count_only_what_may_be_read_R_SEC_2(world: dict[str, Any]) -> None:
    dr = attacker(world)
    assert world["ris"].search("Binary?_summary=count")["total"] == 2
    assert _total(dr, "Binary?_summary=count") == 1
    assert _ids(dr, "Binary") == [world["binaryA"]]
    assert dr.get(f"/fhir/Binary/{world['binaryB']}").status_code == 404
    assert _total(dr, "?_type=Binary,DocumentReference,Observation&_summary=count") == 3
    assert _total(patient_a(world), "Binary?_summary=count") == 1


def test_hidden_resources_are_404_on_every_write_path_R_SEC_2(world: dict[str, Any]) -> None:
    """A request of B is absent for the attacker whatever the write: never the 409
    'changed concurrently' that told it exists, nor a 201 over it."""
    dr = attacker(world)
    hidden = world["srB"]
    body = {"resourceType": "ServiceRequest", "id": hidden, "status": "active",
            "intent": "order", "subject": {"reference": f"Patient/{world['A']}"},
            "requester": {"reference": f"Practitioner/{world['attacker']}"}}
    patch = [{"op": "replace", "path": "/status", "value": "revoked"}]
    json_patch = {"content-type": "application/json-patch+json"}
    unknown = str(uuid.uuid4())
    assert dr.put(f"/fhir/ServiceRequest/{hidden}", json=body).status_code == 404
    assert dr.put(f"/fhir/ServiceRequest?_id={hidden}", json=body).status_code == 404
    # with If-Match: the same answer as for an id that does not exist
    stale = {"If-Match": 'W/"1"'}
    assert dr.put(f"/fhir/ServiceRequest/{hidden}", json=body, headers=stale
                  ).status_code == dr.put(f"/fhir/ServiceRequest/{unknown}",
                                          json={**body, "id": unknown}, headers=stale
                                          ).status_code == 412
    assert dr.patch(f"/fhir/ServiceRequest/{hidden}", json=patch, headers=json_patch
                    ).status_code == 404
    assert dr.patch(f"/fhir/ServiceRequest?_id={hidden}", json=patch, headers=json_patch
                    ).status_code == 404
    entry = {"request": {"method": "PUT", "url": f"ServiceRequest/{hidden}"}, "resource": body}
    r = dr.post("/fhir", json={"resourceType": "Bundle", "type": "transaction",
                               "entry": [entry]})
    assert r.status_code == 404, r.text
    r = dr.post("/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": [entry]})
    assert r.json()["entry"][0]["response"]["status"].startswith("404"), r.text
    # nothing was written, and nothing named the request's patient
    request = world["ris"].get(f"/fhir/ServiceRequest/{hidden}").json()
    assert request["meta"]["versionId"] == "1"
    assert "PAT-B" not in r.text


def test_admin_reads_no_patient_data_R_SEC_2(world: dict[str, Any]) -> None:
    admin = _client(world, ["admin"], ["user/*.cruds"], id_nat_ps="899999999990",
                    sub="admin")
    for url in (f"/fhir/Binary/{world['binaryB']}", "/fhir/Binary?_summary=count",
                f"/fhir/Patient/{world['B']}"):
        assert admin.get(url).status_code == 403, url
    assert admin.get(f"/fhir/Organization/{world['org']}").status_code == 200


# -- every reference parameter of a patient-data type -------------------------------------

def _visible_target(w: dict[str, Any], targets: list[str]) -> tuple[str, str]:
    """A resource of one of ``targets`` the attacker and patient A may see."""
    store = w["store"]
    for kind in ("Practitioner", "Organization", "PractitionerRole", "Endpoint", "Device"):
        if kind in targets:
            return kind, put(store, instance(kind))
    if "Patient" in targets:
        return "Patient", w["A"]
    kind = targets[0]
    return kind, put(store, instance(kind, w["A"]))


def test_has_through_every_reference_parameter_is_narrowed_R_SEC_2_R_SEC_4(
        world: dict[str, Any]) -> None:
    """``T?_has:S:param:_id=<B's S>`` finds T through a resource of B: it must find
    nothing for the attacker or patient A — for every reference parameter of every
    patient-data type S."""
    store, failures, tried = world["store"], [], 0
    clients = {"attacker": attacker(world), "patient A": patient_a(world)}
    for source, param, targets in reference_params():
        keys = keys_of(param)
        if keys is None or (source != "Patient" and keys == patient_keys(source)):
            continue  # the parameter is the resource's own patient reference
        kind, target = _visible_target(world, targets)
        hidden = instance(source, None if source == "Patient" else world["B"])
        set_reference(hidden, keys, f"{kind}/{target}")
        hid = put(store, hidden)
        query = f"{kind}?_has:{source}:{param.name}:_id={hid}"
        if target not in _ids(world["trusted"], query):
            failures.append(f"control: {query} finds nothing for the RIS")
            continue
        tried += 1
        for name, http in clients.items():
            if http.get(f"/fhir/{kind}/{target}").status_code != 200:
                continue  # the outer resource is not theirs to see anyway
            assert http.get(f"/fhir/{source}/{hid}").status_code in (403, 404)
            r = http.get(f"/fhir/{query}")  # 403: no right to search the source type
            if r.status_code != 403 and (r.status_code != 200 or r.json().get("entry")):
                failures.append(f"{name}: {query} reveals {source}/{hid}: {r.status_code}")
    assert not failures, "\n".join(failures)
    assert tried >= 40  # the registry's reference parameters, not a hand-picked few


def test_chains_through_every_reference_parameter_are_narrowed_R_SEC_2(
        world: dict[str, Any]) -> None:
    """``S?param:T._id=<B's T>`` on a resource of A that points at B's T: the chained
    set of T is narrowed — for every reference parameter and patient-data target."""
    store, failures, tried = world["store"], [], 0
    dr = attacker(world)
    for source, param, targets in reference_params():
        keys = keys_of(param)
        if keys is None or (source != "Patient" and keys == patient_keys(source)):
            continue
        for kind in (t for t in targets if t in PATIENT_TYPES):
            target = world["B"] if kind == "Patient" else put(store, instance(kind, world["B"]))
            visible = instance(source, None if source == "Patient" else world["A"],
                               **({"meta": created_by(ATTACKER)} if source == "Patient"
                                  else {}))
            set_reference(visible, keys, f"{kind}/{target}")
            vid = put(store, visible)
            query = f"{source}?{param.name}:{kind}._id={target}"
            if _ids(world["trusted"], query) != [vid]:
                failures.append(f"control: {query} does not find {source}/{vid}")
                continue
            assert dr.get(f"/fhir/{source}/{vid}").status_code == 200, (source, param.name)
            assert dr.get(f"/fhir/{kind}/{target}").status_code in (403, 404)
            tried += 1
            r = dr.get(f"/fhir/{query}")  # 403: no right to search the chained type
            if r.status_code != 403 and (r.status_code != 200 or r.json().get("entry")):
                failures.append(f"{query} reveals {kind}/{target}: {r.status_code}")
    assert not failures, "\n".join(failures)
    assert tried >= 100
