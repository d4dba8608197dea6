"""Reports pulled by DMP connectors and EHRs over IHE MHD, on both stores (issue 9;
R-REP-5, R-REP-6, R-CONS-5, R-SEC-2, R-SEC-3): ITI-67 Find Document References with the
MHD search parameters and incremental ``_lastUpdated`` polling, ITI-68 Retrieve Document
(the Binary in its own media type), masking and opposition, every access audited."""

from __future__ import annotations

import base64
import hashlib
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from fastapi.testclient import TestClient
from lxml import etree

from adapters.cda import validate
from adapters.cda.publish import Publisher
from fhir_server.security import masking
from fhir_server.server.dispatch import FhirServer
from tests.behaviour.test_report_delivery import INS, amend, final, qualify
from tests.behaviour.workflow_world import World
from tests.conftest import mint, serve

KIT = validate.references()
V3 = {"v3": "urn:hl7-org:v3"}
INS_SYSTEM = "urn:oid:1.2.250.1.213.1.4.8"
N3_FORMAT = "urn:ihe:rad:CDA:ImagingReportStructuredHeadings:2013"


@pytest.fixture
def world(secured: FhirServer, tmp_path: Path) -> World:
    world = World(secured, tmp_path)
    assert secured.workflow is not None
    Publisher().subscribe(secured.workflow.events)
    qualify(world)
    return world


def connector(world: World, role: str = "dmp-connector") -> TestClient:
    # Practitioner: ITI-67 author.* chains read it (a chained set needs a search right on
    # its type, issue 27 item 5)
    return world.user([role], scopes=["system/DocumentReference.rs", "system/Binary.r",
                                      "system/Patient.rs", "system/Practitioner.rs"])


class Poller:
    """A DMP connector's loop: every N3 document of the patient (by INS) changed since
    its last poll, read page by page (``_count=1``: every page boundary is crossed)."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.since: str | None = None
        self.seen: list[tuple[str, str]] = []  # (id, versionId) in arrival order

    def poll(self) -> list[dict[str, Any]]:
        params = [("patient.identifier", f"{INS_SYSTEM}|{INS}"), ("format", N3_FORMAT),
                  ("_sort", "_lastUpdated"), ("_count", "1")]
        if self.since:
            params.append(("_lastUpdated", f"gt{self.since}"))
        url: str | None = "/fhir/DocumentReference"
        got: list[dict[str, Any]] = []
        while url:
            r = self.client.get(url, params=params)
            assert r.status_code == 200, r.text
            bundle = r.json()
            assert bundle["type"] == "searchset"
            got += [e["resource"] for e in bundle.get("entry", [])]
            following = next((link["url"] for link in bundle["link"]
                              if link["relation"] == "next"), None)
            url, params = (urlsplit(following).path, parse_qsl(urlsplit(following).query)) \
                if following else (None, [])
        for doc in got:
            key = (doc["id"], doc["meta"]["versionId"])
            assert key not in self.seen, f"{key} repeated"
            self.seen.append(key)
            self.since = max(self.since or "", doc["meta"]["lastUpdated"])
        return got


def test_connector_polls_v1_then_v2_replacing_it_and_retrieves_the_cda(world: World) -> None:
    """ITI-67 + ITI-68, R-REP-6: v1, then v2 with relatesTo replaces v1 and v1 superseded,
    nothing missed or repeated across polls; the retrieved bytes are the stored CDA, in
    application/hl7-cda+xml, valid against the CDA schema."""
    poller = Poller(connector(world))
    assert poller.poll() == []
    report = final(world)
    [v1] = poller.poll()
    assert v1["status"] == "current" and v1["docStatus"] == "final"
    assert v1["identifier"][0]["value"].startswith("urn:uuid:")
    assert v1["content"][0]["format"]["code"] == N3_FORMAT
    assert {(c["system"], c["code"]) for lab in v1["securityLabel"] for c in lab["coding"]} \
        == {("http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "N")}
    time.sleep(0.002)  # distinct lastUpdated milliseconds, as between real polls
    assert poller.poll() == []
    amend(world, report)
    changed = poller.poll()
    assert [d["status"] for d in changed] == ["superseded", "current"]
    old, v2 = changed
    assert old["id"] == v1["id"]
    assert v2["relatesTo"] == [{"code": "replaces",
                                "target": {"reference": f"DocumentReference/{v1['id']}"}}]
    assert v2["masterIdentifier"] != v1["masterIdentifier"]
    assert poller.poll() == []
    # ITI-68: the attachment URL, asked for in the document's own type
    attachment = v2["content"][0]["attachment"]
    r = poller.client.get(f"/fhir/{attachment['url']}",
                          headers={"Accept": "application/hl7-cda+xml"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/hl7-cda+xml"
    assert len(r.content) == attachment["size"]
    stored = world.ris.get(f"/fhir/{attachment['url']}").json()  # the FHIR Binary
    assert r.content == base64.b64decode(stored["data"])
    assert base64.b64encode(hashlib.sha1(r.content).digest()).decode() == attachment["hash"]
    cda = etree.fromstring(r.content)
    assert cda.find("v3:versionNumber", V3).get("value") == "2"
    if KIT is not None:
        assert validate.xsd_errors(r.content, KIT) == []
    # an Accept the document is not in: 406, said in an OperationOutcome
    r = poller.client.get(f"/fhir/{attachment['url']}", headers={"Accept": "application/pdf"})
    assert r.status_code == 406 and r.json()["resourceType"] == "OperationOutcome"


def test_mhd_search_parameters_find_the_document(world: World) -> None:
    """ITI-67 parameters: each one, alone with the patient, finds the N3 document."""
    imager = world.ris.get(f"/fhir/{world.refs['imager']}").json()
    imager["name"] = [{"family": "Lambert", "given": ["Claire"]}]
    assert world.ris.put(f"/fhir/{world.refs['imager']}", json=imager).status_code == 200
    report = final(world)
    client = connector(world)
    n3 = next(e["resource"] for e in client.get(
        f"/fhir/DocumentReference?patient={world.refs['patient']}&format={N3_FORMAT}"
    ).json()["entry"])
    sr = next(r["reference"] for r in n3["context"]["related"]
              if r.get("reference", "").startswith("ServiceRequest/"))
    date = n3["date"][:10]
    patient = f"patient={world.refs['patient']}"
    for query in (f"patient.identifier={INS_SYSTEM}|{INS}", "status=current",
                  "type=http://loinc.org|18748-4",
                  "category=urn:oid:1.2.250.1.213.1.1.4.1|10", f"date=ge{date}",
                  f"period=ge{date[:4]}", "setting=ETABLISSEMENT", "facility=SA01",
                  "event=https://smt.esante.gouv.fr/terminologie-ccam|ACQK001",
                  f"format={N3_FORMAT}", f"related={sr}", "author.family=Lambert",
                  "author.given=Claire",
                  "security-label=http://terminology.hl7.org/CodeSystem/v3-Confidentiality|N",
                  f"identifier={n3['identifier'][0]['value']}"):
        r = client.get(f"/fhir/DocumentReference?{patient}&{query}")
        assert r.status_code == 200, (query, r.text)
        ids = [e["resource"]["id"] for e in r.json().get("entry", [])]
        assert n3["id"] in ids, query
    r = client.get(f"/fhir/DocumentReference?{patient}&status=superseded")
    assert r.json().get("entry", []) == []
    assert report["id"] in n3["description"]


def test_masked_and_opposed_documents_are_hidden_from_who_may_not_see_them(
        world: World) -> None:
    """R-CONS-5, R-SEC-2: a report masked from professionals reaches the DMP connector
    (which publishes it with its masking codes) but not an EHR consumer — neither in
    searches (totals included) nor by id, nor its Binary; a report invisible to the
    patient is hidden from the patient's own token; once the patient opposes sharing
    with professionals, the consumer sees none of their documents, and once they oppose
    the DMP, the DMP connector sees none."""
    final(world)
    final(world, masking.MASQUE_PS, masking.INVISIBLE_PATIENT)
    dmp, ehr = connector(world), connector(world, "document-consumer")
    mine = serve(world.core, world.dir, mint(world.dir, ["patient"], ["patient/*.rs"],
                                             patient=world.refs["patient"].split("/")[1]))
    query = f"/fhir/DocumentReference?patient={world.refs['patient']}&_total=accurate"

    def found(client: TestClient) -> dict[str, dict[str, Any]]:
        r = client.get(query)
        assert r.status_code == 200, r.text
        bundle = r.json()
        assert bundle.get("total", len(bundle.get("entry", []))) == \
            len(bundle.get("entry", []))
        return {e["resource"]["id"]: e["resource"] for e in bundle.get("entry", [])}

    everything = found(dmp)
    assert len(everything) == 4
    masked = {i for i, d in everything.items() if masking.labels(d)}
    assert len(masked) == 2
    assert set(found(ehr)) == set(everything) - masked
    assert set(found(mine)) == set(everything) - masked  # INVISIBLE_PATIENT
    hidden = everything[sorted(masked)[0]]
    binary = hidden["content"][0]["attachment"]["url"]
    for client in (ehr, mine):
        assert client.get(f"/fhir/DocumentReference/{hidden['id']}").status_code == 404
        assert client.get(f"/fhir/{binary}").status_code == 404
    assert dmp.get(f"/fhir/{binary}", headers={"Accept": "application/hl7-cda+xml"}
                   ).status_code == 200
    # opposition to sharing with professionals: the consumer sees nothing more
    world.consent("partage-professionnels", decision="deny")
    assert found(ehr) == {}
    assert len(found(dmp)) == 4
    world.consent("partage-dmp", decision="deny")
    assert found(dmp) == {}
    # every search and read above left an AuditEvent naming the patient
    auditor = world.user(["auditor"], scopes=["user/AuditEvent.rs"])
    deadline = time.monotonic() + 10
    while True:  # the journal is indexed shortly after it is written (ADR 0007)
        events = [e["resource"] for e in auditor.get(
            f"/fhir/AuditEvent?patient={world.refs['patient']}&_count=500"
        ).json().get("entry", [])]
        searches = [e for e in events if any(
            str(en.get("description", "")).startswith("DocumentReference?")
            for en in e.get("entity", []))]
        if len(searches) >= 4 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    # the DMP connector twice, the consumer and the patient once each, with results
    assert len(searches) >= 4
    reads = [e["resource"] for e in auditor.get(
        f"/fhir/AuditEvent?entity={binary}&_count=50").json().get("entry", [])]
    assert reads, "the retrieve of the Binary is audited"


def test_capability_statement_declares_the_mhd_document_responder(world: World) -> None:
    """ITI-67/68: the CapabilityStatement says which actor we are and how to use it."""
    cs = world.ris.get("/fhir/metadata").json()
    assert cs["instantiates"] == [
        "https://profiles.ihe.net/ITI/MHD/CapabilityStatement/IHE.MHD.DocumentResponder"]
    types = {r["type"]: r for r in cs["rest"][0]["resource"]}
    params = {p["name"] for p in types["DocumentReference"]["searchParam"]}
    assert {"patient", "status", "type", "category", "date", "period", "setting", "facility",
            "event", "format", "related", "security-label", "_lastUpdated"} <= params
    assert "IHE.MHD.Comprehensive.DocumentReference" in " ".join(
        types["DocumentReference"]["supportedProfile"])
    assert "ITI-68" in types["Binary"]["documentation"]
