"""The XDS metadata of a CDA document, read from its header as the ANS *Transmission de
documents CDA* IG specifies (``mapping.md``, "Mapping XDS — Fiche"): one reading, used by
the XDS.b channel (ITI-41), the MSSanté XDM archive (ITI-32), the MDM^T02 TXA segment and
the DocumentReference our MHD responder serves (ITI-67, :mod:`adapters.cda.publish`).

The masking codes are not in the CDA (its confidentialityCode stays ``N``): they join the
XDS confidentialityCode from the report (``mapping.md``: "les autres occurrences" come
from the MetaDMPMSS OBX; :mod:`fhir_server.security.masking`).

Values are kept in the HL7 v2 data types ebRIM wants (XCN, XON, CX, DTM), so the writers
only place them.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime

from lxml import etree

from adapters.cda import codes
from adapters.hl7v2.message import escape
from fhir_server.security import masking

V3 = {"v3": "urn:hl7-org:v3", "ps3-20": "urn:dicom-org:ps3-20"}
# reference id types (IHE ITI TF-3 4.2.3.2.28, referenceIdList)
REF_ORDER = "urn:ihe:iti:xds:2013:order"
REF_ACCESSION = "urn:ihe:iti:xds:2013:accession"
REF_STUDY = "urn:ihe:iti:xds:2016:studyInstanceUID"
ID_NAMESPACE = uuid.UUID("2f0d3c55-5b7e-4a57-8d21-6c1e0e0b7d31")  # our XDS ids (UUIDv5)


def entry_uuid(unique_id: str) -> str:
    """The DocumentEntry's entryUUID: derived from the document's uniqueId, so a resend
    carries the same ids (idempotent), a replacement can name the entry it replaces, and
    the DMP and our DocumentReference.identifier agree."""
    return f"urn:uuid:{uuid.uuid5(ID_NAMESPACE, unique_id)}"


@dataclass(frozen=True)
class Code:
    code: str
    display: str
    scheme: str  # the coding scheme (an OID or a URN, as XDS wants it)


@dataclass
class Metadata:
    unique_id: str  # ClinicalDocument/id (root, or root^extension)
    set_id: str
    version: int
    title: str
    type: Code
    class_code: Code
    format: Code
    confidentiality: list[Code]
    language: str
    creation_time: str  # DTM (UTC digits as in the header)
    patient_id: str  # CX: INS^^^&oid&ISO^NH
    source_patient_id: str
    source_patient_info: list[str]  # PID-3|…, PID-5|…, PID-7|…, PID-8|…
    authors: list[tuple[str, str, Code | None]]  # (XCN person, XON institution, specialty)
    legal_authenticator: str
    service_start: str
    service_stop: str
    events: list[Code]
    facility_type: Code | None
    practice_setting: Code | None
    references: list[str] = field(default_factory=list)  # CX^^^^type
    replaces: str | None = None  # parentDocument id of an RPLC
    mime_type: str = "text/xml"
    size: int = 0
    hash: str = ""  # SHA-1, hex (XDS)
    ins: str = ""  # the INS value alone (VIHF resource-id, MSSanté headers)
    patient_name: str = ""
    type_translations: list[Code] = field(default_factory=list)

    @property
    def entry_uuid(self) -> str:
        return entry_uuid(self.unique_id)

    @property
    def masking(self) -> frozenset[str]:
        """The DMP masking codes among the confidentiality codes."""
        return frozenset(c.code for c in self.confidentiality if c.scheme == masking.OID)


def _dtm(value: str | None) -> str:
    """CDA TS (``20210108111700+0100``) -> XDS DTM, in UTC when the offset is known."""
    if not value:
        return ""
    for fmt in ("%Y%m%d%H%M%S%z", "%Y%m%d%H%M%z"):
        try:
            return datetime.strptime(value, fmt).astimezone(UTC).strftime("%Y%m%d%H%M%S")
        except ValueError:
            continue
    return re.split(r"[+-]", value)[0]


def _code(node: etree._Element | None) -> Code | None:
    if node is None or not node.get("code"):
        return None
    return Code(node.get("code", ""), node.get("displayName", ""), node.get("codeSystem", ""))


def _ii(node: etree._Element) -> str:
    root, ext = node.get("root", ""), node.get("extension")
    return f"{root}^{ext}" if ext else root


def _xcn(entity: etree._Element | None) -> str:
    """assignedAuthor / assignedEntity -> XCN (``rpps^family^given^^^^^^&oid&ISO^D^^^IDNPS``)."""
    if entity is None:
        return ""
    ident = entity.find("v3:id", V3)
    # data values escaped (HL7 v2.5.1 §2.7): a name with ^ or & must not split the XCN
    family = escape(entity.findtext("v3:assignedPerson/v3:name/v3:family", "", V3).strip())
    given = escape(entity.findtext("v3:assignedPerson/v3:name/v3:given", "", V3).strip())
    if ident is None or not ident.get("extension"):
        return f"^{family}^{given}"
    kind = "IDNPS" if ident.get("root") == codes.RPPS else "RPPS"
    return (f"{escape(ident.get('extension') or '')}^{family}^{given}^^^^^^"
            f"&{escape(ident.get('root') or '')}&ISO^D^^^{kind}")


def _xon(org: etree._Element | None) -> str:
    """representedOrganization -> XON (``name^^^^^&oid&ISO^IDNST^^^id``)."""
    if org is None:
        return ""
    name = escape(org.findtext("v3:name", "", V3).strip())
    ident = org.find("v3:id", V3)
    if ident is None or not ident.get("extension"):
        return name
    return (f"{name}^^^^^&{escape(ident.get('root') or '')}&ISO^IDNST^^^"
            f"{escape(ident.get('extension') or '')}")


@dataclass
class _Patient:
    patient_id: str  # CX of the INS, or ""
    source_id: str  # CX of the local id (IPP), else the INS's
    info: list[str]  # PID-3|…, PID-5|…, PID-7|…, PID-8|…
    ins: str
    name: str


def _patient(patient_role: etree._Element | None) -> _Patient:
    """recordTarget/patientRole -> the XDS patient metadata."""
    ins = ipp = None
    for ident in (patient_role.iterfind("v3:id", V3) if patient_role is not None else ()):
        if ident.get("root") in codes.INS_OIDS and ins is None:
            ins = ident
        elif ident.get("extension") and ipp is None:
            ipp = ident
    patient_id = (f"{ins.get('extension')}^^^&{ins.get('root')}&ISO^NH" if ins is not None
                  else "")
    source_id = (f"{ipp.get('extension')}^^^&{ipp.get('root')}&ISO^PI" if ipp is not None
                 else patient_id)
    person = patient_role.find("v3:patient", V3) if patient_role is not None else None
    family = person.findtext("v3:name/v3:family", "", V3) if person is not None else ""
    given = person.findtext("v3:name/v3:given", "", V3) if person is not None else ""
    info = [f"PID-3|{source_id}"] if source_id else []
    if person is not None:
        info.append(f"PID-5|{family}^{given}^^^^^L")
        birth = person.find("v3:birthTime", V3)
        if birth is not None and birth.get("value"):
            info.append(f"PID-7|{birth.get('value')}")
        gender = person.find("v3:administrativeGenderCode", V3)
        if gender is not None and gender.get("code"):
            info.append(f"PID-8|{gender.get('code')}")
    return _Patient(patient_id, source_id, info,
                    ins.get("extension", "") if ins is not None else "",
                    " ".join(p for p in (family.strip(), given.strip()) if p))


def _service_event(event: etree._Element | None
                   ) -> tuple[list[Code], list[str], str, str, Code | None]:
    """documentationOf/serviceEvent -> (event codes, study references, start, stop,
    practice setting)."""
    events: list[Code] = []
    references: list[str] = []
    if event is None:
        return events, references, "", "", None
    act = _code(event.find("v3:code", V3))
    if act is not None:
        events.append(act)
    for translation in event.iterfind("v3:code/v3:translation", V3):
        found = _code(translation)
        if found is not None:
            events.append(found)
    for uid in event.iterfind("v3:id", V3):
        if uid.get("root"):
            references.append(f"{uid.get('root')}^^^^{REF_STUDY}")
    low = event.find("v3:effectiveTime/v3:low", V3)
    high = event.find("v3:effectiveTime/v3:high", V3)
    setting = _code(event.find("v3:performer/v3:assignedEntity/v3:representedOrganization/"
                               "v3:standardIndustryClassCode", V3))
    return (events, references, _dtm(low.get("value") if low is not None else None),
            _dtm(high.get("value") if high is not None else None), setting)


def _order_references(order: etree._Element | None) -> list[str]:
    """inFulfillmentOf/order -> the order and accession number references."""
    references: list[str] = []
    if order is not None:
        for tag, kind in (("v3:id", REF_ORDER), ("ps3-20:accessionNumber", REF_ACCESSION)):
            node = order.find(tag, V3)
            if node is not None and node.get("extension"):
                references.append(f"{node.get('extension')}^^^&{node.get('root')}&ISO^{kind}")
    return references


def read(xml: bytes, visibility: Collection[str] = ()) -> Metadata:
    """The metadata of one CDA document (bytes as stored and sent); ``visibility`` the
    masking codes chosen for it (TRE_A07)."""
    doc = etree.fromstring(xml)

    def one(path: str) -> etree._Element | None:
        found: etree._Element | None = doc.find(path, V3)
        return found

    patient = _patient(one("v3:recordTarget/v3:patientRole"))
    authors = []
    for author in doc.iterfind("v3:author/v3:assignedAuthor", V3):
        authors.append((_xcn(author), _xon(author.find("v3:representedOrganization", V3)),
                        _code(author.find("v3:code", V3))))
    events, references, start, stop, setting = _service_event(
        one("v3:documentationOf/v3:serviceEvent"))
    references += _order_references(one("v3:inFulfillmentOf/v3:order"))
    legal = one("v3:legalAuthenticator/v3:assignedEntity")
    type_code = _code(one("v3:code")) or Code(*codes.REPORT_CODE, codes.LOINC)
    n1 = one("v3:component/v3:nonXMLBody") is not None
    confidentiality = [c for c in [_code(one("v3:confidentialityCode"))] if c is not None]
    confidentiality += [Code(c, masking.LABELS[c], masking.OID) for c in masking.LABELS
                        if c in visibility]
    translations = [c for c in (_code(t) for t in doc.iterfind("v3:code/v3:translation", V3))
                    if c is not None]
    parent = one("v3:relatedDocument[@typeCode='RPLC']/v3:parentDocument/v3:id")
    language = one("v3:languageCode")
    version = one("v3:versionNumber")
    set_id = one("v3:setId")
    unique = one("v3:id")
    created = one("v3:effectiveTime")
    return Metadata(
        unique_id=_ii(unique) if unique is not None else "",
        set_id=_ii(set_id) if set_id is not None else "",
        version=int(version.get("value", "1")) if version is not None else 1,
        title=(doc.findtext("v3:title", "", V3) or "").strip(),
        type=type_code,
        class_code=Code(*CLASS_OF.get(type_code.code, CLASS_OF[codes.REPORT_CODE[0]])),
        format=Code(codes.FORMAT_N1 if n1 else codes.FORMAT_N3,
                    "Document à corps non structuré en PDF" if n1 else
                    "CR d'imagerie structuré", FORMAT_SCHEME),
        confidentiality=confidentiality,
        language=language.get("code", "fr-FR") if language is not None else "fr-FR",
        creation_time=_dtm(created.get("value") if created is not None else None),
        patient_id=patient.patient_id, source_patient_id=patient.source_id,
        source_patient_info=patient.info,
        authors=authors, legal_authenticator=_xcn(legal),
        service_start=start, service_stop=stop, events=events,
        facility_type=_code(one("v3:componentOf/v3:encompassingEncounter/v3:location/"
                                "v3:healthCareFacility/v3:code")),
        practice_setting=setting or DEFAULT_PRACTICE, references=references,
        replaces=_ii(parent) if parent is not None else None,
        size=len(xml), hash=hashlib.sha1(xml).hexdigest(),
        ins=patient.ins, patient_name=patient.name,
        type_translations=translations,
    )


FORMAT_SCHEME = "1.3.6.1.4.1.19376.1.2.3"  # IHE format codes
# practiceSettingCode is required by the DMP; a header whose author has no organisation
# (hence no standardIndustryClassCode) is a health-structure document all the same
DEFAULT_PRACTICE = Code("ETABLISSEMENT", "Etablissement de santé", codes.PRACTICE_SETTING)
# ASS_X04 CorrespondanceType-Classe: document type -> class (JDV_J57 ClassCode-DMP)
CLASS_OF = {codes.REPORT_CODE[0]: ("10", "Compte rendu", "1.2.250.1.213.1.1.4.1")}
