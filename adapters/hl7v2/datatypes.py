"""HL7 v2.5.1 data types -> FHIR R4 datatypes, with the French rules of IHE PAM-FR and
the CI-SIS (INS, idNatPs, FINESS, name and address types). Lenient on read.

Follows the HL7 v2-to-FHIR mapping (CX -> Identifier, XPN -> HumanName, XAD -> Address,
XTN -> ContactPoint, TS -> dateTime, CE/CWE -> CodeableConcept).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from adapters.hl7v2.message import Field, MessageError

INS_OIDS = {
    "1.2.250.1.213.1.4.8": "INS-NIR", "1.2.250.1.213.1.4.9": "INS-NIA",
    "1.2.250.1.213.1.4.10": "INS-NIR-TEST", "1.2.250.1.213.1.4.11": "INS-NIR-DEMO",
}
INS_TYPE_SYSTEM = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
RPPS_OID = "1.2.250.1.71.4.2.1"
STRUCTURE_OID = "1.2.250.1.71.4.2.2"
LOCAL_AUTHORITY = "https://teleimagerie.fr/fhir/NamingSystem/authority/"
# CE/CWE coding system names (HL7 table 0396 and the CI-SIS) -> FHIR system
SYSTEMS: dict[str, str] = {
    "LN": "http://loinc.org", "SCT": "http://snomed.info/sct",
    "DCM": "http://dicom.nema.org/resources/ontology/DCM",
    "ATC": "http://www.whocc.no/atc", "UCUM": "http://unitsofmeasure.org",
    "CCAM": "https://smt.esante.gouv.fr/terminologie-ccam",
    "2.16.840.1.113883.6.1": "http://loinc.org",
    "1.2.250.1.213.2.5": "https://smt.esante.gouv.fr/terminologie-ccam",
    "TLR_OBSERVATION": "https://teleimagerie.fr/fhir/CodeSystem/tlr-observation",
    "TLR_OBR_PROCEDURE": "https://teleimagerie.fr/fhir/CodeSystem/tlr-obr-procedure",
    "TLR_TYPE_ORGANISATION": "https://teleimagerie.fr/fhir/CodeSystem/tlr-type-organisation",
}
GENDER = {"F": "female", "M": "male", "U": "unknown", "O": "other", "A": "other",
          "N": "unknown"}
# XPN-7 (table 0200, PAM-FR): L nom de naissance, D nom d'usage
NAME_USE = {"L": "official", "D": "usual", "S": "anonymous", "A": "anonymous",
            "M": "maiden", "N": "nickname"}
ADDRESS_USE = {"H": "home", "O": "work", "C": "temp", "B": "work", "BA": "old",
               "BDL": "birth", "BR": "home", "M": "home"}
TELECOM_USE = {"PRN": "home", "WPN": "work", "ORN": "home", "NET": "home"}
TELECOM_SYSTEM = {"PH": "phone", "CP": "phone", "FX": "fax", "Internet": "email",
                  "X.400": "email", "BP": "pager"}
_TS = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,4})?([+-]\d{4})?$")


def authority_system(namespace: str, universal: str, kind: str) -> str:
    """HD (assigning authority) -> Identifier.system: an OID when it is one, else a
    stable local URI (so IPPs of different hospitals never collide)."""
    if universal and (kind.upper() == "ISO" or re.fullmatch(r"[0-2](\.\d+)+", universal)):
        return f"urn:oid:{universal}"
    key = "&".join(x for x in (namespace, universal) if x)
    if not key:
        raise MessageError("101", "identifiant sans autorité d'affectation (CX-4)")
    return LOCAL_AUTHORITY + quote(key, safe="")


def cx(f: Field) -> dict[str, Any] | None:
    """CX -> Identifier; INS (PID-3 type INS or an INS OID) typed as FR Core does."""
    value = f.component(1)
    if not value:
        return None
    ns, uid, kind = f.component(4, 1), f.component(4, 2), f.component(4, 3)
    id_type = f.component(5).upper()
    out: dict[str, Any] = {"system": authority_system(ns, uid, kind), "value": value}
    if uid in INS_OIDS:
        out["type"] = {"coding": [{"system": INS_TYPE_SYSTEM, "code": INS_OIDS[uid]}]}
    elif id_type:
        out["type"] = {"coding": [{"system": V2_0203, "code": id_type}]}
    return out


def is_ins(identifier: dict[str, Any]) -> bool:
    return identifier.get("system", "").removeprefix("urn:oid:") in INS_OIDS


def xpn(f: Field) -> dict[str, Any] | None:
    family = f.component(1)
    if not family:
        return None
    given = [g for g in [f.component(2), *f.component(3).split()] if g]
    given = list(dict.fromkeys(given))  # PAM-FR: PID-5.3 repeats the first given name
    out: dict[str, Any] = {"use": NAME_USE.get(f.component(7).upper(), "usual"),
                           "family": family}
    if given:
        out["given"] = given
    if f.component(5):
        out["prefix"] = [f.component(5)]
    if f.component(3):  # PAM-FR: the first names of the birth certificate (INS trait)
        out["extension"] = [{"url": "https://hl7.fr/ig/fhir/core/StructureDefinition/"
                                    "fr-core-patient-birth-list-given-name",
                             "valueString": f.component(3)}]
    return out


def xad(f: Field) -> tuple[dict[str, Any] | None, str]:
    """XAD -> (Address, its XAD-7 type). A birth place (BDL) carries its INSEE code."""
    kind = f.component(7).upper()
    lines = [x for x in (f.component(1), f.component(2)) if x]
    out: dict[str, Any] = {}
    if lines:
        out["line"] = lines
    for key, n in (("city", 3), ("state", 4), ("postalCode", 5), ("country", 6)):
        if f.component(n):
            out[key] = f.component(n)
    insee = f.component(9)
    if insee:
        out["extension"] = [{"url": "https://hl7.fr/ig/fhir/core/StructureDefinition/"
                                    "fr-core-address-insee-code",
                             "valueCoding": {"system": "https://mos.esante.gouv.fr/NOS/"
                                             "TRE_R13-CommuneOM/FHIR/TRE-R13-CommuneOM",
                                             "code": insee}}]
        out.setdefault("district", insee)
    if not out:
        return None, kind
    if kind in ADDRESS_USE and kind != "BDL":
        out["use"] = ADDRESS_USE[kind]
    return out, kind


def xtn(f: Field) -> dict[str, Any] | None:
    value = f.component(12) or f.component(4) or f.component(1)
    if not value:
        return None
    equipment = f.component(3)
    system = "email" if "@" in value else TELECOM_SYSTEM.get(equipment, "phone")
    out: dict[str, Any] = {"system": system, "value": value}
    if f.component(2) in TELECOM_USE:
        out["use"] = TELECOM_USE[f.component(2)]
    if equipment == "CP":
        out["use"] = "mobile"
    return out


def ts(text: str, where: str) -> str | None:
    """TS/DTM -> FHIR date or dateTime (a time needs its offset: the message's own, else
    the listener's local zone, which is the RIS's in practice)."""
    text = text.strip()
    if not text:
        return None
    m = _TS.match(text)
    if m is None:
        raise MessageError("102", f"date invalide {text!r} (format AAAAMMJJ[HHMM[SS]])",
                           where)
    y, mo, d, h, mi, s, frac, tz = m.groups()
    if h is None:
        return "-".join(x for x in (y, mo, d) if x)
    from datetime import datetime

    offset = f"{tz[:3]}:{tz[3:]}" if tz else datetime.now().astimezone().strftime("%z")
    if not tz:
        offset = f"{offset[:3]}:{offset[3:]}"
    try:
        datetime(int(y), int(mo or 1), int(d or 1), int(h), int(mi or 0), int(s or 0))
    except ValueError:
        raise MessageError("102", f"date invalide {text!r}", where) from None
    return f"{y}-{mo}-{d}T{h}:{mi or '00'}:{s or '00'}{frac or ''}{offset}"


def date(text: str, where: str) -> str | None:
    value = ts(text, where)
    return value[:10] if value else None


def ce(f: Field) -> dict[str, Any] | None:
    """CE/CWE -> CodeableConcept (identifier and alternate identifier)."""
    codings = []
    for base in (1, 4):
        code = f.component(base)
        if not code:
            continue
        name = f.component(base + 2)
        coding: dict[str, Any] = {"system": SYSTEMS.get(name, name and
                                                        f"{LOCAL_AUTHORITY}{quote(name)}"),
                                  "code": code}
        if not coding["system"]:
            del coding["system"]
        if f.component(base + 1):
            coding["display"] = f.component(base + 1)
        codings.append(coding)
    if not codings:
        text = f.component(2)
        return {"text": text} if text else None
    return {"coding": codings}


def ce_list(f: Field) -> list[dict[str, Any]] | None:
    """CE/CWE -> [CodeableConcept] (a 0..* element such as ``Organization.type``)."""
    concept = ce(f)
    return [concept] if concept else None


def xcn(f: Field) -> dict[str, Any] | None:
    """XCN -> Practitioner (idNatPs / RPPS per CI-SIS: XCN-9 authority OID, XCN-13)."""
    ident = f.component(1)
    if not ident:
        return None
    uid = f.component(9, 2)
    system = authority_system(f.component(9, 1), uid, f.component(9, 3))
    practitioner: dict[str, Any] = {
        "resourceType": "Practitioner",
        "meta": {"profile": ["https://teleimagerie.fr/fhir/StructureDefinition/"
                             "tlm-practitioner"]},
        "identifier": [{"system": system, "value": ident}]}
    if f.component(13):
        practitioner["identifier"][0]["type"] = {"coding": [{
            "system": "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203"
            if f.component(13).upper() in ("IDNPS", "RPPS", "ADELI") else V2_0203,
            "code": f.component(13).upper()}]}
    name: dict[str, Any] = {"family": f.component(2) or ident}
    if f.component(3):
        name["given"] = [f.component(3)]
    if f.component(6):
        name["prefix"] = [f.component(6)]
    practitioner["name"] = [name]
    return practitioner


def xon(f: Field) -> dict[str, Any] | None:
    """XON -> Organization: XON-10 the structure id (FINESS / idNatSt), XON-6 authority."""
    ident = f.component(10) or f.component(3)
    name = f.component(1)
    if not ident:
        return None
    system = authority_system(f.component(6, 1), f.component(6, 2), f.component(6, 3))
    org: dict[str, Any] = {
        "resourceType": "Organization",
        "meta": {"profile": ["https://teleimagerie.fr/fhir/StructureDefinition/"
                             "tlm-organization"]},
        "identifier": [{"system": system, "value": ident}], "name": name or ident}
    if f.component(7):
        org["identifier"][0]["type"] = {"coding": [{
            "system": "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203",
            "code": f.component(7).upper()}]}
    return org
