"""System-level and compartment search (R4 search.html#system, #compartments), their
paging (``first``, ``next``, ``previous``) and their access rules (R-SEC-2), on both stores.

A system or compartment search is the union of type-level searches: it must show exactly
what those would show to the same caller — no more resources, no larger totals, no
other patient's resource through an ``_include`` — and page through every type boundary
without repeating or losing a row.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from fastapi.testclient import TestClient

from fhir_server.server.dispatch import FhirServer
from tests.conftest import Fhir, mint, serve

RPPS = "urn:oid:1.2.250.1.71.4.2.1"
DR_A, DR_B = "810000000001", "810000000002"
TAG = {"system": "urn:test:batch", "code": "system-search"}


def _get(http: TestClient | Fhir, url: str, status: int = 200) -> dict[str, Any]:
    r = http.get(url if url.startswith("/fhir") else "/fhir" + url.split("/fhir", 1)[1])
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    return body


def _link(bundle: dict[str, Any], relation: str) -> str | None:
    return next((link["url"] for link in bundle["link"] if link["relation"] == relation), None)


def _refs(bundle: dict[str, Any], mode: str = "match") -> list[str]:
    return [f"{e['resource']['resourceType']}/{e['resource']['id']}"
            for e in bundle.get("entry", []) if e.get("search", {}).get("mode", "match") == mode
            and "resource" in e]


def _walk(http: TestClient | Fhir, url: str) -> list[list[str]]:
    """Every page from ``url`` on, following ``next``."""
    pages = []
    bundle: dict[str, Any] | None = _get(http, url)
    while bundle is not None:
        pages.append(_refs(bundle))
        nxt = _link(bundle, "next")
        bundle = _get(http, nxt) if nxt else None
    return pages


def _walk_back(http: TestClient | Fhir, url: str) -> list[list[str]]:
    """Every page from the last one reached from ``url`` back, following ``previous``."""
    bundle = _get(http, url)
    while (nxt := _link(bundle, "next")) is not None:
        bundle = _get(http, nxt)
    pages = [_refs(bundle)]
    while (prev := _link(bundle, "previous")) is not None:
        bundle = _get(http, prev)
        pages.append(_refs(bundle))
    return pages[::-1]


# -- system search -------------------------------------------------------------------------

@pytest.fixture
def mixed(client: Fhir) -> dict[str, Any]:
    """Patients, practitioners and observations created interleaved, one by one."""
    made: dict[str, Any] = {"order": [], "stamps": {}, "source": {}}
    for i in range(4):
        for resource in (
                {"resourceType": "Patient", "name": [{"family": f"Mixte{i}"}]},
                {"resourceType": "Practitioner", "name": [{"family": f"Docteur{i}"}]},
                {"resourceType": "Observation", "status": "final", "code": {"text": "poids"}}):
            # a sort key some rows lack (null sorts lowest) and many share (ties)
            source = [None, "urn:src:b", "urn:src:a"][len(made["order"]) % 3 - i % 2]
            meta = {"tag": [TAG], **({"source": source} if source else {})}
            made_one = client.create({**resource, "meta": meta})
            ref = f"{made_one['resourceType']}/{made_one['id']}"
            made["order"].append(ref)
            made["stamps"][ref] = made_one["meta"]["lastUpdated"]
            made["source"][ref] = source
            time.sleep(0.002)  # distinct lastUpdated, so a sort on it is a total order
    made["order"] += [f"Observation/{client.create({'resourceType': 'Observation', 'status': 'final', 'code': {'text': 'taille'}, 'subject': {'reference': made['order'][0]}})['id']}"]  # noqa: E501
    return made


def test_system_search_with_type_and_last_updated(client: Fhir, mixed: dict[str, Any]) -> None:
    tagged = [r for r in mixed["order"] if r in mixed["stamps"]]
    found = client.search("?_type=Patient,Observation&_tag=urn:test:batch|system-search"
                          "&_count=100")
    assert found["type"] == "searchset" and found["total"] == 8
    assert sorted(_refs(found)) == sorted(r for r in tagged if not r.startswith("Pract"))
    # _lastUpdated, common to every type, without _type: every type searched
    since = mixed["stamps"][tagged[6]]
    later = client.search(f"?_lastUpdated=ge{since}&_tag=urn:test:batch|system-search"
                          "&_count=100")
    assert sorted(_refs(later)) == sorted(tagged[6:]) and later["total"] == 6
    # the same as a form POST to [base]/_search
    posted = client.post("/fhir/_search", data={
        "_lastUpdated": f"ge{since}", "_tag": "urn:test:batch|system-search", "_count": "100"})
    assert posted.status_code == 200, posted.text
    assert sorted(_refs(posted.json())) == sorted(tagged[6:])
    # _id and _type alone
    one = mixed["order"][4]
    assert _refs(client.search(f"?_id={one.split('/')[1]}")) == [one]
    assert set(_refs(client.search("?_type=Practitioner&_count=100"))) == {
        r for r in tagged if r.startswith("Practitioner/")}
    # a type filter and its type-level twin agree
    assert _refs(client.search("?_type=Observation&_count=100")) == _refs(
        client.search("Observation?_count=100"))


def test_system_search_refuses_what_is_not_common_or_not_a_type(
        client: Fhir, mixed: dict[str, Any]) -> None:
    r = client.get("/fhir?_type=Patient,Observation&code=poids")
    assert r.status_code == 400 and "not defined for Patient" in r.text
    assert client.get("/fhir?_type=Nonsense").status_code == 400
    assert client.get("/fhir?_type=StructureDefinition").status_code == 400
    assert client.get("/fhir?_type=Patient&_sort=code").status_code == 400
    # without _type, the types that cannot have the parameter are simply not searched
    poids = client.search("?code:text=poids&_count=100")
    assert {r.split("/")[0] for r in _refs(poids)} == {"Observation"} and poids["total"] == 4
    # a parameter no type knows is ignored with a warning, as at type level
    lenient = client.search("?_type=Patient&foo=bar&_count=1")
    assert lenient["entry"][-1]["search"]["mode"] == "outcome"


@pytest.mark.parametrize("sort", ["", "_lastUpdated", "-_lastUpdated", "_source",
                                  "-_source,_lastUpdated"])
def test_system_search_pages_across_types_lose_and_repeat_nothing(
        client: Fhir, mixed: dict[str, Any], sort: str) -> None:
    tagged = [r for r in mixed["order"] if r in mixed["stamps"]]
    query = "?_type=Patient,Practitioner,Observation&_tag=urn:test:batch|system-search"
    # without _sort: type by type, each in its type-level order (creation order here)
    by_type = sorted(tagged, key=lambda r: (r.split("/")[0], tagged.index(r)))
    source = mixed["source"]
    if sort:
        query += f"&_sort={sort}"
    if sort in ("_lastUpdated", "-_lastUpdated"):
        expected = sorted(tagged, key=lambda r: mixed["stamps"][r], reverse=sort[0] == "-")
    elif sort == "_source":  # null first; ties by type, then row
        expected = sorted(by_type, key=lambda r: (source[r] is not None, source[r] or ""))
    elif sort:  # descending, null last; ties by the second key
        expected = sorted(tagged, key=lambda r: mixed["stamps"][r])
        expected = sorted(expected, key=lambda r: source[r] or "", reverse=True)
    else:
        expected = by_type
    assert not sort or expected != by_type  # the merge interleaves the types
    for count in (1, 2, 3, 4, 5, 7, 12, 13):
        pages = _walk(client, f"/fhir{query}&_count={count}")
        served = [r for page in pages for r in page]
        assert served == expected, (count, sort)  # every boundary crossed, in order
        assert all(len(p) == count for p in pages[:-1]) and 0 < len(pages[-1]) <= count
        assert _walk_back(client, f"/fhir{query}&_count={count}") == pages, (count, sort)
    page = client.search(f"{query}&_count=5")
    assert page["total"] == 12
    second = _get(client, _link(page, "next") or "")
    assert second["total"] == 12 and _refs(second) == expected[5:10]
    assert _refs(_get(client, _link(second, "first") or "")) == expected[:5]
    assert _refs(_get(client, _link(second, "previous") or "")) == expected[:5]


def test_system_paging_stays_exact_when_data_changes(client: Fhir, mixed: dict[str, Any]
                                                      ) -> None:
    query = "/fhir?_type=Patient,Observation&_tag=urn:test:batch|system-search&_count=3" \
        "&_sort=_lastUpdated"
    first = _get(client, query)
    before = _refs(first)
    nxt = _link(first, "next") or ""
    # a new resource sorts last; one already served is deleted: the next page neither
    # repeats nor skips anything that was there
    new = client.create({"resourceType": "Patient", "meta": {"tag": [TAG]}})
    assert client.delete(f"/fhir/{before[0]}").status_code in (200, 204)
    rest = [r for page in _walk(client, nxt) for r in page]
    everything = before + rest
    assert len(everything) == len(set(everything))
    assert everything[-1] == f"Patient/{new['id']}"
    assert set(everything) == {r for r in mixed["stamps"] if not r.startswith("Pract")} | {
        f"Patient/{new['id']}"}


def test_system_search_count_include_and_summary(client: Fhir, mixed: dict[str, Any]) -> None:
    counted = client.search("?_type=Patient,Observation&_tag=urn:test:batch|system-search"
                            "&_summary=count")
    assert counted["total"] == 8 and "entry" not in counted
    assert client.search("?_type=Patient,Observation&_tag=urn:test:batch|system-search"
                         "&_count=0")["total"] == 8
    none = client.search("?_type=Patient&_total=none")
    assert "total" not in none
    # a page that ends with the last row of a type, the next types empty: no next link
    for total in ("accurate", "none"):
        full = client.search("?_type=Practitioner,Flag,Device&_tag=urn:test:batch|system-search"
                             f"&_count=4&_total={total}")
        assert len(_refs(full)) == 4 and _link(full, "next") is None
        split = client.search("?_type=Practitioner,Patient&_tag=urn:test:batch|system-search"
                              f"&_count=4&_total={total}")
        assert _link(split, "next") is not None  # the patients come next
    inc = client.search("?_type=Observation&code:text=taille&_include=Observation:subject")
    assert _refs(inc, "include") == [mixed["order"][0]]
    pretty = client.get("/fhir?_type=Patient&_elements=name&_count=1").json()
    assert set(pretty["entry"][0]["resource"]) <= {"resourceType", "id", "meta", "name"}


# -- compartment search --------------------------------------------------------------------

@pytest.fixture
def chart(client: Fhir) -> dict[str, Any]:
    """Two patients, each with a request, a study, a report and observations."""
    ids: dict[str, Any] = {}
    ids["doc"] = client.create({"resourceType": "Practitioner"})["id"]
    for name in ("1", "2"):
        pat = client.create({"resourceType": "Patient", "name": [{"family": f"Dossier{name}"}]})
        ref = {"reference": f"Patient/{pat['id']}"}
        ids[f"pat{name}"] = pat["id"]
        sr = client.create({"resourceType": "ServiceRequest", "status": "active",
                            "intent": "order", "subject": ref,
                            "requester": {"reference": f"Practitioner/{ids['doc']}"}})
        study = client.create({"resourceType": "ImagingStudy", "status": "available",
                               "subject": ref})
        report = client.create({"resourceType": "DiagnosticReport", "status": "final",
                                "code": {"text": "CR"}, "subject": ref})
        obs = [client.create({"resourceType": "Observation", "status": "final",
                              "code": {"text": f"dose {i}"}, "subject": ref})["id"]
               for i in range(3)]
        ids[f"set{name}"] = {f"ServiceRequest/{sr['id']}", f"ImagingStudy/{study['id']}",
                             f"DiagnosticReport/{report['id']}",
                             *(f"Observation/{o}" for o in obs)}
    # the patient as performer puts an Observation in the compartment too (R4 definition)
    ids["self_measure"] = client.create({
        "resourceType": "Observation", "status": "final", "code": {"text": "auto-mesure"},
        "performer": [{"reference": f"Patient/{ids['pat1']}"}]})["id"]
    ids["set1"].add(f"Observation/{ids['self_measure']}")
    return ids


def test_compartment_search_per_type_and_star(client: Fhir, chart: dict[str, Any]) -> None:
    p1 = chart["pat1"]
    obs = client.search(f"Patient/{p1}/Observation?_count=100")
    assert set(_refs(obs)) == {r for r in chart["set1"] if r.startswith("Observation/")}
    assert obs["total"] == 4
    # the type-level twin (subject only) plus the performer the definition adds
    twin = set(_refs(client.search(f"Observation?patient=Patient/{p1}&_count=100")))
    assert set(_refs(obs)) == twin | {f"Observation/{chart['self_measure']}"}
    for rtype in ("ServiceRequest", "DiagnosticReport", "ImagingStudy"):
        assert set(_refs(client.search(f"Patient/{p1}/{rtype}"))) == {
            r for r in chart["set1"] if r.startswith(rtype + "/")}
    # parameters of the type apply; * covers every type of the compartment
    assert _refs(client.search(f"Patient/{p1}/Observation?code:text=dose 1")) != []
    star = client.search(f"Patient/{p1}/*?_count=100")
    assert set(_refs(star)) == chart["set1"] and star["total"] == len(chart["set1"])
    typed = client.search(f"Patient/{p1}/*?_type=ImagingStudy,DiagnosticReport")
    assert {r.split("/")[0] for r in _refs(typed)} == {"ImagingStudy", "DiagnosticReport"}
    # paging a compartment over several types
    pages = _walk(client, f"/fhir/Patient/{p1}/*?_count=2&_sort=-_lastUpdated")
    served = [r for page in pages for r in page]
    assert len(served) == len(set(served)) and set(served) == chart["set1"]
    posted = client.post(f"/fhir/Patient/{p1}/Observation/_search",
                         data={"code:text": "auto-mesure"})
    assert posted.status_code == 200 and _refs(posted.json()) == [
        f"Observation/{chart['self_measure']}"]


def test_system_and_compartment_search_in_a_batch(client: Fhir, chart: dict[str, Any]
                                                   ) -> None:
    p1 = chart["pat1"]
    out = client.post("/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"Patient/{p1}/ImagingStudy"}},
        {"request": {"method": "GET", "url": f"?_type=Patient&_id={p1}"}}]}).json()
    assert [e["response"]["status"][:3] for e in out["entry"]] == ["200", "200"]
    assert set(_refs(out["entry"][0]["resource"])) == {
        r for r in chart["set1"] if r.startswith("ImagingStudy/")}
    assert _refs(out["entry"][1]["resource"]) == [f"Patient/{p1}"]


def test_compartment_search_errors(client: Fhir, chart: dict[str, Any]) -> None:
    p1 = chart["pat1"]
    assert client.get(f"/fhir/Patient/{p1}/Practitioner").status_code == 400
    assert client.get(f"/fhir/Patient/{p1}/*?_type=Practitioner").status_code == 400
    assert client.get(f"/fhir/Patient/{p1}/Encounter").status_code == 404  # not served
    assert client.get("/fhir/Patient/nobody/Observation").status_code == 404
    assert client.get(f"/fhir/Practitioner/{chart['doc']}/Observation").status_code in (
        404, 405)


# -- the same access rules as type-level search (R-SEC-2) ----------------------------------

@pytest.fixture
def care(secured: FhirServer, tmp_path: Path, client: Fhir, chart: dict[str, Any]
         ) -> dict[str, Any]:
    """Dr A requests for patient 1 only (a care relationship); Dr B for nobody."""
    for rpps in (DR_A, DR_B):
        chart[f"prac{rpps}"] = client.create({"resourceType": "Practitioner", "identifier": [
            {"system": RPPS, "value": rpps}]})["id"]
    sr = client.create({"resourceType": "ServiceRequest", "status": "active",
                        "intent": "order", "subject": {"reference": f"Patient/{chart['pat1']}"},
                        "requester": {"reference": f"Practitioner/{chart[f'prac{DR_A}']}"}})
    chart["set1"].add(f"ServiceRequest/{sr['id']}")
    # what type-level searches show of patient 1 to the care team: the guard narrows
    # Observations by subject, so the one the patient performed stays out
    chart["seen1"] = chart["set1"] - {f"Observation/{chart['self_measure']}"}
    chart["dir"], chart["core"] = tmp_path, secured
    return chart


def _user(world: dict[str, Any], roles: list[str], scopes: list[str] | None = None,
          **claims: Any) -> TestClient:
    token = mint(world["dir"], roles, scopes or ["user/*.cruds"], **claims)
    return serve(world["core"], world["dir"], token)


def test_compartment_search_follows_the_care_relationship(care: dict[str, Any]) -> None:
    dr_a = _user(care, ["requesting-physician"], id_nat_ps=DR_A)
    p1, p2 = care["pat1"], care["pat2"]
    mine = _get(dr_a, f"/fhir/Patient/{p1}/Observation?_count=100")
    twin = _get(dr_a, f"/fhir/Observation?patient=Patient/{p1}&_count=100")
    # exactly what the type-level search shows them (the guard narrows Observations by
    # subject, so the one the patient performed without a subject stays out of both)
    assert sorted(_refs(mine)) == sorted(_refs(twin)) and mine["total"] == twin["total"]
    assert set(_refs(mine)) == {r for r in care["seen1"] if r.startswith("Observation/")}
    # another patient's compartment does not exist for them, whatever the type
    for url in (f"/fhir/Patient/{p2}/Observation", f"/fhir/Patient/{p2}/*",
                f"/fhir/Patient/{p2}/*?_summary=count"):
        r = dr_a.get(url)
        assert r.status_code == 404 and "Dossier2" not in r.text, url
    # a caller without any care relationship sees no patient compartment at all
    dr_b = _user(care, ["requesting-physician"], id_nat_ps=DR_B)
    assert dr_b.get(f"/fhir/Patient/{p1}/*").status_code == 404
    star = _get(dr_a, f"/fhir/Patient/{p1}/*?_count=100&_include=Observation:subject")
    assert set(_refs(star)) == care["seen1"]
    assert all(p2 not in r for r in _refs(star, "include"))


def test_system_search_shows_no_more_than_type_level_search(care: dict[str, Any]) -> None:
    dr_a = _user(care, ["requesting-physician"], id_nat_ps=DR_A)
    p1, p2 = care["pat1"], care["pat2"]
    types = ("Patient", "Observation", "ServiceRequest", "DiagnosticReport", "ImagingStudy")
    system = _get(dr_a, f"/fhir?_type={','.join(types)}&_count=100")
    per_type = [_get(dr_a, f"/fhir/{t}?_count=100") for t in types]
    assert sorted(_refs(system)) == sorted(r for b in per_type for r in _refs(b))
    assert system["total"] == sum(b["total"] for b in per_type)
    assert all(p2 not in r for r in _refs(system)) and f"Patient/{p1}" in _refs(system)
    assert _get(dr_a, f"/fhir?_type={','.join(types)}&_summary=count")["total"] == \
        system["total"]
    # _revinclude / _include cannot reach the other patient either
    rev = _get(dr_a, "/fhir?_type=Patient&_revinclude=Observation:subject&_count=100")
    assert all(p2 not in r for r in _refs(rev, "include"))
    everything = _get(dr_a, "/fhir?_count=1000")
    assert not any(r in care["set2"] or r == f"Patient/{p2}" for r in _refs(everything))
    # an id known to exist, searched across all types, is not revealed
    assert _get(dr_a, f"/fhir?_id={p2}")["total"] == 0
    # paging the narrowed union crosses type boundaries too
    pages = _walk(dr_a, f"/fhir?_type={','.join(types)}&_count=2&_sort=_lastUpdated")
    assert sorted(r for page in pages for r in page) == sorted(_refs(system))


def test_system_and_compartment_search_need_the_type_level_rights(care: dict[str, Any]
                                                                  ) -> None:
    p1 = care["pat1"]
    only_obs = _user(care, ["ris"], ["system/Observation.rs", "system/Patient.rs"])
    assert only_obs.get("/fhir?_type=Observation,ServiceRequest").status_code == 403
    implied = _get(only_obs, "/fhir?_count=1000")
    assert {r.split("/")[0] for r in _refs(implied)} <= {"Observation", "Patient"}
    assert only_obs.get(f"/fhir/Patient/{p1}/ServiceRequest").status_code == 403
    star = _get(only_obs, f"/fhir/Patient/{p1}/*?_count=100")
    assert {r.split("/")[0] for r in _refs(star)} == {"Observation"}
    # strong authentication, as for any patient data
    weak = _user(care, ["requesting-physician"], id_nat_ps=DR_A, acr="eidas1")
    assert weak.get("/fhir?_type=Observation").status_code == 403
    assert weak.get(f"/fhir/Patient/{p1}/Observation").status_code == 403
    # the patient themself: only their own compartment
    me = _user(care, ["patient"], ["patient/*.rs"], patient=p1, sub="patient-1")
    assert set(_refs(_get(me, f"/fhir/Patient/{p1}/*?_count=100"))) == care["seen1"]
    assert me.get(f"/fhir/Patient/{care['pat2']}/*").status_code == 404
    assert all(care["pat2"] not in r for r in _refs(_get(me, "/fhir?_count=1000")))


def test_system_and_compartment_searches_are_audited(care: dict[str, Any]) -> None:
    dr_a = _user(care, ["requesting-physician"], id_nat_ps=DR_A)
    _get(dr_a, f"/fhir/Patient/{care['pat1']}/Observation")
    _get(dr_a, "/fhir?_type=Observation")
    care["core"].audit.flush()
    auditor = _user(care, ["auditor"], id_nat_ps="899999999999")
    events = [e["resource"] for e in _get(
        auditor, "/fhir/AuditEvent?_count=500").get("entry", [])]
    subtypes = {e["subtype"][0]["code"] for e in events}
    assert {"search-system", "search-compartment"} <= subtypes


# -- CapabilityStatement and the first link -------------------------------------------------

def test_capability_statement_declares_system_and_compartment_search(client: Fhir) -> None:
    rest = client.get("/fhir/metadata").json()["rest"][0]
    assert {"code": "search-system"} in rest["interaction"]
    assert rest["compartment"] == ["http://hl7.org/fhir/CompartmentDefinition/patient"]
    names = {p["name"] for p in rest["searchParam"]}
    assert {"_type", "_id", "_lastUpdated", "_tag", "_profile", "_security", "_source"} <= names


def test_every_search_bundle_has_a_working_first_link(client: Fhir, chart: dict[str, Any]
                                                      ) -> None:
    p1 = chart["pat1"]
    for url in ("/fhir/Observation?_count=2", "/fhir?_type=Observation,Patient&_count=2",
                f"/fhir/Patient/{p1}/*?_count=2", f"/fhir/Patient/{p1}/Observation?_count=2",
                "/fhir/_history?_count=2", "/fhir/Observation/_history?_count=2",
                f"/fhir/Patient/{p1}/$everything?_count=2"):
        page1 = _get(client, url)
        first = _link(page1, "first")
        assert first is not None and _link(page1, "self") == first, url
        page2 = _get(client, _link(page1, "next") or "")
        assert _link(page2, "first") == first and _link(page2, "self") != first, url
        assert _refs(_get(client, first)) == _refs(page1), url
        query = dict(parse_qsl(urlsplit(first).query))
        assert "_cursor" not in query and query["_count"] == "2", url
