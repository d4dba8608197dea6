"""Final and amended reports become CDA documents on our server, on both stores:
N3 (structured) and N1 (PDF) as Binary + DocumentReference, conformant to the CDA XSD
and the official ANS schematrons (issue 8; R-REP-5, R-REP-6, R-ACT-4)."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from pypdf import PdfReader

from adapters.cda import validate
from adapters.cda.publish import Publisher
from fhir_server.core.server import FhirServer
from tests.behaviour.workflow_world import World

KIT = validate.references()
needs_kit = pytest.mark.skipif(KIT is None, reason="ANS CDA kit (../shared/references/"
                               "ans-cda) absent: XSD and schematrons cannot run")
needs_node = pytest.mark.skipif(not validate.schematron_available(), reason="node-schematron "
                                "not installed (make test installs it in tools/node)")
V3 = {"v3": "urn:hl7-org:v3"}


@pytest.fixture
def world(secured: FhirServer, tmp_path: Path) -> World:
    world = World(secured, tmp_path)
    assert secured.workflow is not None
    secured.workflow.listeners.append(Publisher().on_transition)
    return world


def _final(world: World, modality: str = "CT", dose: bool = True) -> tuple[str, dict[str, Any]]:
    sr = world.ready(modality)
    world.op(world.ris, sr, "start")
    study = world.study(sr, modality)
    report = world.report(sr, study, result=[{"reference": world.dose(study)}] if dose
                          else None)
    r = world.imager.post("/fhir/DiagnosticReport", json=report)
    assert r.status_code == 201, r.text
    return sr, r.json()


def _documents(world: World, report_id: str) -> dict[str, dict[str, Any]]:
    r = world.ris.get(f"/fhir/DocumentReference?subject={world.refs['patient']}")
    assert r.status_code == 200, r.text
    return {e["resource"]["description"]: e["resource"] for e in r.json().get("entry", [])
            if report_id in e["resource"]["description"]}


def _bytes(world: World, reference: dict[str, Any]) -> bytes:
    url = reference["content"][0]["attachment"]["url"]
    binary = world.ris.get(f"/fhir/{url}").json()
    return base64.b64decode(binary["data"])


def test_final_report_has_n3_and_n1_documents_with_xds_metadata(world: World) -> None:
    """R-REP-5: the final report's CDA, stored with the metadata the DMP needs."""
    sr, report = _final(world)
    docs = _documents(world, report["id"])
    assert sorted(d["content"][0]["format"]["code"] for d in docs.values()) == [
        "urn:ihe:iti:xds-sd:pdf:2008", "urn:ihe:rad:CDA:ImagingReportStructuredHeadings:2013"]
    n3 = next(d for d in docs.values() if d["description"].startswith("N3"))
    assert n3["status"] == "current" and n3["docStatus"] == "final"
    assert n3["type"]["coding"][0]["code"] == "18748-4"
    assert n3["subject"] == {"reference": world.refs["patient"]}
    assert n3["masterIdentifier"]["value"].startswith("urn:oid:2.25.")
    assert {"reference": f"ServiceRequest/{sr}"} in n3["context"]["related"]
    xml = _bytes(world, n3)
    attachment = n3["content"][0]["attachment"]
    assert attachment["size"] == len(xml)
    cda = etree.fromstring(xml)
    assert cda.find("v3:id", V3).get("root") == n3["masterIdentifier"]["value"][8:]
    assert cda.find("v3:versionNumber", V3).get("value") == "1"
    titles = [t.text for t in cda.iterfind(".//v3:section/v3:title", V3)]
    assert "Conclusion" in titles and "Exposition aux rayonnements" in titles
    [dose] = cda.xpath(".//v3:observation[v3:code/@code='113813']/v3:value", namespaces=V3)
    assert dose.get("unit") == "mGy.cm"


def test_pdf_names_the_imager_and_keeps_french_accents(world: World) -> None:
    """R-ACT-4: the N1 PDF says who interpreted the exam; accents survive."""
    _, report = _final(world)
    n1 = next(d for d in _documents(world, report["id"]).values()
              if d["description"].startswith("N1"))
    xml = _bytes(world, n1).decode()
    data = re.search(r'representation="B64">([^<]+)<', xml)
    assert data is not None
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(
        base64.b64decode(data.group(1)))).pages)
    assert "Compte rendu validé" in text and "RPPS" in text
    assert "Conclusion" in text and "hémorragie" in text


def test_amended_report_replaces_the_previous_version(world: World) -> None:
    """An amendment: version 2, same setId, relatedDocument RPLC, v1 superseded."""
    _, report = _final(world)
    amended = {**report, "status": "amended",
               "conclusion": report["conclusion"] + " Addendum : contrôle à 3 mois."}
    r = world.imager.put(f"/fhir/DiagnosticReport/{report['id']}", json=amended)
    assert r.status_code == 200, r.text
    docs = _documents(world, report["id"])
    v1 = next(d for d in docs.values() if d["description"].startswith("N3 — version 1"))
    v2 = next(d for d in docs.values() if d["description"].startswith("N3 — version 2"))
    assert v1["status"] == "superseded" and v2["status"] == "current"
    assert v2["relatesTo"] == [{"code": "replaces",
                                "target": {"reference": f"DocumentReference/{v1['id']}"}}]
    one, two = etree.fromstring(_bytes(world, v1)), etree.fromstring(_bytes(world, v2))
    assert one.find("v3:setId", V3).get("root") == two.find("v3:setId", V3).get("root")
    assert two.find("v3:versionNumber", V3).get("value") == "2"
    parent = two.find("v3:relatedDocument[@typeCode='RPLC']/v3:parentDocument/v3:id", V3)
    assert parent.get("root") == one.find("v3:id", V3).get("root")
    titles = [t.text for t in two.iterfind(".//v3:section/v3:title", V3)]
    assert "Addendum" in titles


@needs_kit
@needs_node
@pytest.mark.parametrize("case", ["ct-with-dose", "mri-without-dose", "amended"])
def test_documents_pass_the_xsd_and_official_schematrons(world: World, case: str) -> None:
    """R-REP-5: every generated document (N3 and N1) is valid CDA R2 and passes the ANS
    IMG-CR-IMG 2024.01, structuration minimale, IHE and ANS schematrons."""
    assert KIT is not None
    _, report = _final(world, "MR" if case == "mri-without-dose" else "CT",
                       dose=case != "mri-without-dose")
    if case == "amended":
        r = world.imager.put(f"/fhir/DiagnosticReport/{report['id']}",
                             json={**report, "status": "amended"})
        assert r.status_code == 200, r.text
    docs = _documents(world, report["id"])
    assert len(docs) == (4 if case == "amended" else 2)
    documents = [_bytes(world, doc) for doc in docs.values()]
    for doc, xml in zip(docs.values(), documents, strict=True):
        assert validate.xsd_errors(xml, KIT) == [], doc["description"]
    assert validate.schematron_errors(documents, KIT) == []


@needs_kit
@needs_node
def test_a_broken_rule_is_caught_by_the_schematron(world: World) -> None:
    """The check can fail: without its conclusion section the N3 is refused."""
    assert KIT is not None
    _, report = _final(world)
    n3 = next(d for d in _documents(world, report["id"]).values()
              if d["description"].startswith("N3"))
    broken = _bytes(world, n3).replace(b'root="1.2.250.1.213.1.1.2.209"',
                                       b'root="1.2.250.1.213.1.1.2.999"')
    errors = validate.schematron_errors(broken, KIT, ("CI-SIS_IMG-CR-IMG_2024.01.sch",))
    assert errors and "FR-DICOM-Conclusion" in errors[0]
