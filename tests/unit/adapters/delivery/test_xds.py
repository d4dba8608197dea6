"""XDS metadata read from a CDA header, ebRIM responses, MTOM framing (IHE ITI TF-2
§3.41, TF-3 §4.2; ANS mapping.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from adapters.cda import metadata
from adapters.delivery import ebrim, xds

EXAMPLES = Path(__file__).resolve().parents[5] / "shared" / "references" / "ans-cda" / \
    "examples"
N1 = EXAMPLES / "IMG_CR_IMG_2024.01_CDA-R2-Niveau-1.xml"
N3 = EXAMPLES / "IMG_CR_IMG_2024.01.xml"
needs_examples = pytest.mark.skipif(not N3.exists(), reason="ANS CDA examples (../shared/"
                                    "references/ans-cda/examples) absent")


@needs_examples
def test_metadata_of_the_official_ans_examples() -> None:
    """The header reader on documents we did not write: the ANS CR-IMG N3 and N1."""
    for path, fmt in ((N3, "urn:ihe:rad:CDA:ImagingReportStructuredHeadings:2013"),
                      (N1, "urn:ihe:iti:xds-sd:pdf:2008")):
        data = path.read_bytes()
        meta = metadata.read(data)
        assert meta.format.code == fmt
        assert meta.type.code == "18748-4" and meta.class_code.code == "10"
        assert meta.patient_id.endswith("&ISO^NH") and meta.ins
        assert meta.authors and meta.authors[0][0].count("^") >= 2
        assert meta.size == len(data) and len(meta.hash) == 40
        assert meta.creation_time.isdigit() and len(meta.creation_time) == 14
        assert meta.unique_id


def test_dtm_is_utc() -> None:
    assert metadata._dtm("20210108111700+0100") == "20210108101700"
    assert metadata._dtm("20210108") == "20210108"
    assert metadata._dtm(None) == ""


def _answer(inner: str) -> bytes:
    return (f'<s:Envelope xmlns:s="{xds.SOAP}"><s:Body>{inner}</s:Body></s:Envelope>'
            ).encode()


def test_registry_response_success_failure_and_fault() -> None:
    ok = xds.registry_response("application/soap+xml", _answer(
        f'<rs:RegistryResponse xmlns:rs="{ebrim.RS}" status="urn:oasis:names:tc:'
        'ebxml-regrep:ResponseStatusType:Success"/>'))
    assert ok.success
    failed = xds.registry_response("application/soap+xml", _answer(
        f'<rs:RegistryResponse xmlns:rs="{ebrim.RS}" status="urn:oasis:names:tc:ebxml-'
        'regrep:ResponseStatusType:Failure"><rs:RegistryErrorList><rs:RegistryError '
        'errorCode="XDSPatientIdDoesNotMatch" codeContext="INS inconnu" severity="urn:'
        'oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"/></rs:RegistryErrorList>'
        "</rs:RegistryResponse>"))
    assert not failed.success
    assert failed.errors == [("XDSPatientIdDoesNotMatch", "Error", "INS inconnu")]
    assert "INS inconnu" in failed.describe()
    with pytest.raises(xds.SoapFault) as fault:
        xds.registry_response("application/soap+xml", _answer(
            '<s:Fault><s:Code><s:Value>s:Sender</s:Value></s:Code><s:Reason>'
            '<s:Text xml:lang="fr">VIHF invalide</s:Text></s:Reason></s:Fault>'))
    assert fault.value.code.endswith("Sender") and "VIHF" in fault.value.reason


def test_mtom_round_trip() -> None:
    """What we frame, a MIME parser splits back: the envelope first, then the bytes."""
    env = etree.fromstring(_answer("<x/>"))
    request = xds.mtom(env, [("doc1@test", b"<ClinicalDocument/>\x00\xff")], "urn:uuid:1")
    root, parts = xds.split_mtom(request.content_type, request.body)
    assert etree.fromstring(root).tag == f"{{{xds.SOAP}}}Envelope"
    assert parts["doc1@test"] == b"<ClinicalDocument/>\x00\xff"
