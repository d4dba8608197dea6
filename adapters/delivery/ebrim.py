"""ebRIM 3.0 metadata of a submission (IHE ITI TF-3 §4.2 and §4.2.3; DMP profile of the
ANS *mapping.md*): a SubmitObjectsRequest holding the submission set, one DocumentEntry
per document, HasMember associations and, for a new version, the RPLC association to the
entry it replaces. The same request is the body of ITI-41 (XDS.b) and the METADATA.XML of
an ITI-32 (XDM) archive.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from lxml import etree

from adapters.cda.metadata import ID_NAMESPACE, Code, Metadata, entry_uuid

LCM = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
NSMAP = {"lcm": LCM, "rim": RIM, "rs": RS}

DOCUMENT_ENTRY = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
SUBMISSION_SET = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
ENTRY_AUTHOR = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"
SET_AUTHOR = "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d"
ENTRY_SCHEMES = {
    "class": "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a",
    "confidentiality": "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f",
    "event": "urn:uuid:2c6b8cb7-8b2a-4051-b291-b1ae6a575ef4",
    "format": "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d",
    "facility": "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1",
    "practice": "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead",
    "type": "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983",
}
CONTENT_TYPE = "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500"
ENTRY_PATIENT = ("urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427", "XDSDocumentEntry.patientId")
ENTRY_UNIQUE = ("urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab", "XDSDocumentEntry.uniqueId")
SET_UNIQUE = ("urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8", "XDSSubmissionSet.uniqueId")
SET_SOURCE = ("urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832", "XDSSubmissionSet.sourceId")
SET_PATIENT = ("urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446", "XDSSubmissionSet.patientId")
HAS_MEMBER = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
RPLC = "urn:ihe:iti:2007:AssociationType:RPLC"
APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
DEPRECATED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated"
UPDATE_STATUS = "urn:ihe:iti:2010:AssociationType:UpdateAvailabilityStatus"


@dataclass
class Submission:
    """One submission set: who submits it, for whom, with which documents."""

    documents: list[tuple[Metadata, str]]  # (metadata, document id in the request / URI)
    source_id: str  # OID of our system (XDSSubmissionSet.sourceId)
    content_type: Code
    author_person: str = ""  # XCN of the submitter (the imager or the system)
    author_institution: str = ""  # XON
    author_role: Code | None = None
    title: str = "Compte rendu d'imagerie médicale"
    unique_id: str = ""
    uri_slots: bool = False  # XDM: each entry names its file (URI slot)
    extra: dict[str, str] = field(default_factory=dict)  # extra entry slots (XDM action)

    purpose: str = "set"  # another purpose (a deprecation) makes another set uniqueId

    def __post_init__(self) -> None:
        if not self.unique_id:
            first = self.documents[0][0].unique_id.replace("^", ".")
            self.unique_id = f"2.25.{uuid.uuid5(ID_NAMESPACE, f'{self.purpose}:{first}').int}"


def _slot(parent: etree._Element, name: str, *values: str) -> None:
    slot = etree.SubElement(parent, f"{{{RIM}}}Slot", name=name)
    holder = etree.SubElement(slot, f"{{{RIM}}}ValueList")
    for value in values:
        etree.SubElement(holder, f"{{{RIM}}}Value").text = value


def _name(parent: etree._Element, text: str) -> None:
    name = etree.SubElement(parent, f"{{{RIM}}}Name")
    etree.SubElement(name, f"{{{RIM}}}LocalizedString", value=text,
                     charset="UTF-8", lang="fr-FR")


def _classify(parent: etree._Element, obj: str, scheme: str, code: Code) -> None:
    node = etree.SubElement(parent, f"{{{RIM}}}Classification", id=_id(),
                            classificationScheme=scheme, classifiedObject=obj,
                            nodeRepresentation=code.code, objectType=CLASSIFICATION)
    _slot(node, "codingScheme", code.scheme)
    _name(node, code.display or code.code)


def _author(parent: etree._Element, obj: str, scheme: str, person: str, institution: str,
            role: Code | None, specialty: Code | None) -> None:
    node = etree.SubElement(parent, f"{{{RIM}}}Classification", id=_id(),
                            classificationScheme=scheme, classifiedObject=obj,
                            nodeRepresentation="", objectType=CLASSIFICATION)
    if person:
        _slot(node, "authorPerson", person)
    if institution:
        _slot(node, "authorInstitution", institution)
    if role is not None:
        _slot(node, "authorRole", f"{role.code}^{role.display}^^^^^^^&{role.scheme}&ISO")
    if specialty is not None:
        _slot(node, "authorSpecialty",
              f"{specialty.code}^{specialty.display}^{specialty.scheme}")


def _external(parent: etree._Element, obj: str, scheme: tuple[str, str], value: str) -> None:
    node = etree.SubElement(parent, f"{{{RIM}}}ExternalIdentifier", id=_id(),
                            registryObject=obj, identificationScheme=scheme[0], value=value,
                            objectType=EXTERNAL_IDENTIFIER)
    _name(node, scheme[1])


CLASSIFICATION = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Classification"
EXTERNAL_IDENTIFIER = ("urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:"
                       "ExternalIdentifier")
ASSOCIATION = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Association"
PACKAGE = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:RegistryPackage"


def _id() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def _entry(parent: etree._Element, meta: Metadata, doc_id: str, sub: Submission) -> str:
    obj = entry_uuid(meta.unique_id)
    entry = etree.SubElement(parent, f"{{{RIM}}}ExtrinsicObject", id=obj,
                             mimeType=meta.mime_type, objectType=DOCUMENT_ENTRY,
                             status=APPROVED)
    _slot(entry, "creationTime", meta.creation_time)
    _slot(entry, "languageCode", meta.language)
    if meta.legal_authenticator:
        _slot(entry, "legalAuthenticator", meta.legal_authenticator)
    if meta.service_start:
        _slot(entry, "serviceStartTime", meta.service_start)
    if meta.service_stop:
        _slot(entry, "serviceStopTime", meta.service_stop)
    _slot(entry, "sourcePatientId", meta.source_patient_id)
    _slot(entry, "sourcePatientInfo", *meta.source_patient_info)
    _slot(entry, "size", str(meta.size))
    _slot(entry, "hash", meta.hash)
    if meta.references:
        _slot(entry, "urn:ihe:iti:xds:2013:referenceIdList", *meta.references)
    if sub.uri_slots:
        _slot(entry, "URI", doc_id)
    for name, value in sub.extra.items():
        _slot(entry, name, value)
    _name(entry, meta.title)
    for person, institution, specialty in meta.authors:
        _author(entry, obj, ENTRY_AUTHOR, person, institution, None, specialty)
    _classify(entry, obj, ENTRY_SCHEMES["class"], meta.class_code)
    for code in meta.confidentiality:
        _classify(entry, obj, ENTRY_SCHEMES["confidentiality"], code)
    for code in meta.events:
        _classify(entry, obj, ENTRY_SCHEMES["event"], code)
    _classify(entry, obj, ENTRY_SCHEMES["format"], meta.format)
    if meta.facility_type is not None:
        _classify(entry, obj, ENTRY_SCHEMES["facility"], meta.facility_type)
    if meta.practice_setting is not None:
        _classify(entry, obj, ENTRY_SCHEMES["practice"], meta.practice_setting)
    _classify(entry, obj, ENTRY_SCHEMES["type"], meta.type)
    _external(entry, obj, ENTRY_PATIENT, meta.patient_id)
    _external(entry, obj, ENTRY_UNIQUE, meta.unique_id)
    return obj


def submit_objects_request(sub: Submission, now: datetime | None = None) -> etree._Element:
    """The ``lcm:SubmitObjectsRequest`` of ``sub`` (ITI-41, ITI-32)."""
    request, objects, package_id = _package(sub, now)
    for meta, doc_id in sub.documents:
        obj = _entry(objects, meta, doc_id, sub)
        member = etree.SubElement(objects, f"{{{RIM}}}Association", id=_id(),
                                  associationType=HAS_MEMBER, sourceObject=package_id,
                                  targetObject=obj, objectType=ASSOCIATION)
        _slot(member, "SubmissionSetStatus", "Original")
        if meta.replaces:
            etree.SubElement(objects, f"{{{RIM}}}Association", id=_id(),
                             associationType=RPLC, sourceObject=obj,
                             targetObject=entry_uuid(meta.replaces), objectType=ASSOCIATION)
    return request


def deprecate_request(sub: Submission, now: datetime | None = None) -> etree._Element:
    """ITI-57 *Update Document Set* (IHE XDS Metadata Update): the documents of ``sub``
    go from Approved to Deprecated — how a document withdrawn by its author leaves the
    registry (the entries are named by their entryUUID, as sent)."""
    request, objects, package_id = _package(sub, now)
    for meta, _ in sub.documents:
        change = etree.SubElement(objects, f"{{{RIM}}}Association", id=_id(),
                                  associationType=UPDATE_STATUS, sourceObject=package_id,
                                  targetObject=entry_uuid(meta.unique_id),
                                  objectType=ASSOCIATION)
        _slot(change, "OriginalStatus", APPROVED)
        _slot(change, "NewStatus", DEPRECATED)
    return request


def _package(sub: Submission, now: datetime | None
             ) -> tuple[etree._Element, etree._Element, str]:
    """The request, its object list and the submission set's id, the set written."""
    request = etree.Element(f"{{{LCM}}}SubmitObjectsRequest", nsmap=NSMAP)
    objects = etree.SubElement(request, f"{{{RIM}}}RegistryObjectList")
    first = sub.documents[0][0]
    package_id = f"urn:uuid:{uuid.uuid5(ID_NAMESPACE, 'package:' + sub.unique_id)}"
    package = etree.SubElement(objects, f"{{{RIM}}}RegistryPackage", id=package_id,
                               objectType=PACKAGE)
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%d%H%M%S")
    _slot(package, "submissionTime", stamp)
    _name(package, sub.title)
    _author(package, package_id, SET_AUTHOR, sub.author_person, sub.author_institution,
            sub.author_role, None)
    _classify(package, package_id, CONTENT_TYPE, sub.content_type)
    _external(package, package_id, SET_UNIQUE, sub.unique_id)
    _external(package, package_id, SET_SOURCE, sub.source_id)
    _external(package, package_id, SET_PATIENT, first.patient_id)
    etree.SubElement(objects, f"{{{RIM}}}Classification", id=_id(),
                     classifiedObject=package_id, classificationNode=SUBMISSION_SET,
                     objectType=CLASSIFICATION)
    return request, objects, package_id


@dataclass
class RegistryResponse:
    """``rs:RegistryResponse``: Success, PartialSuccess or Failure with its errors."""

    status: str
    errors: list[tuple[str, str, str]]  # (errorCode, severity, codeContext)

    @property
    def success(self) -> bool:
        return self.status.endswith(":Success")

    def describe(self) -> str:
        kind = self.status.rsplit(":", 1)[-1]
        return "; ".join([kind, *(f"{code} {context}".strip()
                                  for code, _, context in self.errors)])

    @classmethod
    def parse(cls, node: etree._Element) -> RegistryResponse:
        errors = [(e.get("errorCode", ""), e.get("severity", "").rsplit(":", 1)[-1],
                   e.get("codeContext", ""))
                  for e in node.iterfind(f".//{{{RS}}}RegistryError")]
        return cls(node.get("status", ""), errors)
