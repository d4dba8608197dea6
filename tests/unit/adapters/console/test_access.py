"""Each radiologist's page as each role, and as professionals outside the care
relationship (issue 30; R-SEC-2): the console shows exactly what the API answers that
user — outside the relationship nothing of the request leaks, not its patient's name,
not its id, not even a count — and an operation it refuses changes nothing."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fhir_server.server.dispatch import FhirServer
from fhir_server.workflow.search import register_all
from tests.behaviour.workflow_world import IMAGER, REQUESTER, World
from tests.conftest import serve
from tests.unit.adapters.console.conftest import csrf_of, sign_in

SITE = "750000001"
# role, idNatPs, FINESS -> in the care relationship of the request?
USERS = {
    "imager": ("remote-imager", IMAGER, "", True),
    "requester": ("requesting-physician", REQUESTER, "", True),
    "merm": ("radiographer", "810000000199", SITE, True),
    "secretary": ("secretary", "", SITE, True),
    "other-imager": ("remote-imager", "810000000777", "", False),
    "other-requester": ("requesting-physician", "810000000778", "", False),
    "other-secretary": ("secretary", "", "999999999", False),
    "other-merm": ("radiographer", "810000000779", "999999999", False),
}
NO_PAGES = ("admin", "auditor", "biomedical-engineer")  # no care relationship at all


class Site:
    def __init__(self, core: FhirServer, tmp: Path) -> None:
        register_all()
        self.world = World(core, tmp)
        self.sr = self.world.request("CT")
        self.world.consent("acte", "teleimagerie")
        r = self.world.op(self.world.imager, self.sr, "accept")
        assert r.status_code == 200, r.text
        self.core, self.tmp = core, tmp

    def client(self, role: str, rpps: str = "", finess: str = "") -> TestClient:
        return sign_in(serve(self.core, self.tmp, None), role, rpps, finess)


@pytest.fixture
def site(core: FhirServer, tmp_path: Path) -> Iterator[Site]:
    yield Site(core, tmp_path)


def _count(page: str) -> str:
    found = re.search(r'id="compte">([^<]*)', page)
    assert found, page[:500]
    return found.group(1)


@pytest.mark.parametrize("who", sorted(USERS))
def test_worklist_and_request_page_per_role(site: Site, who: str) -> None:
    role, rpps, finess, party = USERS[who]
    client = site.client(role, rpps, finess)
    for path in ("/console/demandes", "/console/demandes/lignes",
                 "/console/demandes/lignes?etat=toutes", "/console/demandes?retard=1&etat=toutes"):
        r = client.get(path)
        assert r.status_code == 200, (path, r.text[:300])
        if party and "retard" not in path:
            assert site.sr in r.text and "MARTIN" in r.text, (who, path)
            assert _count(r.text).startswith("1 demande"), _count(r.text)
        elif not party:
            assert site.sr not in r.text and "MARTIN" not in r.text, (who, path)
            assert _count(r.text) == "0 demandes", (who, _count(r.text))
    r = client.get(f"/console/demande/{site.sr}")
    if party:
        assert r.status_code == 200 and "MARTIN" in r.text
    else:  # the API's 404: not even whether the request exists
        assert r.status_code == 404, r.text[:300]
        assert "MARTIN" not in r.text and "Claire" not in r.text
        assert "Scanographie" not in r.text


@pytest.mark.parametrize("role", NO_PAGES)
def test_roles_without_a_care_relationship_get_no_request_page(site: Site, role: str) -> None:
    client = site.client(role)
    for path in ("/console/demandes", "/console/demandes/lignes",
                 f"/console/demande/{site.sr}"):
        r = client.get(path)
        assert r.status_code == 403, (path, r.status_code)
        assert "MARTIN" not in r.text and site.sr not in r.text.replace(
            f"/console/demande/{site.sr}", "")
    assert "Demandes" not in client.get("/console/profil").text  # not in their navigation


def test_operations_show_only_what_the_role_may_fire(site: Site) -> None:
    """validee: the imager schedules, refuses or cancels; the MERM schedules or says the
    images are there (the HL7 flows signal no scheduling); the
    requesting physician may only cancel; the secretary schedules or cancels."""
    expected = {"imager": {"schedule", "refuse", "cancel"},
                "merm": {"schedule", "images-available"}, "requester": {"cancel"},
                "secretary": {"schedule", "cancel"}}
    for who, ops in expected.items():
        role, rpps, finess, _ = USERS[who]
        page = site.client(role, rpps, finess).get(f"/console/demande/{site.sr}").text
        assert set(re.findall(r'data-op="([a-z-]+)"', page)) == ops, who


def test_an_outsider_cannot_fire_an_operation(site: Site) -> None:
    role, rpps, finess, _ = USERS["other-imager"]
    client = site.client(role, rpps, finess)
    csrf = csrf_of(client.get("/console/profil").text)
    r = client.post(f"/console/demande/{site.sr}/operation/cancel",
                    data={"csrf": csrf, "text": "essai"})
    assert r.status_code == 404 and "MARTIN" not in r.text
    assert site.world.state(site.sr) == "validee"
    r = client.post(f"/console/demande/{site.sr}/compte-rendu",
                    data={"csrf": csrf, "status": "final", "conclusion": "x"})
    assert r.status_code == 404 and "MARTIN" not in r.text


def test_a_refused_transition_shows_the_servers_message(site: Site,
                                                        signed: Callable[..., TestClient]
                                                        ) -> None:
    client = site.client("remote-imager", IMAGER)
    csrf = csrf_of(client.get(f"/console/demande/{site.sr}").text)
    # $start is not offered from validee; forced, the state machine answers (409)
    r = client.post(f"/console/demande/{site.sr}/operation/start", data={"csrf": csrf})
    assert r.status_code == 409
    assert re.search(r'class="alert erreur" role="alert">[^<]*validee', r.text), r.text
    # a refusal without its coded reason (R-VAL-3): 422 and the French message
    r = client.post(f"/console/demande/{site.sr}/operation/refuse",
                    data={"csrf": csrf, "text": "insuffisant"})
    assert r.status_code == 422 and "motif codé est obligatoire" in r.text
    assert 'id="op-refuse" open' in r.text and "insuffisant" in r.text  # kept as typed
    assert site.world.state(site.sr) == "validee"
