"""The XDS metadata rules of the DMP (issue 26 item 4; mapping.md of the ANS IG
*Transmission de documents CDA en HL7v2*; JDV_CodesDocumentImagerie_CISIS): the kit's
examples pass; each broken metadata is named."""

from __future__ import annotations

from dataclasses import replace

import pytest

from adapters.cda import codes, metadata, schematron, xds_check
from adapters.cda.metadata import Code

KIT = schematron.references()
pytestmark = pytest.mark.skipif(KIT is None, reason="ANS CDA kit absent (examples and "
                                 "JDV_CodesDocumentImagerie_CISIS)")


def _example(name: str = "IMG_CR_IMG_2024.01.xml") -> metadata.Metadata:
    assert KIT is not None
    return metadata.read((KIT / "examples" / name).read_bytes())


def test_the_kit_examples_metadata_pass() -> None:
    assert xds_check.problems(_example(), "N3", KIT) == []
    assert xds_check.problems(_example("IMG_CR_IMG_2024.01_CDA-R2-Niveau-1.xml"), "N1",
                              KIT) == []


def test_the_type_code_translations_are_read_from_the_value_set() -> None:
    """The example's translations (24727-0…) are in JDV_CodesDocumentImagerie; a code
    outside it is named."""
    meta = _example()
    assert meta.type_translations and all(
        (t.code, t.scheme) in xds_check.imaging_document_codes(KIT)
        for t in meta.type_translations)
    broken = replace(meta, type_translations=[Code("99999-9", "X", codes.LOINC)])
    [problem] = xds_check.problems(broken, "N3", KIT)
    assert "99999-9" in problem and "JDV_CodesDocumentImagerie" in problem


@pytest.mark.parametrize(("change", "named"), [
    ({"format": Code(codes.FORMAT_N1, "", metadata.FORMAT_SCHEME)}, "formatCode"),
    ({"type": Code("11488-4", "", codes.LOINC)}, "typeCode"),
    ({"class_code": Code("99", "", "1.2.250.1.213.1.1.4.1")}, "classCode"),
    ({"practice_setting": None}, "practiceSettingCode"),
    ({"facility_type": Code("SA01", "", "1.2.3")}, "healthcareFacilityTypeCode"),
    ({"confidentiality": []}, "confidentialityCode"),
    ({"patient_id": "123^^^&1.2.250.1.213.1.4.8&ISO^NH"}, "patientId"),
    ({"service_start": ""}, "serviceStartTime"),
    ({"language": "french"}, "languageCode"),
])
def test_each_broken_metadata_is_named(change: dict[str, object], named: str) -> None:
    problems = xds_check.problems(replace(_example(), **change), "N3", KIT)  # type: ignore[arg-type]
    assert problems and all(p.startswith(named) for p in problems), problems
