"""A patient's identity status (FR Core identity reliability extension, code system
table 0445: VIDE, PROV, VALI, DOUTE, FICTI; R-EXAM-1), read and written in one place."""

from __future__ import annotations

from typing import Any

RELIABILITY = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-identity-reliability"
RELIABILITY_SYSTEM = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0445"


def status(patient: dict[str, Any]) -> str | None:
    """The identity status code, None when the patient has none."""
    for e in patient.get("extension") or []:
        if e.get("url") == RELIABILITY:
            for sub in e.get("extension") or []:
                if sub.get("url") == "identityStatus":
                    code = (sub.get("valueCoding") or {}).get("code")
                    return code if isinstance(code, str) else None
    return None


def reliability(code: str, display: str | None = None) -> dict[str, Any]:
    """The extension that records identity status ``code``."""
    coding = {"system": RELIABILITY_SYSTEM, "code": code}
    if display:
        coding["display"] = display
    return {"url": RELIABILITY, "extension": [{"url": "identityStatus",
                                               "valueCoding": coding}]}
