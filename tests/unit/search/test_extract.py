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


def test_a_memo_reuses_rows_only_for_elements_that_are_the_same_objects() -> None:
    """ADR 0017: the AuditEvents of one journal record share their unchanged elements; a
    series extracted with a memo gives exactly the rows extracted one by one."""
    from fhir_server.audit import records
    from fhir_server.search.extract import Memo

    def event(n: int, outcome: str = "0") -> dict[str, object]:
        return {"resourceType": "AuditEvent", "action": "R", "outcome": outcome,
                "recorded": f"2026-11-22T10:00:0{n % 10}Z",
                "type": {"system": "http://dicom.nema.org/resources/ontology/DCM",
                         "code": "110112"},
                "agent": [{"who": {"reference": f"Practitioner/pr{n % 2}"}, "requestor": True}],
                "entity": [{"what": {"reference": f"Patient/p{n}"}}]}

    events = [event(n, "4" if n == 3 else "0") for n in range(6)]
    record = records.compact(events, [f"e{n}" for n in range(6)])
    record.update(sequence=1, previous=records.GENESIS, lastUpdated="2026-11-22T10:00:09Z",
                  hash="h")
    expanded = records.expand(record)
    memo = Memo()
    for served in expanded:
        assert extract(served, memo) == extract(served)
    assert memo.rows["AuditEvent.action"][1] == [("AuditEvent.action", None, "R", None)]
