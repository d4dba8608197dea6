"""The patient's consent decisions as the guard reads them: what a Consent (profile
tlm-consent) is about, whom and which requests it names, and whether it opposes a sharing
(R-CONS-5). The workflow's consent gate (``workflow/consent.py``) builds on these; they
live here so the guard reads oppositions without importing the workflow (issue 28 item 1:
layers that point one way)."""

from __future__ import annotations

from typing import Any

import orjson

from fhir_server.core.canonical import url
from fhir_server.core.limits import Limits
from fhir_server.security.care import all_matches
from fhir_server.store.base import Store

CONSENT_SYSTEM = url("CodeSystem", "teleimagerie-consent-category")

ConsentRow = tuple[str, set[str], list[str], set[str]]  # decision, categories, actors, data


def consent_rows(store: Store, limits: Limits, patient: str) -> list[ConsentRow]:
    """Every active Consent of the patient, newest first, with the requests it names (on
    a given store: the access layer has no server)."""
    out = []
    found = all_matches(store, limits, "Consent",
                        [("patient", patient), ("status", "active"), ("_sort", "-_lastUpdated")])
    for item in found:
        c = orjson.loads(item.body) if item.body is not None and not item.deleted else {}
        provision = c.get("provision") or {}
        actors = [r for r in (_reference(a.get("reference")) for a in provision.get("actor")
                              or []) if r]
        out.append((provision.get("type", "permit"), categories_of(c), actors, concerns(c)))
    return out


def applicable(rows: list[ConsentRow], request_ref: str | None
               ) -> list[tuple[str, set[str], list[str]]]:
    """The rows that apply to ``request_ref`` (None: to every request)."""
    return [(decision, categories, actors) for decision, categories, actors, data in rows
            if request_ref is None or not data or request_ref in data]


def categories_of(consent: dict[str, Any]) -> set[str]:
    """What a Consent is about (our consent-category codes)."""
    return {code for cat in consent.get("category") or [] for code in _codes(cat)}


def concerns(consent: dict[str, Any]) -> set[str]:
    """The requests a Consent names in ``provision.data`` (empty: all of the patient's)."""
    refs = (_reference(d.get("reference")) for d in (consent.get("provision") or {}).get("data")
            or [])
    return {r.split("/_history/")[0] for r in refs if r}


def opposed_in(found: list[tuple[str, set[str], list[str]]], target: str) -> bool:
    """Did the latest applicable decision in ``found`` oppose sharing with ``target``
    (``dmp`` or a reference to a professional; R-CONS-5)? ``professionnels`` stands for
    any professional outside the care team (only an opposition naming no one applies to
    them)."""
    category = "partage-dmp" if target == "dmp" else "partage-professionnels"
    for decision, categories, actors in found:
        if category in categories and (target == "dmp" or not actors or target in actors):
            return decision == "deny"
    return False


def _codes(concept: Any) -> set[str]:
    """The consent-category codes of a CodeableConcept (or Coding)."""
    if not isinstance(concept, dict):
        return set()
    codings = concept.get("coding") if "coding" in concept else [concept]
    return {c["code"] for c in codings or [] if isinstance(c, dict) and "code" in c
            and c.get("system") == CONSENT_SYSTEM}


def _reference(value: Any) -> str | None:
    """The ``reference`` of a Reference (None when it has none)."""
    ref = value.get("reference") if isinstance(value, dict) else None
    return ref if isinstance(ref, str) else None
