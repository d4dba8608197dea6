"""The report rules (R-REP-1..5, R-ACT-2, R-ACT-4, R-EXAM-3) and what a report triggers.

Checked on every write of a DiagnosticReport based on a téléimagerie request; a report
drives the request to ``cr-preliminaire``, ``cr-definitif`` or ``cr-modifie``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fhir_server.core.errors import ErrorKind, FhirError, Issue
from fhir_server.core.model import FhirRequest
from fhir_server.store.base import Stored
from fhir_server.workflow.events import ReportIssued, ReportWithdrawn
from fhir_server.workflow.machine import (
    DOSE_MODALITIES,
    EXT_DOSE_UNAVAILABLE,
    EXT_INCIDENT,
    EXT_LATE,
    EXT_TURNAROUND,
    FLAG_SYSTEM,
    QUALIFYING,
    REPORT_SOURCES,
    SPECIALTY_SYSTEMS,
    TASK_SYSTEM,
    TELEDIAGNOSTIC,
    TRANSITIONS,
)
from fhir_server.workflow.records import (
    codes,
    coding,
    load,
    new_id,
    now,
    parse_instant,
    ref_of,
    rule,
    save,
    split,
    step_time,
)

if TYPE_CHECKING:
    from fhir_server.server.dispatch import FhirServer
    from fhir_server.workflow.engine import Case, Workflow

FINAL = ("final", "amended", "corrected", "appended")
# a check a final/amended report must pass (e.g. its CDA documents against the ANS
# schematrons, issue 26): (server, case, report, previous version) -> what is wrong
ReportCheck = Callable[["FhirServer", "Case", dict[str, Any], "dict[str, Any] | None"],
                       list[Issue]]
# the listeners' event for a final report set to entered-in-error (not a state change)
DCM = "http://dicom.nema.org/resources/ontology/DCM"
DOSE_CODES = frozenset({"113813", "113830", "111637", "113722", "113725", "113507"})
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
CRITICAL = frozenset({"AA", "HH", "LL"})  # critical abnormal / critical high / low
RPPS_SYSTEMS = frozenset({"urn:oid:1.2.250.1.71.4.2.1", "https://rpps.esante.gouv.fr"})
COMM_CATEGORY = "http://terminology.hl7.org/CodeSystem/communication-category"


def incidents_of(resource: dict[str, Any]) -> list[str]:
    return [e["valueString"] for e in resource.get("extension") or []
            if isinstance(e, dict) and e.get("url") == EXT_INCIDENT
            and isinstance(e.get("valueString"), str)]


def record_incidents(case: Case, incidents: list[str]) -> None:
    """Incidents recorded on the exam are kept on the request's Task (R-EXAM-3)."""
    known = incidents_of(case.task)
    new = [i for i in incidents if i not in known]
    if new:
        case.task["extension"] = [*case.task.get("extension", []),
                                  *({"url": EXT_INCIDENT, "valueString": i} for i in new)]


def qualified(server: FhirServer, practitioner_ref: str | None, modality: str | None
              ) -> tuple[bool, str]:
    """R-ACT-2: is the practitioner identified by RPPS and qualified for ``modality``?"""
    key = split(practitioner_ref)
    if key is None:
        return False, "no practitioner named"
    practitioner = load(server, practitioner_ref)
    if practitioner is not None and key[0] == "PractitionerRole":
        practitioner_ref = ref_of(practitioner.get("practitioner"))
        practitioner = load(server, practitioner_ref)
    if practitioner is None or (split(practitioner_ref) or ("",))[0] != "Practitioner":
        return False, f"{practitioner_ref} is not a known Practitioner"
    if not any(i.get("system") in RPPS_SYSTEMS and i.get("value")
               for i in practitioner.get("identifier") or []):
        return False, f"{practitioner_ref} has no RPPS / idNatPs identifier"
    needed = QUALIFYING.get(modality or "")
    if needed is None:
        return True, ""
    held = {c.get("code", "").split("/")[-1]
            for q in practitioner.get("qualification") or []
            for c in (q.get("code") or {}).get("coding") or []
            if c.get("system") in SPECIALTY_SYSTEMS}
    if held & needed:
        return True, ""
    return False, (f"{practitioner_ref} has no recorded qualification for {modality} "
                   f"(one of {', '.join(sorted(needed))}, TRE_R38 SpecialiteOrdinale)")


def check(server: FhirServer, workflow: Workflow, case: Case, report: dict[str, Any],
          before: dict[str, Any] | None) -> dict[str, Any]:
    status = report.get("status")
    old = (before or {}).get("status")
    if old in FINAL and status not in ("amended", "corrected", "appended", "entered-in-error"):
        raise rule(f"un compte rendu définitif ne se remplace que par une version modifiée : "
                   f"statut amended ou corrected, pas {status} (l'historique garde la version "
                   "précédente)", "DiagnosticReport.status", ErrorKind.CONFLICT)
    name = transition_of(report)
    if name is not None and not (name == "preliminary-report" and case.state == "cr-preliminaire"):
        sources = TRANSITIONS[name].sources if name == "amend-report" else \
            REPORT_SOURCES[case.kind]
        if case.state not in sources:
            raise rule(f"{TRANSITIONS[name].display} impossible : la demande {case.ref} est à "
                       f"l'état '{case.state}' (attendu : {', '.join(sorted(sources))})",
                       "DiagnosticReport.status", ErrorKind.CONFLICT)
    if status in FINAL:
        _check_final(server, case, report)
        _check_documents(server, workflow, case, report, before)
    meta = dict(report.get("meta") or {})
    tags = [t for t in meta.get("tag") or [] if t.get("system") != FLAG_SYSTEM]
    meta["tag"] = [*tags, coding(FLAG_SYSTEM, "teleimagerie", "Acte de téléimagerie")]
    return {**report, "meta": meta}


def _check_final(server: FhirServer, case: Case, report: dict[str, Any]) -> None:
    """R-REP-1, R-REP-3, R-ACT-2, R-ACT-4, R-EXAM-3: what a final report must carry."""
    problems: list[tuple[str, str]] = []
    language = report.get("language")
    if not isinstance(language, str) or not language.lower().startswith("fr"):
        problems.append(("DiagnosticReport.language", "le compte rendu doit être rédigé en "
                         "français : language fr-FR (R-REP-1)"))
    performers = [ref_of(p) for p in report.get("performer") or []]
    verdicts = [qualified(server, p, case.modality) for p in performers if p]
    if not any(ok for ok, _ in verdicts):
        why = "; ".join(msg for _, msg in verdicts) or "aucun performer"
        problems.append(("DiagnosticReport.performer", "le compte rendu doit être signé par "
                         "un imageur identifié par son RPPS et qualifié pour la modalité "
                         f"(R-ACT-2, R-ACT-4) : {why}"))
    if not (report.get("effectiveDateTime") or report.get("effectivePeriod")):
        problems.append(("DiagnosticReport.effective[x]", "la date et l'heure de l'examen "
                         "sont obligatoires (R-REP-3)"))
    if not (report.get("conclusion") or report.get("conclusionCode") or
            report.get("presentedForm")):
        problems.append(("DiagnosticReport.conclusion", "la conclusion est obligatoire "
                         "(R-REP-1)"))
    if not report.get("imagingStudy"):
        problems.append(("DiagnosticReport.imagingStudy", "le compte rendu doit référencer "
                         "l'examen d'imagerie (R-REP-7)"))
    if case.kind == TELEDIAGNOSTIC and case.modality in DOSE_MODALITIES and \
            not _has_dose(server, report):
        problems.append(("DiagnosticReport.result", f"examen irradiant ({case.modality}) : "
                         "le compte rendu doit porter la dose reçue (Observation de dose en "
                         "result) ou la raison de son absence (extension tlm-dose-unavailable) "
                         "(R-REP-3)"))
    missing = [i for i in incidents_of(case.task) if i not in incidents_of(report)]
    if missing:
        problems.append(("DiagnosticReport.extension", "les incidents techniques et effets "
                         "indésirables déclarés sur l'examen doivent figurer au compte rendu "
                         f"(R-EXAM-3, R-REP-3) : {'; '.join(missing)}"))
    if problems:
        raise FhirError(ErrorKind.UNPROCESSABLE, problems[0][1], issues=[
            Issue(msg, code="business-rule", expression=[path]) for path, msg in problems])


def _check_documents(server: FhirServer, workflow: Workflow, case: Case,
                     report: dict[str, Any], before: dict[str, Any] | None) -> None:
    """R-REP-6, R-INT-1: what the composition root adds (``Workflow.report_checks``) —
    a report whose documents the DMP would refuse is not accepted; the author reads the
    rule that fails (422)."""
    issues = [i for check in workflow.report_checks
              for i in check(server, case, report, before)]
    if issues:
        raise FhirError(ErrorKind.UNPROCESSABLE, issues[0].diagnostics, issues=issues)


def _has_dose(server: FhirServer, report: dict[str, Any]) -> bool:
    if any(e.get("url") == EXT_DOSE_UNAVAILABLE and e.get("valueString")
           for e in report.get("extension") or []):
        return True
    for result in report.get("result") or []:
        obs = load(server, ref_of(result))
        if obs is not None and codes(obs.get("code"), DCM) & DOSE_CODES and \
                obs.get("valueQuantity"):
            return True
    return False


def written(server: FhirServer, workflow: Workflow, req: FhirRequest, case: Case,
            item: Stored, report: dict[str, Any], before: dict[str, Any] | None) -> None:
    """Advance the request, alert on a critical result, and on the final report compute
    its distribution list and turnaround (R-REP-1, R-REP-5, R-EVAL-1)."""
    from fhir_server.workflow.engine import Actor, fire

    if report.get("status") == "entered-in-error" and (before or {}).get("status") in FINAL:
        # a report issued in error is withdrawn wherever it went (issue 8: MDM^T04, DMP
        # deprecation); the request keeps its state, a corrected report follows
        workflow.events.publish(server, ReportWithdrawn(req, case, item.id))
        return
    name = transition_of(report)
    performer = next((r for r in (ref_of(p) for p in report.get("performer") or []) if r), None)
    if _critical(report) and not (before and _critical(before)):
        _alert(server, case, item, report)
    if name is None or (name == "preliminary-report" and case.state == "cr-preliminaire"):
        return  # a draft, or a new preliminary version: same state
    changes: dict[str, Any] = {}
    if name == "final-report":
        changes["output"] = [*case.task.get("output", []), *_distribution(server, case, item)]
        case.task["extension"] = [*case.task.get("extension", []),
                                  *_turnaround(case.task, case.kind)]
    moved = fire(server, req, case, TRANSITIONS[name], Actor(None, performer),
                 task_changes=changes)
    if name in ("final-report", "amend-report"):  # its documents are due (R-REP-5)
        workflow.events.publish(server, ReportIssued(req, moved, name == "amend-report"))


def transition_of(report: dict[str, Any]) -> str | None:
    return {"preliminary": "preliminary-report", "final": "final-report",
            "amended": "amend-report", "corrected": "amend-report",
            "appended": "amend-report"}.get(report.get("status") or "")


def _critical(report: dict[str, Any]) -> bool:
    return any(codes(c, INTERPRETATION) & CRITICAL for c in report.get("conclusionCode") or [])


def _alert(server: FhirServer, case: Case, item: Stored, report: dict[str, Any]) -> None:
    """R-REP-1: a critical result is told to the requester at once."""
    sent = now()
    communication: dict[str, Any] = {
        "resourceType": "Communication", "status": "in-progress", "priority": "stat",
        "category": [{"coding": [coding(COMM_CATEGORY, "alert", "Alert")]}],
        "basedOn": [{"reference": case.ref}],
        "about": [{"reference": f"DiagnosticReport/{item.id}/_history/{item.vid}"}],
        "subject": case.request.get("subject"), "sent": sent,
        "payload": [{"contentString": "Résultat critique à communiquer sans délai au "
                     f"demandeur (R-REP-1) : {report.get('conclusion') or ''}".strip()}],
    }
    if case.request.get("requester"):
        communication["recipient"] = [case.request["requester"]]
    sender = next((p for p in report.get("performer") or []), None)
    if sender:
        communication["sender"] = sender
    save(server, "Communication", new_id(), communication)


def distribution(server: FhirServer, patient_ref: str | None, request: dict[str, Any]
                 ) -> list[tuple[str, str]]:
    """R-REP-5: (role, reference) of whom a report goes to — médecin traitant, the
    professionals the patient designated, the patient, the requester — each once, opposed
    ones included (callers decide: the Task output drops them, delivery holds them)."""
    from fhir_server.workflow.consent import decisions

    request_ref = f"ServiceRequest/{request['id']}" if request.get("id") else None
    patient = load(server, patient_ref) or {}
    out: list[tuple[str, str]] = []
    for gp in patient.get("generalPractitioner") or []:
        if ref_of(gp):
            out.append(("medecin-traitant", ref_of(gp) or ""))
    if patient_ref:
        for decision, categories, actors in decisions(server, patient_ref, request_ref):
            if decision == "permit" and "partage-professionnels" in categories:
                out += [("professionnel-designe", a) for a in actors]
        out.append(("patient", patient_ref))
    requester = ref_of(request.get("requester"))
    if requester:
        out.append(("demandeur", requester))
    once: dict[str, str] = {}
    for role, ref in out:
        once.setdefault(ref, role)
    return [(role, ref) for ref, role in once.items()]


def _distribution(server: FhirServer, case: Case, item: Stored) -> list[dict[str, Any]]:
    """The final report's distribution list on its Task, minus those the patient opposed
    (R-CONS-5)."""
    from fhir_server.workflow.consent import sharing_opposed

    patient_ref = case.patient
    rows = []
    for role, ref in distribution(server, patient_ref, case.request):
        if patient_ref and role != "patient" and \
                sharing_opposed(server, patient_ref, case.ref, ref):
            continue
        rows.append({"type": {"coding": [coding(TASK_SYSTEM, f"destinataire-{role}")]},
                     "valueReference": {"reference": ref}})
    rows.append({"type": {"coding": [coding(TASK_SYSTEM, "compte-rendu")]},
                 "valueReference": {"reference": f"DiagnosticReport/{item.id}/_history/"
                                                  f"{item.vid}"}})
    return rows


def _turnaround(task: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """Minutes per step and whether the report came after its due date (R-EVAL-1)."""
    done = now()
    times = {s: parse_instant(step_time(task, s)) for s in
             ("recue", "validee", "images-disponibles")}
    final = parse_instant(done)
    assert final is not None
    exam_end = times["images-disponibles"] if kind == TELEDIAGNOSTIC else times["validee"]
    steps = {"validation": (times["recue"], times["validee"]),
             "examen": (times["validee"], exam_end) if kind == TELEDIAGNOSTIC else (None, None),
             "interpretation": (exam_end, final), "total": (times["recue"], final)}
    parts = [{"url": key, "valueQuantity": {
        "value": round((b - a).total_seconds() / 60, 1), "unit": "min",
        "system": "http://unitsofmeasure.org", "code": "min"}}
        for key, (a, b) in steps.items() if a is not None and b is not None]
    due = parse_instant(((task.get("restriction") or {}).get("period") or {}).get("end"))
    out: list[dict[str, Any]] = [{"url": EXT_TURNAROUND, "extension": parts}]
    if due is not None:
        out.append({"url": EXT_LATE, "valueBoolean": final > due})
    return out
