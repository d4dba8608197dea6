"""Each final or amended report becomes documents on our FHIR server (issue 8; R-REP-5,
R-REP-6): its CDA N3 (structured) and N1 (PDF) versions, each a Binary and a
DocumentReference carrying the XDS metadata of the CDA header. An amendment's documents
replace the previous version's (``relatesTo`` replaces; the previous ones become
``superseded``). Written by a workflow listener inside the report's write unit, so the
report and its documents are committed together; ids are derived from the report version,
so a replay writes nothing new.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import uuid
from typing import TYPE_CHECKING, Any, Protocol

from adapters.cda import codes, pdf
from adapters.cda.document import Document, act_of, build, modality_of
from adapters.cda.sources import MissingSource, Sources, gather
from fhir_server.workflow.records import body, raw_store, save
from fhir_server.workflow.reports import FINAL, WITHDRAW

if TYPE_CHECKING:
    from fhir_server.core.model import FhirRequest
    from fhir_server.core.server import FhirServer
    from fhir_server.workflow.engine import Case

log = logging.getLogger("teleimagerie.cda")
CLASS = {"system": "urn:oid:1.2.250.1.213.1.1.4.1", "code": "10", "display": "Compte rendu"}
FORMAT_SYSTEM = "urn:oid:1.3.6.1.4.1.19376.1.2.3"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
LEVELS = ("N3", "N1")
_NS = uuid.UUID("9b0c8e51-6c0e-4c55-9d7e-3f1f2c7a2d10")


def resource_id(kind: str, report_id: str, level: str, version: int) -> str:
    return str(uuid.uuid5(_NS, f"{kind}/{report_id}/{level}/{version}"))


class Planner(Protocol):
    """What plans the deliveries of the documents (adapters.delivery.engine.Planner)."""

    def __call__(self, server: FhirServer, src: Sources,
                 documents: dict[str, dict[str, Any]]) -> Any: ...

    def withdraw(self, server: FhirServer, report: str, request: str) -> Any: ...


class Publisher:
    """Workflow listener: documents for the final report and each amendment, and their
    deliveries when a ``planner`` is given (adapters.delivery)."""

    def __init__(self, planner: Planner | None = None) -> None:
        self.planner = planner

    def on_transition(self, server: FhirServer, req: FhirRequest, case: Case,
                      name: str) -> None:
        if name == WITHDRAW and req.resource_type == "DiagnosticReport" and req.id:
            self.withdraw(server, req.id, case)
            return
        if name not in ("final-report", "amend-report"):
            return
        report, version = _latest_report(server, case.request["id"])
        if report is None:
            return
        try:
            src = gather(server, report, version)
            documents = publish(server, src)
        except MissingSource as exc:  # the report stands; its document waits for data
            log.warning("CDA non produit : %s", exc)
            return
        if self.planner is not None:
            self.planner(server, src, dict(zip(LEVELS, documents, strict=True)))

    def withdraw(self, server: FhirServer, report_id: str, case: Case) -> None:
        """The report was entered in error: its documents are too (every version), and
        what was delivered is withdrawn by the ``planner``."""
        store = raw_store(server)
        for level in LEVELS:
            version = 1
            while (ref := body(store.read("DocumentReference", resource_id(
                    "DocumentReference", report_id, level, version)))) is not None:
                if ref.get("status") != "entered-in-error":
                    save(server, "DocumentReference", ref["id"],
                         {**ref, "status": "entered-in-error"})
                version += 1
        if self.planner is not None:
            self.planner.withdraw(server, f"DiagnosticReport/{report_id}",
                                  f"ServiceRequest/{case.request['id']}")


def _latest_report(server: FhirServer, request_id: str) -> tuple[dict[str, Any] | None, int]:
    """The report of the request just made final or amended, and its document version
    (1 + the number of earlier final/amended versions of that report)."""
    from fhir_server.security.care import all_matches

    store = raw_store(server)
    found = [body(i) for i in all_matches(store, server.limits, "DiagnosticReport",
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
    store = raw_store(server)
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


def document_reference(src: Sources, doc: Document, ref_id: str, binary_id: str
                       ) -> dict[str, Any]:
    """The XDS metadata of the CDA header (ANS *mapping.md*) as a DocumentReference."""
    report = src.report
    issued = report.get("issued") or report.get("effectiveDateTime")
    authors = [{"reference": f"Practitioner/{src.author['id']}"}] if src.author else []
    if src.author_org is not None:
        authors.append({"reference": f"Organization/{src.author_org['id']}"})
    events = []
    modality = modality_of(src)
    if modality:
        events.append({"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM",
                                   "code": modality}]})
    act = act_of(src)
    if act:
        events.append({"coding": [act]})
    related = []
    if src.request:
        related.append({"reference": f"ServiceRequest/{src.request['id']}"})
    for study in src.studies:
        related.append({"reference": f"ImagingStudy/{study['id']}"})
    started = next((s.get("started") for s in src.studies if s.get("started")), None)
    context: dict[str, Any] = {
        "sourcePatientInfo": {"reference": f"Patient/{src.patient['id']}"},
        "facilityType": {"coding": [{"system": f"urn:oid:{codes.FACILITY_TYPE}",
                                     "code": "SA01"}]},
        "practiceSetting": {"coding": [{"system": f"urn:oid:{codes.PRACTICE_SETTING}",
                                        "code": "ETABLISSEMENT"}]}}
    if events:
        context["event"] = events
    if related:
        context["related"] = related
    if started or issued:
        context["period"] = {k: v for k, v in (("start", started), ("end", issued)) if v}
    out: dict[str, Any] = {
        "resourceType": "DocumentReference", "id": ref_id,
        "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:oid:{doc.id}"},
        "identifier": [{"use": "official", "system": "urn:ietf:rfc:3986",
                        "value": f"urn:uuid:{uuid.uuid5(_NS, doc.id)}"}],
        "status": "current",
        "docStatus": "amended" if doc.version > 1 else "final",
        "type": {"coding": [{"system": "http://loinc.org", "code": codes.REPORT_CODE[0],
                             "display": codes.REPORT_CODE[1]}]},
        "category": [{"coding": [CLASS]}],
        "subject": {"reference": f"Patient/{src.patient['id']}"},
        "author": authors,
        "description": f"{doc.level} — version {doc.version} — DiagnosticReport/"
                       f"{report['id']}",
        "securityLabel": [{"coding": [{"system": CONFIDENTIALITY, "code": "N"}]}],
        "content": [{"attachment": {
            "contentType": doc.media_type, "language": "fr-FR",
            "url": f"Binary/{binary_id}", "size": len(doc.xml),
            "hash": base64.b64encode(hashlib.sha1(doc.xml).digest()).decode(),
            "title": f"Compte rendu d'imagerie ({doc.level})"},
            "format": {"system": FORMAT_SYSTEM, "code": doc.format_code}}],
        "context": context,
    }
    if issued:
        out["date"] = issued
        out["content"][0]["attachment"]["creation"] = issued
    if src.author:
        out["authenticator"] = {"reference": f"Practitioner/{src.author['id']}"}
    custodian = src.site or src.author_org
    if custodian is not None:
        out["custodian"] = {"reference": f"Organization/{custodian['id']}"}
    return out
