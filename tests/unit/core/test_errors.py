"""Errors carry an OperationOutcome; one table maps them to HTTP status."""

from fhir_server.core.errors import STATUS_TABLE, ErrorKind, FhirError, Issue


def test_every_error_kind_has_a_status() -> None:
    assert set(STATUS_TABLE) == set(ErrorKind)


def test_operation_outcome_carries_expression_and_code() -> None:
    exc = FhirError(ErrorKind.GONE, "deleted", expression=["Patient.id"])
    assert exc.status == 410
    assert exc.operation_outcome() == {"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "deleted", "diagnostics": "deleted",
         "expression": ["Patient.id"]}]}


def test_issue_code_overrides_default() -> None:
    exc = FhirError(ErrorKind.UNPROCESSABLE, "x", issues=[Issue("x", code="value")])
    assert exc.operation_outcome()["issue"][0]["code"] == "value"
