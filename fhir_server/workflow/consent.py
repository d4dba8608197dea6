"""The consent gate and the patient's decisions (R-CONS-1..5).

A Consent (profile tlm-consent) says what it is about by its category (``acte``,
``teleimagerie``, ``partage-dmp``, ``partage-professionnels``,
``information-a-posteriori``), permit or deny by ``provision.type``, and may name the
request it concerns in ``provision.data`` (none: every request of the patient).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from fhir_server.core.errors import ErrorKind
from fhir_server.core.model import FhirRequest
from fhir_server.security.consent import (
    applicable,
    categories_of,
    concerns,
    consent_rows,
    opposed_in,
)
from fhir_server.workflow.machine import (
    EXT_EMERGENCY,
    INFORMATION,
    REFUSAL_SYSTEM,
    TASK_SYSTEM,
    TRANSITIONS,
)
from fhir_server.workflow.records import (
    body,
    coding,
    ext,
    now,
    parse_instant,
    ref_of,
    rule,
    save,
    view,
)

if TYPE_CHECKING:
    from fhir_server.server.dispatch import FhirServer
    from fhir_server.workflow.engine import Case, Workflow

NEEDED = ("acte", "teleimagerie")  # R-CONS-2: the act *and* its remote performance
LABELS = {"acte": "à l'acte d'imagerie", "teleimagerie": "à sa réalisation à distance"}


def decisions(server: FhirServer, patient: str, request_ref: str | None
              ) -> list[tuple[str, set[str], list[str]]]:
    """(permit|deny, categories, actors) of the patient's active Consents that apply to
    ``request_ref`` (or to every request), newest first."""
    return applicable(consent_rows(view(server), server.limits, patient), request_ref)


def is_emergency(request: dict[str, Any]) -> bool:
    return ext(request, EXT_EMERGENCY) is True


def gate(server: FhirServer, workflow: Workflow, req: FhirRequest, case: Case) -> None:
    """R-CONS-2/3/4: no validation nor scheduling without consent to the act and to its
    remote performance — unless the request is an emergency, in which case the patient
    is informed afterwards (an information Task is opened and tracked)."""
    patient = case.patient
    if patient is None:
        raise rule("the request names no patient: consent cannot be checked (R-CONS-2)",
                   "ServiceRequest.subject")
    latest = latest_decisions(server, patient, case.ref)
    refused = [c for c in NEEDED if latest.get(c) == "deny"]
    if refused:
        raise rule("le patient a refusé " + " et ".join(LABELS[c] for c in refused)
                   + " : le parcours à distance est arrêté (R-CONS-4)",
                   kind=ErrorKind.CONFLICT)
    missing = [c for c in NEEDED if latest.get(c) != "permit"]
    if not missing:
        return
    if is_emergency(case.request):
        open_information_task(server, workflow, case)
        return
    raise rule("consentement du patient manquant " + " et ".join(LABELS[c] for c in missing)
               + " (R-CONS-2) : enregistrez un Consent (catégories acte et teleimagerie) ou "
               "signalez l'urgence (extension tlm-emergency, information a posteriori, "
               "R-CONS-3)", kind=ErrorKind.CONFLICT)


def latest_decisions(server: FhirServer, patient: str, request_ref: str) -> dict[str, str]:
    """Per consent category, the patient's latest decision (permit / deny) for the request."""
    latest: dict[str, str] = {}
    for decision, categories, _ in decisions(server, patient, request_ref):
        for category in categories:
            latest.setdefault(category, decision)
    return latest


def information_task_id(case: Case) -> str:
    return f"{case.task['id'][:27]}-information"


def open_information_task(server: FhirServer, workflow: Workflow, case: Case) -> None:
    """R-CONS-3: the a-posteriori information to give, with its deadline."""
    tid = information_task_id(case)
    if body(view(server).read("Task", tid)) is not None:
        return
    created = now()
    start = parse_instant(created)
    assert start is not None
    due = (start + timedelta(minutes=workflow.settings.information_delay)).isoformat()
    task: dict[str, Any] = {
        "resourceType": "Task", "id": tid, "status": "requested", "intent": "order",
        "priority": "urgent",
        "code": {"coding": [coding(TASK_SYSTEM, INFORMATION,
                                   "Informer le patient a posteriori (urgence)")]},
        "description": "Urgence : informer le patient (ou son représentant) de la "
                       "réalisation à distance de l'examen et recueillir son consentement "
                       "a posteriori (R-CONS-3)",
        "focus": {"reference": case.ref}, "basedOn": [{"reference": case.ref}],
        "for": case.request.get("subject"), "authoredOn": created, "lastModified": created,
        "restriction": {"period": {"end": due.replace("+00:00", "Z")}},
    }
    if case.request.get("requester"):
        task["owner"] = case.request["requester"]
    save(server, "Task", tid, task)


def written(server: FhirServer, workflow: Workflow, req: FhirRequest,
            resource: dict[str, Any]) -> None:
    """A patient's refusal stops the remote path (R-CONS-4); information given
    afterwards closes the emergency's information Task (R-CONS-3)."""
    if resource.get("status") != "active":
        return
    patient = ref_of(resource.get("patient"))
    if patient is None:
        return
    categories = categories_of(resource)
    provision = resource.get("provision") or {}
    data = concerns(resource)
    from fhir_server.workflow.engine import Actor, fire

    for case in workflow.open_cases(server, patient):
        if data and case.ref not in data:
            continue
        if provision.get("type") == "deny" and categories & set(NEEDED):
            reason = {"coding": [coding(REFUSAL_SYSTEM, "refus-patient", "Refus du patient")],
                      "text": "le patient refuse " + " et ".join(
                          LABELS[c] for c in NEEDED if c in categories)}
            fire(server, req, case, TRANSITIONS["patient-refusal"], Actor(None, None),
                 reason=reason)
        elif provision.get("type", "permit") == "permit" and \
                categories & {INFORMATION, *NEEDED}:
            tid = information_task_id(case)
            task = body(view(server).read("Task", tid))
            if task is not None and task.get("status") not in ("completed", "cancelled"):
                done = now()
                save(server, "Task", tid, {**task, "status": "completed", "lastModified": done,
                                           "executionPeriod": {"end": done}})


def sharing_opposed(server: FhirServer, patient: str, request_ref: str | None,
                    target: str) -> bool:
    """R-CONS-5: did the patient oppose sharing with ``target`` (``dmp`` or a reference
    to a professional)? The latest applicable decision wins."""
    return opposed_in(decisions(server, patient, request_ref), target)
