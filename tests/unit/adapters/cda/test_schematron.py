"""The schematron validator evaluates every rule of the ANS kit (issue 26; R-REP-6,
R-INT-1; ADR 0021): the kit's own examples pass, or fail exactly the assertions listed
in ``kit_known_failures.json``; a rule that lives in an *included* file, in an abstract
pattern, or that reads one of the kit's value-set files, sees a broken document fail."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lxml import etree

from adapters.cda import schematron
from adapters.cda.schematron import Failure

pytestmark = [
    pytest.mark.skipif(not schematron.available(), reason="saxonche or the ANS CDA kit "
                       "(../shared/references/ans-cda) absent: the schematrons cannot run"),
]
KNOWN = json.loads((Path(__file__).parent / "kit_known_failures.json").read_text())
V3 = {"v3": "urn:hl7-org:v3"}
N3 = "IMG_CR_IMG_2024.01.xml"
N1 = "IMG_CR_IMG_2024.01_CDA-R2-Niveau-1.xml"


def _example(name: str) -> bytes:
    kit = schematron.references()
    assert kit is not None
    return (kit / "examples" / name).read_bytes()


def _broken(xpath: str, change: str, value: str = "") -> bytes:
    """The kit's N3 with the first node at ``xpath`` removed (``change`` "remove") or
    given the attributes ``value`` (``change`` "set", ``a=b;c=d``; an empty value
    removes the attribute)."""
    doc = etree.fromstring(_example(N3))
    node = doc.xpath(xpath, namespaces=V3)[0]
    if change == "remove":
        node.getparent().remove(node)
    else:
        for pair in value.split(";"):
            key, _, val = pair.partition("=")
            if val:
                node.set(key, val)
            else:
                node.attrib.pop(key, None)
    return etree.tostring(doc)


def _patterns(failures: list[Failure]) -> set[str]:
    return {f.pattern for f in failures}


def test_official_n3_example_passes_every_rule() -> None:
    """The ANS N3 passes the five schematrons; the only assertions set apart are those
    reading a value set the kit does not ship, each named as such."""
    validator = schematron.default()
    report = validator.validate(_example(N3), schematron.BY_LEVEL["N3"])
    assert [f.line() for f in report.failures] == []
    assert report.fired > 400  # rules ran (CR-IMG 71, structuration minimale 309…)
    absent = {gap for name in schematron.BY_LEVEL["N3"] for gap in validator.gaps(name)}
    assert report.unverifiable
    for failure in report.unverifiable:
        assert "doc(" in failure.test or "document(" in failure.test
        assert any(gap in failure.message or gap in failure.test for gap in absent) or \
            "$JDV" in failure.test, failure.line()


def test_official_examples_fail_exactly_the_listed_assertions() -> None:
    """Every schematron over both examples: what fails is what the fixture lists (with
    its reason), no more, no less."""
    validator = schematron.default()
    every = schematron.BY_LEVEL["N3"]
    for example in (N3, N1):
        found = validator.validate(_example(example), every).failures
        expected = [k for k in KNOWN["failures"] if k["example"] == example]
        assert len(found) == len(expected), [f.line() for f in found]
        for known in expected:
            assert any(f.schematron == known["schematron"] and f.pattern == known["pattern"]
                       and known["message_contains"] in f.message for f in found), known
    # and the N1, checked by the schematrons of its level, passes
    assert validator.validate(_example(N1)).failures == []


def test_a_rule_in_an_included_section_file_fails_a_broken_document() -> None:
    """IHE.sch includes include/sections/S_DICOM_ExpositionsAuxRadiations.sch: without its
    pregnancy observation, the radiation exposure section fails that rule."""
    broken = _broken("//v3:section[v3:code/@code='73569-6']/v3:entry"
                     "[v3:observation/v3:code/@code='364320009']", "remove")
    failures = schematron.default().validate(broken, [schematron.IHE]).failures
    assert "S_DICOM_ExpositionsAuxRadiations" in _patterns(failures)
    assert any("grossesse" in f.message for f in failures)


def test_an_abstract_pattern_instance_rejects_a_forbidden_null_flavor() -> None:
    """CR-IMG includes JDV_LocalisationAnatomiqueQuantite-CISIS.sch, an instance of the
    abstract dansJeuDeValeurs (abstract/dansJeuDeValeurs.sch) with nullFlavor forbidden:
    a dose's target site 'UNK' fails it (what our N3 did before issue 26)."""
    broken = _broken("//v3:observation[v3:templateId/@root='1.2.250.1.213.1.1.3.154']"
                     "/v3:targetSiteCode", "set",
                     "nullFlavor=UNK;code=;codeSystem=;displayName=;codeSystemName=")
    failures = schematron.default().validate(broken, [schematron.CR_IMG]).failures
    assert "JDV_LocalisationAnatomiqueQuantite-CISIS" in _patterns(failures)
    assert any("nullFlavor" in f.message for f in failures)


def test_a_value_set_file_of_the_kit_is_read() -> None:
    """JDV_ModaliteAcquisition_CISIS.xml is in the kit: a modality outside it fails the
    membership assertion (a failure, not 'unverifiable')."""
    broken = _broken("//v3:documentationOf/v3:serviceEvent/v3:code/v3:translation"
                     "[@codeSystem='1.2.840.10008.2.16.4']", "set", "code=ZZ")
    report = schematron.default().validate(broken, [schematron.CR_IMG])
    assert "JDV_ModaliteImagerieDocumentationOf-CISIS" in _patterns(report.failures)
    assert any("ZZ" in f.message for f in report.failures)


def test_a_rule_of_structuration_minimale_fails_a_broken_header() -> None:
    """ASIP-STRUCT-MIN-StrucMin.sch includes its 2 000+ assertions from include/ (and
    extends abstract datatype rules): a patient without given name fails."""
    broken = _broken("//v3:recordTarget/v3:patientRole/v3:patient/v3:name/v3:given",
                     "remove")
    doc = etree.fromstring(broken)
    for given in doc.xpath("//v3:recordTarget//v3:patient/v3:name/v3:given", namespaces=V3):
        given.getparent().remove(given)
    failures = schematron.default().validate(etree.tostring(doc),
                                             [schematron.STRUCT_MIN]).failures
    assert any("hl7:given" in f.message for f in failures), [f.line() for f in failures]


def test_compiled_stylesheets_are_cached_on_disk() -> None:
    """A second validator over the same cache compiles nothing (the kit is hashed)."""
    first = schematron.default()
    path = first.stylesheet(schematron.CR_IMG)
    again = schematron.Validator(first.kit, first.root.parent)

    def refuse(*_: object) -> None:
        raise AssertionError("compiled again")

    again._compile = refuse  # type: ignore[method-assign]
    assert again.stylesheet(schematron.CR_IMG) == path
    assert again.gaps(schematron.CR_IMG) == first.gaps(schematron.CR_IMG)


def test_warm_compiles_the_schematrons_before_the_first_report() -> None:
    """The served app warms the report check in the background (runtime.warm): once it
    has run, the stylesheets are compiled in this process (ADR 0021)."""
    from adapters.cda import validate
    from adapters.cda.check import ReportDocuments

    checker = validate.checker()
    ReportDocuments(checker).warm()
    # compiled, here or in the host's service: what warm() is for
    assert set(checker.validator.compiled()) >= {
        n for names in schematron.BY_LEVEL.values() for n in names}


def test_an_isolated_validator_gives_the_same_verdict_from_its_own_process() -> None:
    """What servers use (ADR 0021): SaxonC holds the GIL while compiling and
    transforming, so a server validates in a process of its own — same failures, same
    rules fired as in-process."""
    local = schematron.default()
    isolated = schematron.Isolated(local.kit)
    try:
        broken = _broken("//v3:observation[v3:templateId/@root='1.2.250.1.213.1.1.3.154']"
                         "/v3:targetSiteCode", "set",
                         "nullFlavor=UNK;code=;codeSystem=;displayName=;codeSystemName=")
        # one schematron (CR-IMG, where the broken rule lives): the child compiles only
        # it — the whole kit would cost another 10-15 s of Saxon in this test
        for xml in (_example(N3), broken):
            here = local.validate(xml, [schematron.CR_IMG])
            there = isolated.validate(xml, [schematron.CR_IMG])
            assert there.failures == here.failures and there.fired == here.fired > 0
        assert not isolated.validate(broken, [schematron.CR_IMG]).valid
    finally:
        isolated.close()
