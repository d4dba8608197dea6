"""PID -> Patient (tlm-patient), as a mapping table (IHE PAM-FR 2.11, CI-SIS INS rules;
R-EXAM-1): the patient of an ADT feed, of flux 1 and of flux 4. Matching the result to a
stored patient is :mod:`adapters.hl7v2.identity`'s."""

from __future__ import annotations

from typing import Any

from adapters.hl7v2 import datatypes as dt
from adapters.hl7v2.mapping import Row, Source, Table, apply, special
from adapters.hl7v2.message import Field, MessageError, Segment
from fhir_server.workflow.identity import reliability

PROFILE = "https://teleimagerie.fr/fhir/StructureDefinition/tlm-patient"
BIRTH_PLACE = "http://hl7.org/fhir/StructureDefinition/patient-birthPlace"
MAX_REPETITIONS = 50
REPEATING = (3, 5, 11, 13, 14)


@special
def identity_reliability(src: Source) -> dict[str, Any] | None:
    """PID-32 -> ``fr-core-identity-reliability``; an INS without it is refused (the
    identity's status is part of the INS traits, R-EXAM-1)."""
    f = src.field("PID", 32)
    status = f.component(1).upper() if f is not None else ""
    if status:
        return reliability(status)
    if any(dt.is_ins(i) for i in src.resource["identifier"]):
        raise MessageError("101", "PID-32 : un INS est transmis sans le statut de "
                           "l'identité (R-EXAM-1)", "PID^1^32")
    return None


def birth_date(f: Field) -> str | None:
    return dt.date(f.component(1), "PID^1^7")


def gender(f: Field) -> str | None:
    return dt.GENDER.get(f.component(1).upper())


def address(f: Field) -> dict[str, Any] | None:
    """XAD of any type but the birth place (BDL)."""
    return dt.xad(f)[0] if f.component(7).upper() != "BDL" else None


def birth_place(f: Field) -> dict[str, Any] | None:
    """XAD-7 ``BDL`` -> ``patient-birthPlace`` (with the INSEE code, XAD-9)."""
    if f.component(7).upper() != "BDL":
        return None
    found = dt.xad(f)[0]
    return {"url": BIRTH_PLACE, "valueAddress": found} if found else None


def deceased(f: Field) -> bool | None:
    return True if f.component(1).upper() == "Y" else None


PATIENT = Table("Patient", (
    Row("PID-3*", "identifier", dt.cx, "R-EXAM-1",
        "INS (authority OID 1.2.250.1.213.1.4.8/9/10/11, type FR Core `INS-NIR`…), IPP "
        "(`urn:oid:` authority, else a local authority URI), type from CX-5",
        required="PID-3 : aucun identifiant du patient"),
    Row("PID-5*", "name", dt.xpn, "R-EXAM-1",
        "XPN-7 `L` → official (birth name), `D` → usual; given = XPN-2 + XPN-3 words; "
        "XPN-3 → `fr-core-patient-birth-list-given-name`",
        required="PID-5 : nom du patient absent"),
    Row("PID-32", "extension[]", identity_reliability, "R-EXAM-1",
        "`fr-core-identity-reliability` (VALI, PROV, …); required with an INS"),
    Row("PID-7", "birthDate", birth_date, "R-EXAM-1"),
    Row("PID-8", "gender", gender, "R-EXAM-1", "F, M, U, O, A, N"),
    Row("PID-11*", "address", address, "R-REQ-1", "every XAD-7 type but `BDL`"),
    Row("PID-11*", "extension[]", birth_place, "R-EXAM-1",
        "XAD-7 `BDL` → `patient-birthPlace` with the INSEE code (XAD-9)"),
    Row("PID-13*", "telecom[]", dt.xtn, "R-REQ-1", "home"),
    Row("PID-14*", "telecom[]", dt.xtn, "R-REQ-1", "work"),
    Row("PID-30", "deceasedBoolean", deceased, "R-EXAM-1", "`Y` only"),
))


def patient(pid: Segment) -> dict[str, Any]:
    """PID -> Patient: the repetition guard, then :data:`PATIENT`."""
    for n in REPEATING:  # a patient has a handful; thousands is a broken sender
        if pid.raw(n).count(pid.delimiters.repetition) >= MAX_REPETITIONS:
            raise MessageError("102", f"PID-{n} : plus de {MAX_REPETITIONS} répétitions",
                               f"PID^1^{n}")
    out = apply(PATIENT, Source(None, pid), {"resourceType": "Patient",
                                             "meta": {"profile": [PROFILE]}})
    assert out is not None  # no key row
    return out
