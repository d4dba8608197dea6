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


DATA_ABSENT = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"


def reachable(patient: dict[str, Any]) -> bool:
    """R-REQ-1: the request gives a way to reach the patient or their representative —
    a phone or e-mail, an address, a contact (representative) with either — or says, with
    a coded reason (FHIR ``data-absent-reason`` on one of those elements), why it cannot."""
    def stated(items: Any) -> bool:
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, dict):
                continue
            if any(isinstance(e, dict) and e.get("url") == DATA_ABSENT and e.get("valueCode")
                   for e in item.get("extension") or []):
                return True
            if item.get("value") or any(item.get(k) for k in ("line", "city", "postalCode",
                                                                "text")):
                return True
        return False

    if stated(patient.get("telecom")) or stated(patient.get("address")):
        return True
    return any(isinstance(c, dict) and (stated(c.get("telecom")) or stated([c.get("address")])
                                        or stated([c]))
               for c in patient.get("contact") or [])
