"""The transition operations on a téléimagerie request (``POST ServiceRequest/[id]/$name``).

Each takes a Parameters body and answers the request's fulfilment Task (its state,
owner, due date, reasons). See ``docs/workflow.md`` for the parameters of each and
ADR 0009 for the mapping onto FHIR.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fhir_server.core.errors import ErrorKind, FhirError
from fhir_server.core.model import FhirRequest, FhirResponse
from fhir_server.search.query import QueryParser
from fhir_server.workflow import consent
from fhir_server.workflow.engine import Actor, Case, actor, check_role, check_state, fire
from fhir_server.workflow.machine import (
    ALTERNATIVE_SYSTEM,
    FULFILMENT,
    NUCLEAR,
    NUCLEAR_MODALITIES,
    OUT_OF_SCOPE,
    REFUSAL_SYSTEM,
    TASK_SYSTEM,
    TELEEXPERTISE,
    TRANSITIONS,
)
from fhir_server.workflow.records import (
    codes,
    coding,
    load,
    new_id,
    now,
    ref_of,
    rule,
    save,
    view,
)
from fhir_server.workflow.reports import qualified
from terminology.service import terminology

if TYPE_CHECKING:
    from fhir_server.server.dispatch import FhirServer, Handler

REMOTE_IMPOSSIBLE = "realisation-distance-impossible"
ELIGIBILITY = {  # R-TLE-1: what the expert checks before accepting a second opinion
    "qualite-images": "qualité des images",
    "images-anterieures": "images antérieures",
    "donnees-identification": "données administratives d'identification",
    "donnees-medicales": "données médicales complètes",
}


class Params:
    """A Parameters body, read leniently (by name, any value[x])."""

    def __init__(self, req: FhirRequest) -> None:
        if req.method != "POST":
            raise FhirError(ErrorKind.METHOD_NOT_ALLOWED, f"${req.operation} changes the "
                            "request: use POST with a Parameters body")
        data = req.body if isinstance(req.body, dict) else {}
        if data and data.get("resourceType") != "Parameters":
            raise FhirError(ErrorKind.INVALID, f"${req.operation} takes a Parameters body, "
                            f"not {data.get('resourceType')}", expression=["Parameters"])
        self.values: dict[str, list[Any]] = {}
        for p in data.get("parameter") or []:
            if not isinstance(p, dict) or not isinstance(p.get("name"), str):
                raise FhirError(ErrorKind.INVALID, "each parameter needs a name",
                                expression=["Parameters.parameter.name"])
            value = next((v for k, v in p.items() if k.startswith("value")), None)
            self.values.setdefault(p["name"], []).append(value)

    def get(self, name: str) -> Any:
        found = self.values.get(name)
        return found[0] if found else None

    def text(self, name: str, required: str | None = None) -> str | None:
        value = self.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
        if required:
            raise rule(required, f"Parameters.parameter[{name}]")
        return None

    def reference(self, name: str) -> str | None:
        value = self.get(name)
        return ref_of(value) if isinstance(value, dict) else None

    def concept(self, name: str) -> dict[str, Any] | None:
        value = self.get(name)
        if isinstance(value, dict) and "code" in value and "coding" not in value:
            return {"coding": [value]}  # a Coding given for a CodeableConcept
        return value if isinstance(value, dict) else None


def _begin(server: FhirServer, req: FhirRequest, name: str) -> tuple[Case, Params, Actor]:
    if req.resource_type != "ServiceRequest" or req.id is None:
        raise FhirError(ErrorKind.NOT_FOUND, f"${name} applies to one ServiceRequest: POST "
                        f"ServiceRequest/[id]/${name}")
    params = Params(req)
    assert server.workflow is not None
    case = server.workflow.case(server, req.id)
    who = actor(server, req, params.reference("practitioner"))
    check_state(case, TRANSITIONS[name])
    check_role(who, TRANSITIONS[name])
    return case, params, who


def _answer(server: FhirServer, case: Case) -> FhirResponse:
    return FhirResponse(200, {}, resource=case.task)


def _reason(params: Params, allowed_system: str = REFUSAL_SYSTEM) -> dict[str, Any]:
    """R-VAL-3: a coded reason *and* free text."""
    concept = params.concept("reason")
    if not concept or not codes(concept, allowed_system):
        raise rule(f"un motif codé est obligatoire (paramètre reason, système "
                   f"{allowed_system}) (R-VAL-3)", "Parameters.parameter[reason]")
    text = params.text("text", "le motif doit être explicité en texte libre (paramètre text) "
                       "(R-VAL-3)")
    vs = allowed_system.replace("/CodeSystem/", "/ValueSet/")
    for code in codes(concept, allowed_system):
        if not terminology().in_value_set(vs, allowed_system, code):
            raise rule(f"motif {code!r} inconnu de {allowed_system}",
                       "Parameters.parameter[reason]")
    return {**concept, "text": text}


def _check_imager(server: FhirServer, case: Case, who: Actor, what: str) -> str:
    """R-ACT-2: the acting imager, identified and qualified for the request's modality."""
    if who.practitioner is None:
        raise rule(f"{what} : l'imageur doit être identifié (Practitioner enregistré avec son "
                   "RPPS, ou paramètre practitioner pour un connecteur) (R-ACT-2)",
                   "Parameters.parameter[practitioner]")
    ok, why = qualified(server, who.practitioner, case.modality)
    if not ok:
        raise FhirError(ErrorKind.FORBIDDEN, f"{what} : imageur non habilité (R-ACT-2) : {why}")
    return who.practitioner


def accept(server: FhirServer, req: FhirRequest) -> FhirResponse:
    """R-VAL-1, R-ACT-2, R-CONS-2/3, R-SCOPE-2, R-TLE-1/2: the imager validates."""
    case, params, who = _begin(server, req, "accept")
    if case.modality in OUT_OF_SCOPE:
        raise rule(f"la modalité {case.modality} est hors du périmètre de la téléimagerie "
                   "(R-SCOPE-2) : refusez la demande ($refuse, motif hors-perimetre)",
                   kind=ErrorKind.CONFLICT)
    imager = _check_imager(server, case, who, "validation de la demande")
    inputs = list(case.task.get("input", []))
    if case.kind == TELEEXPERTISE:
        failed = [label for key, label in ELIGIBILITY.items() if params.get(key) is not True]
        if failed:
            raise rule("télé-expertise non recevable : " + ", ".join(failed) + " non "
                       "confirmé(s) ; donnez chaque critère (booléen) ou refusez la demande en "
                       "expliquant la raison au demandeur ($refuse) (R-TLE-1)",
                       kind=ErrorKind.UNPROCESSABLE)
        inputs += [{"type": {"coding": [coding(TASK_SYSTEM, f"eligibilite-{key}", label)]},
                    "valueBoolean": True} for key, label in ELIGIBILITY.items()]
        _quota(server, case, imager)
    protocol = params.text("protocol")
    if protocol:  # the imaging protocol, sent back to the RIS (ANS TLR flux 3)
        inputs.append({"type": {"coding": [coding(TASK_SYSTEM, "protocole-imagerie")]},
                       "valueString": protocol})
    assert server.workflow is not None
    consent.gate(server, server.workflow, req, case)
    case = fire(server, req, case, TRANSITIONS["accept"], who, note=params.text("note"),
                task_changes={"owner": {"reference": imager}, "input": inputs})
    return _answer(server, case)


def _quota(server: FhirServer, case: Case, imager: str) -> None:
    """R-TLE-2: at most N téléexpertises per patient, expert and calendar year."""
    assert server.workflow is not None
    limit = server.workflow.settings.teleexpertise_limit
    year = now()[:4]
    query = QueryParser(server.limits).parse("Task", [
        ("code", f"{TASK_SYSTEM}|{FULFILMENT[TELEEXPERTISE]}"), ("owner", imager),
        ("patient", case.patient or ""), ("authored-on", f"ge{year}-01-01"),
        ("authored-on", f"lt{int(year) + 1}-01-01"),
        ("status", "accepted,in-progress,completed")])
    done = view(server).search(query, count_only=True).total or 0
    if done >= limit:
        raise rule(f"limite atteinte : {done} télé-expertises en {year} pour ce patient avec "
                   f"cet expert (maximum {limit} par an, R-TLE-2)", kind=ErrorKind.CONFLICT)


def refuse(server: FhirServer, req: FhirRequest) -> FhirResponse:
    """R-VAL-3 (coded reason + text), R-VAL-4 (alternative path, médecin traitant told),
    R-TLE-1 (the reason is explained to the requester)."""
    case, params, who = _begin(server, req, "refuse")
    reason = _reason(params)
    outputs = list(case.task.get("output", []))
    recipients = [r for r in [ref_of(case.request.get("requester"))] if r]
    alternative = None
    if REMOTE_IMPOSSIBLE in codes(reason, REFUSAL_SYSTEM):
        alternative = params.concept("alternative")
        if not alternative or not codes(alternative, ALTERNATIVE_SYSTEM):
            raise rule("réalisation à distance impossible : une prise en charge adaptée doit "
                       f"être proposée (paramètre alternative, système {ALTERNATIVE_SYSTEM}) "
                       "(R-VAL-4)", "Parameters.parameter[alternative]")
        outputs.append({"type": {"coding": [coding(TASK_SYSTEM, "prise-en-charge-adaptee")]},
                        "valueCodeableConcept": alternative})
        patient = load(server, case.patient) or {}
        recipients += [r for r in (ref_of(g) for g in patient.get("generalPractitioner") or [])
                       if r and r not in recipients]
    case = fire(server, req, case, TRANSITIONS["refuse"], who, reason=reason,
                task_changes={"output": outputs} if outputs else None)  # no empty array
    text = f"Demande refusée par l'imageur : {reason['text']}"
    if alternative is not None:
        text += f" — prise en charge proposée : {_label(alternative)}"
    _notify(server, case, recipients, text, reason, who)
    return _answer(server, case)


def schedule(server: FhirServer, req: FhirRequest) -> FhirResponse:
    """R-VAL-5: the exam date; R-CONS-2: not without consent (or the emergency flag)."""
    case, params, who = _begin(server, req, "schedule")
    when = params.get("occurrence")
    if not isinstance(when, str) or len(when) < 10:
        raise rule("la date prévue de l'examen est obligatoire (paramètre occurrence, "
                   "dateTime)", "Parameters.parameter[occurrence]")
    assert server.workflow is not None
    consent.gate(server, server.workflow, req, case)
    case = fire(server, req, case, TRANSITIONS["schedule"], who, note=params.text("note"),
                request_changes={"occurrenceDateTime": when},
                task_changes={"executionPeriod": {"start": when}})
    return _answer(server, case)


def start(server: FhirServer, req: FhirRequest) -> FhirResponse:
    """R-SCOPE-4: a remote NM/PT exam starts only with a nuclear physician on site and the
    video exchange with the patient planned."""
    case, params, who = _begin(server, req, "start")
    inputs = list(case.task.get("input", []))
    if case.modality in NUCLEAR_MODALITIES:
        physician = params.reference("nuclear-physician")
        if physician is None:
            raise rule("médecine nucléaire à distance : un médecin nucléaire présent sur site "
                       "doit être indiqué (paramètre nuclear-physician) (R-SCOPE-4)",
                       "Parameters.parameter[nuclear-physician]")
        ok, why = qualified(server, physician, "NM")
        if not ok:
            raise rule(f"le médecin sur site doit être médecin nucléaire ({', '.join(NUCLEAR)}) "
                       f"(R-SCOPE-4) : {why}", "Parameters.parameter[nuclear-physician]")
        video = params.get("video-exchange")
        if video is not True:
            raise rule("médecine nucléaire à distance : l'échange vidéo avec le patient doit "
                       "être prévu (paramètre video-exchange = true) (R-SCOPE-4)",
                       "Parameters.parameter[video-exchange]")
        inputs += [{"type": {"coding": [coding(TASK_SYSTEM, "medecin-nucleaire-sur-site")]},
                    "valueReference": {"reference": physician}},
                   {"type": {"coding": [coding(TASK_SYSTEM, "echange-video")]},
                    "valueBoolean": True}]
    case = fire(server, req, case, TRANSITIONS["start"], who, note=params.text("note"),
                task_changes={"input": inputs, "executionPeriod": {
                    **(case.task.get("executionPeriod") or {}), "start": now()}})
    return _answer(server, case)


def images_available(server: FhirServer, req: FhirRequest) -> FhirResponse:
    case, params, who = _begin(server, req, "images-available")
    case = fire(server, req, case, TRANSITIONS["images-available"], who,
                note=params.text("note"))
    return _answer(server, case)


def refuse_quality(server: FhirServer, req: FhirRequest) -> FhirResponse:
    """R-REP-4: images below quality: the refusal is justified, recorded, the requesting
    team told, and the exam goes back to be redone."""
    case, params, who = _begin(server, req, "refuse-quality")
    _check_imager(server, case, who, "refus d'interprétation")
    text = params.text("text", "le refus d'interpréter doit être justifié (paramètre text) "
                       "(R-REP-4)")
    reason = {"coding": [coding(REFUSAL_SYSTEM, "qualite-images",
                                "Qualité des images insuffisante")], "text": text}
    case = fire(server, req, case, TRANSITIONS["refuse-quality"], who, reason=reason)
    recipients = [r for r in [ref_of(case.request.get("requester"))] if r]
    _notify(server, case, recipients, "Images refusées pour qualité insuffisante, examen à "
            f"reprendre : {text} (R-REP-4)", reason, who)
    return _answer(server, case)


def cancel(server: FhirServer, req: FhirRequest) -> FhirResponse:
    case, params, who = _begin(server, req, "cancel")
    text = params.text("text", "l'annulation doit être motivée (paramètre text)")
    concept = params.concept("reason") or {}
    case = fire(server, req, case, TRANSITIONS["cancel"], who,
                reason={**concept, "text": text})
    return _answer(server, case)


def _label(concept: dict[str, Any]) -> str:
    c = (concept.get("coding") or [{}])[0]
    return str(concept.get("text") or c.get("display") or c.get("code"))


def _notify(server: FhirServer, case: Case, recipients: list[str], text: str,
            reason: dict[str, Any], who: Actor) -> None:
    """A Communication to the people who must know (R-VAL-4, R-REP-4, R-TLE-1)."""
    if not recipients:
        return
    communication: dict[str, Any] = {
        "resourceType": "Communication", "status": "in-progress",
        "basedOn": [{"reference": case.ref}], "subject": case.request.get("subject"),
        "about": [{"reference": f"Task/{case.task['id']}"}], "sent": now(),
        "reasonCode": [reason], "recipient": [{"reference": r} for r in recipients],
        "payload": [{"contentString": text}],
    }
    if who.practitioner:
        communication["sender"] = {"reference": who.practitioner}
    save(server, "Communication", new_id(), communication)


def _transition_handler(fn: Handler) -> Handler:
    def run(server: FhirServer, req: FhirRequest) -> FhirResponse:
        with server.store.write():
            return fn(server, req)
    run.__doc__ = fn.__doc__
    return run


OPERATIONS: dict[tuple[str | None, str], Handler] = {
    ("ServiceRequest", name): _transition_handler(fn) for name, fn in (
        ("accept", accept), ("refuse", refuse), ("schedule", schedule), ("start", start),
        ("images-available", images_available), ("refuse-quality", refuse_quality),
        ("cancel", cancel))}
