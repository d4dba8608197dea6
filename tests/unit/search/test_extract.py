"""Write-time index extraction by FHIR data type."""

from fhir_server.search.extract import extract, parse_reference


def test_reference_parsing() -> None:
    assert parse_reference("Patient/1") == ("Patient", "1")
    assert parse_reference("Patient/1/_history/2") == ("Patient", "1")
    assert parse_reference("http://x/fhir/Patient/1") == (None, None)
    assert parse_reference("#contained") == (None, None)


def test_patient_rows() -> None:
    rows = extract({"resourceType": "Patient", "id": "p",
                    "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "1"}],
                    "name": [{"family": "Lefèvre", "given": ["Élodie"]}],
                    "birthDate": "1980", "gender": "female"})
    assert ("Patient.identifier", "urn:oid:1.2.250.1.213.1.4.8", "1", None) in rows.token
    assert ("Patient.family", "lefevre", "Lefèvre") in rows.string
    assert rows.sort["Patient.family"] == ("lefevre", "lefevre")
    (_, low, high), = [r for r in rows.date if r[0] == "Patient.birthdate"]
    assert high > low


def test_patient_only_reference_filter() -> None:
    rows = extract({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                    "subject": {"reference": "Group/g"}})
    keys = {r[0] for r in rows.reference}
    assert "Observation.subject" in keys and "Observation.patient" not in keys


def test_reference_by_identifier() -> None:
    rows = extract({"resourceType": "ServiceRequest", "status": "active", "intent": "order",
                    "subject": {"reference": "Patient/1"},
                    "requester": {"identifier": {"system": "urn:oid:1.2.250.1.71.4.2.1",
                                                 "value": "810"}}})
    assert ("ServiceRequest.requester", None, None, None, "urn:oid:1.2.250.1.71.4.2.1",
            "810") in rows.reference
