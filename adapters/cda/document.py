"""The CDA R2 imaging report (CI-SIS IMG-CR-IMG 2024.01; R-REP-5, R-ACT-4).

:func:`build` writes the document of one report version: the N3 structured body
(sections FR-DICOM-*: clinical information with justification and history, imaging act
with its radiation exposure and DICOM object catalog, results, conclusion, addendum of
an amendment) or the N1 body (the PDF rendering in ``nonXMLBody``), under the same
header. An amendment is a new version of the same ``setId`` that replaces the previous
one (``relatedDocument`` RPLC). Element order follows POCD_MT000040 (the CDA XSD).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lxml import etree

from adapters.cda import codes
from adapters.cda.sources import Sources

V3 = "urn:hl7-org:v3"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
PS3_20 = "urn:dicom-org:ps3-20"
NSMAP = {None: V3, "xsi": XSI, "ps3-20": PS3_20}
DCM_URI = "http://dicom.nema.org/resources/ontology/DCM"
SCT_URI = "http://snomed.info/sct"
BIRTH_PLACE = "http://hl7.org/fhir/StructureDefinition/patient-birthPlace"
INSEE_CODE = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-address-insee-code"
EXT_PREGNANCY = "https://teleimagerie.fr/fhir/StructureDefinition/tlm-pregnancy-status"
EXT_RISK = "https://teleimagerie.fr/fhir/StructureDefinition/tlm-risk-factor"
EXT_INCIDENT = "https://teleimagerie.fr/fhir/StructureDefinition/tlm-technical-incident"
# CI-SIS JDV_StatutGrossesse (1.2.250.1.213.1.1.5.671), as our statut-grossesse ValueSet
PREGNANCY = {"77386006": "Enceinte", "60001007": "Non enceinte", "261665006": "Inconnu"}
PREGNANT = "77386006"
DOSE_DISPLAY = {"113813": "PDL Total : Produit Dose Longueur Total",
                "113830": "IDSV moyen (CTDIvol)", "113838": "PDL (DLP)",
                "113722": "PDS Total : Produit Dose Surface Total",
                "113725": "Dose au point de référence total",
                "113730": "Durée totale de scopie",
                "113507": "Activité administrée"}


@dataclass
class Document:
    level: str  # "N1" | "N3"
    xml: bytes
    id: str  # document OID (XDS uniqueId)
    set_id: str
    version: int
    replaces: str | None  # previous version's document id
    format_code: str

    @property
    def media_type(self) -> str:
        return "application/hl7-cda+xml"


def document_ids(report_id: str, version: int, level: str) -> tuple[str, str]:
    """(document id, set id) of a report version at a level: stable, so rebuilding the
    same version gives the same ids."""
    return (codes.uuid_oid("cda", report_id, level, str(version)),
            codes.uuid_oid("cda-set", report_id, level))


def build(src: Sources, level: str, pdf: bytes | None = None) -> Document:
    if level not in ("N1", "N3"):
        raise ValueError(level)
    doc_id, set_id = document_ids(src.report_id, src.version, level)
    previous = document_ids(src.report_id, src.version - 1, level)[0] \
        if src.version > 1 else None
    root = etree.Element(f"{{{V3}}}ClinicalDocument", nsmap=NSMAP)
    _header(root, src, level, doc_id, set_id, previous)
    component = _el(root, "component")
    if level == "N3":
        _structured_body(_el(component, "structuredBody"), src)
    else:
        if pdf is None:
            raise ValueError("an N1 document carries the PDF rendering")
        body = _el(component, "nonXMLBody")
        _el(body, "text", mediaType="application/pdf",
            representation="B64").text = base64.b64encode(pdf).decode()
    xml = etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
    return Document(level, xml, doc_id, set_id, src.version, previous,
                    codes.FORMAT_N3 if level == "N3" else codes.FORMAT_N1)


# -- XML helpers ---------------------------------------------------------------------------
def _el(parent: etree._Element, tag: str, text: str | None = None,
        **attrs: str) -> etree._Element:
    prefix, _, local = tag.rpartition(":")
    ns = {"": V3, "ps3-20": PS3_20, "xsi": XSI}[prefix]
    node = etree.SubElement(parent, f"{{{ns}}}{local}")
    for key, value in attrs.items():
        if key == "xsi_type":
            node.set(f"{{{XSI}}}type", value)
        else:
            node.set(key.rstrip("_"), value)
    if text is not None:
        node.text = text
    return node


def ts(value: str | None) -> str | None:
    """FHIR date/dateTime/instant -> HL7 v3 TS (``YYYYMMDDHHMMSS+ZZZZ``)."""
    if not value:
        return None
    m = re.match(r"(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?(?:T(\d{2}):(\d{2})(?::(\d{2}))?"
                 r"(?:\.\d+)?(Z|[+-]\d{2}:\d{2})?)?$", value)
    if not m:
        return None
    year, month, day, hh, mm, ss, zone = m.groups()
    out = year + (month or "") + (day or "")
    if hh:
        out += hh + mm + (ss or "00")
        if zone:
            out += "+0000" if zone == "Z" else zone.replace(":", "")
    return out


def _ii(parent: etree._Element, tag: str, system: str | None, value: str | None) -> bool:
    oid = codes.oid_of(system)
    if not oid or not value:
        return False
    _el(parent, tag, root=oid, extension=value)
    return True


def _coding(concept: Any, system: str | None = None) -> dict[str, Any] | None:
    for c in (concept or {}).get("coding") or []:
        if isinstance(c, dict) and c.get("code") and (system is None or c.get("system") == system):
            return c
    return None


def _cd(parent: etree._Element, tag: str, coding: dict[str, Any] | None,
        display: str | None = None, **extra: str) -> etree._Element:
    """A CD from a FHIR Coding; unknown systems get nullFlavor OTH with the original
    text, so nothing is silently dropped."""
    oid = codes.oid_of((coding or {}).get("system"))
    if coding is None or not oid:
        node = _el(parent, tag, nullFlavor="UNK" if coding is None else "OTH", **extra)
        if coding is not None:
            _el(node, "originalText", coding.get("display") or coding.get("code"))
        return node
    name = codes.SYSTEMS.get(coding.get("system", ""), ("", ""))[1]
    attrs = {"code": str(coding["code"]), "codeSystem": oid}
    text = display or coding.get("display")
    if text:
        attrs["displayName"] = text
    if name:
        attrs["codeSystemName"] = name
    return _el(parent, tag, **attrs, **extra)


def identifier(resource: dict[str, Any] | None, *oids: str) -> str | None:
    """The value of the first identifier issued under one of ``oids``."""
    for ident in (resource or {}).get("identifier") or []:
        if codes.oid_of(ident.get("system")) in oids and ident.get("value"):
            return str(ident["value"])
    return None


def _name(parent: etree._Element, names: list[dict[str, Any]] | None) -> None:
    node = _el(parent, "name")
    name = next(iter(names or []), {})
    for prefix in name.get("prefix") or []:
        _el(node, "prefix", prefix)
    for given in name.get("given") or []:
        _el(node, "given", given)
    _el(node, "family", name.get("family") or name.get("text") or "INCONNU")


def _addr(parent: etree._Element, address: dict[str, Any] | None) -> None:
    if not address:
        _el(parent, "addr", nullFlavor="NASK")
        return
    node = _el(parent, "addr")
    for line in address.get("line") or []:
        _el(node, "streetAddressLine", line)
    for key, tag in (("postalCode", "postalCode"), ("city", "city"), ("country", "country")):
        if address.get(key):
            _el(node, tag, address[key])


def _telecom(parent: etree._Element, points: list[dict[str, Any]] | None) -> None:
    written = False
    for point in points or []:
        scheme = {"phone": "tel", "email": "mailto", "fax": "fax"}.get(point.get("system", ""))
        if scheme and point.get("value"):
            _el(parent, "telecom", value=f"{scheme}:{point['value']}")
            written = True
    if not written:
        _el(parent, "telecom", nullFlavor="NASK")


# -- header -------------------------------------------------------------------------------
def _header(root: etree._Element, src: Sources, level: str, doc_id: str, set_id: str,
            previous: str | None) -> None:
    report = src.report
    _el(root, "realmCode", code="FR")
    _el(root, "typeId", root="2.16.840.1.113883.1.3", extension="POCD_HD000040")
    for template in codes.TEMPLATES_COMMON:
        _el(root, "templateId", root=template)
    if level == "N3":
        for template in codes.TEMPLATES_N3:
            _el(root, "templateId", root=template)
        _el(root, "templateId", root=codes.TEMPLATE_CR_IMG[0],
            extension=codes.TEMPLATE_CR_IMG[1])
    else:
        _el(root, "templateId", root=codes.TEMPLATE_XDS_SD)
    _el(root, "id", root=doc_id)
    _el(root, "code", code=codes.REPORT_CODE[0], displayName=codes.REPORT_CODE[1],
        codeSystem=codes.LOINC, codeSystemName="LOINC")
    _el(root, "title", title(src))
    signed = ts(report.get("issued") or report.get("effectiveDateTime"))
    assert signed is not None, "a final report has its issued time (tlm-diagnostic-report)"
    _el(root, "effectiveTime", value=signed)
    _el(root, "confidentialityCode", code="N", displayName="Normal",
        codeSystem=codes.CONFIDENTIALITY)
    _el(root, "languageCode", code="fr-FR")
    _el(root, "setId", root=set_id)
    _el(root, "versionNumber", value=str(src.version))
    _record_target(root, src.patient)
    author = _el(root, "author")
    _el(author, "time", value=signed)
    _assigned(_el(author, "assignedAuthor"), src)
    custodian_org = src.site or src.author_org
    custodian = _el(_el(_el(root, "custodian"), "assignedCustodian"),
                    "representedCustodianOrganization")
    _organization_body(custodian, custodian_org)
    legal = _el(root, "legalAuthenticator")
    _el(legal, "time", value=signed)
    _el(legal, "signatureCode", code="S")
    _assigned(_el(legal, "assignedEntity"), src)
    _in_fulfillment_of(root, src)
    _documentation_of(root, src)
    if previous:
        related = _el(root, "relatedDocument", typeCode="RPLC")
        _el(_el(related, "parentDocument"), "id", root=previous)
    encounter = _el(_el(root, "componentOf"), "encompassingEncounter")
    _el(encounter, "code", code="AMB", displayName="Ambulatoire",
        codeSystem=codes.ACT_CODE)
    period = _el(encounter, "effectiveTime")
    started = _started(src) or signed
    _el(period, "low", value=started)
    _el(period, "high", value=signed)
    facility = _el(_el(encounter, "location"), "healthCareFacility")
    _el(facility, "code", code="SA01", displayName="Etablissement Public de santé",
        codeSystem=codes.FACILITY_TYPE)


def title(src: Sources) -> str:
    act = (src.request or {}).get("code") or {}
    what = act.get("text") or next((c.get("display") for c in act.get("coding") or []
                                    if c.get("display")), None)
    modality = modality_of(src)
    if not what and modality:
        what = codes.MODALITIES.get(modality, modality)
    return "CR d'imagerie médicale" + (f" - {what}" if what else "")


def _record_target(root: etree._Element, patient: dict[str, Any]) -> None:
    role = _el(_el(root, "recordTarget"), "patientRole")
    ids = 0
    for ident in patient.get("identifier") or []:
        ids += _ii(role, "id", ident.get("system"), ident.get("value"))
    if not ids:
        _el(role, "id", nullFlavor="NI")
    _addr(role, next(iter(patient.get("address") or []), None))
    _telecom(role, patient.get("telecom"))
    person = _el(role, "patient", classCode="PSN")
    name = _el(person, "name")
    names = patient.get("name") or []
    official: dict[str, Any] = next((n for n in names if n.get("use") == "official"),
                                    next(iter(names), {}))
    given = official.get("given") or []
    _el(name, "family", official.get("family") or "INCONNU", qualifier="BR")
    if given:
        _el(name, "given", " ".join(given))
        _el(name, "given", given[0], qualifier="BR")
    usual = next((n for n in patient.get("name") or [] if n.get("use") == "usual"), None)
    if usual and usual.get("family"):
        _el(name, "family", usual["family"], qualifier="CL")
    code, display = codes.GENDERS.get(patient.get("gender", "unknown"), ("U", "Inconnu"))
    _el(person, "administrativeGenderCode", code=code, displayName=display,
        codeSystem=codes.GENDER)
    birth = ts(patient.get("birthDate"))
    if birth:
        _el(person, "birthTime", value=birth)
    else:
        _el(person, "birthTime", nullFlavor="UNK")
    place = birthplace(patient)
    if place is not None:
        addr = _el(_el(_el(person, "birthplace"), "place"), "addr")
        if place[0]:
            _el(addr, "county", place[0])
        if place[1]:
            _el(addr, "city", place[1])


def birthplace(patient: dict[str, Any]) -> tuple[str, str] | None:
    """(COG code, city) of the birth place (FHIR patient-birthPlace, FR Core INSEE code
    extension): an INS trait (Référentiel INS; CI-SIS structuration minimale)."""
    for e in patient.get("extension") or []:
        if e.get("url") != BIRTH_PLACE:
            continue
        address = e.get("valueAddress") or {}
        code = next(((x.get("valueCoding") or {}).get("code") for x in
                     address.get("extension") or [] if x.get("url") == INSEE_CODE), None)
        code = code or address.get("district")
        if code or address.get("city"):
            return str(code or ""), str(address.get("city") or "")
    return None


def _assigned(entity: etree._Element, src: Sources, organization: bool = False) -> None:
    """assignedAuthor / assignedEntity: the imager (RPPS), their profession, organisation.
    ``organization``: the structure is required (serviceEvent performer, CI-SIS
    structuration minimale "CI-SISDocumentationOf"); without the imager's own, it is the
    structure where the act was performed (the requesting site)."""
    author = src.author or {}
    rpps = identifier(author, codes.RPPS)
    if rpps:
        _el(entity, "id", root=codes.RPPS, extension=rpps)
    else:
        _el(entity, "id", nullFlavor="UNK")
    _el(entity, "code", code="G15_10/SM44", displayName="Médecin - Radio-diagnostic (SM)",
        codeSystem=codes.PROFESSION)
    _addr(entity, next(iter(author.get("address") or []), None))
    _telecom(entity, author.get("telecom"))
    _name(_el(entity, "assignedPerson"), author.get("name"))
    structure = src.author_org if src.author_org is not None or not organization \
        else src.site
    if structure is not None or organization:
        org = _el(entity, "representedOrganization")
        _organization_body(org, structure)
        _el(org, "standardIndustryClassCode", code="ETABLISSEMENT",
            displayName="Etablissement de santé", codeSystem=codes.PRACTICE_SETTING)


def _organization_body(node: etree._Element, org: dict[str, Any] | None) -> None:
    finess = identifier(org, codes.FINESS)
    if finess:
        _el(node, "id", root=codes.FINESS, extension=finess)
    else:
        _el(node, "id", nullFlavor="UNK")
    _el(node, "name", (org or {}).get("name") or "Structure non renseignée")
    _telecom(node, (org or {}).get("telecom"))
    _addr(node, next(iter((org or {}).get("address") or []), None))


def _in_fulfillment_of(root: etree._Element, src: Sources) -> None:
    request = src.request or {}
    placer = accession = None
    for ident in request.get("identifier") or []:
        kind = {c.get("code") for c in (ident.get("type") or {}).get("coding") or []}
        if "PLAC" in kind and placer is None:
            placer = ident
        elif "ACSN" in kind and accession is None:
            accession = ident
    for study in src.studies:
        for ident in study.get("identifier") or []:
            kind = {c.get("code") for c in (ident.get("type") or {}).get("coding") or []}
            if "ACSN" in kind and accession is None:
                accession = ident
    if placer is None and accession is None:
        return
    order = _el(_el(root, "inFulfillmentOf"), "order")
    for ident, tag in ((placer, "id"), (accession, "ps3-20:accessionNumber")):
        if ident is None:
            _el(order, tag, nullFlavor="UNK")
        elif not _ii(order, tag, ident.get("system"), ident.get("value")):
            _el(order, tag, nullFlavor="UNK")


def modality_of(src: Sources) -> str | None:
    for study in src.studies:
        for m in study.get("modality") or []:
            if m.get("code"):
                return str(m["code"])
    for e in (src.request or {}).get("extension") or []:
        if e.get("url", "").endswith("/tlm-modality"):
            return (e.get("valueCoding") or {}).get("code")
    return None


def _started(src: Sources) -> str | None:
    for study in src.studies:
        if study.get("started"):
            return ts(study["started"])
    return ts(src.report.get("effectiveDateTime"))


def act_of(src: Sources) -> dict[str, Any] | None:
    return _coding((src.request or {}).get("code"),
                   "https://smt.esante.gouv.fr/terminologie-ccam")


def _documentation_of(root: etree._Element, src: Sources) -> None:
    event = _el(_el(root, "documentationOf"), "serviceEvent", classCode="ACT")
    for study in src.studies:
        for ident in study.get("identifier") or []:
            if ident.get("system") == "urn:dicom:uid" and \
                    str(ident.get("value", "")).startswith("urn:oid:"):
                _el(event, "id", root=ident["value"][8:])
    act = act_of(src)
    modality = modality_of(src)
    # no CCAM code: OTH (not UNK) so the modality translation may stay (DTr1 dtr1-1-ANY)
    code = _cd(event, "code", act) if act else _el(event, "code", nullFlavor="OTH")
    if modality:
        translation = _el(code, "translation", code=modality,
                          displayName=codes.MODALITIES.get(modality, modality),
                          codeSystem=codes.DCM, codeSystemName="DCM")
        _el(_el(translation, "qualifier"), "name", code="121139",
            displayName="Modalité d'imagerie", codeSystem=codes.DCM, codeSystemName="DCM")
    period = _el(event, "effectiveTime")
    started = _started(src)
    if started:
        _el(period, "low", value=started)
    else:
        _el(period, "low", nullFlavor="UNK")
    performer = _el(event, "performer", typeCode="PRF")
    _assigned(_el(performer, "assignedEntity"), src, organization=True)


# -- body (N3) -----------------------------------------------------------------------------
def _section(parent: etree._Element, templates: Iterable[str], code: tuple[str, str, str],
             title_text: str, section_id: str, sub: bool = False) -> etree._Element:
    attrs = {"classCode": "DOCSECT", "moodCode": "EVN"} if sub else {}
    section = _el(_el(parent, "component"), "section", **attrs)
    for template in templates:
        _el(section, "templateId", root=template)
    _el(section, "id", root=section_id)
    _el(section, "code", code=code[0], displayName=code[2], codeSystem=code[1],
        codeSystemName="LOINC" if code[1] == codes.LOINC else "DCM")
    _el(section, "title", title_text)
    return section


def _paragraphs(section: etree._Element, text: str | None, empty: str) -> etree._Element:
    node = _el(section, "text")
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    for line in lines or [empty]:
        _el(node, "paragraph", line)
    return node


def _structured_body(body: etree._Element, src: Sources) -> None:
    rid = src.report_id

    def sid(name: str) -> str:
        return codes.uuid_oid("cda-section", rid, str(src.version), name)

    report, request = src.report, src.request or {}
    if src.version > 1:
        addendum = _section(body, ("1.2.840.10008.9.6", "1.2.250.1.213.1.1.2.210"),
                            ("55107-7", codes.LOINC, "Addendum"), "Addendum", sid("addendum"))
        _paragraphs(addendum, _amendment_text(report), "Compte rendu modifié.")
        # the addendum names its author (CR-IMG / IHE: author/assignedAuthor/assignedPerson)
        author = _el(addendum, "author")
        _el(author, "time", value=ts(report.get("issued") or report.get("effectiveDateTime"))
            or "")
        _assigned(_el(author, "assignedAuthor"), src)
    clinical = _section(body, ("1.2.840.10008.9.2", "1.2.250.1.213.1.1.2.205"),
                        ("55752-0", codes.LOINC, "Informations cliniques"),
                        "Informations cliniques", sid("clinical"))
    _el(clinical, "text")
    reasons = "\n".join(r.get("text") or (_coding(r) or {}).get("display") or ""
                        for r in request.get("reasonCode") or [])
    justification = _section(clinical, ("1.2.840.10008.9.7", "1.2.250.1.213.1.1.2.211"),
                             ("55115-0", codes.LOINC, "Demande"),
                             "Justification de la demande d'examen", sid("justification"),
                             sub=True)
    _paragraphs(justification, reasons, "Non renseignée dans la demande.")
    _history(clinical, src, sid)
    _technique(body, src, sid)
    found = findings(report)
    if found:
        results = _section(body, ("2.16.840.1.113883.10.20.6.1.2", "1.2.250.1.213.1.1.2.208"),
                           ("59776-5", codes.LOINC, "Résultats de l'acte"), "Résultats",
                           sid("results"))
        _paragraphs(results, found, "")
    conclusion = _section(body, ("1.2.840.10008.9.5", "1.2.250.1.213.1.1.2.209"),
                          ("19005-8", codes.LOINC, "Conclusions"), "Conclusion",
                          sid("conclusion"))
    coded = "\n".join(c.get("text") or (_coding(c) or {}).get("display") or ""
                      for c in report.get("conclusionCode") or [])
    _paragraphs(conclusion, "\n".join(t for t in (report.get("conclusion"), coded) if t),
                "Conclusion non renseignée.")


def findings(report: dict[str, Any]) -> str:
    """The report's findings: its narrative, without the XHTML."""
    div = (report.get("text") or {}).get("div") or ""
    if not div:
        return ""
    try:
        node = etree.fromstring(div.encode())
        return "\n".join(t.strip() for t in node.itertext() if t.strip())
    except etree.XMLSyntaxError:
        return re.sub(r"<[^>]+>", " ", div)


def _amendment_text(report: dict[str, Any]) -> str:
    for e in report.get("extension") or []:
        if e.get("url", "").endswith("/tlm-amendment-reason") and e.get("valueString"):
            return str(e["valueString"])
    issued = report.get("issued") or ""
    return f"Compte rendu modifié le {issued[:10]} : cette version remplace la précédente."


def _technique(body: etree._Element, src: Sources, sid: Any) -> None:
    section = _section(body, ("1.2.840.10008.9.3", "1.2.250.1.213.1.1.2.206"),
                       ("55111-9", codes.LOINC, "Description de l'acte d'imagerie"),
                       "Technique d'imagerie", sid("technique"))
    act, modality = act_of(src), modality_of(src)
    site = _coding(next(iter((src.request or {}).get("bodySite") or []), None))
    text = _el(section, "text")
    table = _el(text, "table", border="0")
    head = _el(_el(table, "thead"), "tr")
    for label in ("Acte d'imagerie", "Modalité d'imagerie", "Localisation anatomique"):
        _el(head, "th", label)
    row = _el(_el(table, "tbody"), "tr")
    _el(_el(row, "td"), "content", f"[CCAM : {act['code']}] {act.get('display') or ''}".strip()
        if act else "Acte non codé", ID="acte-1")
    _el(_el(row, "td"), "content", codes.MODALITIES.get(modality or "", modality or "—"),
        ID="acte-1-modalite")
    _el(_el(row, "td"), "content", (site or {}).get("display") or (site or {}).get("code")
        or "Non précisée", ID="acte-1-localisation")
    procedure = _el(_el(section, "entry"), "procedure", classCode="PROC", moodCode="EVN")
    _el(procedure, "templateId", root="1.2.840.10008.9.14")
    _el(procedure, "templateId", root="1.2.250.1.213.1.1.3.153")
    _el(procedure, "id", root=sid("procedure"))
    code = _cd(procedure, "code", act) if act else _el(procedure, "code", nullFlavor="OTH")
    _el(_el(code, "originalText"), "reference", value="#acte-1")
    started = _started(src)
    if started:
        _el(procedure, "effectiveTime", value=started)
    if modality:
        method = _el(procedure, "methodCode", code=modality,
                     displayName=codes.MODALITIES.get(modality, modality),
                     codeSystem=codes.DCM, codeSystemName="DCM")
    else:
        method = _el(procedure, "methodCode", nullFlavor="OTH")
    _el(_el(method, "originalText"), "reference", value="#acte-1-modalite")
    target = _cd(procedure, "targetSiteCode", site)
    _el(_el(target, "originalText"), "reference", value="#acte-1-localisation")
    incidents = [e["valueString"] for e in src.report.get("extension") or []
                 if e.get("url") == EXT_INCIDENT and isinstance(e.get("valueString"), str)]
    if incidents:
        # R-EXAM-3: technical incidents and adverse effects, in FR-DICOM-Complications
        complications = _section(section, ("2.16.840.1.113883.10.20.22.2.37",
                                           "1.2.250.1.213.1.1.2.214"),
                                 ("55109-3", codes.LOINC, "Complications"), "Complications",
                                 sid("complications"), sub=True)
        _paragraphs(complications, "\n".join(incidents), "")
    if src.doses:
        _exposure(section, src, sid)
    _catalog(section, src, sid)


def _exposure(parent: etree._Element, src: Sources, sid: Any) -> None:
    section = _section(parent, ("1.2.840.10008.9.8", "1.2.250.1.213.1.1.2.215"),
                       ("73569-6", codes.LOINC, "Exposition aux rayonnements et informations "
                        "de radioprotection"), "Exposition aux rayonnements", sid("exposure"),
                       sub=True)
    text = _el(section, "text")
    _el(_el(text, "paragraph", "Statut de grossesse : "), "content", pregnancy_of(src)[1],
        ID="statut-grossesse")
    table = _el(text, "table", border="0")
    head = _el(_el(table, "thead"), "tr")
    for label in ("Mesure", "Quantité", "Localisation", "Source"):
        _el(head, "th", label)
    tbody = _el(table, "tbody")
    rows = []
    for n, obs in enumerate(src.doses, start=1):
        coding = _coding(obs.get("code"), DCM_URI)
        value = obs.get("valueQuantity") or {}
        if coding is None or value.get("value") is None:
            continue
        label = DOSE_DISPLAY.get(coding["code"], coding.get("display") or coding["code"])
        row = _el(tbody, "tr")
        _el(_el(row, "td"), "content", label, ID=f"dose-{n}")
        amount = f"{value['value']} {value.get('code') or value.get('unit') or ''}".strip()
        _el(row, "td", amount.replace(".", ",", 1) if "." in str(value["value"]) else amount)
        site = dose_site(src, obs)
        _el(_el(row, "td"), "content", (site or {}).get("display") or (site or {}).get("code")
            or "Non précisée", ID=f"dose-{n}-localisation")
        method = _coding(obs.get("method"))
        _el(row, "td", (method or {}).get("display") or "—")
        rows.append((n, obs, coding, value))
    imager = src.author or {}
    exposure = _el(_el(section, "entry"), "procedure", classCode="PROC", moodCode="EVN")
    _el(exposure, "templateId", root="1.2.250.1.213.1.1.3.165")
    _el(exposure, "code", code="121290",
        displayName="Exposition du patient aux rayonnements ionisants",
        codeSystem=codes.DCM, codeSystemName="DCM")
    role = _el(_el(exposure, "participant", typeCode="RESP"), "participantRole")
    rpps = identifier(imager, codes.RPPS)
    if rpps:
        _el(role, "id", root=codes.RPPS, extension=rpps)
    _el(role, "code", code="113850", displayName="Autorisation d'irradiation",
        codeSystem=codes.DCM, codeSystemName="DCM")
    _name(_el(role, "playingEntity"), imager.get("name"))
    _pregnancy(section, src, sid)
    for n, obs, coding, value in rows:
        observation = _el(_el(section, "entry"), "observation", classCode="OBS",
                          moodCode="EVN")
        _el(observation, "templateId", root="2.16.840.1.113883.10.20.6.2.14")
        _el(observation, "templateId", root="1.2.250.1.213.1.1.3.154")
        _el(observation, "id", root=codes.uuid_oid("dose", str(obs.get("id"))))
        _el(observation, "code", code=coding["code"],
            displayName=DOSE_DISPLAY.get(coding["code"], coding.get("display") or ""),
            codeSystem=codes.DCM, codeSystemName="DCM")
        _el(_el(observation, "text"), "reference", value=f"#dose-{n}")
        _el(observation, "statusCode", code="completed")
        when = ts(obs.get("effectiveDateTime"))
        if when:
            _el(observation, "effectiveTime", value=when)
        _el(observation, "value", xsi_type="PQ", value=str(value["value"]),
            unit=str(value.get("code") or value.get("unit") or "1"))
        # CR-IMG JDV_LocalisationAnatomiqueQuantite forbids a nullFlavor here: the dose
        # item's site, else its series', else the request's region (required, R-REQ-1)
        site = dose_site(src, obs)
        target = _cd(observation, "targetSiteCode", site, xsi_type="CD")
        if site is not None:  # E_DICOM_Quantite: an originalText is a reference
            _el(_el(target, "originalText"), "reference", value=f"#dose-{n}-localisation")


def _catalog(parent: etree._Element, src: Sources, sid: Any) -> None:
    """FR-DICOM-Catalogue-objets: the archived study (R-REP-7). The CI-SIS model has one
    series (with one instance) per study entry, so each series is an entry of its own."""
    section = _section(parent, ("2.16.840.1.113883.10.20.6.1.1", "1.2.250.1.213.1.1.2.217"),
                       ("121181", codes.DCM, "Catalogue d'objets DICOM"),
                       "Catalogue d'objets DICOM", sid("catalog"), sub=True)
    text = _el(section, "text")
    rows = [(study, series) for study in src.studies for series in study.get("series") or []]
    if rows:
        table = _el(text, "table", border="0")
        head = _el(_el(table, "thead"), "tr")
        for label in ("Examen (Study Instance UID)", "Série", "Modalité", "Instances",
                      "Images"):
            _el(head, "th", label)
        tbody = _el(table, "tbody")
    n = 0
    for study in src.studies:
        uid = next((i["value"][8:] for i in study.get("identifier") or []
                    if i.get("system") == "urn:dicom:uid"
                    and str(i.get("value", "")).startswith("urn:oid:")), None)
        if uid is None:
            continue
        for series in study.get("series") or []:
            instances = series.get("instance") or []
            modality = (series.get("modality") or {}).get("code") or "OT"
            # an entry's modality must be an acquisition modality (CR-IMG
            # JDV_ModaliteAcquisition): a dose report (SR), key objects (KO)… stay in the
            # table only
            acquired = modality in codes.MODALITIES and modality != "OT"
            n += 1
            row = _el(tbody, "tr")
            _el(row, "td", uid)
            _el(row, "td", str(series.get("uid")))
            _el(_el(row, "td"), "content", codes.MODALITIES.get(modality, modality),
                ID=f"serie-{n}-modalite")
            _el(row, "td", str(series.get("numberOfInstances") or len(instances)))
            cell = _el(row, "td")
            wado = f"{src.endpoint.rstrip('/')}/studies/{uid}/series/{series.get('uid')}" \
                if src.endpoint else ""
            if wado:
                _el(cell, "linkHtml", "images", href=wado)
            else:
                cell.text = "—"
            if not instances or not acquired:
                continue
            act = _el(_el(section, "entry"), "act", classCode="ACT", moodCode="EVN")
            _el(act, "templateId", root="1.2.840.10008.9.16")
            _el(act, "templateId", root="1.2.250.1.213.1.1.3.155")
            _el(act, "id", root=uid)
            _el(act, "code", code="113014", displayName="Examen", codeSystem=codes.DCM,
                codeSystemName="DCM")
            started = ts(study.get("started"))
            if started:
                _el(act, "effectiveTime", value=started)
            series_act = _el(_el(act, "entryRelationship", typeCode="COMP"), "act",
                             classCode="ACT", moodCode="EVN")
            _el(series_act, "templateId", root="1.2.840.10008.9.17")
            _el(series_act, "templateId", root="1.2.250.1.213.1.1.3.156")
            _el(series_act, "id", root=str(series.get("uid")))
            code = _el(series_act, "code", code="113015", displayName="Séries",
                       codeSystem=codes.DCM, codeSystemName="DCM")
            qualifier = _el(code, "qualifier")
            _el(qualifier, "name", code="121139", displayName="Modalité",
                codeSystem=codes.DCM, codeSystemName="DCM")
            value = _el(qualifier, "value", code=modality,
                        displayName=codes.MODALITIES.get(modality, modality),
                        codeSystem=codes.DCM, codeSystemName="DCM")
            _el(_el(value, "originalText"), "reference", value=f"#serie-{n}-modalite")
            first = instances[0]
            obs = _el(_el(series_act, "entryRelationship", typeCode="COMP"), "observation",
                      classCode="DGIMG", moodCode="EVN")
            _el(obs, "templateId", root="1.2.840.10008.9.18")
            _el(obs, "templateId", root="1.2.250.1.213.1.1.3.157")
            _el(obs, "id", root=str(first.get("uid")))
            sop = str((first.get("sopClass") or {}).get("code") or "")
            _el(obs, "code", code=sop.removeprefix("urn:oid:"), codeSystem=codes.DCMUID,
                codeSystemName="DCMUID")
            if wado:
                _el(_el(obs, "text", mediaType="application/dicom"), "reference",
                    value=f"{wado}/instances/{first.get('uid')}")
    if n == 0:
        _el(text, "paragraph", "Aucun objet DICOM archivé n'est rattaché à ce compte rendu.")


def _observation(entry_parent: etree._Element, oid: str, code: tuple[str, str, str]
                 ) -> etree._Element:
    """An FR-DICOM-Observation (Coded Observation, DICOM PS3.20 / CI-SIS 1.2.250.1.213.
    1.1.3.150): two templateIds, one id, code, statusCode, value, targetSiteCode."""
    obs = _el(_el(entry_parent, "entry"), "observation", classCode="OBS", moodCode="EVN")
    _el(obs, "templateId", root="2.16.840.1.113883.10.20.6.2.13")
    _el(obs, "templateId", root="1.2.250.1.213.1.1.3.150")
    _el(obs, "id", root=oid)
    _el(obs, "code", code=code[0], codeSystem=code[1], displayName=code[2],
        codeSystemName="LOINC" if code[1] == codes.LOINC else "SNOMED CT")
    return obs


def pregnancy_of(src: Sources) -> tuple[str, str]:
    """The pregnancy status the request states (tlm-pregnancy-status, R-REQ-3), else
    "Inconnu" (261665006): the CI-SIS value set has a code for it, its rule no nullFlavor."""
    for e in (src.request or {}).get("extension") or []:
        if e.get("url") == EXT_PREGNANCY:
            coded = _coding(e.get("valueCodeableConcept"), SCT_URI)
            if coded is not None and coded["code"] in PREGNANCY:
                return str(coded["code"]), PREGNANCY[str(coded["code"])]
    return "261665006", PREGNANCY["261665006"]


def _pregnancy(section: etree._Element, src: Sources, sid: Any) -> None:
    """FR-DICOM-Observation statut de grossesse (364320009), required in the radiation
    exposure section (IHE S_DICOM_ExpositionsAuxRadiations; CR-IMG JDV_StatutGrossesse)."""
    code, label = pregnancy_of(src)
    obs = _observation(section, sid("pregnancy"),
                       ("364320009", codes.SNOMED, "Statut de grossesse"))
    _el(obs, "statusCode", code="completed")
    value = _el(obs, "value", xsi_type="CD", code=code, displayName=label,
                codeSystem=codes.SNOMED, codeSystemName="SNOMED CT")
    _el(_el(value, "originalText"), "reference", value="#statut-grossesse")
    _el(obs, "targetSiteCode", nullFlavor="NA")  # a status, not a site


def dose_site(src: Sources, obs: dict[str, Any]) -> dict[str, Any] | None:
    """Where a dose was received: the dose item's body site, else the body site of the
    series of its study, else the request's region (SNOMED CT codes)."""
    site = _coding(obs.get("bodySite"), SCT_URI)
    if site is not None:
        return site
    studies = {ref.get("reference", "").split("/")[-1] for ref in obs.get("partOf") or []}
    for study in src.studies:
        if studies and study.get("id") not in studies:
            continue
        for series in study.get("series") or []:
            found = series.get("bodySite")
            if isinstance(found, dict) and found.get("system") == SCT_URI and found.get("code"):
                return found
    return _coding(next(iter((src.request or {}).get("bodySite") or []), None), SCT_URI)


def _history(clinical: etree._Element, src: Sources, sid: Any) -> None:
    """FR-DICOM-Historique-medical: medical (11348-0) and surgical (47519-4) history and
    contra-indications (64100-1), each an FR-DICOM-Observation (CR-IMG and IHE require the
    first two; the CR-IMG rule on the third is written so that one is required too). The
    history comes from the request's supporting information (Condition: medical,
    Procedure: surgical) and notes; contra-indications from its pregnancy status and risk
    factors (tlm-risk-factor)."""
    request = src.request or {}
    medical = [_label(r) for r in src.history if r.get("resourceType") != "Procedure"]
    medical += [n.get("text", "") for n in request.get("note") or [] if n.get("text")]
    surgical = [_label(r) for r in src.history if r.get("resourceType") == "Procedure"]
    contra: list[tuple[str | None, str]] = []
    if pregnancy_of(src)[0] == PREGNANT:
        contra.append((PREGNANT, "Enceinte"))
    for e in request.get("extension") or []:
        if e.get("url") == EXT_RISK:
            concept = e.get("valueCodeableConcept") or {}
            coded = _coding(concept)
            contra.append((None, concept.get("text") or (coded or {}).get("display")
                           or (coded or {}).get("code") or ""))
    section = _section(clinical, ("2.16.840.1.113883.10.20.22.2.39",
                                  "1.2.250.1.213.1.1.2.213"),
                       ("11329-0", codes.LOINC, "Historique médical"),
                       "Antécédents médicaux / Antécédents chirurgicaux / Contre-indications",
                       sid("history"))
    text = _el(section, "text")
    none = "Non renseignés dans la demande"
    rows = [("antecedents-medicaux", "Antécédents médicaux", "; ".join(filter(None, medical))
             or none),
            ("antecedents-chirurgicaux", "Antécédents chirurgicaux",
             "; ".join(filter(None, surgical)) or none)]
    rows += [(f"contre-indication-{n}", "Contre-indication", label or "Non précisée")
             for n, (_, label) in enumerate(contra, start=1)]
    if not contra:
        rows.append(("contre-indication-1", "Contre-indication",
                     "Aucune contre-indication signalée dans la demande"))
    for anchor, heading, value in rows:
        _el(_el(text, "paragraph", f"{heading} : "), "content", value, ID=anchor)
    for anchor, loinc in (("antecedents-medicaux", ("11348-0", codes.LOINC,
                                                    "Antécédents médicaux")),
                          ("antecedents-chirurgicaux", ("47519-4", codes.LOINC,
                                                        "Antécédents chirurgicaux"))):
        obs = _observation(section, sid(anchor), loinc)
        _el(_el(obs, "text"), "reference", value=f"#{anchor}")
        _el(obs, "statusCode", code="completed")
        # free text, as the ANS example: a CD whose original text is the narrative
        _el(_el(_el(obs, "value", xsi_type="CD"), "originalText"), "reference",
            value=f"#{anchor}")
        _el(obs, "targetSiteCode", nullFlavor="NA")
    for n, (code, _) in enumerate(contra or [(None, "")], start=1):  # code: str | None
        anchor = f"contre-indication-{n}"
        obs = _observation(section, sid(anchor), ("64100-1", codes.LOINC,
                                                   "Contre-indications"))
        _el(_el(obs, "text"), "reference", value=f"#{anchor}")
        _el(obs, "statusCode", code="completed")
        if code is not None:  # a code of the CI-SIS JDV_Contre_indications
            value = _el(obs, "value", xsi_type="CD", code=code, displayName="Enceinte",
                        codeSystem=codes.SNOMED, codeSystemName="SNOMED CT")
            _el(_el(value, "originalText"), "reference", value=f"#{anchor}")
        else:
            # our risk factors have no CI-SIS code, and the rule admits no nullFlavor: a
            # text value (the JDV rule checks CD/CE values only)
            _el(obs, "value", rows[1 + n][2], xsi_type="ST")
        _el(obs, "targetSiteCode", nullFlavor="NA")


def _label(resource: dict[str, Any]) -> str:
    concept = resource.get("code") or {}
    coded = _coding(concept)
    return str(concept.get("text") or (coded or {}).get("display") or (coded or {}).get("code")
               or "")
