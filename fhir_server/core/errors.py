"""Errors are exceptions carrying an OperationOutcome; one table maps them to HTTP status.

FHIR R4 http.html and operationoutcome.html: every failure is answered with an
OperationOutcome whose issues carry a code, a severity, diagnostics and, where an
element is at fault, an ``expression`` path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class ErrorKind(Enum):
    INVALID = "invalid"
    STRUCTURE = "structure"
    UNPROCESSABLE = "unprocessable"
    NOT_FOUND = "not-found"
    UNSUPPORTED_TYPE = "unsupported-type"
    GONE = "gone"
    CONFLICT = "conflict"
    PRECONDITION_FAILED = "precondition-failed"
    METHOD_NOT_ALLOWED = "method-not-allowed"
    NOT_ACCEPTABLE = "not-acceptable"
    UNSUPPORTED_MEDIA = "unsupported-media"
    TOO_LARGE = "too-large"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    TOO_COSTLY = "too-costly"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


# The one table: error kind -> (HTTP status, OperationOutcome issue type).
STATUS_TABLE: dict[ErrorKind, tuple[int, str]] = {
    ErrorKind.INVALID: (400, "invalid"),
    ErrorKind.STRUCTURE: (400, "structure"),
    ErrorKind.UNPROCESSABLE: (422, "processing"),
    ErrorKind.NOT_FOUND: (404, "not-found"),
    ErrorKind.UNSUPPORTED_TYPE: (404, "not-supported"),
    ErrorKind.GONE: (410, "deleted"),
    ErrorKind.CONFLICT: (409, "conflict"),
    ErrorKind.PRECONDITION_FAILED: (412, "conflict"),
    ErrorKind.METHOD_NOT_ALLOWED: (405, "not-supported"),
    ErrorKind.NOT_ACCEPTABLE: (406, "not-supported"),
    ErrorKind.UNSUPPORTED_MEDIA: (415, "not-supported"),
    ErrorKind.TOO_LARGE: (413, "too-long"),
    ErrorKind.UNAUTHORIZED: (401, "login"),
    ErrorKind.FORBIDDEN: (403, "forbidden"),
    ErrorKind.TOO_COSTLY: (400, "too-costly"),
    ErrorKind.UNAVAILABLE: (503, "transient"),
    ErrorKind.INTERNAL: (500, "exception"),
}


@dataclass
class Issue:
    """One OperationOutcome.issue."""

    diagnostics: str
    code: str | None = None
    severity: str = "error"
    expression: list[str] = field(default_factory=list)

    def to_json(self, default_code: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code or default_code,
            "diagnostics": self.diagnostics,
        }
        if self.expression:
            out["expression"] = self.expression
        return out


class FhirError(Exception):
    """A failure of a FHIR interaction, rendered as an OperationOutcome."""

    def __init__(
        self,
        kind: ErrorKind,
        diagnostics: str,
        *,
        expression: list[str] | None = None,
        issues: list[Issue] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(diagnostics)
        self.kind = kind
        self.issues = issues or [Issue(diagnostics, expression=expression or [])]
        self.headers = headers or {}

    @property
    def status(self) -> int:
        return STATUS_TABLE[self.kind][0]

    def operation_outcome(self) -> dict[str, Any]:
        code = STATUS_TABLE[self.kind][1]
        return {
            "resourceType": "OperationOutcome",
            "issue": [issue.to_json(code) for issue in self.issues],
        }


def outcome(diagnostics: str, severity: str = "information", code: str = "informational"
            ) -> dict[str, Any]:
    """A one-issue OperationOutcome for successful interactions (``Prefer: return=``)."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}],
    }


def invalid(diagnostics: str, expression: str | None = None) -> FhirError:
    return FhirError(ErrorKind.INVALID, diagnostics,
                     expression=[expression] if expression else None)


def not_found(rtype: str, rid: str) -> FhirError:
    return FhirError(ErrorKind.NOT_FOUND, f"{rtype}/{rid} is not known")
