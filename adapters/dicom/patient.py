"""Patient module (PS3.3 C.7.1.1) -> a *provisional* Patient, for a study received before
its request (R-EXAM-1: an identity that nobody has checked is kept provisional, flagged
for the identity-vigilance cell, never merged silently).

Only the header's own traits are used: Patient ID (with its issuer when there is one),
Other Patient IDs, Patient's Name (PN, family^given), Birth Date and Sex. The identity
reliability is ``PROV`` (FR Core, table 0445): a later HL7 feed or a human validates it.
"""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset
from pydicom.valuerep import PersonName

from adapters.dicom.study import text
from adapters.hl7v2.datatypes import authority_system
from fhir_server.workflow.identity import reliability

SEX = {"M": "male", "F": "female", "O": "other"}  # PS3.3 C.7.1.1 (0010,0040)


def identifiers(ds: Dataset) -> list[tuple[str, str]]:
    """(system, value) of the Patient ID and Other Patient IDs that carry an issuer
    (Issuer of Patient ID, or its qualifiers' Universal Entity ID)."""
    out = []
    for item in [ds, *(ds.get("OtherPatientIDsSequence") or [])]:
        value = text(item, "PatientID")
        issuer = text(item, "IssuerOfPatientID")
        qualifiers = item.get("IssuerOfPatientIDQualifiersSequence")
        universal = kind = ""
        if qualifiers:
            universal = text(qualifiers[0], "UniversalEntityID")
            kind = text(qualifiers[0], "UniversalEntityIDType")
        if value and (issuer or universal):
            try:
                out.append((authority_system(issuer, universal, kind or "ISO"), value))
            except Exception:  # an issuer we cannot turn into a system: not an identifier
                continue
    return out


def provisional(ds: Dataset) -> dict[str, Any]:
    """The Patient the header describes, identity status ``PROV``."""
    ids: list[dict[str, Any]] = [{"system": s, "value": v} for s, v in identifiers(ds)]
    local = text(ds, "PatientID")
    if local and not any(i["value"] == local for i in ids):
        # no issuer: the sender's number is kept for the reviewer, not for matching
        ids.append({"value": local, "assigner": {"display": "identifiant DICOM sans "
                                                            "émetteur (0010,0021)"}})
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "extension": [reliability("PROV", "Identité provisoire")],
        "active": True,
    }
    if ids:
        patient["identifier"] = ids
    name = _name(ds.get("PatientName"))
    if name:
        patient["name"] = [name]
    birth = text(ds, "PatientBirthDate")
    if len(birth) == 8 and birth.isdigit():
        patient["birthDate"] = f"{birth[:4]}-{birth[4:6]}-{birth[6:]}"
    gender = SEX.get(text(ds, "PatientSex").upper())
    if gender:
        patient["gender"] = gender
    return patient


def _name(value: Any) -> dict[str, Any] | None:
    if value is None or not str(value).strip():
        return None
    pn = value if isinstance(value, PersonName) else PersonName(str(value))
    name: dict[str, Any] = {}
    if pn.family_name:
        name["family"] = pn.family_name.strip()
    given = [g for g in (pn.given_name.strip(), pn.middle_name.strip()) if g]
    if given:
        name["given"] = given
    if not name:
        name["text"] = str(value).strip()
    return name
