"""The XDS metadata of a document against the DMP's rules (issue 26 item 4; R-REP-6,
R-INT-1; ADR 0021).

The references hold no metadata conformance checker of the ANS (no schematron or test
kit on XDS metadata), so the rules are those of the ANS IG *Transmission de documents
CDA en HL7v2* (``mapping.md``, "Mapping XDS — Fiche": which metadata are required and
where each comes from in the CDA header) and the CI-SIS code tables the references hold:
``JDV_CodesDocumentImagerie_CISIS`` (1.2.250.1.213.1.1.5.687, the imaging document
codes that translate the typeCode) is read from the kit when present. The tables the
references lack — JDV_J07 XdsTypeCode, JDV_J57 ClassCode, JDV_J60 FormatCode, JDV_J61
HealthcareFacilityTypeCode, JDV_J02 practice setting, ASS_A11 (CDA model -> formatCode),
ASS_X04 (type -> class) and any CCAM act -> imaging document code correspondence — are
replaced by the single values the IG and the CI-SIS IMG-CR-IMG volet fix for an imaging
report (``FIXED``): a check of shape and of those values, not of the full tables.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from lxml import etree

from adapters.cda import codes
from adapters.cda.metadata import CLASS_OF, FORMAT_SCHEME, Metadata

SVS = "{urn:ihe:iti:svs:2008}"
IMAGING_DOCUMENT_CODES = "jeuxDeValeurs/JDV_CodesDocumentImagerie_CISIS.xml"
# (metadata, value, coding scheme) fixed for an IMG-CR-IMG report (README of the
# references, mapping.md, CI-SIS IMG-CR-IMG 2024.01)
FIXED = {
    "typeCode": (codes.REPORT_CODE[0], codes.LOINC),
    "classCode": (CLASS_OF[codes.REPORT_CODE[0]][0], CLASS_OF[codes.REPORT_CODE[0]][2]),
    "formatCode N1": (codes.FORMAT_N1, FORMAT_SCHEME),
    "formatCode N3": (codes.FORMAT_N3, FORMAT_SCHEME),
}
CONFIDENTIALITY = {"N", "R", "V"}  # HL7 v3 Confidentiality as the DMP takes it
LANGUAGE = re.compile(r"^[a-z]{2}-[A-Z]{2}$")
DTM = re.compile(r"^\d{8}(\d{4}(\d{2})?)?$")  # XDS DTM, UTC, to the day at least
# NIR/NIA: 15 characters, the department may be 2A/2B (INS référentiel); INS OIDs
INS_ID = re.compile(r"^\d{6}[\dAB]\d{8}\^\^\^&1\.2\.250\.1\.213\.1\.4\.(8|9|10|11)&ISO\^NH$")


@cache
def imaging_document_codes(kit: Path) -> frozenset[tuple[str, str]]:
    """(code, code system) of JDV_CodesDocumentImagerie_CISIS in the kit."""
    path = kit / IMAGING_DOCUMENT_CODES
    if not path.exists():
        return frozenset()
    tree = etree.parse(str(path))
    return frozenset((c.get("code", ""), c.get("codeSystem", ""))
                     for c in tree.iter(f"{SVS}Concept"))


def problems(meta: Metadata, level: str, kit: Path | None) -> list[str]:
    """What the DMP would refuse in ``meta`` (empty: nothing we can see). The patientId
    is checked when present: a document of a patient without INS is still produced
    (RIS, MSSanté) and its DMP delivery waits (``identite-non-qualifiee``)."""
    out: list[str] = []

    def need(name: str, value: object) -> None:
        if not value:
            out.append(f"{name} : requis (mapping.md, Mapping XDS — Fiche)")

    for name, value in (("uniqueId", meta.unique_id), ("title", meta.title),
                        ("creationTime", meta.creation_time), ("languageCode", meta.language),
                        ("legalAuthenticator", meta.legal_authenticator),
                        ("serviceStartTime", meta.service_start),
                        ("sourcePatientId", meta.source_patient_id), ("hash", meta.hash),
                        ("size", meta.size), ("mimeType", meta.mime_type),
                        ("healthcareFacilityTypeCode", meta.facility_type),
                        ("practiceSettingCode", meta.practice_setting),
                        ("author", meta.authors)):
        need(name, value)
    expected = {"typeCode": meta.type, "classCode": meta.class_code,
                f"formatCode {level}": meta.format}
    for name, got in expected.items():
        code, scheme = FIXED[name]
        if (got.code, got.scheme) != (code, scheme):
            out.append(f"{name.split()[0]} : {got.code} ({got.scheme}) au lieu de {code} "
                       f"({scheme}) pour un compte rendu d'imagerie {level}")
    out += _formats(meta)
    known = imaging_document_codes(kit) if kit is not None else frozenset()
    for translation in meta.type_translations:
        if known and (translation.code, translation.scheme) not in known:
            out.append(f"typeCode (traduction) : {translation.code} ({translation.scheme}) "
                       "hors JDV_CodesDocumentImagerie_CISIS (1.2.250.1.213.1.1.5.687)")
    return out


def _formats(meta: Metadata) -> list[str]:
    """The shape of the coded and dated metadata (confidentiality, language, DTM, INS,
    facility type and practice setting tables)."""
    out: list[str] = []
    if not any(c.scheme == codes.CONFIDENTIALITY and c.code in CONFIDENTIALITY
               for c in meta.confidentiality):
        out.append("confidentialityCode : un code N, R ou V (2.16.840.1.113883.5.25) est "
                   "requis")
    if meta.language and not LANGUAGE.match(meta.language):
        out.append(f"languageCode : {meta.language} n'est pas de la forme fr-FR")
    for name, value in (("creationTime", meta.creation_time),
                        ("serviceStartTime", meta.service_start),
                        ("serviceStopTime", meta.service_stop)):
        if value and not DTM.match(value):
            out.append(f"{name} : {value} n'est pas une date XDS (AAAAMMJJ[hhmm[ss]])")
    if meta.patient_id and not INS_ID.match(meta.patient_id):
        out.append(f"patientId : {meta.patient_id} n'est pas un INS "
                   "(matricule^^^&OID INS&ISO^NH)")
    if meta.facility_type is not None and meta.facility_type.scheme != codes.FACILITY_TYPE:
        out.append("healthcareFacilityTypeCode : hors TRE_R02 "
                   f"({meta.facility_type.scheme})")
    if meta.practice_setting is not None and \
            meta.practice_setting.scheme != codes.PRACTICE_SETTING:
        out.append(f"practiceSettingCode : hors TRE_A00 ({meta.practice_setting.scheme})")
    return out
