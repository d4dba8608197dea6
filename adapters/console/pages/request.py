"""The request page (issue 30 page 1): the patient's identity and its INS status
(R-EXAM-1), the request's clinical content (R-REQ-1..3), the consent state and the
a-posteriori information task (R-CONS-2..5), the transitions this user may take
(R-VAL-*, exactly those of the state machine for the state, the act kind and the user's
roles; the server's refusal shown in its own words), the study with its series, dose and
viewer link (R-REP-7, R-REP-3), and the report editor issuing a preliminary, final or
amended DiagnosticReport (R-REP-1, R-CONS-5 masking) with the delivery of each version
(R-REP-5, R-REP-6).

Everything is read and written through the core as the signed-in user
(:mod:`adapters.console.fhir`): a request outside their care relationship is the API's
404, and nothing of it is shown."""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from adapters.console import requests as rq
from adapters.console.fhir import Answer
from adapters.console.pages.worklist import CareUser
from adapters.console.web import PREFIX, Posted, User, console
from adapters.delivery.outbox import CHANNEL_LABELS, Delivery
from adapters.delivery.outbox import CODE as DELIVERY_CODE
from adapters.delivery.outbox import STATES as DELIVERY_STATES
from adapters.delivery.outbox import SYSTEM as DELIVERY_SYSTEM
from fhir_server.security import masking
from fhir_server.security.principal import RPPS_OID
from fhir_server.workflow.machine import (
    ALTERNATIVE_SYSTEM,
    EXT_MODALITY,
    INFORMATION,
    NUCLEAR_MODALITIES,
    REFUSAL_SYSTEM,
    REPORT_SOURCES,
    STATES,
    TASK_SYSTEM,
    TRANSITIONS,
)
from fhir_server.workflow.operations import ELIGIBILITY

router = APIRouter()
PARIS = ZoneInfo("Europe/Paris")
CONSENT_CATEGORY = "https://teleimagerie.fr/fhir/CodeSystem/teleimagerie-consent-category"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
CRITICAL = "AA"  # R-REP-1: a critical result notifies the requester at once
PROFILE = "https://teleimagerie.fr/fhir/StructureDefinition/tlm-diagnostic-report"
XHTML = "http://www.w3.org/1999/xhtml"
AMENDABLE = frozenset({"cr-definitif", "cr-modifie"})


def _ref(resource: dict[str, Any] | None) -> str:
    return f"{resource['resourceType']}/{resource['id']}" if resource else ""


def _id(reference: str) -> tuple[str, str]:
    kind, _, rid = reference.partition("/")
    return kind, rid.split("/")[0]


def _read(user: User, reference: str | None) -> dict[str, Any] | None:
    if not reference or "/" not in reference:
        return None
    answer = user.fhir.read(*_id(reference))
    return answer.resource if answer.ok else None


def _consents(user: User, patient: str, request_ref: str) -> dict[str, Any]:
    """R-CONS-2..5: the patient's consents that apply to this request, by category, and
    the a-posteriori information task (R-CONS-3)."""
    found = user.fhir.search("Consent", [("patient", patient), ("_count", "100"),
                                         ("_sort", "-_lastUpdated")])
    rows = []
    for c in found.entries("Consent"):
        data = [str((d.get("reference") or {}).get("reference") or "")
                for d in (c.get("provision") or {}).get("data") or []]
        if data and request_ref not in data:
            continue  # a consent about another request of the patient
        rows.append({"categories": [rq.concept_text(cat) for cat in c.get("category") or []],
                     "codes": [rq.first_coding(cat).get("code") for cat in
                               c.get("category") or []],
                     "decision": (c.get("provision") or {}).get("type", "permit"),
                     "status": c.get("status"), "date": c.get("dateTime") or "",
                     "method": rq.concept_text(rq.extension(
                         c, "https://teleimagerie.fr/fhir/StructureDefinition/"
                            "tlm-consent-method")),
                     "actors": [str((a.get("reference") or {}).get("display") or
                                    (a.get("reference") or {}).get("reference") or "")
                                for a in (c.get("provision") or {}).get("actor") or []]})
    active = [r for r in rows if r["status"] == "active"]

    def given(code: str) -> bool | None:
        for r in active:  # the latest first
            if code in r["codes"]:
                return bool(r["decision"] == "permit")
        return None

    info = user.fhir.search("Task", [("focus", request_ref),
                                     ("code", f"{TASK_SYSTEM}|{INFORMATION}")])
    task = next(iter(info.entries("Task")), None)
    return {"rows": rows, "act": given("acte"), "remote": given("teleimagerie"),
            "dmp": given("partage-dmp"), "professionals": given("partage-professionnels"),
            "information": None if task is None else {
                "status": task.get("status"), "due": rq.due_of(task),
                "overdue": task.get("status") == "requested" and _past(rq.due_of(task))}}


def _past(when: str) -> bool:
    try:
        moment = datetime.fromisoformat(when.replace("Z", "+00:00"))
    except ValueError:
        return False
    return moment.tzinfo is not None and moment < datetime.now(UTC)


def viewer(template: str, endpoint: dict[str, Any], uid: str) -> str:
    """The link to the study's images (R-REP-7): the configured viewer (DRIMbox, IHE IID)
    or, for a WADO-RS Endpoint, its study URL."""
    address = str(endpoint.get("address") or "").rstrip("/")
    if template:
        return template.replace("{uid}", quote(uid, safe="")).replace("{wado}", address)
    kind = str((endpoint.get("connectionType") or {}).get("code") or "")
    return f"{address}/studies/{quote(uid, safe='')}" if kind == "dicom-wado-rs" and uid \
        else address


def _study(user: User, request_ref: str, template: str = "") -> dict[str, Any] | None:
    """The study based on the request, its series, its Endpoint (the viewer link) and
    its dose Observations (R-REP-3, R-REP-7)."""
    found = user.fhir.search("ImagingStudy", [("based-on", request_ref),
                                              ("_include", "ImagingStudy:endpoint")])
    studies = found.entries("ImagingStudy", "match")
    if not studies:
        return None
    study = studies[0]
    endpoints = found.entries("Endpoint")
    doses = user.fhir.search("Observation", [("part-of", _ref(study)), ("_count", "50")])
    uid = next((str(i.get("value", "")).removeprefix("urn:oid:")
                for i in study.get("identifier") or [] if i.get("system") == "urn:dicom:uid"),
               "")
    return {
        "resource": study, "ref": _ref(study), "uid": uid,
        "started": study.get("started") or "", "status": study.get("status"),
        "description": study.get("description") or "",
        "instances": study.get("numberOfInstances"),
        "series": [{"number": s.get("number"), "modality": (s.get("modality") or {}).get(
            "code"), "description": s.get("description") or "",
            "instances": s.get("numberOfInstances") or len(s.get("instance") or []),
            "body": rq.concept_text({"coding": [s["bodySite"]]}) if s.get("bodySite") else ""}
            for s in study.get("series") or []],
        "viewers": [{"address": viewer(template, e, uid), "name": e.get("name") or
                     rq.concept_text({"coding": [e.get("connectionType") or {}]})}
                    for e in endpoints if e.get("address")],
        "doses": [{"ref": _ref(o), "label": rq.concept_text(o.get("code")),
                   "value": _quantity(o)} for o in doses.entries("Observation")],
        "incidents": [e.get("valueString") or rq.concept_text(e.get("valueCodeableConcept"))
                      for e in study.get("extension") or []
                      if str(e.get("url", "")).endswith("tlm-technical-incident")],
    }


def _quantity(observation: dict[str, Any]) -> str:
    q = observation.get("valueQuantity") or {}
    if q.get("value") is None:
        return ""
    return f"{q['value']} {q.get('unit') or q.get('code') or ''}".strip()


def _reports(user: User, request_ref: str) -> list[dict[str, Any]]:
    """Each report with its versions, each version with its deliveries (R-REP-5/6)."""
    found = user.fhir.search("DiagnosticReport", [("based-on", request_ref),
                                                  ("_sort", "-_lastUpdated")])
    deliveries = user.fhir.search("Task", [
        ("code", f"{DELIVERY_SYSTEM}|{DELIVERY_CODE}"), ("based-on", request_ref),
        ("_count", "200")])
    by_version: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for task in deliveries.entries("Task"):
        try:
            d = Delivery.parse(task)
        except (KeyError, IndexError, TypeError):
            continue
        by_version.setdefault((d.report, d.version), []).append({
            "channel": CHANNEL_LABELS.get(d.channel, d.channel), "state": d.state,
            "label": DELIVERY_STATES.get(d.state, ("", d.state))[1], "detail": d.detail,
            "attempts": d.attempts, "recipient": d.address or d.recipient or "",
            "sent": d.sent or "", "next": d.next_attempt or "", "response": d.response,
            "action": d.action})
    out = []
    for report in found.entries("DiagnosticReport", "match"):
        ref = _ref(report)
        history = user.fhir.call("GET", f"{ref}/_history", [("_count", "50")])
        versions = []
        for v in history.entries("DiagnosticReport") or [report]:
            number = int((v.get("meta") or {}).get("versionId") or 0)
            versions.append({"version": number, "status": v.get("status"),
                             "issued": v.get("issued") or (v.get("meta") or {}).get(
                                 "lastUpdated") or "", "conclusion": v.get("conclusion"),
                             "deliveries": by_version.get((ref, number), [])})
        out.append({"resource": report, "ref": ref, "versions": versions,
                    "masking": masking.chosen(report),
                    "critical": any(rq.first_coding(c).get("code") == CRITICAL
                                    for c in report.get("conclusionCode") or []),
                    "text": _plain(report)})
    return out


def _plain(report: dict[str, Any]) -> str:
    """The report's narrative as the text the editor shows (paragraphs, no XHTML)."""
    from adapters.cda.document import findings

    return findings(report)


def _view(request: Request, user: User, rid: str, message: str = "", error: str = "",
          status: int = 200, form: dict[str, str] | None = None) -> Response:
    here = console(request)
    found = user.fhir.read("ServiceRequest", rid)
    if not found.ok:  # the API's own answer (404 outside the care relationship)
        return here.render(request, "error.html", user, status=found.status,
                           title="Demande inaccessible", message=found.message)
    sr = found.resource
    ref = f"ServiceRequest/{rid}"
    tasks = user.fhir.search("Task", [("focus", ref), ("code", rq.act_kind_param(""))])
    task = next(iter(tasks.entries("Task")), {})
    state, kind = rq.state_of(task), rq.kind_of_task(task) or "telediagnostic"
    patient_ref = str((sr.get("subject") or {}).get("reference") or "")
    patient = _read(user, patient_ref)
    requester = _read(user, str((sr.get("requester") or {}).get("reference") or ""))
    if requester and requester.get("resourceType") == "PractitionerRole":
        requester = _read(user, str((requester.get("practitioner") or {}).get(
            "reference") or "")) or requester
    modality = rq.extension(sr, EXT_MODALITY) or {}
    code = str(modality.get("code") or "") if isinstance(modality, dict) else ""
    transitions = rq.allowed(state, kind, user.roles)
    reports = _reports(user, ref)
    can_report = user.has("remote-imager") and (
        state in REPORT_SOURCES.get(kind, frozenset()) or state in AMENDABLE)
    performers = [p for p in (_read(user, str(x.get("reference") or ""))
                              for x in sr.get("performer") or []
                              if str(x.get("reference", "")).startswith("Practitioner/"))
                  if p]
    return here.render(
        request, "request.html", user, status=status, title="Demande",
        sr=sr, rid=rid, task=task, state=state, state_label=STATES[state].display
        if state in STATES else "État inconnu", kind=kind, kind_label=rq.KIND_LABELS.get(
            kind, kind), due=rq.due_of(task), late=rq.late(task),
        priority=rq.PRIORITIES.get(str(sr.get("priority")), sr.get("priority") or ""),
        patient=rq.identity(patient) if patient else None,
        requester=rq.person_name(requester), clinical=rq.clinical(sr),
        consents=_consents(user, patient_ref, ref) if patient_ref else None,
        study=_study(user, ref, here.config.viewer_url), reports=reports, transitions=transitions,
        labels=rq.LABELS, refusal_reasons=[c for c in rq.concepts(
            "teleimagerie-refusal-reason") if c[0] != "qualite-images"],
        alternatives=rq.concepts("teleimagerie-alternative-path"),
        eligibility=list(ELIGIBILITY.items()), nuclear=code in NUCLEAR_MODALITIES,
        performers=[(_ref(p), rq.person_name(p)) for p in performers],
        can_report=can_report, masking_labels=list(masking.LABELS.items()),
        report=next((r for r in reports if r["resource"].get("status") in (
            "preliminary", "final", "amended", "corrected")), None),
        amend=state in AMENDABLE, message=message, error=error, form=form or {},
        modality=code)


@router.get("/demande/{rid}", name="console-request")
def request_page(request: Request, user: CareUser, rid: str, ok: str = "") -> Response:
    return _view(request, user, rid, message=ok)


def _when(local: str) -> str:
    """A datetime-local field (Paris time) as a FHIR dateTime with its offset."""
    try:
        moment = datetime.fromisoformat(local)
    except ValueError:
        return local
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=PARIS)
    return moment.isoformat(timespec="seconds")


# each operation's form fields and how each becomes a parameter (docs/workflow.md)
FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    "accept": (("note", "text"), ("protocol", "text"),
               *((key, "boolean") for key in ELIGIBILITY)),
    "refuse": (("reason", "refusal"), ("text", "text"), ("alternative", "alternative")),
    "schedule": (("occurrence", "dateTime"), ("note", "text")),
    "start": (("nuclear-physician", "reference"), ("video-exchange", "boolean"),
              ("note", "text")),
    "images-available": (("note", "text"),),
    "refuse-quality": (("text", "text"),),
    "cancel": (("text", "text"),),
}


def _value(kind: str, raw: str) -> dict[str, Any]:
    if kind == "boolean":
        return {"valueBoolean": True}
    if kind == "refusal":
        return {"valueCoding": {"system": REFUSAL_SYSTEM, "code": raw}}
    if kind == "alternative":
        return {"valueCoding": {"system": ALTERNATIVE_SYSTEM, "code": raw}}
    if kind == "dateTime":
        return {"valueDateTime": _when(raw)}
    if kind == "reference":
        return {"valueReference": {"reference": raw}}
    return {"valueString": raw}


def parameters(name: str, form: dict[str, str]) -> list[dict[str, Any]]:
    """The Parameters of operation ``name`` from its form: the fields filled in."""
    return [{"name": key, **_value(kind, form[key].strip())}
            for key, kind in FIELDS.get(name, ()) if form.get(key, "").strip()]


@router.post("/demande/{rid}/operation/{name}", name="console-request-operation")
def operation(request: Request, user: CareUser, form: Posted, rid: str, name: str
              ) -> Response:
    """Fires ``$name`` on the request through the core; its refusal is shown as the
    server's message, on the page, with what was typed kept."""
    if name not in TRANSITIONS or not TRANSITIONS[name].operation:
        return _view(request, user, rid, error=f"Opération inconnue : {name}", status=404)
    values = {k: str(v) for k, v in form.items() if k != "csrf"}
    answer: Answer = user.fhir.operation(f"ServiceRequest/{rid}/${name}",
                                         parameters(name, values))
    if not answer.ok:
        return _view(request, user, rid, error=answer.message, status=answer.status,
                     form={"operation": name, **values})
    done = f"{rq.LABELS.get(name, name)} : fait."
    return RedirectResponse(f"{PREFIX}/demande/{rid}?ok={_q(done)}", status_code=303)


def _q(text: str) -> str:
    return quote(text, safe="")


def _practitioner(user: User) -> str | None:
    """The signed-in professional's Practitioner (by their idNatPs), the report's
    performer (R-ACT-4)."""
    nat = user.principal.id_nat_ps
    if not nat:
        return None
    found = user.fhir.search("Practitioner", [("identifier", f"{RPPS_OID}|{nat}")])
    hit = next(iter(found.entries("Practitioner")), None)
    return _ref(hit) if hit else None


def _narrative(text: str) -> dict[str, str] | None:
    """The findings as the report's narrative (XHTML paragraphs, escaped)."""
    paragraphs = [p.strip() for p in text.replace("\r\n", "\n").split("\n\n") if p.strip()]
    if not paragraphs:
        return None
    body = "".join(f"<p>{html.escape(p).replace(chr(10), '<br/>')}</p>" for p in paragraphs)
    return {"status": "additional", "div": f'<div xmlns="{XHTML}">{body}</div>'}


def report_resource(sr: dict[str, Any], form: dict[str, str], status: str, performer: str,
                    study: dict[str, Any] | None, previous: dict[str, Any] | None
                    ) -> dict[str, Any]:
    """The DiagnosticReport the editor issues (tlm-diagnostic-report; R-REP-1, R-REP-3,
    R-ACT-4, R-CONS-5 masking), a new version of ``previous`` when there is one."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    report: dict[str, Any] = dict(previous or {})
    for key in ("text", "conclusionCode", "extension", "result"):
        report.pop(key, None)
    report.update({
        "resourceType": "DiagnosticReport", "meta": {"profile": [PROFILE]},
        "status": status, "language": "fr-FR",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074",
                                  "code": "RAD"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "18748-4",
                             "display": "Diagnostic imaging study"}]},
        "subject": sr.get("subject"), "basedOn": [{"reference": f"ServiceRequest/{sr['id']}"}],
        "effectiveDateTime": (study or {}).get("started") or report.get(
            "effectiveDateTime") or now,
        "issued": now, "performer": [{"reference": performer}],
        "conclusion": form.get("conclusion", "").strip() or None})
    if study:
        report["imagingStudy"] = [{"reference": study["ref"]}]
        if study["doses"]:
            report["result"] = [{"reference": d["ref"]} for d in study["doses"]]
    narrative = _narrative(form.get("text", ""))
    if narrative:
        report["text"] = narrative
    if form.get("critical"):
        report["conclusionCode"] = [{"coding": [{"system": INTERPRETATION, "code": CRITICAL,
                                                 "display": "Critical abnormal"}]}]
    codes = [c for c in masking.LABELS if form.get(f"masque-{c}")]
    if codes:
        report["extension"] = [{"url": masking.EXTENSION, "valueCoding": {
            "system": masking.SYSTEM, "code": c}} for c in codes]
    return {k: v for k, v in report.items() if v is not None}


@router.post("/demande/{rid}/compte-rendu", name="console-request-report")
def issue_report(request: Request, user: CareUser, form: Posted, rid: str) -> Response:
    """Issues the report: ``preliminary`` or ``final`` (a new report, or the next version
    of the preliminary one), ``amended`` after a final one (R-REP-6: a replacement)."""
    values = {k: str(v) for k, v in form.items() if k != "csrf"}
    wanted = values.get("status", "preliminary")
    found = user.fhir.read("ServiceRequest", rid)
    if not found.ok:
        return _view(request, user, rid)
    ref = f"ServiceRequest/{rid}"
    previous = next((r["resource"] for r in _reports(user, ref) if r["resource"].get(
        "status") in ("preliminary", "final", "amended", "corrected")), None)
    if previous is not None and previous.get("status") in ("final", "amended", "corrected"):
        wanted = "amended"
    elif wanted not in ("preliminary", "final"):
        wanted = "preliminary"
    performer = _practitioner(user)
    if performer is None:
        return _view(request, user, rid, status=422, form={"report": "1", **values},
                     error="Votre identifiant national (RPPS) ne correspond à aucun "
                           "professionnel de l'annuaire : le compte rendu ne peut pas être "
                           "signé (R-ACT-2, R-ACT-4).")
    report = report_resource(found.resource, values, wanted, performer, _study(user, ref),
                             previous)
    if previous is None:
        answer = user.fhir.create(report)
    else:
        answer = user.fhir.update(report, str((previous.get("meta") or {}).get("versionId")))
    if not answer.ok:
        return _view(request, user, rid, error=answer.message, status=answer.status,
                     form={"report": "1", **values})
    done = {"preliminary": "Compte rendu préliminaire enregistré.",
            "final": "Compte rendu définitif signé.",
            "amended": "Compte rendu modifié (nouvelle version) signé."}[wanted]
    return RedirectResponse(f"{PREFIX}/demande/{rid}?ok={_q(done)}", status_code=303)
