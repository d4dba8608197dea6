"""Code systems and identifiers as CDA wants them: OIDs (CI-SIS, ``../shared/references``
README; HL7 v3 OID registry) instead of FHIR URIs, and the fixed codes of IMG-CR-IMG
2024.01."""

from __future__ import annotations

import uuid

from profiles import spec

# FHIR system URI -> (OID, codeSystemName)
SYSTEMS: dict[str, tuple[str, str]] = {
    "http://loinc.org": ("2.16.840.1.113883.6.1", "LOINC"),
    "http://snomed.info/sct": ("2.16.840.1.113883.6.96", "SNOMED CT"),
    "http://dicom.nema.org/resources/ontology/DCM": ("1.2.840.10008.2.16.4", "DCM"),
    "https://smt.esante.gouv.fr/terminologie-ccam": ("1.2.250.1.213.2.5", "CCAM"),
    "http://unitsofmeasure.org": ("2.16.840.1.113883.6.8", "UCUM"),
}
LOINC = SYSTEMS["http://loinc.org"][0]
SNOMED = SYSTEMS["http://snomed.info/sct"][0]
DCM = SYSTEMS["http://dicom.nema.org/resources/ontology/DCM"][0]
CCAM = SYSTEMS["https://smt.esante.gouv.fr/terminologie-ccam"][0]
DCMUID = "1.2.840.10008.2.6.1"
CONFIDENTIALITY = "2.16.840.1.113883.5.25"
GENDER = "2.16.840.1.113883.5.1"
# the national identifier OIDs are defined once, with the profiles (FR Core)
RPPS, FINESS, INS_NIR, INS_NIA, INS_NIR_TEST = (
    s.removeprefix("urn:oid:")
    for s in (spec.RPPS, spec.FINESS, spec.INS_NIR, spec.INS_NIA, spec.INS_NIR_TEST))
INS_OIDS = (INS_NIR, INS_NIA, INS_NIR_TEST)
PROFESSION = "1.2.250.1.213.1.1.4.5"  # TRE_G15 profession / TRE_R38 savoir-faire
FACILITY_TYPE = "1.2.250.1.71.4.2.4"  # TRE_R02 secteur d'activité
PRACTICE_SETTING = "1.2.250.1.213.1.1.4.9"  # TRE_A00 cadre d'exercice
ACT_CODE = "2.16.840.1.113883.5.4"

REPORT_CODE = ("18748-4", "CR d'imagerie médicale")
FORMAT_N3 = "urn:ihe:rad:CDA:ImagingReportStructuredHeadings:2013"
FORMAT_N1 = "urn:ihe:iti:xds-sd:pdf:2008"
TEMPLATES_COMMON = ("2.16.840.1.113883.2.8.2.1", "1.2.250.1.213.1.1.1.1")
TEMPLATES_N3 = ("1.2.840.10008.9.1", "1.2.840.10008.9.20", "1.2.840.10008.9.21")
TEMPLATE_CR_IMG = ("1.2.250.1.213.1.1.1.45", "2024.01")
TEMPLATE_XDS_SD = "1.3.6.1.4.1.19376.1.2.20"

GENDERS = {"male": ("M", "Masculin"), "female": ("F", "Féminin"),
           "other": ("U", "Inconnu"), "unknown": ("U", "Inconnu")}
MODALITIES = {"CT": "Tomodensitométrie", "MR": "Imagerie par résonance magnétique",
              "CR": "Radiographie numérisée", "DX": "Radiographie numérique",
              "US": "Échographie", "XA": "Angiographie", "RF": "Radioscopie",
              "NM": "Médecine nucléaire", "PT": "Tomographie par émission de positons",
              "MG": "Mammographie", "IO": "Radiographie intra-orale",
              "PX": "Radiographie panoramique", "OT": "Autre"}


def oid_of(system: str | None) -> str | None:
    """The OID behind a FHIR identifier/code system (``urn:oid:`` or a known URI)."""
    if not system:
        return None
    if system.startswith("urn:oid:"):
        return system[8:]
    known = SYSTEMS.get(system)
    return known[0] if known else None


def uuid_oid(*parts: str) -> str:
    """A stable OID under 2.25 (ITU-T X.667: an OID from a UUID) for ``parts``: document
    ids and set ids are unique without a registered root, and the same report version
    always gets the same id (regenerating is idempotent)."""
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, 'teleimagerie:' + '/'.join(parts)).int}"
