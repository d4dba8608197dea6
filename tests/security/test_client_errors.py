"""Client input is answered 4xx with an OperationOutcome naming what is wrong, never 5xx,
on both stores (issue 27 items 10 and 12; R-SEC-3: the refusal is audited; R-INT-2:
Bundle and operation bodies are exchanges too).

Each class is tested with the issue's example and its neighbours: integers in URLs,
nested ``resourceType``, JSON types of elements, control characters in any string (the
R4 ``string`` grammar ``[ \\r\\n\\t\\S]+`` admits tab, CR and LF, no other C0 character),
and Bundle ``fullUrl`` (bdl-7).
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from fhir_server.server.dispatch import FhirServer
from tests.behaviour.workflow_world import REFUSAL, World
from tests.conftest import Fhir, mint, serve

OBSERVATION = {"resourceType": "Observation", "status": "final", "code": {"text": "poids"}}


@pytest.fixture
def world(client: Fhir) -> dict[str, Any]:
    patient = client.create({"resourceType": "Patient", "name": [{"family": "A"}]})["id"]
    return {"http": client, "patient": patient}


def _issue(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome", body
    issue: dict[str, Any] = body["issue"][0]
    return issue


# -- integers in URLs -----------------------------------------------------------------------

HUGE = "99999999999999999999"
BAD_INTEGERS = [HUGE, "9" * 400, "²", "٣", "-1", "1e3", " 5", "5 ", "0x10", "1.0", "",
                "2147483648"]


def test_version_ids_that_cannot_exist_are_404_R_SEC_3(world: dict[str, Any]) -> None:
    """GET Patient/x/_history/99999999999999999999 was an OverflowError (500)."""
    http, pid = world["http"], world["patient"]
    for vid in (HUGE, "9223372036854775808", "²", "٣", "0", "-1", "1e3", "1.0", "%00"):
        r = http.get(f"/fhir/Patient/{pid}/_history/{vid}")
        assert _issue(r, 404)["code"] == "not-found", vid
    assert http.get(f"/fhir/Patient/{pid}/_history/9223372036854775807").status_code == 404
    assert http.get(f"/fhir/Patient/{pid}/_history/1").status_code == 200


@pytest.mark.parametrize("value", BAD_INTEGERS)
def test_count_and_offset_are_range_checked_everywhere_R_SEC_3(
        world: dict[str, Any], value: str) -> None:
    """Every route that pages — type, system and compartment search, every history
    level, $everything, Bundle entries — answers 400 naming the parameter."""
    http, pid = world["http"], world["patient"]
    urls = ["Patient", "Observation/_search", "", "_history", "Patient/_history",
            f"Patient/{pid}/_history", f"Patient/{pid}/$everything", f"Patient/{pid}/*",
            "DocumentReference"]  # MHD ITI-67
    for name in ("_count", "_offset"):
        for url in urls:
            path = f"/fhir/{url}"
            if url.endswith("_search"):
                r = http.post(path, data={name: value})
            else:
                r = http.get(path, params={name: value})
            issue = _issue(r, 400)
            assert issue["expression"] == [name], (name, url, issue)
        entry = {"request": {"method": "GET", "url": f"Patient?{name}={value}"}}
        r = http.post("/fhir", json={"resourceType": "Bundle", "type": "batch",
                                     "entry": [entry]})
        assert r.status_code == 200, r.text
        assert r.json()["entry"][0]["response"]["status"].startswith("400"), value


def test_valid_counts_still_page(world: dict[str, Any]) -> None:
    http = world["http"]
    for value in ("0", "1", "2147483647", "00001"):
        assert http.get("/fhir/Patient", params={"_count": value}).status_code == 200


# -- resource types and element types --------------------------------------------------------

@pytest.mark.parametrize("contained", [
    {"resourceType": "Foo", "id": "a"}, {"resourceType": 5, "id": "a"},
    {"resourceType": ["Patient"], "id": "a"}, {"resourceType": None, "id": "a"},
    {"resourceType": {"x": 1}, "id": "a"}, {"id": "a"},
    {"resourceType": "__class__", "id": "a"}, {"resourceType": "Extension", "id": "a"},
    {"resourceType": "DomainResource", "id": "a"}, {"resourceType": "patient", "id": "a"},
    {"resourceType": "Patient" * 20, "id": "a"},
])
def test_unknown_or_non_string_nested_resource_type_is_400_R_SEC_3(
        world: dict[str, Any], contained: dict[str, Any]) -> None:
    """A contained resource with an unknown or non-string ``resourceType`` was a KeyError
    (500) in the models."""
    http = world["http"]
    r = http.post("/fhir/Observation", json={**OBSERVATION, "contained": [contained]})
    issue = _issue(r, 400)
    assert "Observation.contained[0].resourceType" in issue["expression"], issue
    params = {"resourceType": "Parameters", "parameter": [{"name": "x",
                                                           "resource": contained}]}
    r = http.post(f"/fhir/Patient/{world['patient']}/$everything", json=params)
    assert "Parameters.parameter[0].resource.resourceType" in _issue(r, 400)["expression"]


def test_contained_resources_follow_dom_2_4_5(world: dict[str, Any]) -> None:
    http = world["http"]
    inner = {"resourceType": "Patient", "id": "p"}
    for contained, where in (
            ({"resourceType": "Patient", "id": "a", "contained": [inner]},
             "Observation.contained[0].contained[0]"),
            ({"resourceType": "Bundle", "id": "b", "type": "collection",
              "entry": [{"resource": inner}]}, "Observation.contained[0].entry[0].resource"),
            ({"resourceType": "Patient", "id": "a", "meta": {"versionId": "3"}},
             "Observation.contained[0].meta.versionId"),
            ({"resourceType": "Patient", "id": "a", "meta": {"security": [{"code": "R"}]}},
             "Observation.contained[0].meta.security")):
        r = http.post("/fhir/Observation", json={**OBSERVATION, "contained": [contained]})
        assert where in _issue(r, 400)["expression"], (where, r.text)
    r = http.post("/fhir/Observation", json={**OBSERVATION, "contained": [
        {"resourceType": "Patient", "id": "a", "name": [{"family": "Contenu"}]}]})
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("address", [5, 1.5, True, ["http://x"], {"url": "http://x"}, "",
                                     "http://a b"])
def test_endpoint_address_of_another_json_type_is_400_R_INT_2(
        world: dict[str, Any], address: Any) -> None:
    endpoint = {"resourceType": "Endpoint", "status": "active",
                "connectionType": {"code": "dicom-wado-rs"},
                "payloadType": [{"text": "DICOM"}], "address": address}
    issue = _issue(world["http"].post("/fhir/Endpoint", json=endpoint), 400)
    assert issue["expression"] == ["Endpoint.address"], issue


# -- control characters ----------------------------------------------------------------------

FORBIDDEN = [chr(c) for c in range(0x20) if chr(c) not in "\t\r\n"] + ["\x7f"]


@pytest.mark.parametrize("char", FORBIDDEN, ids=[f"U+{ord(c):04X}" for c in FORBIDDEN])
def test_control_characters_in_any_string_are_400_naming_the_element_R_SEC_3(
        world: dict[str, Any], char: str) -> None:
    """NUL and every other C0 character but tab, CR and LF, wherever the string is: a
    top-level element, a nested one, an extension, a contained resource, a Bundle entry."""
    http = world["http"]
    text = f"avant{char}après"
    cases = [
        ({"resourceType": "Patient", "name": [{"family": text}]}, "Patient.name[0].family"),
        ({"resourceType": "Patient", "name": [{"given": ["a", text]}]},
         "Patient.name[0].given[1]"),
        ({"resourceType": "Patient", "extension": [
            {"url": "http://example.org/x", "valueString": text}]},
         "Patient.extension[0].valueString"),
        ({**OBSERVATION, "note": [{"text": text}]}, "Observation.note[0].text"),
        ({**OBSERVATION, "contained": [{"resourceType": "Patient", "id": "c",
                                        "name": [{"text": text}]}]},
         "Observation.contained[0].name[0].text"),
        ({"resourceType": "Patient", "identifier": [{"system": "urn:x", "value": text}]},
         "Patient.identifier[0].value"),
    ]
    for resource, where in cases:
        r = http.post(f"/fhir/{resource['resourceType']}", json=resource)
        issue = _issue(r, 400)
        assert issue["expression"] == [where], (where, issue)
        assert "control characters" in issue["diagnostics"]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:1b9f3c52-3b4e-4d8e-9f3a-2f4b1f6b2b10",
         "resource": cases[0][0], "request": {"method": "POST", "url": "Patient"}}]}
    issue = _issue(http.post("/fhir", json=bundle), 400)
    assert "Patient.name[0].family" in issue["diagnostics"], issue


def test_tab_cr_lf_are_allowed_in_strings(world: dict[str, Any]) -> None:
    """The R4 string grammar ``[ \\r\\n\\t\\S]+``: tab, CR and LF are text."""
    r = world["http"].post("/fhir/Observation", json={
        **OBSERVATION, "note": [{"text": "ligne 1\r\nligne 2\tfin"}]})
    assert r.status_code == 201, r.text
    assert r.json()["note"][0]["text"] == "ligne 1\r\nligne 2\tfin"


def test_control_character_in_operation_parameters_is_400_not_500_R_SEC_3(
        secured: FhirServer, tmp_path: Path) -> None:
    """A NUL in $refuse's text was stored by the workflow in Task.statusReason, which the
    server then found invalid: a 500. Parameters are checked like any resource."""
    world = World(secured, tmp_path)
    request = world.request("CT")
    imager = world.imager
    reason = {"system": REFUSAL, "code": "informations-insuffisantes"}
    r = world.op(imager, request, "refuse", reason=reason, text="a\x00b")
    issue = _issue(r, 400)
    assert issue["expression"] == ["Parameters.parameter[1].valueString"], issue
    assert world.state(request) != "refusee"
    r = world.op(imager, request, "refuse", reason=reason, text="ligne 1\nligne 2")
    assert r.status_code == 200, r.text


# -- Bundles (bdl-7) ---------------------------------------------------------------------------

def _entry(full_url: Any, family: str = "A") -> dict[str, Any]:
    return {"fullUrl": full_url, "resource": {"resourceType": "Patient",
                                              "name": [{"family": family}]},
            "request": {"method": "POST", "url": "Patient"}}


@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_duplicate_full_url_is_400_naming_the_entry_R_INT_2(
        world: dict[str, Any], kind: str) -> None:
    """bdl-7: a duplicate fullUrl was accepted, the references resolved to one of them."""
    http = world["http"]
    before = http.search("Patient?_summary=count")["total"]
    same = f"urn:uuid:{uuid.uuid4()}"
    for entries, where in (
            ([_entry(same), _entry(same, "B")], "Bundle.entry[1].fullUrl"),
            ([_entry(same), _entry(f"urn:uuid:{uuid.uuid4()}"), _entry(same)],
             "Bundle.entry[2].fullUrl"),
            ([_entry("http://h/fhir/Patient/1"), _entry("http://h/fhir/Patient/1")],
             "Bundle.entry[1].fullUrl")):
        issue = _issue(http.post("/fhir", json={"resourceType": "Bundle", "type": kind,
                                                "entry": entries}), 400)
        assert issue["expression"] == [where], issue
        assert "bdl-7" in issue["diagnostics"]
    assert http.search("Patient?_summary=count")["total"] == before  # nothing written
    ok = {"resourceType": "Bundle", "type": kind, "entry": [
        _entry(f"urn:uuid:{uuid.uuid4()}"), _entry(f"urn:uuid:{uuid.uuid4()}"),
        {k: v for k, v in _entry(None).items() if k != "fullUrl"}]}
    assert http.post("/fhir", json=ok).status_code == 200


@pytest.mark.parametrize("entry,where", [
    (_entry(5), "Bundle.entry[0].fullUrl"),
    (_entry(["urn:uuid:x"]), "Bundle.entry[0].fullUrl"),
    (_entry("urn:uuid:a b"), "Bundle.entry[0].fullUrl"),
    (_entry("urn:uuid:a\x00"), "Bundle.entry[0].fullUrl"),
    ({"request": {"method": ["GET"], "url": "Patient"}}, "Bundle.entry[0].request"),
    ({"request": {"method": {"m": "GET"}, "url": "Patient"}}, "Bundle.entry[0].request"),
    ({"request": {"method": "GET", "url": 5}}, "Bundle.entry[0].request"),
])
def test_malformed_bundle_entries_are_400_R_INT_2(
        world: dict[str, Any], entry: dict[str, Any], where: str) -> None:
    for kind in ("transaction", "batch"):
        r = world["http"].post("/fhir", json={"resourceType": "Bundle", "type": kind,
                                              "entry": [entry]})
        assert _issue(r, 400)["expression"] == [where], (kind, r.text)


def test_unsplittable_entry_url_and_bad_patch_binary_are_4xx(world: dict[str, Any]) -> None:
    http, pid = world["http"], world["patient"]
    bad_url = {"request": {"method": "GET", "url": "http://[::1/Patient"}}
    r = http.post("/fhir", json={"resourceType": "Bundle", "type": "transaction",
                                 "entry": [bad_url]})
    _issue(r, 400)
    patch = {"resource": {"resourceType": "Binary", "contentType": "application/json-patch+json",
                          "data": "!!not base64!!"},
             "request": {"method": "PATCH", "url": f"Patient/{pid}"}}
    r = http.post("/fhir", json={"resourceType": "Bundle", "type": "transaction",
                                 "entry": [patch]})
    assert _issue(r, 400)["expression"] == ["Bundle.entry[0].resource.data"]
    r = http.post("/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": [patch]})
    assert r.json()["entry"][0]["response"]["status"].startswith("400"), r.text


def test_client_errors_are_audited_R_SEC_3(secured: FhirServer, tmp_path: Path) -> None:
    """A 4xx is a refusal like any other: its AuditEvent says why."""
    http = serve(secured, tmp_path, mint(tmp_path, ["ris"]))
    request_id = str(uuid.uuid4())
    r = http.get("/fhir/Patient/x/_history/99999999999999999999",
                 headers={"X-Request-Id": request_id})
    assert r.status_code == 404
    assert secured.audit is not None
    secured.audit.flush()
    auditor = serve(secured, tmp_path, mint(tmp_path, ["auditor"], ["user/AuditEvent.rs"],
                                            sub="test:auditor"))
    events = auditor.get("/fhir/AuditEvent?outcome=4&_count=100").json().get("entry", [])
    assert any(any(x.get("what", {}).get("identifier", {}).get("value") == request_id
                   for x in e["resource"]["entity"]) for e in events)


# -- found by the fuzzers (tests/fuzz) ----------------------------------------------------------

def test_an_answer_xml_cannot_carry_is_406_not_500_R_SEC_3(world: dict[str, Any]) -> None:
    """A search echoing a client's control character (the ignored-parameter warning) could
    not be rendered as XML: 500. It is a 406 the client can act on (ask for JSON)."""
    http = world["http"]
    r = http.get("/fhir/Patient?%08=x", headers={"Accept": "application/fhir+xml"})
    assert "XML 1.0" in _issue(r, 406)["diagnostics"]
    assert http.get("/fhir/Patient?%08=x").status_code == 200


def test_transaction_response_last_modified_is_an_instant(world: dict[str, Any]) -> None:
    """Bundle.entry.response.lastModified held the HTTP-date of the Last-Modified header:
    an invalid Bundle, and a 500 when asked for in XML (R-INT-2)."""
    http = world["http"]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        _entry(f"urn:uuid:{uuid.uuid4()}"),
        {"request": {"method": "DELETE", "url": f"Patient/{world['patient']}"}}]}
    r = http.post("/fhir", json=bundle)
    assert r.status_code == 200, r.text
    for entry in r.json()["entry"]:
        modified = entry["response"]["lastModified"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", modified), modified
    bundle["entry"] = bundle["entry"][:1]
    r = http.post("/fhir", json=bundle, headers={"Accept": "application/fhir+xml"})
    assert r.status_code == 200 and b"<lastModified value=" in r.content, r.text


def _cursor(data: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


@pytest.mark.parametrize("cursor", [
    {"d": "after", "k": None}, {"d": "after", "k": []}, {"d": "after", "k": [[1]]},
    {"d": "before", "k": [{"a": 1}]}, {"d": "after", "k": [-1, [2]]},
    {"d": "after", "k": [1] * 40}, {"d": "after", "k": [True]},
    {"d": "after", "t": -5, "k": [1]}, {"d": "after", "t": True, "k": None},
    {"d": "after", "t": 1, "k": [1]}, {"d": "after", "t": "Patient", "k": [], "p": 10**30},
    {"d": "after", "t": "Patient", "k": None, "p": 1}, {"d": "sideways", "k": [1]},
    [1, 2], "x",
])
def test_paging_cursors_sent_back_are_checked_R_SEC_3(world: dict[str, Any],
                                                      cursor: Any) -> None:
    """The server's page links carry a cursor the client sends back: a tampered one
    (null, empty or nested sort keys, a negative type index) reached the stores as a
    TypeError, ProgrammingError or IndexError (500). Found beyond the issue's list."""
    http, pid = world["http"], world["patient"]
    for url in ("Patient", "Observation?_sort=_lastUpdated", "_history", "Patient/_history",
                f"Patient/{pid}/_history", f"Patient/{pid}/$everything",
                "?_type=Patient,Observation", f"Patient/{pid}/*"):
        sep = "&" if "?" in url else "?"
        r = http.get(f"/fhir/{url}{sep}_cursor={_cursor(cursor)}")
        assert _issue(r, 400)["expression"] == ["_cursor"], (url, r.text)


def test_the_server_s_own_cursors_still_page(world: dict[str, Any]) -> None:
    http, pid = world["http"], world["patient"]
    for _ in range(3):
        http.post("/fhir/Observation", json={**OBSERVATION,
                                             "subject": {"reference": f"Patient/{pid}"}})
    for url in ("/fhir/Observation?_count=1", "/fhir/_history?_count=1",
                f"/fhir/Patient/{pid}/$everything?_count=1",
                "/fhir?_type=Patient,Observation&_count=1&_sort=_lastUpdated"):
        seen = 0
        while url and seen < 10:
            page = http.get(url)
            assert page.status_code == 200, (url, page.text)
            seen += 1
            url = next((link["url"] for link in page.json()["link"]
                        if link["relation"] == "next"), "")
        assert seen >= 3, url


@pytest.mark.parametrize(("method", "path", "accept"), [
    ("GET", "/fhir/Patient", "text/html"),
    ("GET", "/fhir/Patient/x", "image/png"),
    ("POST", "/dicomweb/studies", "application/dicom+json"),
])
def test_an_unacceptable_accept_never_hides_a_401_R_SEC_1(
        secured: FhirServer, tmp_path: Path, method: str, path: str, accept: str) -> None:
    """Found from outside: no token (or a bad one) with an Accept we cannot produce was
    answered 406 while the audit recorded 401 — authentication is answered first."""
    http = serve(secured, tmp_path, None)
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        r = http.request(method, path, headers={**headers, "Accept": accept})
        assert r.status_code == 401, (headers, r.text)
        assert r.json()["resourceType"] == "OperationOutcome"
