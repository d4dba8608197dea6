"""Hypothesis over every route the server answers: never a 5xx (issue 27 item 10).

Requests are drawn from the grammar of the routes (http.html, search.html, operations,
Bundles, the MHD reads ITI-67/68, DICOMweb STOW-RS) rather than from the OpenAPI
document, which only knows ``/fhir/{path}``: every interaction shape × every type we
serve and some we do not × ids, version ids, operation names, search and result
parameters, headers and bodies that are valid, almost valid (one element replaced by
any JSON) or junk. Each answer under ``/fhir`` that refuses is an OperationOutcome
(R-SEC-3); a fixed seed and a bounded number of examples keep it reproducible and short.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from fhir_server.core.resource_types import CONFORMANCE_TYPES, SUPPORTED_TYPES
from fhir_server.server.dispatch import OPERATIONS
from fhir_server.workflow.engine import Workflow
from tests.fuzz.routes import Served, request_id

EXAMPLES = 400


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    app = Served()
    yield app
    app.close()


# -- the grammar ------------------------------------------------------------------------------

TYPES = [*SUPPORTED_TYPES, *sorted(CONFORMANCE_TYPES)]
OPS = sorted({name for _, name in OPERATIONS} | {name for _, name in Workflow().operations}
             | {"nope", ""})
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]
PARAM_NAMES = [
    "_count", "_offset", "_sort", "_include", "_revinclude", "_include:iterate",
    "_revinclude:iterate", "_summary", "_elements", "_total", "_since", "_cursor", "_type",
    "_format", "_pretty", "_id", "_lastUpdated", "_has:Observation:patient:code",
    "_has:ServiceRequest:subject:_id", "_tag", "_security", "_profile", "_source", "_text",
    "_content", "_list", "_filter", "name", "identifier", "subject", "patient", "code",
    "date", "status", "patient.identifier", "subject:Patient.name", "focus:Patient.name",
    "format", "security-label", "security-label:not", "category", "type", "related",
    "name:exact", "name:contains", "birthdate", "gender", "performer", "requester",
    "based-on", "part-of", "url", "version", "system", "system-version", "display",
    "coding", "source", "target", "max", "offset", "count", "filter", "from", "to"]
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=24)
NUMBERS = st.integers(-(2**70), 2**70).map(str)
JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                      st.floats(allow_nan=False, allow_infinity=False), TEXT)
JSON = st.recursive(JSON_LEAF, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)), max_leaves=8)


def _cursor(data: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


# what a client may send back for the server's paging cursors ({"d", "k"[, "t", "p"]})
CURSORS = st.one_of(TEXT, st.fixed_dictionaries(
    {"d": st.sampled_from(["after", "before"]),
     "k": st.one_of(JSON, st.lists(JSON_LEAF, max_size=3))},
    optional={"t": st.one_of(JSON_LEAF, st.sampled_from(["Patient", "Observation"])),
              "p": JSON_LEAF}).map(_cursor))
PARAM_VALUES = st.one_of(
    TEXT, NUMBERS, st.sampled_from(["²", "٣", "1e3", "-1", "0", "eq2020-13-45", "gt2026",
                                    "lt" + "9" * 30, "||", "a|b|c", "|", ":", "*", ",,",
                                    "Patient:subject", "*:*", "ap-1", "true", "count",
                                    "\x00", "%00", "urn:oid:1.2.250.1.213.1.4.8|1"]),
    CURSORS)
PARAMS = st.lists(st.tuples(st.one_of(st.sampled_from(PARAM_NAMES), TEXT), PARAM_VALUES),
                  max_size=4)


def _segment(text: str) -> str:
    return quote(text, safe="") or "x"


@st.composite
def paths(draw: st.DrawFn, ids: dict[str, str]) -> str:
    rtype = draw(st.one_of(st.sampled_from(TYPES), st.sampled_from(
        ["Foo", "metadata", "_history", "_search", "*", "patient"]), TEXT.map(_segment)))
    rid = draw(st.one_of(st.just(ids.get(rtype, ids["Patient"])),
                         st.sampled_from(list(ids.values())), TEXT.map(_segment),
                         NUMBERS))
    vid = draw(st.one_of(NUMBERS, st.sampled_from(["1", "2", "²", "٣", "99999999999999999999",
                                                   "9223372036854775808"]),
                         TEXT.map(_segment)))
    op = "$" + draw(st.one_of(st.sampled_from(OPS), TEXT.map(_segment)))
    other = draw(st.sampled_from([*TYPES, "*", "Foo"]))
    shape = draw(st.sampled_from([
        "", "{t}", "{t}/{id}", "{t}/{id}/_history", "{t}/{id}/_history/{vid}",
        "{t}/_history", "_history", "{t}/_search", "_search", "{t}/{id}/{op}", "{t}/{op}",
        "{op}", "Patient/{id}/{other}", "Patient/{id}/{other}/_search", "metadata",
        "{t}/{id}/{vid}/{vid}/{vid}", "ServiceRequest/{id}/{op}", "DocumentReference",
        "Binary/{id}", "{t}/{id}/_history/{vid}/x"]))
    return "/fhir/" + shape.format(t=rtype, id=rid, vid=vid, op=op, other=other)


def _mutate(resource: Any, path: list[Any], value: Any) -> Any:
    """``resource`` with the element at ``path`` (as far as it goes) replaced."""
    if not path or not isinstance(resource, dict | list) or not resource:
        return value
    if isinstance(resource, dict):
        key = sorted(resource)[path[0] % len(resource)]
        return {**resource, key: _mutate(resource[key], path[1:], value)}
    index = path[0] % len(resource)
    return [*resource[:index], _mutate(resource[index], path[1:], value),
            *resource[index + 1:]]


SAMPLES: dict[str, dict[str, Any]] = {
    "Patient": {"resourceType": "Patient", "name": [{"family": "F", "given": ["G"]}],
                "birthDate": "1980-01-01", "identifier": [{"system": "urn:x", "value": "1"}]},
    "Observation": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                    "contained": [{"resourceType": "Patient", "id": "c"}],
                    "subject": {"reference": "#c"}, "valueQuantity": {"value": 1}},
    "Endpoint": {"resourceType": "Endpoint", "status": "active",
                 "connectionType": {"code": "x"}, "payloadType": [{"text": "x"}],
                 "address": "http://example.org"},
    "Parameters": {"resourceType": "Parameters", "parameter": [
        {"name": "reason", "valueString": "x"},
        {"name": "resource", "resource": {"resourceType": "Patient"}}]},
    "Bundle": {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:0b8a6c5e-1f7e-4a51-8f0b-4b3e0f4d5a11",
         "resource": {"resourceType": "Patient"},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                      "subject": {"reference": "urn:uuid:0b8a6c5e-1f7e-4a51-8f0b-4b3e0f4d5a11"}},
         "request": {"method": "POST", "url": "Observation"}},
        {"request": {"method": "GET", "url": "Patient?_count=1"}}]},
    "Patch": [{"op": "replace", "path": "/status", "value": "final"}],
}


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes | None, str]:
    kind = draw(st.sampled_from(["none", "sample", "mutated", "json", "bytes", "xml"]))
    ctype = draw(st.sampled_from([
        "application/fhir+json", "application/json", "application/json-patch+json",
        "application/fhir+xml", "application/x-www-form-urlencoded", "text/plain", "",
        "multipart/form-data; boundary=x"]))
    if kind == "none":
        return None, ctype
    if kind == "bytes":
        return draw(st.binary(max_size=64)), ctype
    if kind == "xml":
        return ('<Patient xmlns="http://hl7.org/fhir"><name><family value="'
                + draw(TEXT).replace('"', "") + '"/></name></Patient>').encode(), ctype
    if kind == "json":
        return json.dumps(draw(JSON)).encode(), ctype
    sample = SAMPLES[draw(st.sampled_from(sorted(SAMPLES)))]
    if kind == "mutated":
        where = draw(st.lists(st.integers(0, 50), min_size=1, max_size=5))
        sample = _mutate(sample, where, draw(JSON))
    return json.dumps(sample).encode(), ctype


SEARCHES: dict[str, list[str]] = {
    "Patient": ["name", "identifier", "birthdate", "gender", "_id",
                "_has:Observation:patient:code"],
    "Observation": ["subject", "patient", "code", "date", "focus:Patient.name", "_include"],
    "ServiceRequest": ["subject", "requester", "performer", "status", "_revinclude"],
    "DocumentReference": ["patient.identifier", "format", "_lastUpdated", "security-label:not",
                          "related", "type", "category", "_sort"],  # MHD ITI-67
    "AuditEvent": ["patient", "agent", "date", "outcome", "entity"],
    "Binary": ["_id"], "Practitioner": ["identifier", "_has:ServiceRequest:performer:subject"],
}


@st.composite
def plausible(draw: st.DrawFn, ids: dict[str, str]
              ) -> tuple[str, str, list[tuple[str, str]], bytes | None, str]:
    """A request of a real shape, with one part (a value, an element) made hostile."""
    kind = draw(st.sampled_from(["search", "create", "update", "transaction", "operation",
                                 "read", "history", "patch", "mhd"]))
    rtype = draw(st.sampled_from(sorted(SEARCHES)))
    params = [(name, draw(PARAM_VALUES)) for name in draw(st.lists(
        st.sampled_from(SEARCHES[rtype] + ["_count", "_summary", "_elements", "_total"]),
        max_size=3))]

    def sample(name: str) -> bytes:
        body = SAMPLES[name]
        if draw(st.booleans()):
            where = draw(st.lists(st.integers(0, 50), min_size=1, max_size=6))
            body = _mutate(body, where, draw(JSON))
        return json.dumps(body).encode()

    json_type = "application/fhir+json"
    if kind == "search":
        return "GET", f"/fhir/{rtype}", params, None, json_type
    if kind == "mhd":
        return "GET", f"/fhir/Binary/{ids['Binary']}", [], None, draw(st.sampled_from(
            ["text/plain", "application/fhir+json", "*/*", "application/pdf"]))
    if kind == "create":
        name = draw(st.sampled_from(["Patient", "Observation", "Endpoint"]))
        return "POST", f"/fhir/{name}", [], sample(name), json_type
    if kind == "update":
        name = draw(st.sampled_from(["Patient", "Observation"]))
        return "PUT", f"/fhir/{name}/{ids[name]}", [], sample(name), json_type
    if kind == "transaction":
        return "POST", "/fhir", [], sample("Bundle"), json_type
    if kind == "patch":
        return ("PATCH", f"/fhir/Observation/{ids['Observation']}", [], sample("Patch"),
                "application/json-patch+json")
    if kind == "history":
        vid = draw(st.sampled_from(["", "/1", "/2", "/99999999999999999999"]))
        return "GET", f"/fhir/Patient/{ids['Patient']}/_history{vid}", params, None, json_type
    if kind == "read":
        return "GET", f"/fhir/{rtype}/{ids.get(rtype, 'x')}", params, None, json_type
    op = draw(st.sampled_from(OPS))
    target = draw(st.sampled_from([f"ServiceRequest/{ids['ServiceRequest']}/",
                                   f"Patient/{ids['Patient']}/", "CodeSystem/", "ValueSet/",
                                   ""]))
    return "POST", f"/fhir/{target}${op}", params, sample("Parameters"), json_type


HEADERS = st.fixed_dictionaries({}, optional={
    "Accept": st.sampled_from(["application/fhir+xml", "text/html", "*/*", "application/x",
                               "application/fhir+json;fhirVersion=9"]),
    "If-Match": st.one_of(TEXT, st.sampled_from(['W/"99999999999999999999"', "*", 'W/"1"'])),
    "If-None-Match": st.sampled_from(['W/"1"', "*", "x"]),
    "If-None-Exist": st.one_of(TEXT, st.sampled_from(["identifier=a", "_count=²", "x=||"])),
    "If-Modified-Since": st.one_of(TEXT, st.just("Mon, 01 Jan 1 00:00:00 GMT")),
    "Prefer": st.sampled_from(["return=representation", "return=OperationOutcome",
                               "handling=strict", "handling=lenient", "respond-async", "x"]),
})
CALLERS = st.sampled_from(["ris", "ris", "ris", "imager", "consumer", None, "garbage"])


def _check(served: Served, method: str, url: str, response: Any) -> None:
    assert response.status_code < 500, (method, url, response.status_code, response.text)
    # STOW-RS answers its own failures as a DICOM dataset (PS3.18 §10.5.3)
    dataset = response.headers.get("content-type", "").startswith("application/dicom+json")
    if response.status_code >= 400 and method != "HEAD" and not dataset:
        if "xml" in response.headers.get("content-type", ""):  # as the client asked
            assert b"<OperationOutcome" in response.content, (method, url, response.text)
        else:
            assert response.json()["resourceType"] == "OperationOutcome", (method, url)
    if response.status_code == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


@seed(20270027)
@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_no_route_answers_5xx_R_SEC_3(served: Served, data: st.DataObject) -> None:
    """Every FHIR route, valid-ish and hostile requests alike: 4xx OperationOutcomes."""
    if data.draw(st.booleans(), "plausible"):
        method, path, params, body, ctype = data.draw(plausible(served.ids), "request")
    else:
        method = data.draw(st.sampled_from(METHODS), "method")
        path = data.draw(paths(served.ids), "path")
        params = data.draw(PARAMS, "params")
        body, ctype = data.draw(bodies(), "body")
    headers = {**data.draw(HEADERS, "headers"), "Content-Type": ctype}
    caller = data.draw(CALLERS, "caller")
    headers.update(served.auth(caller) if caller != "garbage"
                   else {"Authorization": "Bearer x.y.z"})
    response = served.http.request(method, path, params=params, content=body, headers={
        k: v.encode("utf-8") for k, v in headers.items()})  # any bytes a client may send
    _check(served, method, path, response)


@seed(20270028)
@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(study=st.one_of(st.just(""), TEXT.map(_segment), NUMBERS),
       body=st.binary(max_size=200), boundary=st.sampled_from(["x", "", "a b", "\"q\""]),
       caller=CALLERS, framed=st.booleans())
def test_stow_never_answers_5xx_R_INT_2(served: Served, study: str, body: bytes,
                                        boundary: str, caller: str | None,
                                        framed: bool) -> None:
    """DICOMweb STOW-RS with any multipart framing and content (R-INT-2)."""
    if framed:
        body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + body
                + f"\r\n--{boundary}--\r\n".encode())
    headers = {"Content-Type": f'multipart/related; type="application/dicom"; '
                               f"boundary={boundary}", "X-Request-Id": request_id()}
    headers.update(served.auth(caller) if caller != "garbage"
                   else {"Authorization": "Bearer x.y.z"})
    url = "/dicomweb/studies" + (f"/{study}" if study else "")
    _check(served, "POST", url, served.http.post(url, content=body, headers=headers))
