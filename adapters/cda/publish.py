"""Each final or amended report becomes documents on our FHIR server (issue 8; R-REP-5,
R-REP-6): its CDA N3 (structured) and N1 (PDF) versions, each a Binary and a
DocumentReference carrying the XDS metadata of the CDA header. An amendment's documents
replace the previous version's (``relatesTo`` replaces; the previous ones become
``superseded``). Written by the handler of :class:`ReportIssued` inside the report's
write unit, so the report and its documents are committed together; ids are derived from
the report version, so a replay writes nothing new. The documents stored, it publishes
:class:`DocumentsAvailable` (the delivery planner's), a withdrawal
:class:`DocumentsWithdrawn` (ADR 0022).
"""

from __future__ import annotations

import base64
import logging
import re
import uuid
from typing import TYPE_CHECKING, Any

from adapters.cda import codes, metadata, pdf
from adapters.cda.document import Document, build
from adapters.cda.sources import MissingSource, Sources, gather
from adapters.principals import CDA_PUBLISHER
from fhir_server.security import masking
from fhir_server.security.system import as_system
from fhir_server.workflow.events import (
    DocumentsAvailable,
    DocumentsWithdrawn,
    Events,
    ReportIssued,
    ReportWithdrawn,
)
from fhir_server.workflow.events import (
    publish as emit,
)
from fhir_server.workflow.records import body, matches, save
from fhir_server.workflow.reports import FINAL

if TYPE_CHECKING:
    from fhir_server.server.dispatch import FhirServer

log = logging.getLogger("teleimagerie.cda")
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
LEVELS = ("N3", "N1")
_NS = uuid.UUID("9b0c8e51-6c0e-4c55-9d7e-3f1f2c7a2d10")


def resource_id(kind: str, report_id: str, level: str, version: int) -> str:
    return str(uuid.uuid5(_NS, f"{kind}/{report_id}/{level}/{version}"))


class Publisher:
    """The documents of the final report and of each amendment (handlers of the
    workflow's events, subscribed by the composition root)."""

    def subscribe(self, events: Events) -> None:
        events.subscribe(ReportIssued, self.issued)
        events.subscribe(ReportWithdrawn, self.withdrawn)

    def issued(self, server: FhirServer, event: ReportIssued) -> None:
        report, version = _latest_report(server, event.case.request["id"])
        if report is None:
            return
        try:
            src = gather(server, report, version)
            documents = publish(server, src)
        except MissingSource as exc:  # the report stands; its document waits for data
            log.warning("CDA non produit : %s", exc)
            return
        emit(server, DocumentsAvailable(event.req, src,
                                        dict(zip(LEVELS, documents, strict=True))))

    def withdrawn(self, server: FhirServer, event: ReportWithdrawn) -> None:
        """The report was entered in error: its documents are too (every version), and
        what was delivered is withdrawn (:class:`DocumentsWithdrawn`)."""
        report_id = event.report_id
        store = as_system(server, CDA_PUBLISHER)  # the documents are the server's records
        for level in LEVELS:
            version = 1
            while (ref := body(store.read("DocumentReference", resource_id(
                    "DocumentReference", report_id, level, version)))) is not None:
                if ref.get("status") != "entered-in-error":
                    save(server, "DocumentReference", ref["id"],
                         {**ref, "status": "entered-in-error"})
                version += 1
        emit(server, DocumentsWithdrawn(event.req, f"DiagnosticReport/{report_id}",
                                        f"ServiceRequest/{event.case.request['id']}"))


def _latest_report(server: FhirServer, request_id: str) -> tuple[dict[str, Any] | None, int]:
    """The report of the request just made final or amended, and its document version
    (1 + the number of earlier final/amended versions of that report)."""
    store = as_system(server, CDA_PUBLISHER)  # in the report's write unit, already guarded
    found = [body(i) for i in matches(server, "DiagnosticReport",
                                      [("based-on", f"ServiceRequest/{request_id}")])
             if not i.deleted]
    reports = [r for r in found if r and r.get("status") in FINAL]
    if not reports:
        return None, 0
    report = max(reports, key=lambda r: (r.get("meta") or {}).get("lastUpdated", ""))
    history = store.history("DiagnosticReport", report["id"], None, 1000, None, counted=False)
    finals = sum(1 for item in history.items
                 if (body(item) or {}).get("status") in FINAL)
    return report, max(finals, 1)


def publish(server: FhirServer, src: Sources) -> list[dict[str, Any]]:
    """Store the N3 and N1 documents of ``src``; returns their DocumentReferences."""
    rendered = pdf.render(src)
    out = []
    for level in LEVELS:
        doc = build(src, level, rendered if level == "N1" else None)
        out.append(_store(server, src, doc))
    return out


def _store(server: FhirServer, src: Sources, doc: Document) -> dict[str, Any]:
    rid = src.report_id
    binary_id = resource_id("Binary", rid, doc.level, doc.version)
    ref_id = resource_id("DocumentReference", rid, doc.level, doc.version)
    store = as_system(server, CDA_PUBLISHER)
    existing = body(store.read("DocumentReference", ref_id))
    if existing is not None:
        return existing
    save(server, "Binary", binary_id, {
        "resourceType": "Binary", "contentType": doc.media_type,
        "securityContext": {"reference": f"DocumentReference/{ref_id}"},
        "data": base64.b64encode(doc.xml).decode()})
    reference = document_reference(src, doc, ref_id, binary_id)
    if doc.version > 1:
        previous = resource_id("DocumentReference", rid, doc.level, doc.version - 1)
        old = body(store.read("DocumentReference", previous))
        if old is not None:
            reference["relatesTo"] = [{"code": "replaces",
                                       "target": {"reference": f"DocumentReference/{previous}"}}]
            save(server, "DocumentReference", previous, {**old, "status": "superseded"})
    return body(save(server, "DocumentReference", ref_id, reference)) or reference


# OIDs of the XDS metadata -> FHIR code systems (FHIR R4 terminology; TRE_A07)
FHIR_SYSTEMS = {oid: uri for uri, (oid, _) in codes.SYSTEMS.items()} | {
    codes.CONFIDENTIALITY: CONFIDENTIALITY, masking.OID: masking.SYSTEM}
# referenceIdList types with an HL7 v2 table 0203 code (a Study Instance UID has none)
REFERENCE_TYPES = {metadata.REF_ACCESSION: "ACSN", metadata.REF_ORDER: "PLAC"}


def coding(code: metadata.Code) -> dict[str, Any]:
    out = {"system": FHIR_SYSTEMS.get(code.scheme, f"urn:oid:{code.scheme}"), "code": code.code}
    if code.display:
        out["display"] = code.display
    return out


def instant(dtm: str) -> str | None:
    """XDS DTM (UTC digits) -> FHIR dateTime at its precision."""
    digits = re.sub(r"\D", "", dtm)
    if len(digits) < 4:
        return None
    parts = [digits[0:4], digits[4:6], digits[6:8]]
    date = "-".join(p for p in parts if p)
    if len(digits) < 12:
        return date
    time = f"{digits[8:10]}:{digits[10:12]}:{digits[12:14] or '00'}"
    return f"{date}T{time}Z"


def _related(meta: metadata.Metadata) -> list[dict[str, Any]]:
    """referenceIdList (CX ``id^^^&root&ISO^type``) -> context.related identifiers."""
    out = []
    for cx in meta.references:
        fields = cx.split("^")
        value, authority, kind = fields[0], (fields[3:4] or [""])[0], fields[-1]
        root = authority.split("&")[1] if authority.count("&") >= 2 else ""
        ident: dict[str, Any]
        if kind == metadata.REF_STUDY:
            ident = {"system": "urn:dicom:uid", "value": f"urn:oid:{value}"}
        else:
            ident = {"system": f"urn:oid:{root}" if root else "urn:ietf:rfc:3986",
                     "value": value}
        ident["type"] = {"text": kind}
        if kind in REFERENCE_TYPES:
            ident["type"]["coding"] = [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                  "v2-0203", "code": REFERENCE_TYPES[kind]}]
        out.append({"identifier": ident})
    return out


def document_reference(src: Sources, doc: Document, ref_id: str, binary_id: str
                       ) -> dict[str, Any]:
    """The document's XDS metadata (:func:`metadata.read`, the derivation the XDS.b,
    MDM and XDM channels use) as an IHE MHD DocumentReference (ITI-65 mapping; FR PDSm):
    uniqueId -> masterIdentifier, entryUUID -> identifier, confidentiality and masking
    -> securityLabel, referenceIdList -> context.related…"""
    meta = metadata.read(doc.xml, masking.chosen(src.report))
    author = f"Practitioner/{src.author['id']}" if src.author else None
    authors = [{"reference": author}] if author else []
    if src.author_org is not None:
        authors.append({"reference": f"Organization/{src.author_org['id']}"})
    related = [{"reference": f"ServiceRequest/{src.request['id']}"}] if src.request else []
    related += [{"reference": f"ImagingStudy/{study['id']}"} for study in src.studies]
    root, _, extension = meta.unique_id.partition("^")
    context: dict[str, Any] = {
        "event": [{"coding": [coding(c)]} for c in meta.events],
        "period": {k: v for k, v in (("start", instant(meta.service_start)),
                                      ("end", instant(meta.service_stop))) if v},
        "facilityType": {"coding": [coding(meta.facility_type)]} if meta.facility_type
        else None,
        "practiceSetting": {"coding": [coding(meta.practice_setting)]}
        if meta.practice_setting else None,
        "sourcePatientInfo": {"reference": f"Patient/{src.patient['id']}"},
        "related": related + _related(meta)}
    attachment = {
        "contentType": doc.media_type, "language": meta.language,
        "url": f"Binary/{binary_id}", "size": meta.size,
        "hash": base64.b64encode(bytes.fromhex(meta.hash)).decode(),
        "title": meta.title or f"Compte rendu d'imagerie ({doc.level})",
        "creation": instant(meta.creation_time)}
    issued = src.report.get("issued") or src.report.get("effectiveDateTime")
    custodian = src.site or src.author_org
    out: dict[str, Any] = {
        "resourceType": "DocumentReference", "id": ref_id,
        "masterIdentifier": {"system": f"urn:oid:{root}", "value": extension} if extension
        else {"system": "urn:ietf:rfc:3986", "value": f"urn:oid:{root}"},
        "identifier": [{"use": "official", "system": "urn:ietf:rfc:3986",
                        "value": meta.entry_uuid}],
        "status": "current",
        "docStatus": "amended" if meta.version > 1 else "final",
        "type": {"coding": [coding(c) for c in [meta.type, *meta.type_translations]]},
        "category": [{"coding": [coding(meta.class_code)]}],
        "subject": {"reference": f"Patient/{src.patient['id']}"},
        "date": issued,
        "author": authors,
        "authenticator": {"reference": author} if author else None,
        "custodian": {"reference": f"Organization/{custodian['id']}"} if custodian else None,
        "description": f"{doc.level} — version {meta.version} — DiagnosticReport/"
                       f"{src.report_id}",
        "securityLabel": [{"coding": [coding(c)]} for c in meta.confidentiality],
        "content": [{"attachment": attachment, "format": coding(meta.format)}],
        "context": context,
    }
    pruned: dict[str, Any] = _pruned(out)
    return pruned


def _pruned(value: Any) -> Any:
    """Without the empty elements (FHIR forbids them)."""
    if isinstance(value, dict):
        kept = {k: _pruned(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v not in (None, "", [], {})}
    if isinstance(value, list):
        return [v for v in (_pruned(i) for i in value) if v not in (None, "", [], {})]
    return value
