"""Binary in its own media type (FHIR R4 binary.html#rest; IHE MHD ITI-68)."""

from __future__ import annotations

import base64

import orjson
import pytest

from fhir_server.core.errors import FhirError
from fhir_server.core.formats import native_binary

CDA = b"<ClinicalDocument xmlns='urn:hl7-org:v3'/>"
BINARY = orjson.dumps({"resourceType": "Binary", "contentType": "application/hl7-cda+xml",
                       "data": base64.b64encode(CDA).decode()})


@pytest.mark.parametrize("accept", ["application/hl7-cda+xml",
                                    "application/hl7-cda+xml;q=0.9, */*"])
def test_an_accept_naming_the_content_type_gets_the_bytes(accept: str) -> None:
    assert native_binary(BINARY, accept) == (CDA, "application/hl7-cda+xml")


@pytest.mark.parametrize("accept", [None, "", "application/fhir+json", "*/*",
                                    "application/fhir+xml, application/hl7-cda+xml",
                                    "application/json", "application/*"])
def test_a_fhir_or_wildcard_accept_gets_the_binary_resource(accept: str | None) -> None:
    assert native_binary(BINARY, accept) is None


def test_an_accept_naming_neither_is_not_acceptable() -> None:
    with pytest.raises(FhirError) as caught:
        native_binary(BINARY, "application/pdf")
    assert caught.value.status == 406
    assert "application/hl7-cda+xml" in caught.value.operation_outcome()["issue"][0][
        "diagnostics"]
