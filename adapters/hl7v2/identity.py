"""Patient identity from PID (IHE PAM-FR 2.11, CI-SIS INS rules) and its matching (R-EXAM-1).

Matching: by INS (qualified identity, PID-32 ``VALI``) first, then by the local IPP of
the same assigning authority. Traits that contradict the stored identity (birth date,
sex, another INS, INS and IPP pointing at two patients) are never merged silently: the
message is answered AE, kept in error and the patient gets a ``Flag`` for identity
review; an operator fixes the data and reprocesses the message.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from adapters.hl7v2 import datatypes as dt
from adapters.hl7v2.message import MessageError, Segment
from adapters.hl7v2.pid import BIRTH_PLACE, PROFILE, patient
from adapters.hl7v2.tx import token
from fhir_server.workflow.identity import RELIABILITY
from fhir_server.workflow.identity import status as identity_status
from fhir_server.workflow.records import body, matches

if TYPE_CHECKING:
    from fhir_server.server.dispatch import FhirServer



class IdentityConflict(MessageError):
    """The message's identity contradicts a stored patient (R-EXAM-1)."""

    def __init__(self, text: str, patient: str | None) -> None:
        super().__init__("204", text, "PID^1^3")
        self.patient = patient


def patient_from_pid(pid: Segment) -> dict[str, Any]:
    """PID -> Patient (tlm-patient): identifiers, names, birth date and place, sex,
    addresses, phones, identity reliability (PID-32) — the table
    :data:`adapters.hl7v2.pid.PATIENT` (issue 28)."""
    return patient(pid)


def _token(identifier: dict[str, Any]) -> str:
    return token(identifier["system"], identifier["value"])


def _fold(text: str | None) -> str:
    decomposed = unicodedata.normalize("NFKD", text or "")
    return "".join(c for c in decomposed if not unicodedata.combining(c)).upper().strip()


@dataclass
class Match:
    id: str | None  # the stored patient, None for a new one
    stored: dict[str, Any] | None
    incoming: dict[str, Any]


def find_patient(server: FhirServer, incoming: dict[str, Any]) -> Match:
    """INS first, then the local identifiers (IPP) of the same authority."""
    ins = [i for i in incoming["identifier"] if dt.is_ins(i)]
    local = [i for i in incoming["identifier"] if not dt.is_ins(i)]
    by_ins = matches(server, "Patient",
                     [("identifier", ",".join(_token(i) for i in ins))]) if ins else []
    by_local = matches(server, "Patient",
                       [("identifier", ",".join(_token(i) for i in local))]) if local else []
    by_ins = [p for p in by_ins if not p.deleted]
    by_local = [p for p in by_local if not p.deleted]
    found = {p.id for p in by_ins} | {p.id for p in by_local}
    if len(found) > 1:
        raise IdentityConflict(f"l'INS et l'IPP désignent des patients différents "
                               f"({', '.join(sorted(found))}) : vérification d'identité "
                               "requise (R-EXAM-1)", f"Patient/{sorted(found)[0]}")
    if not found:
        return Match(None, None, incoming)
    item = (by_ins or by_local)[0]
    stored = body(item) or {}
    _check_traits(stored, incoming, item.id)
    return Match(item.id, stored, incoming)


def _check_traits(stored: dict[str, Any], incoming: dict[str, Any], pid: str) -> None:
    problems = []
    for key in ("birthDate", "gender"):
        if stored.get(key) and incoming.get(key) and stored[key] != incoming[key]:
            problems.append(f"{key} {stored[key]} ≠ {incoming[key]}")
    stored_ins = {(i["system"], i["value"]) for i in stored.get("identifier") or []
                  if dt.is_ins(i)}
    new_ins = {(i["system"], i["value"]) for i in incoming["identifier"] if dt.is_ins(i)}
    if stored_ins and new_ins and stored_ins.isdisjoint(new_ins):
        problems.append("INS différent")
    if identity_status(stored) == "VALI":  # a qualified identity: birth name must match
        births = [_fold(n.get("family")) for n in stored.get("name") or []
                  if n.get("use") == "official"]
        new = [_fold(n.get("family")) for n in incoming.get("name") or []
               if n.get("use") == "official"]
        if births and new and births[0] != new[0]:
            problems.append(f"nom de naissance {births[0]} ≠ {new[0]}")
    if problems:
        raise IdentityConflict(f"identité discordante avec Patient/{pid} : "
                               f"{'; '.join(problems)} — vérification d'identité requise "
                               "(R-EXAM-1)", f"Patient/{pid}")


def merged(match: Match, update_traits: bool) -> dict[str, Any]:
    """The Patient to write: the stored one with the message's new identifiers and the
    contact it lacked (and with ``update_traits`` — an identity feed — or over a
    provisional identity, the message's demographics; a qualified identity is never
    downgraded by a provisional one)."""
    incoming = match.incoming
    if match.stored is None:
        return incoming
    out = {k: v for k, v in match.stored.items() if k != "meta"}
    out["meta"] = {"profile": [PROFILE]}
    known = {(i.get("system"), i.get("value")) for i in out.get("identifier") or []}
    out["identifier"] = [*(out.get("identifier") or []),
                         *(i for i in incoming["identifier"]
                           if (i["system"], i["value"]) not in known)]
    downgrade = identity_status(match.stored) == "VALI" and identity_status(incoming) != "VALI"
    # a provisional identity (a study's DICOM header, before its order) gives way to the
    # order's: the RIS is the structure's identity source (R-EXAM-1) — the same patient
    # then results whether the images or the order came first
    provisional = identity_status(match.stored) == "PROV"
    if (update_traits or provisional) and not downgrade:
        for key in ("name", "birthDate", "gender", "address", "telecom", "deceasedBoolean"):
            if key in incoming:
                out[key] = incoming[key]
        others = [e for e in out.get("extension") or []
                  if e.get("url") not in (RELIABILITY, BIRTH_PLACE)]
        out["extension"] = [*others, *(incoming.get("extension") or [])]
    for key in ("address", "telecom"):  # how to reach the patient (R-REQ-1): only added
        if key in incoming and not out.get(key):
            out[key] = incoming[key]
    if not out.get("extension"):
        out.pop("extension", None)
    return out

