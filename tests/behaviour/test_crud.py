"""Instance interactions: read, vread, create, update, patch, delete (FHIR R4 http.html)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Fhir

FHIR_JSON = {"content-type": "application/fhir+json"}


def patient(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": "Durand", "given": ["Anne"]}],
            "gender": "female", "birthDate": "1980-04-02", **extra}


def test_create_assigns_id_version_and_headers(client: Fhir) -> None:
    r = client.post("/fhir/Patient", json=patient(id="client-chosen"), headers=FHIR_JSON)
    assert r.status_code == 201
    body = r.json()
    assert body["id"] != "client-chosen"
    assert body["meta"]["versionId"] == "1"
    assert r.headers["etag"] == 'W/"1"'
    assert r.headers["location"].endswith(f"/fhir/Patient/{body['id']}/_history/1")
    assert r.headers["content-type"].startswith("application/fhir+json")
    assert "last-modified" in r.headers


def test_read_returns_stored_resource_with_etag(client: Fhir) -> None:
    created = client.create(patient())
    r = client.get(f"/fhir/Patient/{created['id']}")
    assert r.status_code == 200
    assert r.json() == created
    assert r.headers["etag"] == 'W/"1"'


def test_read_unknown_is_404_operation_outcome(client: Fhir) -> None:
    r = client.get("/fhir/Patient/nope")
    assert r.status_code == 404
    assert r.json()["resourceType"] == "OperationOutcome"
    assert r.json()["issue"][0]["code"] == "not-found"


def test_unsupported_type_is_404_with_clear_message(client: Fhir) -> None:
    r = client.get("/fhir/Medication/1")
    assert r.status_code == 404
    assert "resource type not supported" in r.json()["issue"][0]["diagnostics"]


def test_update_creates_new_version_and_vread_keeps_old(client: Fhir) -> None:
    created = client.create(patient())
    rid = created["id"]
    r = client.put(f"/fhir/Patient/{rid}", json=patient(id=rid, gender="other"))
    assert r.status_code == 200
    assert r.json()["meta"]["versionId"] == "2"
    assert client.get(f"/fhir/Patient/{rid}/_history/1").json()["gender"] == "female"
    assert client.get(f"/fhir/Patient/{rid}/_history/2").json()["gender"] == "other"
    assert client.get(f"/fhir/Patient/{rid}/_history/3").status_code == 404


def test_update_as_create_with_client_id(client: Fhir) -> None:
    r = client.put("/fhir/Patient/ins-123", json=patient(id="ins-123"))
    assert r.status_code == 201
    assert client.get("/fhir/Patient/ins-123").json()["meta"]["versionId"] == "1"


@pytest.mark.parametrize("body_id,status", [(None, 400), ("other", 400)])
def test_update_id_must_match_url(client: Fhir, body_id: str | None, status: int) -> None:
    body = patient() if body_id is None else patient(id=body_id)
    r = client.put("/fhir/Patient/abc", json=body)
    assert r.status_code == status
    assert r.json()["issue"][0]["expression"] == ["Patient.id"]


def test_resource_type_must_match_url(client: Fhir) -> None:
    r = client.post("/fhir/Practitioner", json=patient())
    assert r.status_code == 400
    assert r.json()["issue"][0]["expression"] == ["resourceType"]


def test_if_match_mismatch_is_412_and_match_updates(client: Fhir) -> None:
    rid = client.create(patient())["id"]
    stale = client.put(f"/fhir/Patient/{rid}", json=patient(id=rid), headers={"If-Match": 'W/"7"'})
    assert stale.status_code == 412
    ok = client.put(f"/fhir/Patient/{rid}", json=patient(id=rid), headers={"If-Match": 'W/"1"'})
    assert ok.status_code == 200


@pytest.mark.parametrize("prefer,has_body,rtype", [
    ("return=minimal", False, None),
    ("return=representation", True, "Patient"),
    ("return=OperationOutcome", True, "OperationOutcome"),
])
def test_prefer_return(client: Fhir, prefer: str, has_body: bool, rtype: str | None) -> None:
    r = client.post("/fhir/Patient", json=patient(), headers={"Prefer": prefer})
    assert r.status_code == 201
    assert bool(r.content) is has_body
    if rtype:
        assert r.json()["resourceType"] == rtype
    assert r.headers["location"]


def test_delete_is_logical_then_read_gone_and_history_kept(client: Fhir) -> None:
    rid = client.create(patient())["id"]
    assert client.delete(f"/fhir/Patient/{rid}").status_code == 200
    gone = client.get(f"/fhir/Patient/{rid}")
    assert gone.status_code == 410
    assert gone.json()["issue"][0]["code"] == "deleted"
    history = client.get(f"/fhir/Patient/{rid}/_history").json()
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "POST"]
    assert "resource" not in history["entry"][0]
    assert client.get(f"/fhir/Patient/{rid}/_history/1").status_code == 200
    assert client.ids(f"Patient?_id={rid}") == []
    again = client.put(f"/fhir/Patient/{rid}", json=patient(id=rid))
    assert again.status_code == 201 and again.json()["meta"]["versionId"] == "3"


def test_delete_unknown_is_200_nothing_deleted(client: Fhir) -> None:
    # http.html#delete: deleting is idempotent (tests/behaviour/test_http_semantics.py)
    r = client.delete("/fhir/Patient/unknown")
    assert r.status_code == 200 and "nothing deleted" in r.json()["issue"][0]["diagnostics"]


def test_json_patch_applies_and_versions(client: Fhir) -> None:
    rid = client.create(patient())["id"]
    r = client.patch(f"/fhir/Patient/{rid}",
                     json=[{"op": "replace", "path": "/gender", "value": "male"},
                           {"op": "add", "path": "/active", "value": True}],
                     headers={"content-type": "application/json-patch+json"})
    assert r.status_code == 200, r.text
    assert r.json()["gender"] == "male" and r.json()["active"] is True
    assert r.json()["meta"]["versionId"] == "2"


def test_json_patch_producing_invalid_resource_is_rejected(client: Fhir) -> None:
    rid = client.create(patient())["id"]
    r = client.patch(f"/fhir/Patient/{rid}",
                     json=[{"op": "replace", "path": "/birthDate", "value": "not-a-date"}],
                     headers={"content-type": "application/json-patch+json"})
    assert r.status_code == 400  # the result breaks the base specification (issue 25)
    assert r.json()["issue"][0]["expression"] == ["Patient.birthDate"]
    assert client.get(f"/fhir/Patient/{rid}").json()["meta"]["versionId"] == "1"


def test_malformed_json_is_400_structure(client: Fhir) -> None:
    r = client.post("/fhir/Patient", content=b'{"resourceType": "Patient",', headers=FHIR_JSON)
    assert r.status_code == 400
    assert r.json()["issue"][0]["code"] == "structure"


def test_invalid_resource_is_400_naming_each_element(client: Fhir) -> None:
    r = client.post("/fhir/Patient", json={"resourceType": "Patient", "birthDate": "02/04/1980",
                                           "name": [{"given": "Anne"}], "colour": "blue"})
    assert r.status_code == 400  # base specification: Bad Request (issue 25)
    expressions = [i["expression"][0] for i in r.json()["issue"]]
    assert expressions == ["Patient.birthDate", "Patient.name[0].given", "Patient.colour"]


def test_server_owned_meta_is_overwritten(client: Fhir) -> None:
    body = patient(meta={"versionId": "99", "lastUpdated": "2000-01-01T00:00:00Z",
                         "tag": [{"system": "urn:test", "code": "t"}]})
    created = client.create(body)
    assert created["meta"]["versionId"] == "1"
    assert created["meta"]["lastUpdated"] != "2000-01-01T00:00:00Z"
    assert created["meta"]["tag"] == [{"system": "urn:test", "code": "t"}]


def test_xml_in_and_out(client: Fhir) -> None:
    rid = client.create(patient())["id"]
    xml = client.get(f"/fhir/Patient/{rid}", headers={"accept": "application/fhir+xml"})
    assert xml.status_code == 200
    assert xml.headers["content-type"].startswith("application/fhir+xml")
    assert b'<family value="Durand"/>' in xml.content
    r = client.post("/fhir/Patient", content=xml.content,
                    headers={"content-type": "application/fhir+xml"})
    assert r.status_code == 201
    assert r.json()["name"] == [{"family": "Durand", "given": ["Anne"]}]
    assert client.get(f"/fhir/Patient/{rid}?_format=xml").content.startswith(b"<?xml")


def test_malformed_xml_is_400(client: Fhir) -> None:
    r = client.post("/fhir/Patient", content=b"<Patient xmlns='http://hl7.org/fhir'>",
                    headers={"content-type": "application/fhir+xml"})
    assert r.status_code == 400


def test_summary_and_elements_subset_and_tag(client: Fhir) -> None:
    rid = client.create(patient(text={"status": "generated",
                                      "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">A</div>"},
                                maritalStatus={"text": "M"}))["id"]
    summary = client.get(f"/fhir/Patient/{rid}?_summary=true").json()
    assert "maritalStatus" not in summary and "text" not in summary and summary["name"]
    assert summary["meta"]["tag"][-1]["code"] == "SUBSETTED"
    data = client.get(f"/fhir/Patient/{rid}?_summary=data").json()
    assert "text" not in data and "maritalStatus" in data
    elements = client.get(f"/fhir/Patient/{rid}?_elements=gender").json()
    assert set(elements) == {"resourceType", "id", "meta", "gender"}


def test_pretty_output(client: Fhir) -> None:
    rid = client.create(patient())["id"]
    assert b"\n  " in client.get(f"/fhir/Patient/{rid}?_pretty=true").content


def test_unacceptable_format_is_406(client: Fhir) -> None:
    rid = client.create(patient())["id"]
    assert client.get(f"/fhir/Patient/{rid}", headers={"accept": "text/csv"}).status_code == 406


def test_history_type_and_system_with_since_and_count(trusted_client: Fhir) -> None:
    client = trusted_client  # counts every stored version, so no audit trail here
    first = client.create(patient())
    client.create({"resourceType": "Organization", "name": "CH Test"})
    client.put(f"/fhir/Patient/{first['id']}", json=patient(id=first["id"]))
    patients = client.get("/fhir/Patient/_history").json()
    assert patients["type"] == "history" and patients["total"] == 2
    system = client.get("/fhir/_history?_count=2").json()
    assert system["total"] == 3 and len(system["entry"]) == 2
    nxt = next(link["url"] for link in system["link"] if link["relation"] == "next")
    rest = client.get(nxt.replace("http://testserver", "")).json()
    assert len(rest["entry"]) == 1
    since = first["meta"]["lastUpdated"]
    assert client.get(f"/fhir/_history?_since={since}").json()["total"] == 3
    assert client.get("/fhir/_history?_since=2999-01-01T00:00:00Z").json()["total"] == 0


def test_capability_statement(client: Fhir) -> None:
    cs = client.get("/fhir/metadata").json()
    assert cs["resourceType"] == "CapabilityStatement" and cs["fhirVersion"] == "4.0.1"
    types = {r["type"]: r for r in cs["rest"][0]["resource"]}
    assert len(types) == 22 + 4 and "Medication" not in types  # Group, Subscription: issue 31
    assert types["ValueSet"]["interaction"] == [{"code": "read"}, {"code": "vread"},
                                                {"code": "search-type"}]
    assert {o["name"] for o in types["ValueSet"]["operation"]} == {"expand", "validate-code"}
    sr = {p["name"]: p["type"] for p in types["ServiceRequest"]["searchParam"]}
    assert sr["subject"] == "reference" and sr["authored"] == "date" and "_lastUpdated" in sr
    assert {"code": "transaction"} in cs["rest"][0]["interaction"]
    assert "application/fhir+xml" in cs["format"]


def test_read_answers_304_for_current_etag_and_echoes_request_id(client: Fhir) -> None:
    rid = client.create(patient())["id"]
    r = client.get(f"/fhir/Patient/{rid}", headers={"If-None-Match": 'W/"1"',
                                                   "X-Request-Id": "req-42"})
    assert r.status_code == 304 and r.content == b""
    assert r.headers["x-request-id"] == "req-42"
    assert client.get(f"/fhir/Patient/{rid}", headers={"If-None-Match": 'W/"9"'}
                      ).status_code == 200


def test_head_read_has_headers_only(client: Fhir) -> None:
    rid = client.create(patient())["id"]
    r = client.head(f"/fhir/Patient/{rid}")
    assert r.status_code == 200 and r.content == b"" and r.headers["etag"] == 'W/"1"'
