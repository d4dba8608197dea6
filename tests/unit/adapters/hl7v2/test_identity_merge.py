"""The identity an order brings over a stored one (R-EXAM-1, R-REQ-1)."""

from __future__ import annotations

from typing import Any

from adapters.hl7v2.identity import Match, merged
from fhir_server.workflow.identity import reliability, status

IPP = {"system": "urn:oid:1.2.250.1.999.2", "value": "IPP-1"}
INS = {"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "283052312345678"}
PHONE = [{"system": "phone", "value": "+33238000001"}]


def _patient(status: str, **more: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [IPP], "name": [{"family": "X"}],
            "extension": [reliability(status)], **more}


def test_an_orders_qualified_identity_replaces_a_provisional_one() -> None:
    """A study's DICOM header made a PROV patient; the order (VALI, with INS, address)
    takes over: same result whether images or order came first."""
    stored = _patient("PROV", birthDate="1983-05-22")
    incoming = _patient("VALI", identifier=[IPP, INS], name=[{"family": "ARNAUDET"}],
                        birthDate="1983-05-22", telecom=PHONE)
    out = merged(Match("p1", stored, incoming), update_traits=False)
    assert out["name"] == [{"family": "ARNAUDET"}] and out["telecom"] == PHONE
    assert INS in out["identifier"]
    assert status(out) == "VALI"


def test_an_order_adds_a_missing_contact_but_changes_no_trait_of_a_qualified_identity(
        ) -> None:
    stored = _patient("VALI", name=[{"family": "MARTIN"}])
    incoming = _patient("VALI", name=[{"family": "AUTRE"}], telecom=PHONE)
    out = merged(Match("p1", stored, incoming), update_traits=False)
    assert out["name"] == [{"family": "MARTIN"}] and out["telecom"] == PHONE
    kept = _patient("VALI", telecom=[{"system": "phone", "value": "+33100000000"}])
    out = merged(Match("p1", kept, incoming), update_traits=False)
    assert out["telecom"] == kept["telecom"]  # a known contact is not replaced by an order
