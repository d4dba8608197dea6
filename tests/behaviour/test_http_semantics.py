"""HTTP semantics a conformance suite checks (FHIR R4 http.html, search.html; issue 25).

If-Match with opaque version ids, delete as a version and as an idempotent interaction,
``_elements`` on choice elements, urn:uuid in narrative and contained resources,
generic media types, CORS, ``Preference-Applied``, unsupported types before rights.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_server.config import Settings
from fhir_server.core.model import FhirRequest, Interaction, RequestContext
from fhir_server.http.app import ReadFastPath
from fhir_server.server.dispatch import FhirServer
from teleimagerie.wiring import create_app
from tests.conftest import Fhir, mint, serve

XHTML = "http://www.w3.org/1999/xhtml"


def patient(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": "Martin"}], "gender": "male",
            **extra}


def observation(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final",
            "code": {"text": "poids"}, **extra}


def tx(entries: list[dict[str, Any]], kind: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


# -- If-Match: version ids are opaque (http.html#concurrency) --------------------------------

@pytest.mark.parametrize("tag", ['W/"outdated-version"', "garbage", '""', 'W/"1x"', 'W/"2"',
                                 '"-1"'])
def test_if_match_with_an_etag_not_ours_is_412(client: Fhir, tag: str) -> None:
    rid = client.create(patient())["id"]
    put = client.put(f"/fhir/Patient/{rid}", json=patient(id=rid), headers={"If-Match": tag})
    assert put.status_code == 412, put.text
    assert put.json()["issue"][0]["code"] == "conflict"
    patched = client.patch(f"/fhir/Patient/{rid}", headers={
        "If-Match": tag, "content-type": "application/json-patch+json"},
        json=[{"op": "replace", "path": "/gender", "value": "other"}])
    assert patched.status_code == 412
    assert client.delete(f"/fhir/Patient/{rid}", headers={"If-Match": tag}).status_code == 412
    assert client.get(f"/fhir/Patient/{rid}").json()["meta"]["versionId"] == "1"


@pytest.mark.parametrize("tag", ['W/"1"', '"1"', 'W/"7", W/"1"', "*"])
def test_if_match_naming_the_current_version_updates(client: Fhir, tag: str) -> None:
    rid = client.create(patient())["id"]
    r = client.put(f"/fhir/Patient/{rid}", json=patient(id=rid), headers={"If-Match": tag})
    assert r.status_code == 200, r.text
    assert r.headers["etag"] == 'W/"2"'


def test_if_match_on_a_resource_that_never_existed_is_412(client: Fhir) -> None:
    r = client.put("/fhir/Patient/never", json=patient(id="never"), headers={"If-Match": "*"})
    assert r.status_code == 412


# -- DELETE: a version, and idempotent (http.html#delete) ------------------------------------

def test_delete_answers_the_version_history_and_vread_know(client: Fhir) -> None:
    rid = client.create(patient())["id"]
    deleted = client.delete(f"/fhir/Patient/{rid}")
    assert deleted.status_code == 200
    assert deleted.json()["resourceType"] == "OperationOutcome"
    assert deleted.headers["etag"] == 'W/"2"'
    entry = client.get(f"/fhir/Patient/{rid}/_history").json()["entry"][0]
    assert entry["request"]["method"] == "DELETE"
    assert entry["response"]["etag"] == deleted.headers["etag"]
    assert entry["response"]["status"] == "200 OK"
    vread = client.get(f"/fhir/Patient/{rid}/_history/2")
    read = client.get(f"/fhir/Patient/{rid}")
    for gone in (vread, read):
        assert gone.status_code == 410
        assert gone.headers["etag"] == deleted.headers["etag"]
        assert gone.headers["last-modified"] == deleted.headers["last-modified"]


def test_put_with_the_etag_of_the_delete_brings_the_resource_back(client: Fhir) -> None:
    rid = client.create(patient())["id"]
    etag = client.delete(f"/fhir/Patient/{rid}").headers["etag"]
    stale = client.put(f"/fhir/Patient/{rid}", json=patient(id=rid), headers={"If-Match": 'W/"1"'})
    assert stale.status_code == 412
    back = client.put(f"/fhir/Patient/{rid}", json=patient(id=rid), headers={"If-Match": etag})
    assert back.status_code == 201, back.text
    assert back.json()["meta"]["versionId"] == "3" and back.headers["etag"] == 'W/"3"'
    assert client.get(f"/fhir/Patient/{rid}").status_code == 200


def test_delete_of_a_missing_resource_is_200_with_an_outcome(client: Fhir) -> None:
    r = client.delete("/fhir/Patient/never-was")
    assert r.status_code == 200
    issue = r.json()["issue"][0]
    assert issue["severity"] == "information" and "nothing deleted" in issue["diagnostics"]
    assert "etag" not in r.headers
    assert client.get("/fhir/Patient/never-was").status_code == 404  # no version created
    rid = client.create(patient())["id"]
    client.delete(f"/fhir/Patient/{rid}")
    again = client.delete(f"/fhir/Patient/{rid}")
    assert again.status_code == 200 and again.headers["etag"] == 'W/"2"'


@pytest.mark.parametrize("prefer,status,applied", [
    ("return=minimal", 204, "return=minimal"),
    ("return=OperationOutcome", 200, "return=OperationOutcome"),
    ("return=representation", 200, None),  # nothing to represent: default answer
])
def test_delete_honours_prefer_return(client: Fhir, prefer: str, status: int,
                                      applied: str | None) -> None:
    rid = client.create(patient())["id"]
    r = client.delete(f"/fhir/Patient/{rid}", headers={"Prefer": prefer})
    assert r.status_code == status
    assert bool(r.content) is (status == 200)
    assert r.headers.get("preference-applied") == applied
    assert r.headers["etag"] == 'W/"2"'


def test_transaction_deleting_a_missing_resource_is_not_refused(client: Fhir) -> None:
    r = client.post("/fhir", json=tx([
        {"request": {"method": "DELETE", "url": "Patient/not-there"}},
        {"request": {"method": "DELETE", "url": "Patient?identifier=urn:oid:1.2.3|none"}},
        {"resource": patient(), "request": {"method": "POST", "url": "Patient"}},
    ]))
    assert r.status_code == 200, r.text
    assert [e["response"]["status"] for e in r.json()["entry"]] == [
        "200 OK", "200 OK", "201 Created"]


# -- _elements and choice elements (search.html#elements) -----------------------------------

def test_elements_names_choice_elements_by_their_base_name(client: Fhir) -> None:
    pid = client.create(patient(_gender={"extension": [
        {"url": "http://example.org/ext", "valueString": "x"}]}))["id"]
    obs = client.create(observation(
        subject={"reference": f"Patient/{pid}"}, effectiveDateTime="2024-03-01T10:00:00Z",
        valueQuantity={"value": 72, "unit": "kg"}, note=[{"text": "à jeun"}]))
    r = client.get(f"/fhir/Observation/{obs['id']}?_elements=value,effective")
    body = r.json()
    assert body["valueQuantity"] == {"value": 72, "unit": "kg"}
    assert body["effectiveDateTime"] == "2024-03-01T10:00:00Z"
    assert body["status"] == "final" and body["code"] == {"text": "poids"}  # mandatory
    assert "note" not in body and "subject" not in body
    assert {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
            "code": "SUBSETTED", "display": "Resource encoded in summary mode"} in \
        body["meta"]["tag"]
    page = client.search(f"Observation?_id={obs['id']}&_elements=value")
    assert page["entry"][0]["resource"]["valueQuantity"]["value"] == 72
    assert "effectiveDateTime" not in page["entry"][0]["resource"]
    # the full name still works; a primitive keeps its extensions
    assert "valueQuantity" in client.get(
        f"/fhir/Observation/{obs['id']}?_elements=valueQuantity").json()
    gender = client.get(f"/fhir/Patient/{pid}?_elements=gender").json()
    assert gender["gender"] == "male" and "_gender" in gender and "name" not in gender


def test_elements_keeps_a_required_choice(client: Fhir) -> None:
    pid = client.create(patient())["id"]
    given = client.create({
        "resourceType": "MedicationAdministration", "status": "completed",
        "medicationCodeableConcept": {"text": "iohexol"},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": "2024-03-01T10:00:00Z", "note": [{"text": "x"}]})
    body = client.get(f"/fhir/MedicationAdministration/{given['id']}?_elements=status").json()
    assert body["medicationCodeableConcept"] == {"text": "iohexol"}  # medication[x] 1..1
    assert body["effectiveDateTime"] and body["subject"]
    assert "note" not in body


# -- transaction: urn:uuid everywhere the rules say (http.html#trules) -----------------------

def test_transaction_replaces_urn_uuid_in_narrative_and_contained(client: Fhir) -> None:
    pat, img = ("urn:uuid:5f1a3c3e-0000-4000-8000-000000000001",
                "urn:uuid:5f1a3c3e-0000-4000-8000-000000000002")
    div = (f'<div xmlns="{XHTML}"><p>Patient <a href="{pat}">Martin</a>, '
           f"<img src='{img}' alt='courbe'/>, <a href=\"urn:uuid:elsewhere\">x</a></p></div>")
    obs = observation(
        text={"status": "generated", "div": div},
        contained=[observation(id="m1", subject={"reference": pat})],
        subject={"reference": pat}, hasMember=[{"reference": "#m1"}])
    r = client.post("/fhir", json=tx([
        {"fullUrl": pat, "resource": patient(), "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": img, "resource": {"resourceType": "Binary", "contentType": "image/png",
                                      "data": base64.b64encode(b"\x89PNG").decode()},
         "request": {"method": "POST", "url": "Binary"}},
        {"resource": obs, "request": {"method": "POST", "url": "Observation"}},
    ]))
    assert r.status_code == 200, r.text
    entries = r.json()["entry"]
    pid, bid = entries[0]["resource"]["id"], entries[1]["resource"]["id"]
    stored = client.get(f"/fhir/Observation/{entries[2]['resource']['id']}").json()
    assert stored["contained"][0]["subject"]["reference"] == f"Patient/{pid}"
    assert stored["hasMember"] == [{"reference": "#m1"}]
    assert f'<a href="Patient/{pid}">' in stored["text"]["div"]
    assert f"<img src='Binary/{bid}'" in stored["text"]["div"]
    assert "urn:uuid:elsewhere" in stored["text"]["div"]  # no entry: a dead link, left as is
    assert pat not in stored["text"]["div"] and img not in stored["text"]["div"]


# -- media types (http.html#mime-type) -------------------------------------------------------

@pytest.mark.parametrize("accept,fmt,expected", [
    ("application/json", None, "application/json"),
    ("application/xml", None, "application/xml"),
    ("application/fhir+json", None, "application/fhir+json"),
    ("application/fhir+xml", None, "application/fhir+xml"),
    (None, "json", "application/fhir+json"),
    (None, "application/json", "application/json"),
    (None, "application/xml", "application/xml"),
    ("text/html, application/xml;q=0.9, */*;q=0.8", None, "application/xml"),
])
def test_the_generic_type_asked_for_is_answered(client: Fhir, accept: str | None,
                                                 fmt: str | None, expected: str) -> None:
    rid = client.create(patient())["id"]
    headers = {"Accept": accept} if accept else {}
    query = f"?_format={fmt}" if fmt else ""
    for path in (f"/fhir/Patient/{rid}{query}", f"/fhir/Patient{query or '?'}&_id={rid}"):
        r = client.get(path, headers=headers)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == f"{expected};charset=utf-8"
        if expected.endswith("xml"):
            assert r.content.startswith(b"<")
        else:
            assert r.json()["resourceType"] in ("Patient", "Bundle")


# -- Preference-Applied (RFC 7240; http.html#ops, search.html#errors) ------------------------

@pytest.mark.parametrize("prefer,applied", [
    ("return=minimal", "return=minimal"),
    ("return=representation", "return=representation"),
    ("return=OperationOutcome", "return=OperationOutcome"),
    ("return=everything", None),
    ("respond-async", None),
    (None, None),
])
def test_preference_applied_on_writes(client: Fhir, prefer: str | None,
                                      applied: str | None) -> None:
    headers = {"Prefer": prefer} if prefer else {}
    created = client.post("/fhir/Patient", json=patient(), headers=headers)
    assert created.status_code == 201
    assert created.headers.get("preference-applied") == applied
    rid = created.headers["location"].split("/")[-3]
    updated = client.put(f"/fhir/Patient/{rid}", json=patient(id=rid), headers=headers)
    assert updated.headers.get("preference-applied") == applied
    patched = client.patch(f"/fhir/Patient/{rid}", headers={
        **headers, "content-type": "application/json-patch+json"},
        json=[{"op": "replace", "path": "/gender", "value": "other"}])
    assert patched.status_code == 200
    assert patched.headers.get("preference-applied") == applied


@pytest.mark.parametrize("prefer,applied", [
    ("handling=strict", "handling=strict"),
    ("handling=lenient", "handling=lenient"),
    ("handling=strict, respond-async", "handling=strict"),
    ("return=minimal", None),
])
def test_preference_applied_on_search(client: Fhir, prefer: str, applied: str | None) -> None:
    r = client.get("/fhir/Patient?gender=male", headers={"Prefer": prefer})
    assert r.status_code == 200
    assert r.headers.get("preference-applied") == applied
    if prefer == "handling=lenient":
        unknown = client.get("/fhir/Patient?nonsense=1", headers={"Prefer": prefer})
        assert unknown.headers.get("preference-applied") == "handling=lenient"
    if prefer.startswith("handling=strict"):
        refused = client.get("/fhir/Patient?nonsense=1", headers={"Prefer": prefer})
        assert refused.status_code == 400


def test_preference_applied_on_a_transaction(client: Fhir) -> None:
    r = client.post("/fhir", json=tx([{"resource": patient(), "request": {
        "method": "POST", "url": "Patient"}}]), headers={"Prefer": "return=minimal"})
    assert r.status_code == 200
    assert r.headers["preference-applied"] == "return=minimal"
    assert "resource" not in r.json()["entry"][0]


# -- unsupported types: 404 before rights, 401 before anything -------------------------------

CALLS = [
    ("GET", "Medication/1", None), ("HEAD", "Medication/1", None),
    ("GET", "Medication?code=x", None), ("POST", "Medication/_search", None),
    ("GET", "Medication/_history", None), ("GET", "Medication/1/_history", None),
    ("GET", "Medication/1/_history/1", None), ("GET", "Medication/$validate", None),
    ("POST", "Medication", {"resourceType": "Medication"}),
    ("POST", "Medication", b"{not json"),
    ("PUT", "Medication/1", {"resourceType": "Medication", "id": "1"}),
    ("PUT", "Medication?code=x", {"resourceType": "Medication"}),
    ("PATCH", "Medication/1", [{"op": "remove", "path": "/code"}]),
    ("DELETE", "Medication/1", None), ("DELETE", "Medication?code=x", None),
    ("OPTIONS", "Medication", None), ("TRACE", "Medication/1", None),
]


def _call(http: TestClient, method: str, path: str, body: Any) -> Any:
    content = body if isinstance(body, bytes) else None
    return http.request(method, f"/fhir/{path}", content=content,
                        json=None if content is not None else body,
                        headers={"content-type": "application/fhir+json"})


@pytest.mark.parametrize("roles,scopes", [
    (["ris"], ["system/*.cruds"]),                    # every right
    (["auditor"], ["user/*.rs"]),                     # rights on AuditEvent only
    (["secretary"], ["user/Patient.r"]),              # a care role, narrow scope
    ([], ["user/*.cruds"]),                           # no known role at all
])
def test_unsupported_type_is_404_for_every_authenticated_caller(
        secured: FhirServer, tmp_path: Path, roles: list[str], scopes: list[str]) -> None:
    http = serve(secured, tmp_path, mint(tmp_path, roles, scopes,
                                          sub=f"test:{'-'.join(roles) or 'none'}"))
    for method, path, body in CALLS:
        r = _call(http, method, path, body)
        assert r.status_code == 404, (method, path, r.status_code, r.text)
        if method != "HEAD":
            issue = r.json()["issue"][0]
            assert issue["code"] == "not-supported", (method, path)
            assert "resource type not supported: Medication" in issue["diagnostics"]
    batch = http.post("/fhir", json=tx([{"request": {"method": "GET", "url": "Medication/1"}}],
                                       kind="batch"))
    if roles == ["ris"]:
        assert batch.json()["entry"][0]["response"]["status"].startswith("404")


def test_unsupported_type_is_404_in_the_core_too(secured: FhirServer, tmp_path: Path) -> None:
    assert secured.security is not None
    principal = secured.security.validator.principal(
        "Bearer " + mint(tmp_path, ["auditor"], ["user/*.rs"]))
    resp = secured.handle(FhirRequest(Interaction.READ, "Medication", "1",
                                      context=RequestContext(principal=principal)))
    assert resp.status == 404
    assert resp.resource and resp.resource["issue"][0]["code"] == "not-supported"


def test_unauthenticated_is_401_whatever_the_type_or_method(secured: FhirServer,
                                                             tmp_path: Path) -> None:
    for token in (None, "not.a.jwt"):
        http = serve(secured, tmp_path, token)
        for method, path, body in [*CALLS, ("GET", "Patient/1", None),
                                   ("OPTIONS", "Patient", None)]:
            r = _call(http, method, path, body)
            assert r.status_code == 401, (token, method, path, r.status_code)
            if method != "HEAD":
                assert r.json()["issue"][0]["code"] == "login"
    assert secured.audit is not None
    secured.audit.flush()  # every refusal is audited, routable or not (R-SEC-3)
    auditor = serve(secured, tmp_path, mint(tmp_path, ["auditor"], ["user/*.rs"],
                                            id_nat_ps="899999999999"))
    events = auditor.get("/fhir/AuditEvent?outcome=4&_count=500").json().get("entry", [])
    refusals = [e for e in events if e["resource"].get("outcomeDesc", "").startswith("401")]
    assert len(refusals) == 2 * (len(CALLS) + 2)


# -- OPTIONS and CORS ------------------------------------------------------------------------

ORIGIN = "https://console.teleimagerie.example"


def cors_client(core: FhirServer, data_dir: Path, origins: tuple[str, ...],
                token: str | None = None) -> TestClient:
    app = create_app(Settings(data_dir=data_dir, cors_origins=origins), server=core)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return TestClient(ReadFastPath(app, core, None), headers=headers)


def test_without_cors_options_is_a_fhir_405(client: Fhir) -> None:
    for path, allow in (("Patient", "GET, HEAD, POST, PUT, PATCH, DELETE"),
                        ("Patient/1", "GET, HEAD, PUT, PATCH, DELETE"),
                        ("metadata", "GET")):
        r = client.options(f"/fhir/{path}", headers={
            "Origin": ORIGIN, "Access-Control-Request-Method": "GET"})
        assert r.status_code == 405
        assert r.json()["resourceType"] == "OperationOutcome"
        assert r.headers["allow"] == allow
        assert "access-control-allow-origin" not in r.headers
    r = client.request("TRACE", "/fhir/Patient")
    assert r.status_code == 405 and r.json()["resourceType"] == "OperationOutcome"
    read = client.get(f"/fhir/Patient/{client.create(patient())['id']}",
                      headers={"Origin": ORIGIN})
    assert "access-control-allow-origin" not in read.headers


def test_cors_preflight_is_answered(secured: FhirServer, tmp_path: Path) -> None:
    http = cors_client(secured, tmp_path, (ORIGIN, "http://localhost:5173"))
    asked = "authorization, content-type, if-match, if-none-exist, if-none-match, " \
            "if-modified-since, prefer"
    r = http.options("/fhir/Patient/123", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": asked})
    assert r.status_code == 204, r.text
    assert r.headers["access-control-allow-origin"] == ORIGIN
    methods = {m.strip() for m in r.headers["access-control-allow-methods"].split(",")}
    assert {"GET", "POST", "PUT", "PATCH", "DELETE"} <= methods
    allowed = {h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")}
    assert {h.strip() for h in asked.split(",")} <= allowed
    assert int(r.headers["access-control-max-age"]) > 0
    refused = http.options("/fhir/Patient", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
    assert refused.status_code == 403
    assert refused.json()["resourceType"] == "OperationOutcome"
    assert "access-control-allow-origin" not in refused.headers
    bad_header = http.options("/fhir/Patient", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "x-secret"})
    assert bad_header.status_code == 403


def test_cors_headers_on_answers_and_errors(secured: FhirServer, tmp_path: Path) -> None:
    token = mint(tmp_path, ["ris"])
    http = cors_client(secured, tmp_path, (ORIGIN,), token)
    created = http.post("/fhir/Patient", json=patient(), headers={"Origin": ORIGIN})
    assert created.status_code == 201
    exposed = {h.strip().lower() for h in
               created.headers["access-control-expose-headers"].split(",")}
    assert {"etag", "location", "content-location", "last-modified"} <= exposed
    rid = created.json()["id"]
    read = http.get(f"/fhir/Patient/{rid}", headers={"Origin": ORIGIN})  # the fast path
    assert read.status_code == 200
    assert read.headers["access-control-allow-origin"] == ORIGIN
    assert "etag" in read.headers["access-control-expose-headers"].lower()
    plain = http.get(f"/fhir/Patient/{rid}")
    assert "access-control-allow-origin" not in plain.headers
    assert "Origin" in plain.headers["vary"]
    missing = http.get("/fhir/Patient/nope", headers={"Origin": ORIGIN})
    assert missing.status_code == 404
    assert missing.json()["resourceType"] == "OperationOutcome"
    assert missing.headers["access-control-allow-origin"] == ORIGIN
    anonymous = cors_client(secured, tmp_path, (ORIGIN,))
    refused = anonymous.get(f"/fhir/Patient/{rid}", headers={"Origin": ORIGIN})
    assert refused.status_code == 401 and refused.json()["resourceType"] == "OperationOutcome"
    assert refused.headers["access-control-allow-origin"] == ORIGIN
    other = http.get(f"/fhir/Patient/{rid}", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_cors_any_origin(secured: FhirServer, tmp_path: Path) -> None:
    http = cors_client(secured, tmp_path, ("*",), mint(tmp_path, ["ris"]))
    r = http.get("/fhir/metadata", headers={"Origin": "https://anywhere.example"})
    assert r.headers["access-control-allow-origin"] == "*"
    pre = http.options("/fhir/Patient", headers={
        "Origin": "https://anywhere.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Authorization"})
    assert pre.status_code == 204 and pre.headers["access-control-allow-origin"] == "*"


def test_cors_origins_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TELEIMG_CORS_ORIGINS", raising=False)
    assert Settings.from_env().cors_origins == ()
    monkeypatch.setenv("TELEIMG_CORS_ORIGINS", f"{ORIGIN}, http://localhost:5173")
    assert Settings.from_env().cors_origins == (ORIGIN, "http://localhost:5173")
    monkeypatch.setenv("TELEIMG_CORS_ORIGINS", "*")
    assert Settings.from_env().cors_origins == ("*",)
    for bad in (f"{ORIGIN}/", "console.example", "ftp://x.example", f"{ORIGIN}/fhir"):
        monkeypatch.setenv("TELEIMG_CORS_ORIGINS", bad)
        with pytest.raises(SystemExit, match="TELEIMG_CORS_ORIGINS"):
            Settings.from_env()
