"""batch and transaction Bundles (FHIR R4 http.html#transaction)."""

from __future__ import annotations

from typing import Any

from tests.conftest import Fhir

INS = "urn:oid:1.2.250.1.213.1.4.8"


def tx(entries: list[dict[str, Any]], kind: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def test_transaction_resolves_urn_uuid_and_rewrites_references(client: Fhir) -> None:
    bundle = tx([
        {"fullUrl": "urn:uuid:11111111-1111-4111-8111-111111111111",
         "resource": {"resourceType": "Patient",
                      "identifier": [{"system": INS, "value": "1"}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": "urn:uuid:22222222-2222-4222-8222-222222222222",
         "resource": {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
                      "subject": {"reference": "urn:uuid:11111111-1111-4111-8111-111111111111"}},
         "request": {"method": "POST", "url": "ServiceRequest"}},
    ])
    r = client.post("/fhir", json=bundle)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["type"] == "transaction-response"
    assert [e["response"]["status"] for e in out["entry"]] == ["201 Created", "201 Created"]
    pid = out["entry"][0]["resource"]["id"]
    assert out["entry"][1]["resource"]["subject"]["reference"] == f"Patient/{pid}"
    assert out["entry"][0]["response"]["location"].endswith("/_history/1")
    assert client.ids(f"ServiceRequest?subject=Patient/{pid}") == [
        out["entry"][1]["resource"]["id"]]


def test_transaction_is_all_or_nothing(client: Fhir) -> None:
    bundle = tx([
        {"resource": {"resourceType": "Patient", "gender": "female"},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Patient", "birthDate": "not-a-date"},
         "request": {"method": "POST", "url": "Patient"}},
    ])
    r = client.post("/fhir", json=bundle)
    assert r.status_code == 400  # the entry breaks the base specification (issue 25)
    issue = r.json()["issue"][0]
    assert issue["diagnostics"].startswith("Bundle.entry[1]")
    assert client.search("Patient?_summary=count")["total"] == 0
    assert not client.get("/fhir/_history").json().get("entry")


def test_transaction_conditional_reference_and_conditional_create(client: Fhir) -> None:
    existing = client.create({"resourceType": "Patient",
                              "identifier": [{"system": INS, "value": "42"}]})
    bundle = tx([
        {"fullUrl": "urn:uuid:33333333-3333-4333-8333-333333333333",
         "resource": {"resourceType": "Patient", "identifier": [{"system": INS, "value": "42"}]},
         "request": {"method": "POST", "url": "Patient",
                     "ifNoneExist": f"identifier={INS}|42"}},
        {"resource": {"resourceType": "ImagingStudy", "status": "available",
                      "subject": {"reference": f"Patient?identifier={INS}|42"}},
         "request": {"method": "POST", "url": "ImagingStudy"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                      "subject": {"reference": "urn:uuid:33333333-3333-4333-8333-333333333333"}},
         "request": {"method": "POST", "url": "Observation"}},
    ])
    out = client.post("/fhir", json=bundle).json()
    assert out["entry"][0]["response"]["status"] == "200 OK"
    assert out["entry"][1]["resource"]["subject"]["reference"] == f"Patient/{existing['id']}"
    assert out["entry"][2]["resource"]["subject"]["reference"] == f"Patient/{existing['id']}"
    assert client.search("Patient?_summary=count")["total"] == 1


def test_transaction_unresolvable_conditional_reference_fails(client: Fhir) -> None:
    bundle = tx([{"resource": {"resourceType": "ImagingStudy", "status": "available",
                               "subject": {"reference": f"Patient?identifier={INS}|none"}},
                  "request": {"method": "POST", "url": "ImagingStudy"}}])
    r = client.post("/fhir", json=bundle)
    assert r.status_code == 404
    assert "matches 0" in r.json()["issue"][0]["diagnostics"]


def test_transaction_processing_order_delete_post_put_get(client: Fhir) -> None:
    old = client.create({"resourceType": "Organization", "name": "Old"})
    bundle = tx([
        {"request": {"method": "GET", "url": "Organization?name=new"}},
        {"resource": {"resourceType": "Organization", "id": "fixed", "name": "New fixed"},
         "request": {"method": "PUT", "url": "Organization/fixed"}},
        {"resource": {"resourceType": "Organization", "name": "New posted"},
         "request": {"method": "POST", "url": "Organization"}},
        {"request": {"method": "DELETE", "url": f"Organization/{old['id']}"}},
    ])
    out = client.post("/fhir", json=bundle).json()
    statuses = [e["response"]["status"] for e in out["entry"]]
    assert statuses == ["200 OK", "201 Created", "201 Created", "200 OK"]
    found = out["entry"][0]["resource"]
    assert found["resourceType"] == "Bundle" and found["total"] == 2  # GET ran last
    assert client.get(f"/fhir/Organization/{old['id']}").status_code == 410


def test_batch_reports_each_entry_independently(client: Fhir) -> None:
    bundle = tx([
        {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Patient", "gender": 7},
         "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "GET", "url": "Patient/missing"}},
        {"request": {"method": "GET", "url": "Medication/1"}},
    ], kind="batch")
    out = client.post("/fhir", json=bundle).json()
    assert out["type"] == "batch-response"
    assert [e["response"]["status"][:3] for e in out["entry"]] == ["201", "400", "404", "404"]
    assert out["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert client.search("Patient?_summary=count")["total"] == 1


def test_bundle_shape_errors(client: Fhir) -> None:
    assert client.post("/fhir", json={"resourceType": "Bundle", "type": "collection"}
                       ).status_code == 400
    r = client.post("/fhir", json=tx([{"resource": {"resourceType": "Patient"}}]))
    assert r.status_code == 400
    assert r.json()["issue"][0]["expression"] == ["Bundle.entry[0].request"]
    assert client.post("/fhir", json={"resourceType": "Patient"}).status_code == 400


def test_transaction_patch_entry_with_binary_json_patch(client: Fhir) -> None:
    import base64
    import json

    rid = client.create({"resourceType": "Patient", "gender": "male"})["id"]
    patch = base64.b64encode(json.dumps(
        [{"op": "replace", "path": "/gender", "value": "female"}]).encode()).decode()
    out = client.post("/fhir", json=tx([{
        "resource": {"resourceType": "Binary", "contentType": "application/json-patch+json",
                     "data": patch},
        "request": {"method": "PATCH", "url": f"Patient/{rid}"}}])).json()
    assert out["entry"][0]["response"]["status"] == "200 OK"
    assert client.get(f"/fhir/Patient/{rid}").json()["gender"] == "female"
