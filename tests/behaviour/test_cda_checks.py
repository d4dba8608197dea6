"""Validation before delivery (issue 26; R-REP-6, R-INT-1; ADR 0021): a final report
whose CDA documents would fail an ANS schematron rule is refused with a 422 naming the
rule; a stored document that fails them is never sent, its delivery Task says which
rule (``document-invalide``); ``teleimagerie cda validate`` gives an operator the same
verdict. The validator is the real one (every rule of the kit), wired as the composition
root wires it (``Workflow.report_checks``, ``Sender(check=…)``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.cda import schematron, validate
from adapters.cda.check import ReportDocuments, delivery_check
from adapters.cda.publish import Publisher
from fhir_server.server.dispatch import FhirServer
from teleimagerie.cli import main as cli
from tests.behaviour.test_cda_documents import BIRTH_PLACE, _final, _identity
from tests.behaviour.test_report_delivery import Rig, state
from tests.behaviour.workflow_world import World

pytestmark = [
    pytest.mark.skipif(not schematron.available(), reason="saxonche or the ANS CDA kit "
                       "absent: the schematrons cannot run"),
]
INS_TRAITS = "traits de l'INS"


@pytest.fixture
def world(secured: FhirServer, tmp_path: Path) -> World:
    world = World(secured, tmp_path)
    assert secured.workflow is not None
    Publisher().subscribe(secured.workflow.events)
    secured.workflow.report_checks.append(ReportDocuments(validate.checker()))
    return world


def _without_birth_place(world: World) -> None:
    """A qualified INS identity whose birth place (an INS trait) the RIS did not send."""
    _identity(world, "VALI")
    patient = world.ris.get(f"/fhir/{world.refs['patient']}").json()
    patient["extension"] = [e for e in patient["extension"] if e["url"] != BIRTH_PLACE["url"]]
    r = world.ris.put(f"/fhir/{world.refs['patient']}", json=patient)
    assert r.status_code == 200, r.text


def test_a_report_whose_documents_fail_a_rule_is_refused_naming_it(world: World) -> None:
    """422 on the final report write: the OperationOutcome names the schematron, the
    rule and what it says; nothing was recorded; once the data is right, it passes."""
    _without_birth_place(world)
    with pytest.raises(AssertionError) as refused:
        _final(world, "CT")
    text = str(refused.value)
    assert '"code":"business-rule"' in text and INS_TRAITS in text
    assert "ASIP-STRUCT-MIN-StrucMin.sch" in text and "document CDA N3" in text
    r = world.ris.get(f"/fhir/DocumentReference?subject={world.refs['patient']}")
    assert r.json().get("entry", []) == []  # no document, no report: one write unit
    r = world.ris.get(f"/fhir/DiagnosticReport?subject={world.refs['patient']}")
    assert r.json().get("entry", []) == []
    _identity(world, "VALI")  # the RIS sends the birth place
    _, report = _final(world, "CT")
    assert report["status"] == "final"


def test_an_amendment_is_checked_too(world: World) -> None:
    """The amended version's documents (RPLC, addendum) go through the same rules."""
    _identity(world, "VALI")
    _, report = _final(world, "CT")
    _without_birth_place(world)
    r = world.imager.put(f"/fhir/DiagnosticReport/{report['id']}",
                         json={**report, "status": "amended"})
    assert r.status_code == 422, r.text
    assert INS_TRAITS in r.text


@pytest.fixture
def rig(secured: FhirServer, tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(secured, tmp_path)  # documents produced unchecked (no report check) …
    check = delivery_check()
    assert check is not None
    rig.sender.check = check  # … and the sender checks them, as the service does
    yield rig
    rig.close()


def test_a_document_failing_a_rule_is_never_sent(rig: Rig) -> None:
    """The stored N3 fails the INS-traits rule: its DMP delivery waits in
    document-invalide naming the rule; nothing reaches the DMP; the RIS N1 fails the
    same rule and is held too."""
    rig.qualify()  # INS + VALI and the GP's MSSanté address …
    _without_birth_place(rig.world)  # … but the RIS did not send the birth place
    rig.final()
    rig.run()
    found = rig.deliveries()
    dmp = found[("dmp", "DMP")]
    assert state(dmp) == "document-invalide" and dmp["status"] == "on-hold"
    assert INS_TRAITS in dmp["businessStatus"]["text"]
    assert "StrucMin" in dmp["businessStatus"]["text"]
    assert rig.xds.requests == []
    ris = found[("ris", rig.world.refs["site"])]
    assert state(ris) == "document-invalide"
    assert rig.ris.messages == []


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_operator_command_gives_the_same_verdict(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    """teleimagerie cda validate FILE: 0 valid, 1 invalid with one failed assertion per
    line, 2 for a missing file."""
    kit = schematron.references()
    assert kit is not None
    example = kit / "examples" / "IMG_CR_IMG_2024.01.xml"
    code, out, err = _cli(["cda", "validate", str(example)], capsys)
    assert code == 0 and "conforme" in out, err
    broken = tmp_path / "broken.xml"
    broken.write_bytes(example.read_bytes().replace(b'root="1.2.250.1.213.1.1.2.209"',
                                                    b'root="1.2.250.1.213.1.1.2.999"'))
    code, out, _ = _cli(["cda", "validate", str(broken)], capsys)
    lines = out.strip().splitlines()
    assert code == 1 and lines
    assert any("FR-DICOM-Conclusion" in line for line in lines)
    assert all(line.startswith(("CI-SIS", "profils/", "CDA_extended.xsd", "XDS"))
               for line in lines)
    code, _, err = _cli(["cda", "validate", str(tmp_path / "absent.xml")], capsys)
    assert code == 2 and "illisible" in err
