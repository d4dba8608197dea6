"""The workflow engine: rules around every client write, and the transitions (issue 5).

:class:`Workflow` is plugged into the core (``FhirServer(workflow=...)``). Every client
write of a resource passes :meth:`before_write` (rules that may refuse it) and
:meth:`after_write` (side effects: the request's Task, state changes, and the events
of :mod:`fhir_server.workflow.events` their handlers consume),
inside the interaction's write unit — so REST, Bundle entries and the HL7 adapter obey
the same rules. Transitions are fired by :func:`fire`, which checks the state machine
(409), the actor's role (403) and records the change on the Task, the request, a
Provenance and the interaction's AuditEvent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from fhir_server.core.errors import ErrorKind, FhirError
from fhir_server.core.model import FhirRequest
from fhir_server.security.access import GuardedStore
from fhir_server.store.base import Stored
from fhir_server.workflow import consent, origin, reports, studies
from fhir_server.workflow.events import Events, RequestStateChanged, publish
from fhir_server.workflow.identity import reachable
from fhir_server.workflow.machine import (
    ACT_KIND_SYSTEM,
    EXT_ACT_KIND,
    EXT_DELAY,
    EXT_MODALITY,
    EXT_STEP,
    FLAG_SYSTEM,
    FULFILMENT,
    IONISING,
    KINDS,
    MAMMOGRAPHY,
    OUT_OF_SCOPE,
    STATE_SYSTEM,
    STATES,
    TASK_SYSTEM,
    TELEDIAGNOSTIC,
    TRANSITIONS,
    Transition,
)
from fhir_server.workflow.records import (
    body,
    codes,
    coding,
    ext,
    load,
    new_id,
    now,
    parse_instant,
    ref_of,
    rule,
    save,
    split,
    step_time,
    task_id,
    view,
)
from fhir_server.workflow.settings import WorkflowSettings
from terminology.service import terminology

if TYPE_CHECKING:
    from fhir_server.server.dispatch import FhirServer, Handler

PROVENANCE_ACTIVITY = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
MAMMOGRAPHY_VS = "https://teleimagerie.fr/fhir/ValueSet/ccam-mammographie"
CCAM = "https://smt.esante.gouv.fr/terminologie-ccam"


def act_kind(request: dict[str, Any]) -> str | None:
    """The kind of act (R-SCOPE-3) — its presence makes a ServiceRequest a téléimagerie
    request under this workflow."""
    found = codes(ext(request, EXT_ACT_KIND), ACT_KIND_SYSTEM) & KINDS
    return next(iter(found), None) if found else None


def modality(request: dict[str, Any]) -> str | None:
    value = ext(request, EXT_MODALITY)
    code = value.get("code") if isinstance(value, dict) else None
    return code if isinstance(code, str) else None


@dataclass
class Actor:
    """Who fires a transition: roles from the token (None for a trusted in-process caller)
    and the Practitioner acting (the token's own, or named by a system connector)."""

    roles: frozenset[str] | None
    practitioner: str | None
    display: str | None = None
    identifiers: list[tuple[str, str]] = field(default_factory=list)


def actor(server: FhirServer, req: FhirRequest, named: str | None) -> Actor:
    principal = req.context.principal
    if principal is None:
        return Actor(None, named)
    roles = frozenset(principal.roles)
    if principal.is_system and not principal.id_nat_ps:  # a connector names who acts
        return Actor(roles, named, principal.display)
    mine = sorted(r for r in (server.store.access.parties() if isinstance(
        server.store, GuardedStore) else set()) if r.startswith("Practitioner/"))
    if named and named not in mine:
        raise FhirError(ErrorKind.FORBIDDEN, f"{named} is not the practitioner of this "
                        "token: a professional acts in their own name (R-EXAM-2)")
    return Actor(roles, named or (mine[0] if mine else None), principal.display,
                 principal.identifiers())


@dataclass
class Case:
    """One request under the workflow: the ServiceRequest and its fulfilment Task."""

    request: dict[str, Any]
    task: dict[str, Any]
    kind: str

    @property
    def state(self) -> str:
        found = codes(self.task.get("businessStatus"), STATE_SYSTEM)
        return next(iter(found), "recue")

    @property
    def ref(self) -> str:
        return f"ServiceRequest/{self.request['id']}"

    @property
    def patient(self) -> str | None:
        return ref_of(self.request.get("subject"))

    @property
    def modality(self) -> str | None:
        return modality(self.request)


WATCHED = frozenset({"ServiceRequest", "Consent", "ImagingStudy", "DiagnosticReport"})
GUARDED = frozenset({"ServiceRequest", "Task", "DiagnosticReport"})


class Workflow:
    """The téléimagerie rules (R-SCOPE, R-VAL, R-CONS, R-REP, R-TLE) on a FHIR core."""

    def __init__(self, settings: WorkflowSettings | None = None) -> None:
        from fhir_server.workflow import indicators, operations
        from fhir_server.workflow.search import register_all

        register_all()
        self.settings = settings or WorkflowSettings()
        self.operations: dict[tuple[str | None, str], Handler] = {
            **operations.OPERATIONS, **indicators.OPERATIONS}
        # the consequences of a write, handled inside its write unit by the handlers the
        # composition root subscribes (e.g. the HL7 outbox, whose message is then
        # committed with the decision it reports; ADR 0022)
        self.events = Events()
        # what a final/amended report must pass beyond the core's rules, filled by the
        # composition root (runtime: the CDA documents' schematrons, issue 26); an issue
        # refuses the write (422)
        self.report_checks: list[reports.ReportCheck] = []

    # -- hooks around client writes ------------------------------------------------------
    def before_write(self, server: FhirServer, req: FhirRequest, rtype: str, rid: str,
                     resource: dict[str, Any] | None,
                     previous: Stored | None) -> dict[str, Any] | None:
        if rtype not in GUARDED:  # every other write pays nothing (no body parsed)
            return resource
        before = body(previous)
        if rtype == "ServiceRequest":
            if resource is not None and act_kind(resource):
                return self._check_request(server, req, resource, before)
            if before is not None and act_kind(before):
                raise rule("a téléimagerie request is never deleted nor turned into another "
                           "kind of request: cancel it with $cancel", kind=ErrorKind.CONFLICT)
        elif rtype == "Task":
            _guard_task(resource, before)
        elif rtype == "DiagnosticReport" and resource is not None:
            case = self.case_of_report(server, resource)
            if case is not None:
                return reports.check(server, self, case, resource, before)
        return resource

    def after_write(self, server: FhirServer, req: FhirRequest, item: Stored,
                    resource: dict[str, Any] | None, previous: Stored | None) -> None:
        if resource is None or item.type not in WATCHED:
            return
        resource = body(item) or {}  # as stored: with its id and meta
        before = body(previous)
        if item.type == "ServiceRequest" and act_kind(resource):
            self._open(server, req, resource)
            for study in studies.attach_waiting(server, resource):  # images came first
                self._study_written(server, req, study)
        elif item.type == "Consent":
            consent.written(server, self, req, resource)
        elif item.type == "ImagingStudy":
            self._study_written(server, req, resource)
        elif item.type == "DiagnosticReport":
            case = self.case_of_report(server, resource)
            if case is not None:
                reports.written(server, self, req, case, item, resource, before)

    # -- the request -----------------------------------------------------------------------
    def _check_request(self, server: FhirServer, req: FhirRequest, resource: dict[str, Any],
                       before: dict[str, Any] | None) -> dict[str, Any]:
        mod = modality(resource)
        acts = {c.get("code") for c in (resource.get("code") or {}).get("coding") or []
                if isinstance(c, dict) and c.get("system") == CCAM}
        mammography = [a for a in acts if isinstance(a, str) and
                       terminology().in_value_set(MAMMOGRAPHY_VS, CCAM, a)]
        if mod == MAMMOGRAPHY or mammography:
            raise rule("la mammographie ne peut pas être réalisée en téléimagerie : un examen "
                       "clinique avec palpation est nécessaire (R-SCOPE-2)"
                       + (f" — acte {', '.join(mammography)}" if mammography else ""),
                       "ServiceRequest.code" if mammography else "ServiceRequest.extension")
        if before is not None and act_kind(before):
            old, new = before.get("status"), resource.get("status")
            if old != new and not (old == "draft" and new == "active"):
                raise rule(f"the status of a téléimagerie request ({old}) changes through its "
                           "operations ($accept, $refuse, $schedule, $start, $cancel…), not by "
                           f"an update to {new}", "ServiceRequest.status", ErrorKind.CONFLICT)
        if resource.get("status") == "active":
            deferred = req.context.deferred
            if deferred is None:
                self._check_administrative(server, resource)
            else:  # in a transaction: once its other entries (the patient…) are applied
                deferred.append(lambda: self._check_administrative(server, resource))
        flags = set()
        if mod in OUT_OF_SCOPE:
            flags.add(("hors-perimetre", "Hors périmètre de la téléimagerie (R-SCOPE-2)"))
        if mod in IONISING and self._is_child(server, resource):
            flags.add(("pediatrique", "Enfant : examen irradiant, radioprotection renforcée "
                                      "(R-VAL-6)"))
        if flags:
            meta = dict(resource.get("meta") or {})
            tags = [t for t in meta.get("tag") or [] if t.get("system") != FLAG_SYSTEM]
            meta["tag"] = tags + [coding(FLAG_SYSTEM, c, d) for c, d in sorted(flags)]
            resource = {**resource, "meta": meta}
        return resource

    @staticmethod
    def _check_administrative(server: FhirServer, request: dict[str, Any]) -> None:
        """R-REQ-1: an active request names its requesting structure and a way to reach
        the patient (or their representative), or the coded reason there is none."""
        if origin.resolve(server, request) is None:
            raise rule("la structure demandeuse est requise (R-REQ-1) : requester "
                       "Organization, PractitionerRole actif rattaché à une Organization, "
                       "performer Organization, ou médecin demandeur rattaché à une seule "
                       "structure", "ServiceRequest.requester")
        patient = load(server, ref_of(request.get("subject")))
        if patient is not None and not reachable(patient):
            raise rule("le contact du patient ou de son représentant est requis (R-REQ-1) : "
                       "Patient.telecom, Patient.address ou Patient.contact, ou la raison de "
                       "son absence (extension data-absent-reason)", "ServiceRequest.subject")

    def _is_child(self, server: FhirServer, request: dict[str, Any]) -> bool:
        patient = load(server, ref_of(request.get("subject")))
        born = parse_instant((patient or {}).get("birthDate", "") + "T00:00:00") \
            if patient and len(patient.get("birthDate", "")) == 10 else None
        at = parse_instant(request.get("authoredOn")) or parse_instant(now())
        if born is None or at is None:
            return False
        years = at.year - born.year - ((at.month, at.day) < (born.month, born.day))
        return years < self.settings.adult_age

    def _open(self, server: FhirServer, req: FhirRequest, request: dict[str, Any]) -> None:
        """A request that becomes active gets its fulfilment Task (state ``recue``); a
        request written again, in any state, keeps its Task's structure current (ADR 0019:
        a requester corrected after the report still redirects what waits to be sent)."""
        tid = task_id(request["id"])
        opened = body(view(server).read("Task", tid))
        if opened is None and request.get("status") != "active":
            return
        structure = origin.resolve(server, request)
        if opened is not None:  # the request changed: its structure may have
            if origin.recorded(opened) != structure:
                save(server, "Task", tid, origin.with_site(opened, structure))
            return
        kind = act_kind(request) or TELEDIAGNOSTIC
        authored = parse_instant(request.get("authoredOn")) or parse_instant(now())
        assert authored is not None
        received = now()
        task: dict[str, Any] = {
            "resourceType": "Task", "id": tid,
            "extension": [{"url": EXT_STEP, "extension": [
                {"url": "recue", "valueDateTime": received}]}],
            "basedOn": [{"reference": f"ServiceRequest/{request['id']}"}],
            "status": STATES["recue"].task_status,
            "businessStatus": _state_concept("recue"),
            "intent": "order", "priority": request.get("priority", "routine"),
            "code": {"coding": [coding(TASK_SYSTEM, FULFILMENT[kind])]},
            "focus": {"reference": f"ServiceRequest/{request['id']}"},
            "authoredOn": received, "lastModified": received,
            "restriction": {"period": {"end": _iso(authored + timedelta(
                minutes=self.due_minutes(request)))}},
        }
        for key in ("subject", "requester"):
            if request.get(key):
                task["for" if key == "subject" else key] = request[key]
        inputs = []
        mod = modality(request)
        if mod:
            inputs.append({"type": {"coding": [coding(TASK_SYSTEM, "modalite")]},
                           "valueCoding": ext(request, EXT_MODALITY)})
        if structure:
            inputs.append(origin.site_input(structure))
        if inputs:
            task["input"] = inputs
        save(server, "Task", tid, task)

    def due_minutes(self, request: dict[str, Any]) -> int:
        """R-VAL-5: the delay of the request's priority, or the desired delay if shorter."""
        minutes = self.settings.delays.get(request.get("priority") or "routine",
                                           self.settings.delays["routine"])
        wanted = ext(request, EXT_DELAY)
        if isinstance(wanted, dict) and isinstance(wanted.get("value"), int | float):
            factor = {"min": 1, "h": 60, "d": 1440, "wk": 10080}.get(
                wanted.get("code") or wanted.get("unit") or "", 0)
            if factor:
                minutes = min(minutes, int(wanted["value"] * factor))
        return minutes

    # -- cases -------------------------------------------------------------------------------
    def case(self, server: FhirServer, request_id: str) -> Case:
        """The request as its caller may see it (404 otherwise) and its Task."""
        stored = server.store.read("ServiceRequest", request_id)
        request = body(stored)
        if request is None:
            raise FhirError(ErrorKind.NOT_FOUND, f"ServiceRequest/{request_id} is not known")
        kind = act_kind(request)
        if kind is None:
            raise rule(f"ServiceRequest/{request_id} is not a téléimagerie request (no "
                       "tlm-act-kind extension): it has no workflow", kind=ErrorKind.CONFLICT)
        task = body(view(server).read("Task", task_id(request_id)))
        if task is None:
            raise rule(f"ServiceRequest/{request_id} is {request.get('status')}: its workflow "
                       "starts when it becomes active", kind=ErrorKind.CONFLICT)
        return Case(request, task, kind)

    def case_of_report(self, server: FhirServer, resource: dict[str, Any]) -> Case | None:
        """The request a report or study is ``basedOn``, if it is under the workflow."""
        for based in resource.get("basedOn") or []:
            key = split(ref_of(based))
            if key and key[0] == "ServiceRequest":
                case = _case(server, body(view(server).read(*key)))
                if case is not None:
                    return case
        return None

    def open_cases(self, server: FhirServer, patient: str) -> list[Case]:
        from fhir_server.security.care import all_matches

        found = all_matches(view(server), server.limits, "ServiceRequest",
                            [("subject", patient), ("status", "active")])
        cases = (_case(server, body(item)) for item in found)
        return [c for c in cases if c is not None and STATES[c.state].open]

    def _study_written(self, server: FhirServer, req: FhirRequest,
                       study: dict[str, Any]) -> None:
        """An available study of a request in progress: images reach the imager; its
        incidents are recorded against the request (R-EXAM-3)."""
        case = self.case_of_report(server, study)
        if case is None:
            return
        incidents = reports.incidents_of(study)
        if incidents:
            reports.record_incidents(case, incidents)
        transition = TRANSITIONS["images-available"]
        if study.get("status") == "available" and case.state in transition.sources and \
                case.kind in transition.kinds:
            fire(server, req, case, transition, Actor(None, None), note=None)
        elif incidents:
            save(server, "Task", case.task["id"], case.task)


def _case(server: FhirServer, request: dict[str, Any] | None) -> Case | None:
    """The request with its Task, or None when it is not under the workflow."""
    kind = act_kind(request) if request else None
    if request is None or kind is None:
        return None
    task = body(view(server).read("Task", task_id(request["id"])))
    return Case(request, task, kind) if task is not None else None


def fire(server: FhirServer, req: FhirRequest, case: Case, transition: Transition,
         who: Actor, reason: dict[str, Any] | None = None, note: str | None = None,
         request_changes: dict[str, Any] | None = None,
         task_changes: dict[str, Any] | None = None,
         target: str | None = None) -> Case:
    """Move ``case`` along ``transition``: state check (409), role check (403), then the
    new Task and request versions, a Provenance and the audit entity (R-VAL-*)."""
    check_state(case, transition)
    check_role(who, transition)
    target = target or transition.target
    when = now()
    new_state = STATES[target]
    task = {**case.task, **(task_changes or {})}
    task["status"] = new_state.task_status
    task["businessStatus"] = _state_concept(target)
    task["lastModified"] = when
    if reason is not None:
        task["statusReason"] = reason
    if note:
        task["note"] = [*task.get("note", []), {"text": note, "time": when}]
    _stamp(task, target, when)
    request = {**case.request, **(request_changes or {})}
    request["status"] = new_state.request_status
    task_item = save(server, "Task", task["id"], task)
    request_item = save(server, "ServiceRequest", request["id"], request)
    provenance: dict[str, Any] = {
        "resourceType": "Provenance",
        "target": [{"reference": f"Task/{task_item.id}/_history/{task_item.vid}"},
                   {"reference": f"ServiceRequest/{request_item.id}/_history/"
                                 f"{request_item.vid}"}],
        "recorded": when, "occurredDateTime": when,
        "activity": {"coding": [coding(PROVENANCE_ACTIVITY, "UPDATE", "revise"),
                                coding(STATE_SYSTEM, target, new_state.display)],
                     "text": transition.display},
        "agent": [_agent(req, who)],
    }
    if reason is not None:
        provenance["reason"] = [reason]
    save(server, "Provenance", new_id(), provenance)
    req.audit_action = "U"
    req.audit_targets += [f"Task/{task_item.id}/_history/{task_item.vid}",
                          f"ServiceRequest/{request_item.id}/_history/{request_item.vid}"]
    moved = Case(request, task, case.kind)
    publish(server, RequestStateChanged(req, moved, transition.name))
    # images that arrived before validation are there once it is validated (never
    # again after a quality refusal: those images were refused, new ones are awaited)
    early = TRANSITIONS["images-available"]
    if target in early.sources and case.kind in early.kinds and \
            step_time(task, "images-disponibles") is None and \
            _available_study(server, request["id"]):
        moved = fire(server, req, moved, early, Actor(None, None))
    return moved


def _available_study(server: FhirServer, request_id: str) -> bool:
    from fhir_server.security.care import all_matches

    return any(not item.deleted for item in all_matches(
        view(server), server.limits, "ImagingStudy",
        [("basedon", f"ServiceRequest/{request_id}"), ("status", "available")]))


def check_state(case: Case, transition: Transition) -> None:
    """409 for an edge the state machine does not have (R-VAL-*)."""
    state = case.state
    if case.kind not in transition.kinds:
        raise rule(f"{transition.display}: not part of the {case.kind} workflow",
                   kind=ErrorKind.CONFLICT)
    if state not in transition.sources:
        raise rule(f"{transition.display} : impossible pour une demande à l'état '{state}' "
                   f"({STATES[state].display}) ; possible depuis : "
                   f"{', '.join(sorted(transition.sources))}", kind=ErrorKind.CONFLICT)


def check_role(who: Actor, transition: Transition) -> None:
    """403 when none of the actor's roles may fire the transition (R-ACT-1)."""
    if who.roles is not None and transition.roles and not who.roles & transition.roles:
        raise FhirError(ErrorKind.FORBIDDEN, f"{transition.display} : interdit pour le(s) "
                        f"rôle(s) {', '.join(sorted(who.roles)) or 'aucun'} ; rôles permis : "
                        f"{', '.join(sorted(transition.roles))} (R-ACT-1)")


def _agent(req: FhirRequest, who: Actor) -> dict[str, Any]:
    agent: dict[str, Any] = {"type": {"coding": [coding(PARTICIPATION, "author", "Author")]}}
    if who.practitioner:
        agent["who"] = {"reference": who.practitioner}
    elif who.display or req.context.principal is not None:
        principal = req.context.principal
        agent["who"] = {"display": who.display or principal.display}
    else:
        agent["who"] = {"display": "teleimagerie (serveur)"}
    return agent


def _stamp(task: dict[str, Any], state: str, when: str) -> None:
    """Record the first time the request reached ``state`` (turnaround indicators)."""
    exts = [e for e in task.get("extension", []) if e.get("url") != EXT_STEP]
    steps: dict[str, Any] = next(
        (e for e in task.get("extension", []) if e.get("url") == EXT_STEP),
        {"url": EXT_STEP, "extension": []})
    if not any(s.get("url") == state for s in steps["extension"]):
        steps = {**steps, "extension": [*steps["extension"],
                                        {"url": state, "valueDateTime": when}]}
    task["extension"] = [*exts, steps]


def _state_concept(state: str) -> dict[str, Any]:
    return {"coding": [coding(STATE_SYSTEM, state, STATES[state].display)]}


def _iso(value: Any) -> str:
    text: str = value.isoformat()
    return text.replace("+00:00", "Z")


def _guard_task(resource: dict[str, Any] | None, before: dict[str, Any] | None) -> None:
    """The fulfilment Task is the server's: clients move it through the operations."""
    for task in (before, resource):
        if task is not None and codes(task.get("code"), TASK_SYSTEM) & set(FULFILMENT.values()):
            raise rule("the fulfilment Task of a téléimagerie request is maintained by the "
                       "server: use the request's operations ($accept, $refuse, $schedule, "
                       "$start, $cancel…)", "Task", ErrorKind.CONFLICT)
