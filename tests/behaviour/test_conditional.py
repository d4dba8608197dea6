"""Conditional interactions and concurrency (FHIR R4 http.html#ccreate, #concurrency).

Two concurrent conditional creates with the same criteria must never both create —
the bug HAPI #3141, Medplum #4234 and MS FHIR #1382 had.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from fhir_server.core.model import FhirRequest, Interaction
from fhir_server.server.dispatch import FhirServer
from tests.conftest import Fhir

INS = "urn:oid:1.2.250.1.213.1.4.8"


def pat(value: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": INS, "value": value}]}


def test_conditional_create_returns_existing(client: Fhir) -> None:
    first = client.post("/fhir/Patient", json=pat("1"),
                        headers={"If-None-Exist": f"identifier={INS}|1"})
    assert first.status_code == 201
    again = client.post("/fhir/Patient", json=pat("1"),
                        headers={"If-None-Exist": f"identifier={INS}|1"})
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]


def test_conditional_create_multiple_matches_is_412(client: Fhir) -> None:
    client.create(pat("dup"))
    client.create(pat("dup"))
    r = client.post("/fhir/Patient", json=pat("dup"),
                    headers={"If-None-Exist": f"identifier={INS}|dup"})
    assert r.status_code == 412


def test_conditional_criteria_with_unknown_parameter_is_400(client: Fhir) -> None:
    r = client.post("/fhir/Patient", json=pat("1"), headers={"If-None-Exist": "nonsense=1"})
    assert r.status_code == 400


def test_conditional_update_creates_then_updates(client: Fhir) -> None:
    url = f"/fhir/Patient?identifier={INS}|cu"
    created = client.put(url, json={**pat("cu"), "gender": "male"})
    assert created.status_code == 201
    updated = client.put(url, json={**pat("cu"), "gender": "female"})
    assert updated.status_code == 200
    assert updated.json()["id"] == created.json()["id"]
    assert updated.json()["meta"]["versionId"] == "2"


def test_conditional_delete(client: Fhir) -> None:
    rid = client.create(pat("cd"))["id"]
    assert client.delete(f"/fhir/Patient?identifier={INS}|cd").status_code == 200
    assert client.get(f"/fhir/Patient/{rid}").status_code == 410
    assert client.delete(f"/fhir/Patient?identifier={INS}|cd").status_code == 200


def _create_request(value: str) -> FhirRequest:
    return FhirRequest(Interaction.CREATE, "Patient", body=pat(value),
                       headers={"if-none-exist": f"identifier={INS}|{value}"})


def test_concurrent_conditional_creates_create_exactly_one(fhir: FhirServer) -> None:
    barrier = threading.Barrier(8)

    def go(_: int) -> int:
        barrier.wait()
        return fhir.handle(_create_request("race")).status

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(go, range(8)))
    assert sorted(statuses) == [200] * 7 + [201]
    query = FhirRequest(Interaction.SEARCH_TYPE, "Patient",
                        params=[("identifier", f"{INS}|race"), ("_summary", "count")])
    assert fhir.handle(query).resource["total"] == 1  # type: ignore[index]


def test_concurrent_if_match_updates_only_one_wins(fhir: FhirServer) -> None:
    created = fhir.handle(FhirRequest(Interaction.CREATE, "Patient", body=pat("im")))
    rid = created.headers["Location"].split("/")[-3]
    barrier = threading.Barrier(6)

    def go(i: int) -> int:
        body = {**pat("im"), "id": rid, "gender": ["male", "female"][i % 2]}
        barrier.wait()
        return fhir.handle(FhirRequest(Interaction.UPDATE, "Patient", rid, body=body,
                                       headers={"if-match": 'W/"1"'})).status

    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(go, range(6)))
    assert sorted(statuses) == [200] + [412] * 5


def test_stale_version_write_is_refused_and_changes_nothing(store: Any) -> None:
    """A writer that read version 1 after someone wrote version 2 must not overwrite it."""
    from fhir_server.core.errors import FhirError
    from fhir_server.store.base import Stored

    def version(vid: int, gender: str) -> Stored:
        body = f'{{"resourceType":"Patient","id":"cas","gender":"{gender}"}}'.encode()
        return Stored("Patient", "cas", vid, vid, False, body, "PUT")

    for vid, gender in ((1, "male"), (2, "female")):
        with store.write():
            store.put(version(vid, gender), None)
    with pytest.raises(FhirError) as exc:
        with store.write():
            store.put(version(2, "other"), None)  # computed from the stale version 1
    assert exc.value.status == 409
    current = store.read("Patient", "cas")
    assert current.vid == 2 and b'"female"' in current.body
    assert store.vread("Patient", "cas", 2).body == version(2, "female").body
