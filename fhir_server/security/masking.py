"""Document masking (R-CONS-5, R-SEC-2; DMP masking codes, ANS NOS TRE_A07).

The imager chooses, on the DiagnosticReport (extension ``tlm-document-visibility``), whom
its documents are hidden from: other professionals (``MASQUE_PS``), the patient until the
announcement consultation (``INVISIBLE_PATIENT``), the patient's legal representatives
(``INVISIBLE_REPRESENTANTS_LEGAUX``). The codes travel with each document version: CDA
→ XDS ``confidentialityCode`` (beside the CDA's ``N``), MDM MetaDMPMSS OBX, and the
DocumentReference ``securityLabel``, which this server enforces on reads and searches.

Changing them after publication is a replacement (CI-SIS *Transmission de documents CDA
en HL7v2*, contexte métier: the masking update is a new document version), so it takes
an amended report.
"""

from __future__ import annotations

from typing import Any

from fhir_server.core.canonical import url

SYSTEM = ("https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/"
          "TRE-A07-StatutVisibiliteDocument")
OID = "1.2.250.1.213.1.1.4.13"
EXTENSION = url("StructureDefinition", "tlm-document-visibility")
MASQUE_PS = "MASQUE_PS"
INVISIBLE_PATIENT = "INVISIBLE_PATIENT"
INVISIBLE_REP_LEGAUX = "INVISIBLE_REPRESENTANTS_LEGAUX"
LABELS = {MASQUE_PS: "Masqué aux professionnels de santé",
          INVISIBLE_PATIENT: "Non visible par le patient",
          INVISIBLE_REP_LEGAUX: "Non visible par les représentants légaux du patient"}
ALL = frozenset(LABELS)
# the types whose instances carry (or inherit, for Binary) a document's labels
DOCUMENT_TYPES = ("DocumentReference", "Binary")


def chosen(report: dict[str, Any]) -> list[str]:
    """The masking codes the author set on a DiagnosticReport, in table order."""
    found = {(e.get("valueCoding") or {}).get("code") for e in report.get("extension") or []
             if isinstance(e, dict) and e.get("url") == EXTENSION
             and (e.get("valueCoding") or {}).get("system") == SYSTEM}
    return [code for code in LABELS if code in found]


def labels(document: dict[str, Any]) -> frozenset[str]:
    """The masking codes in a DocumentReference's ``securityLabel``."""
    return frozenset(str(c["code"]) for label in document.get("securityLabel") or []
                     if isinstance(label, dict) for c in label.get("coding") or []
                     if isinstance(c, dict) and c.get("system") == SYSTEM
                     and c.get("code") in LABELS)


def security_labels(codes: list[str]) -> list[dict[str, Any]]:
    return [{"coding": [{"system": SYSTEM, "code": c, "display": LABELS[c]}]} for c in codes]
