"""What the radiologist's pages read of a request, as plain values for the templates
(issue 30): the Task's state, due time and priority (R-VAL-5), the request's clinical
content (R-REQ-1..3), the patient's identity and its INS status (R-EXAM-1), and which
transitions of the state machine this user's roles may fire from here (R-VAL-*).

Nothing here reads the store: the values come from what the core answered the user."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from fhir_server.workflow.machine import (
    EXT_ACT_KIND,
    EXT_EMERGENCY,
    EXT_MODALITY,
    OPEN_STATES,
    STATE_SYSTEM,
    STATES,
    TASK_SYSTEM,
    TRANSITIONS,
    Transition,
)

TERMINOLOGY = Path(__file__).resolve().parents[2] / "terminology" / "resources"
EXT = "https://teleimagerie.fr/fhir/StructureDefinition/"
FR_CORE = "https://hl7.fr/ig/fhir/core/StructureDefinition/"
IDENTITY_STATUS = {"VIDE": "Identité provisoire (vide)", "PROV": "Identité provisoire",
                   "VALI": "Identité validée", "QUAL": "Identité qualifiée (INS)",
                   "DOUTE": "Identité douteuse", "FICT": "Identité fictive"}
INS_SYSTEMS = ("urn:oid:1.2.250.1.213.1.4.8", "urn:oid:1.2.250.1.213.1.4.10",
               "urn:oid:1.2.250.1.213.1.4.11")  # INS-NIR, its test OID, INS-NIA
PRIORITIES = {"stat": "Extrême urgence", "asap": "Dès que possible", "urgent": "Urgent",
              "routine": "Programmé"}
KIND_LABELS = {"telediagnostic": "Télédiagnostic", "teleexpertise": "Téléexpertise"}
FULFILMENT_CODES = {"realisation-interpretation": "telediagnostic",
                    "teleexpertise": "teleexpertise"}
MODALITIES = ("CR", "DX", "CT", "MR", "NM", "PT", "XA", "RF")
# what a transition asks for, shown as the operation's form (docs/workflow.md)
LABELS = {"accept": "Valider la demande", "refuse": "Refuser la demande",
          "schedule": "Planifier l'examen", "start": "Débuter l'examen",
          "images-available": "Images disponibles",
          "refuse-quality": "Refuser pour qualité d'images",
          "cancel": "Annuler la demande"}


@cache
def concepts(name: str) -> tuple[tuple[str, str], ...]:
    """(code, display) of one of our CodeSystems (terminology/resources)."""
    data = json.loads((TERMINOLOGY / f"CodeSystem-{name}.json").read_text(encoding="utf-8"))
    return tuple((c["code"], c.get("display") or c["code"]) for c in data.get("concept", []))


@cache
def displays() -> dict[tuple[str, str], str]:
    """(system, code) -> display of every CodeSystem we ship (CCAM, SNOMED, DICOM, ours):
    a code sent without its display is still shown in words."""
    out: dict[tuple[str, str], str] = {}
    for path in TERMINOLOGY.glob("CodeSystem-*.json"):
        data = json.loads(path.read_text(encoding="utf-8"))
        _walk(out, str(data.get("url", "")), data.get("concept") or [])
    return out


def _walk(out: dict[tuple[str, str], str], system: str, items: list[dict[str, Any]]) -> None:
    for c in items:
        if c.get("display"):
            out[(system, c["code"])] = c["display"]
        _walk(out, system, c.get("concept") or [])


def extension(resource: dict[str, Any], url: str) -> Any:
    for e in resource.get("extension") or []:
        if e.get("url") == url:
            return next((v for k, v in e.items() if k.startswith("value")), e)
    return None


def first_coding(concept: Any) -> dict[str, Any]:
    if isinstance(concept, dict) and "coding" in concept:
        return dict((concept.get("coding") or [{}])[0])
    return dict(concept) if isinstance(concept, dict) else {}


def concept_text(concept: Any) -> str:
    if not isinstance(concept, dict):
        return ""
    coding = first_coding(concept)
    return str(concept.get("text") or coding.get("display") or displays().get(
        (str(coding.get("system")), str(coding.get("code")))) or coding.get("code") or "")


def state_of(task: dict[str, Any]) -> str:
    for c in (task.get("businessStatus") or {}).get("coding") or []:
        if c.get("system") == STATE_SYSTEM:
            return str(c.get("code"))
    return ""


def kind_of_task(task: dict[str, Any]) -> str:
    for c in (task.get("code") or {}).get("coding") or []:
        if c.get("system") == TASK_SYSTEM and c.get("code") in FULFILMENT_CODES:
            return FULFILMENT_CODES[c["code"]]
    return ""


def due_of(task: dict[str, Any]) -> str:
    return str(((task.get("restriction") or {}).get("period") or {}).get("end") or "")


def late(task: dict[str, Any], now: datetime | None = None) -> bool:
    """R-VAL-5: an open request whose due time has passed."""
    due = due_of(task)
    if not due or state_of(task) not in OPEN_STATES:
        return False
    try:
        moment = datetime.fromisoformat(due.replace("Z", "+00:00"))
    except ValueError:
        return False
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment < (now or datetime.now(UTC))


def task_input(task: dict[str, Any], code: str) -> Any:
    for i in task.get("input") or []:
        if any(c.get("code") == code for c in (i.get("type") or {}).get("coding") or []):
            return next((v for k, v in i.items() if k.startswith("value")), None)
    return None


def person_name(resource: dict[str, Any] | None) -> str:
    """'FAMILY Given' of a Patient or Practitioner (the official name first)."""
    if not resource:
        return ""
    names = resource.get("name") or []
    if isinstance(names, str):  # Organization.name
        return names
    chosen = next((n for n in names if n.get("use") == "official"), names[0] if names else {})
    if chosen.get("text"):
        return str(chosen["text"])
    return " ".join([str(chosen.get("family") or "").upper(),
                     " ".join(chosen.get("given") or [])]).strip()


@dataclass
class Identity:
    """The patient's identity as the request page shows it (R-EXAM-1)."""

    name: str
    birth_date: str
    gender: str
    ins: str
    status: str  # a label of IDENTITY_STATUS
    status_code: str
    birth_place: str
    phone: str
    address: str


def identity(patient: dict[str, Any]) -> Identity:
    status = ""
    for e in patient.get("extension") or []:
        if e.get("url") == f"{FR_CORE}fr-core-identity-reliability":
            for sub in e.get("extension") or []:
                if sub.get("url") == "identityStatus":
                    status = str((sub.get("valueCoding") or {}).get("code") or "")
    ins = next((str(i.get("value")) for i in patient.get("identifier") or []
                if i.get("system") in INS_SYSTEMS), "")
    place = extension(patient, "http://hl7.org/fhir/StructureDefinition/patient-birthPlace")
    phone = next((str(t.get("value")) for t in patient.get("telecom") or []
                  if t.get("system") == "phone"), "")
    address = next((", ".join([*(a.get("line") or []), " ".join(
        p for p in (a.get("postalCode"), a.get("city")) if p)]) for a in
        patient.get("address") or []), "")
    return Identity(person_name(patient), str(patient.get("birthDate") or ""),
                    {"female": "F", "male": "M", "other": "autre"}.get(
                        str(patient.get("gender")), "inconnu"),
                    ins, IDENTITY_STATUS.get(status, "Statut d'identité non renseigné"),
                    status, str((place or {}).get("city") or "") if isinstance(place, dict)
                    else "", phone, address)


@dataclass
class Row:
    """One line of the worklist."""

    request_id: str
    state: str
    state_label: str
    priority: str
    due: str
    late: bool
    kind: str
    modality: str
    exam: str
    patient: str
    birth_date: str
    site: str
    emergency: bool = False


def rows(tasks: list[dict[str, Any]], included: dict[str, dict[str, Any]],
         now: datetime | None = None) -> list[Row]:
    """Worklist rows from the Tasks and what the search included (by reference)."""
    out = []
    for task in tasks:
        focus = str((task.get("focus") or {}).get("reference") or "")
        request = included.get(focus) or {}
        patient = included.get(str((task.get("for") or {}).get("reference") or "")) or {}
        site_ref = task_input(task, "site")
        site = included.get(str((site_ref or {}).get("reference") or "")) if isinstance(
            site_ref, dict) else None
        state = state_of(task)
        modality = task_input(task, "modalite") or extension(request, EXT_MODALITY) or {}
        out.append(Row(
            request_id=focus.partition("/")[2], state=state,
            state_label=STATES[state].display if state in STATES else state,
            priority=str(task.get("priority") or "routine"), due=due_of(task),
            late=late(task, now), kind=kind_of_task(task),
            modality=str(modality.get("code") or "") if isinstance(modality, dict) else "",
            exam=concept_text(request.get("code")), patient=person_name(patient),
            birth_date=str(patient.get("birthDate") or ""),
            site=str((site or {}).get("name") or (site_ref or {}).get("display") or "")
            if isinstance(site_ref, dict) else "",
            emergency=extension(request, EXT_EMERGENCY) is True))
    return out


def clinical(request: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, text) of what the request says, in the order a radiologist reads it."""
    out: list[tuple[str, str]] = []

    def add(label: str, value: str) -> None:
        if value:
            out.append((label, value))

    kind = first_coding(extension(request, EXT_ACT_KIND)).get("code")
    add("Type d'acte", KIND_LABELS.get(str(kind), str(kind or "")))
    add("Examen demandé", concept_text(request.get("code")))
    modality = extension(request, EXT_MODALITY)
    add("Modalité", str((modality or {}).get("code") or "") if isinstance(modality, dict)
        else "")
    add("Priorité", PRIORITIES.get(str(request.get("priority")), str(request.get("priority")
                                                                       or "")))
    if extension(request, EXT_EMERGENCY) is True:
        add("Urgence", "Oui (consentement recueilli a posteriori, R-CONS-3)")
    add("Région anatomique", ", ".join(concept_text(b) for b in request.get("bodySite") or []))
    add("Motif / contexte clinique", " ; ".join(concept_text(r) for r in
                                                request.get("reasonCode") or []))
    add("Objectif", concept_text(extension(request, f"{EXT}tlm-objective")))
    add("Grossesse", concept_text(extension(request, f"{EXT}tlm-pregnancy-status")))
    delay = extension(request, f"{EXT}tlm-desired-delay")
    if isinstance(delay, dict) and delay.get("value") is not None:
        add("Délai souhaité", f"{delay.get('value')} {delay.get('unit') or delay.get('code')}")
    add("Latéralité", concept_text(extension(request, f"{EXT}tlm-laterality")))
    add("Terrain à risque, contre-indications", ", ".join(
        concept_text(e.get("valueCodeableConcept")) for e in request.get("extension") or []
        if e.get("url") == f"{EXT}tlm-risk-factor"))
    add("Antécédents, biologie, imagerie antérieure", " ; ".join(
        str(s.get("display") or s.get("reference") or "")
        for s in request.get("supportingInfo") or []))
    add("Informations complémentaires", " ; ".join(
        str(n.get("text")) for n in request.get("note") or [] if n.get("text")))
    add("Renseignements", str(request.get("patientInstruction") or ""))
    add("Rédigée le", str(request.get("authoredOn") or ""))
    return out


def allowed(state: str, kind: str, roles: tuple[str, ...]) -> list[Transition]:
    """The operations the state machine offers from ``state`` for this kind of act to a
    holder of ``roles`` (R-VAL-*; the server checks again, and has the last word)."""
    return [t for t in TRANSITIONS.values()
            if t.operation and state in t.sources and (kind or "telediagnostic") in t.kinds
            and any(r in t.roles for r in roles)]


def act_kind_param(kind: str) -> str:
    """The worklist's act-kind filter as a Task code."""
    code = next((c for c, k in FULFILMENT_CODES.items() if k == kind), "")
    return f"{TASK_SYSTEM}|{code}" if code else ",".join(
        f"{TASK_SYSTEM}|{c}" for c in FULFILMENT_CODES)
