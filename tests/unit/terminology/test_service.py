"""The terminology service over the shipped resources (issue 4)."""

from __future__ import annotations

import re

import pytest

from terminology.service import TerminologyError, terminology

BASE = "https://teleimagerie.fr/fhir"
CCAM = "https://smt.esante.gouv.fr/terminologie-ccam"
DCM = "http://dicom.nema.org/resources/ontology/DCM"


def test_ccam_subset_has_60_checked_imaging_acts_with_the_mammography_flag_R_SCOPE_2() -> None:
    terms = terminology()
    cs = terms.code_systems[CCAM]
    concepts = terms.concepts[CCAM]
    assert len(concepts) >= 60 and cs["count"] == len(concepts)
    for code, concept in concepts.items():
        assert re.fullmatch(r"[A-Z]{4}[0-9]{3}", code), code
        source = concept.prop("source")
        assert source and source in cs["description"], code  # where it was checked
        action, technique = code[2], code[3]
        assert action == "Q", code  # diagnostic acts (CCAM "Q": exploration)
        label = concept.display or ""
        if label.startswith("Remnographie"):
            assert technique in "NJ", code  # IRM without / with injection
        if label.startswith("Scanographie") and "injection intraveineuse" in label and \
                "sans" not in label:
            assert technique == "H", code
    mammography = terms.expand(f"{BASE}/ValueSet/ccam-mammographie")[1]
    assert [c.code for c in mammography] == ["QEQK004"]


def test_value_sets_from_the_ans_jdv_and_tlr_tables() -> None:
    terms = terminology()
    assert terms.in_value_set(f"{BASE}/ValueSet/modalite-acquisition", DCM, "CT")
    assert not terms.in_value_set(f"{BASE}/ValueSet/modalite-acquisition", DCM, "XX")
    assert terms.in_value_set(f"{BASE}/ValueSet/region-anatomique", "http://snomed.info/sct",
                              "774007")
    assert terms.in_value_set(f"{BASE}/ValueSet/tlr-obr-procedure", None,
                              "TRANSMISSION_DEMANDE")
    assert terms.in_value_set(f"{BASE}/ValueSet/fiabilite-identite",
                              "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0445",
                              "VALI")


def test_expand_pages_and_filters() -> None:
    terms = terminology()
    total, first = terms.expand(f"{BASE}/ValueSet/ccam-imagerie", count=5)
    assert total >= 60 and len(first) == 5
    _, second = terms.expand(f"{BASE}/ValueSet/ccam-imagerie", offset=5, count=5)
    assert not {c.code for c in first} & {c.code for c in second}
    n, found = terms.expand(f"{BASE}/ValueSet/ccam-imagerie", text="thorax")
    assert n == len(found) > 2 and all("thorax" in (c.display or "").lower() for c in found)


def test_unknown_system_value_set_and_code_are_errors() -> None:
    terms = terminology()
    with pytest.raises(TerminologyError):
        terms.lookup("http://example.org/none", "1")
    with pytest.raises(TerminologyError):
        terms.lookup(CCAM, "ZZZZ999")
    with pytest.raises(TerminologyError):
        terms.expand("http://example.org/vs")
    with pytest.raises(TerminologyError):
        terms.translate("http://example.org/cm", "DCM", "MR")


def test_translate_hl7v2_modality_to_dcm() -> None:
    matches = terminology().translate(None, "DCM", "CT")
    assert matches and matches[0]["system"] == DCM and matches[0]["code"] == "CT"
    assert terminology().translate(None, "DCM", "??") == []


def test_include_of_a_value_set_and_a_system_intersects_by_code_not_label() -> None:
    from terminology.service import Terminology

    terms = Terminology()
    url = f"{BASE}/ValueSet/test-intersection"
    # the two sides label 774007 differently: membership is by system and code
    terms.value_sets[url] = {"resourceType": "ValueSet", "url": url, "compose": {"include": [{
        "valueSet": [f"{BASE}/ValueSet/region-anatomique"],
        "system": "http://snomed.info/sct",
        "concept": [{"code": "774007", "display": "Tête"}, {"code": "1"}]}]}}
    assert [c.code for c in terms.expansion(url).concepts] == ["774007"]


def test_every_code_system_our_code_writes_is_published() -> None:
    """A code system the server writes (AuditEvent.subtype, Task codes…) is in the IG we
    ship (terminology/resources), so a consumer can look its codes up."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    published = {p.name.removeprefix("CodeSystem-").removesuffix(".json")
                 for p in (root / "terminology" / "resources").glob("CodeSystem-*.json")}
    used = set()
    for source in [*(root / "fhir_server").rglob("*.py"), *(root / "adapters").rglob("*.py")]:
        text = source.read_text(encoding="utf-8")
        used |= set(re.findall(r"teleimagerie\.fr/fhir/CodeSystem/(teleimagerie-[\w-]+)", text))
        used |= set(re.findall(r'url\("CodeSystem", "(teleimagerie-[\w-]+)"\)', text))
    assert used, "the scan found nothing: the pattern is stale"
    assert used <= published, sorted(used - published)


def test_the_role_code_system_lists_exactly_the_roles() -> None:
    """R-ACT-1: AuditEvent.agent.role codes = the role table (security/roles.py)."""
    import json
    from pathlib import Path

    from fhir_server.security.roles import ROLES

    path = (Path(__file__).resolve().parents[3] / "terminology" / "resources"
            / "CodeSystem-teleimagerie-role.json")
    codes = {c["code"] for c in json.loads(path.read_text(encoding="utf-8"))["concept"]}
    assert codes == set(ROLES)
