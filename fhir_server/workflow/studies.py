"""Studies received before their request (issue 7; R-REP-7, R-EXAM-1).

An ImagingStudy that matched no request is kept without ``basedOn``, tagged
*demande à rattacher* (profile invariant ``tlm-is-1``). When a téléimagerie request is
written whose identifiers (accession or placer number) name such a study, the study —
and its dose Observations — are attached to it inside the request's write unit.

The subject decides, never silently: the request's patient is the study's, or the
study's is a *provisional* patient built from the DICOM header whose traits (birth date,
sex, identifiers of the same issuer) do not contradict it — the provisional record is
then closed (``active`` false, ``link`` replaced-by) and stays flagged for review. Any
contradiction leaves the study waiting and flags the request's patient.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fhir_server.search.query import escape
from fhir_server.workflow.identity import status
from fhir_server.workflow.machine import FLAG_SYSTEM
from fhir_server.workflow.records import body, load, new_id, ref_of, save, view

if TYPE_CHECKING:
    from fhir_server.server.dispatch import FhirServer

WAITING = "demande-a-rattacher"


def identity_flag(subject: str, text: str) -> dict[str, Any]:
    """A ``Flag`` *identité à vérifier* on ``subject`` (R-EXAM-1)."""
    return {"resourceType": "Flag", "status": "active",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/"
                                      "CodeSystem/flag-category", "code": "admin"}]}],
            "code": {"coding": [{"system": FLAG_SYSTEM, "code": "identite-a-verifier",
                                 "display": "Identité à vérifier"}],
                     "text": text[:500]},
            "subject": {"reference": subject}}


def attach_waiting(server: FhirServer, request: dict[str, Any]) -> list[dict[str, Any]]:
    """Attach the waiting studies that carry one of ``request``'s numbers; returns them
    as stored. Called by the workflow after each write of a téléimagerie request."""
    from fhir_server.security.care import all_matches

    numbers = sorted({i["value"] for i in request.get("identifier") or []
                      if isinstance(i, dict) and isinstance(i.get("value"), str)})
    patient = ref_of(request.get("subject"))
    if not numbers or not patient:
        return []
    found = all_matches(view(server), server.limits, "ImagingStudy", [
        ("identifier", ",".join(escape(n) for n in numbers)),
        ("_tag", f"{FLAG_SYSTEM}|{WAITING}")])
    attached = []
    for item in found:
        study = body(item)
        if study is None or item.deleted or study.get("basedOn"):
            continue
        subject = ref_of(study.get("subject")) or ""
        if subject != patient:
            why = _contradiction(server, subject, patient)
            if why:
                save(server, "Flag", new_id(), identity_flag(
                    patient, f"L'étude ImagingStudy/{item.id} porte un numéro de la demande "
                             f"ServiceRequest/{request['id']} mais concerne {subject} : "
                             f"{why} — rattachement manuel requis"))
                continue
            _replace(server, subject, patient)
        study = {**study, "subject": {"reference": patient},
                 "basedOn": [{"reference": f"ServiceRequest/{request['id']}"}]}
        meta = dict(study.get("meta") or {})
        meta["tag"] = [t for t in meta.get("tag") or [] if t.get("code") != WAITING]
        study["meta"] = {k: v for k, v in meta.items() if v}
        saved = body(save(server, "ImagingStudy", item.id, study))
        _attach_doses(server, f"ImagingStudy/{item.id}", patient, request["id"])
        if saved is not None:
            attached.append(saved)
    return attached


def _contradiction(server: FhirServer, provisional: str, patient: str) -> str:
    """Why ``provisional`` cannot be the request's ``patient`` ('' when it can)."""
    old, new = load(server, provisional), load(server, patient)
    if old is None or new is None:
        return "patient introuvable"
    if status(old) != "PROV":
        return "ses identifiants DICOM désignent un autre patient connu"
    for key, label in (("birthDate", "date de naissance"), ("gender", "sexe")):
        if old.get(key) and new.get(key) and old[key] != new[key]:
            return f"{label} {old[key]} dans l'en-tête DICOM, {new[key]} pour la demande"
    theirs = {(i.get("system"), i.get("value")) for i in new.get("identifier") or []}
    for ident in old.get("identifier") or []:
        system = ident.get("system")
        if system and any(s == system for s, _ in theirs) and \
                (system, ident.get("value")) not in theirs:
            return f"identifiant {ident.get('value')} ({system}) différent"
    return ""


def _replace(server: FhirServer, provisional: str, patient: str) -> None:
    """Close the provisional record, pointing to the patient it turned out to be (its
    identity Flag stays active: the identity-vigilance cell reviews every PROV)."""
    old = load(server, provisional)
    if old is None:
        return
    rid = provisional.split("/", 1)[1]
    links = [link for link in old.get("link") or []
             if ref_of(link.get("other")) != patient]
    save(server, "Patient", rid, {**old, "active": False, "link": [
        *links, {"other": {"reference": patient}, "type": "replaced-by"}]})


def _attach_doses(server: FhirServer, study: str, patient: str, request_id: str) -> None:
    from fhir_server.security.care import all_matches

    for item in all_matches(view(server), server.limits, "Observation",
                            [("part-of", study)]):
        obs = body(item)
        if obs is None or item.deleted:
            continue
        save(server, "Observation", item.id, {
            **obs, "subject": {"reference": patient},
            "basedOn": [{"reference": f"ServiceRequest/{request_id}"}]})
