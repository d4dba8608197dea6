"""The console's interface, indicators and audit pages (issue 30) over HTTP, without a
browser: each page per role, and a user outside the care relationship sees nothing —
not even counts. The pages read through the core as the user, so the API's rules hold
(R-SEC-2, R-EVAL-1, R-INT-2, R-SEC-3)."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from adapters.hl7v2.records import INBOUND, KIND_SYSTEM
from fhir_server.config import Settings
from fhir_server.server.dispatch import FhirServer
from teleimagerie.wiring import create_app
from tests.behaviour.hl7_world import Hl7World, omi, orm
from tests.behaviour.workflow_world import REFUSAL


@pytest.fixture
def world(secured: FhirServer, tmp_path: Path) -> Hl7World:
    return Hl7World(secured, tmp_path)


def signed_in(world: Hl7World, role: str, rpps: str = "") -> TestClient:
    """A browser-like client signed in with a development identity."""
    client = TestClient(create_app(Settings(data_dir=world.dir), server=world.core))
    page = client.get("/console/connexion")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf, page.text
    r = client.post("/console/connexion/dev", data={"role": role, "rpps": rpps,
                                                    "csrf": csrf.group(1)},
                    follow_redirects=False)
    assert r.status_code == 303, r.text
    return client


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found
    return found.group(1)


def _activity(world: Hl7World) -> None:
    refused = world.request("CT")
    world.op(world.imager, refused, "refuse", text="doublon",
             reason={"system": REFUSAL, "code": "doublon"})
    world.request("MR", kind="teleexpertise")


def test_indicators_page_draws_from_the_operation_and_exports_csv(world: Hl7World) -> None:
    _activity(world)
    auditor = signed_in(world, "auditor")
    r = auditor.get("/console/indicateurs?interval=day")
    assert r.status_code == 200, r.text
    assert 'id="plots"' in r.text and 'data-figure="volumes-site"' in r.text
    assert "CH de proximité" in r.text  # the site's name, read through the directory
    csv_answer = auditor.get("/console/indicateurs/export.csv?figure=refus")
    assert csv_answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(csv_answer.text)))
    assert rows[0] == ["motif", "nombre", "taux"] and rows[1][:2] == ["doublon", "1"]
    volumes = list(csv.reader(io.StringIO(auditor.get(
        "/console/indicateurs/export.csv?figure=volumes-kind&interval=month").text)))
    assert sum(int(n) for row in volumes[1:] for n in row[1:]) == 2


def test_indicators_page_per_role_and_outside_the_care_relationship(world: Hl7World) -> None:
    _activity(world)
    # a MERM's role does not open the page (nor the operation)
    merm = signed_in(world, "radiographer", "810000000199")
    r = merm.get("/console/indicateurs")
    assert r.status_code == 403 and "doublon" not in r.text
    assert merm.get("/console/indicateurs/export.csv?figure=refus").status_code == 403
    # an imager unknown to the directory: the operation refuses, no figure at all
    stranger = signed_in(world, "remote-imager", "810000000777")
    r = stranger.get("/console/indicateurs")
    assert r.status_code == 403 and 'id="plots"' not in r.text and "doublon" not in r.text
    assert stranger.get("/console/indicateurs/export.csv?figure=synthese").status_code == 403
    # the imager of the requests sees their own figures
    imager = signed_in(world, "remote-imager", "810000000101")
    assert imager.get("/console/indicateurs").status_code == 200


def test_interface_user_reprocesses_a_message_in_error(world: Hl7World) -> None:
    assert world.send(omi())["MSA"][1] == "AE"  # its order is not known yet
    [record] = world.search(f"Basic?code={KIND_SYSTEM}|{INBOUND}&hl7-status=error")
    assert world.send(orm())["MSA"][1] == "AA"  # the order arrives
    admin = signed_in(world, "admin")
    page = admin.get("/console/interface?etat=error")
    assert page.status_code == 200 and record["id"] in page.text
    detail = admin.get(f"/console/interface/messages/{record['id']}")
    assert "MSA-1" in detail.text and "acknowledgment code" in detail.text  # ACK, named
    assert "Message brut non affiché" in detail.text  # a Binary: patient data (issue 27)
    r = admin.post(f"/console/interface/messages/{record['id']}/retraiter",
                   data={"csrf": _csrf(detail.text)})
    assert r.status_code == 200 and "Message retraité" in r.text, r.text
    assert world.read(f"Basic/{record['id']}")["extension"][0]["valueCode"] == "processed"
    audits = world.search(f"AuditEvent?entity=Basic/{record['id']}&_count=50")
    assert any((s.get("code") == "reprocess") for e in audits for s in e.get("subtype") or [])
    # without the CSRF token nothing is done
    assert admin.post(f"/console/interface/messages/{record['id']}/retraiter",
                      data={}).status_code == 403


def test_interface_console_is_refused_to_other_roles(world: Hl7World) -> None:
    assert world.send(omi())["MSA"][1] == "AE"
    for role, rpps in (("auditor", ""), ("remote-imager", "810000000101"),
                       ("secretary", "")):
        client = signed_in(world, role, rpps)
        r = client.get("/console/interface")
        assert r.status_code == 403 and "ORM" not in r.text and "OMI" not in r.text
        [record] = world.search(f"Basic?code={KIND_SYSTEM}|{INBOUND}")
        assert client.get(f"/console/interface/messages/{record['id']}").status_code == 403


def test_audit_page_for_the_auditor_only(world: Hl7World) -> None:
    _activity(world)
    auditor = signed_in(world, "auditor")
    r = auditor.get("/console/audit")
    assert r.status_code == 200 and 'id="head-hash"' in r.text
    assert world.refs["patient"] in r.text  # who accessed the patient
    mine = auditor.get(f"/console/audit?patient={world.refs['patient']}")
    assert world.refs["patient"] in mine.text
    verified = auditor.post("/console/audit/verifier", data={"csrf": _csrf(r.text)})
    assert "Chaîne intacte" in verified.text, verified.text
    for role, rpps in (("admin", ""), ("remote-imager", "810000000101")):
        other = signed_in(world, role, rpps)
        refused = other.get("/console/audit")
        assert refused.status_code == 403 and world.refs["patient"] not in refused.text
