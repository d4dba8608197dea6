"""The guard scales, and no query a user writes reaches a store limit (R-SEC-2; issue 27
item 6).

The attack: an imager party to 4 000 requests got 500 on every search — the guard's
patient list became an OR of ids and SQLite refused it ("Expression tree is too
large" at about 500 values); ``_id=`` with 499 ids and ``_sort`` with 200 keys failed
the same way. The guard is sub-selects now, whatever the number of patients; a user's
OR list, sort keys and AND-ed parameters are capped with a 400 naming the limit.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_server.core.limits import Limits
from fhir_server.server.dispatch import FhirServer
from tests.conftest import Fhir, mint, serve
from tests.security.guard_world import RPPS, instance, put_many

REQUESTS = 4000
IMAGER = "810000000401"


@pytest.fixture
def world(secured: FhirServer, store: Any, tmp_path: Path) -> dict[str, Any]:
    """An imager performer of 4 000 requests, one patient each, each with an
    Observation; as many patients who are not theirs. Built through the store."""
    if hasattr(store, "res"):  # mongomock filters in Python, without MongoDB's indexes:
        # its seconds per search are not the server's, so no query budget (item 7) here
        secured.limits = replace(secured.limits, query_timeout=0)
    imager = instance("Practitioner", identifier=[{"system": RPPS, "value": IMAGER}])
    put_many(store, [imager])
    mine = [instance("Patient", None, name=[{"family": f"MINE-{i}"}])
            for i in range(REQUESTS)]
    others = [instance("Patient", None, name=[{"family": f"OTHER-{i}"}])
              for i in range(REQUESTS)]
    requests = [instance("ServiceRequest", p["id"], status="active", intent="order",
                         performer=[{"reference": f"Practitioner/{imager['id']}"}])
                for p in mine]
    observations = [instance("Observation", p["id"], status="final", code={"text": "x"})
                    for p in mine + others]
    put_many(store, mine + others + requests + observations)
    return {"core": secured, "dir": tmp_path, "imager": imager["id"], "mine": mine,
            "others": others, "requests": requests, "observations": observations,
            "ris": Fhir(serve(secured, tmp_path, mint(tmp_path, ["ris"])))}


def _imager(w: dict[str, Any]) -> TestClient:
    return serve(w["core"], w["dir"], mint(w["dir"], ["remote-imager"], ["user/*.rs"],
                                           id_nat_ps=IMAGER, sub="imager"))


def _get(http: TestClient, query: str) -> dict[str, Any]:
    r = http.get(f"/fhir/{query}")
    assert r.status_code == 200, (query, r.text)
    return dict(r.json())


def test_an_imager_party_to_4000_requests_searches_R_SEC_2(world: dict[str, Any]) -> None:
    http = _imager(world)
    last, other = world["mine"][-1]["id"], world["others"][7]["id"]
    assert _get(http, "ServiceRequest?_count=10")["total"] == REQUESTS
    assert _get(http, "Patient?_summary=count")["total"] == REQUESTS
    assert _get(http, "Observation?_summary=count")["total"] == REQUESTS
    found = _get(http, f"Patient?name=MINE-{REQUESTS - 1}")
    assert [e["resource"]["id"] for e in found["entry"]] == [last]
    assert _get(http, "Observation?subject.name=OTHER-7&_summary=count")["total"] == 0
    assert _get(http, f"Practitioner?_has:ServiceRequest:performer:subject=Patient/{last}"
                )["total"] == 1
    assert http.get(f"/fhir/Patient/{last}").status_code == 200
    assert http.get(f"/fhir/Patient/{other}").status_code == 404
    page = _get(http, f"Observation?subject=Patient/{last}&_include=Observation:subject")
    assert {e["resource"]["resourceType"] for e in page["entry"]} == {"Observation", "Patient"}


@pytest.mark.parametrize(("query", "limit"), [
    ("Patient?_id={ids}", "TELEIMG_MAX_OR_VALUES"),
    ("Observation?subject={refs}", "TELEIMG_MAX_OR_VALUES"),
    ("Observation?subject:Patient._id={ids}", "TELEIMG_MAX_OR_VALUES"),
    ("Practitioner?_has:ServiceRequest:performer:subject={refs}", "TELEIMG_MAX_OR_VALUES"),
    ("Patient?_sort={sort}", "TELEIMG_MAX_SORT_KEYS"),
    ("Patient?{terms}", "TELEIMG_MAX_SEARCH_TERMS"),
])
def test_user_or_lists_sort_keys_and_terms_are_capped_R_SEC_2(
        secured: FhirServer, tmp_path: Path, query: str, limit: str) -> None:
    ris = serve(secured, tmp_path, mint(tmp_path, ["ris"]))
    ids = [str(uuid.uuid4()) for _ in range(499)]
    values = {"ids": ",".join(ids), "refs": ",".join(f"Patient/{i}" for i in ids),
              "sort": ",".join(["birthdate", "-name"] * 100),
              "terms": "&".join(f"name=n{i}" for i in range(Limits().max_search_terms + 1))}
    r = ris.get(f"/fhir/{query.format(**values)}")
    assert r.status_code == 400, r.text
    assert limit in r.json()["issue"][0]["diagnostics"]
    # the same through a Bundle entry: a 400 entry, never a 500
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": query.format(**values)}}]}
    r = ris.post("/fhir", json=bundle)
    assert r.json()["entry"][0]["response"]["status"].startswith("400"), r.text


def test_searches_up_to_the_limits_are_answered_R_SEC_2(secured: FhirServer,
                                                        tmp_path: Path) -> None:
    ris = Fhir(serve(secured, tmp_path, mint(tmp_path, ["ris"])))
    limits = Limits()
    made = [ris.create({"resourceType": "Patient", "name": [{"family": f"N{i}"}]})["id"]
            for i in range(3)]
    ids = made + [str(uuid.uuid4()) for _ in range(limits.max_or_values - 3)]
    assert sorted(ris.ids(f"Patient?_id={','.join(ids)}")) == sorted(made)
    sort = ",".join(["birthdate", "-name", "gender", "-_lastUpdated"] * 2)
    assert len(sort.split(",")) == limits.max_sort_keys
    assert len(ris.ids(f"Patient?_sort={sort}")) == 3
    terms = "&".join(["name:contains=N"] * limits.max_search_terms)
    assert len(ris.ids(f"Patient?{terms}")) == 3
