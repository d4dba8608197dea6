"""``/console/audit``: the audit trail for the auditor (R-SEC-3, issue 30) — who
accessed which patient, when, from where, with what outcome; filters by user, patient
and period; the chain's head and, on request, its verification.

The events are an ``AuditEvent`` search through the core as the signed-in user
(:class:`adapters.console.fhir.Fhir`): the auditor's rights and the audit of the audit
are the API's. The chain's head and its verification are the core's audit sink's
(:meth:`fhir_server.audit.sink.AuditSink.head` / ``verify``, as ``teleimagerie audit
head|verify``), asked only for a user the page admits (the auditor role)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from adapters.console.web import Nav, Posted, User, console, requires
from fhir_server.audit.chain import Report
from fhir_server.audit.records import GENESIS

router = APIRouter()
ROLES = ("auditor",)
Auditor = Annotated[User, Depends(requires(*ROLES))]
NAV = [Nav("Audit", "/console/audit", frozenset(ROLES), order=60)]
PAGE = 100
OUTCOMES = {"0": "succès", "4": "échec mineur", "8": "échec grave", "12": "échec majeur"}


def _filters(request: Request) -> dict[str, str]:
    q = request.query_params
    return {k: q.get(k, "").strip() for k in ("utilisateur", "patient", "du", "au")
            if q.get(k, "").strip()}


def _params(filters: dict[str, str]) -> list[tuple[str, str]]:
    params = [("_sort", "-date"), ("_count", str(PAGE))]
    if "utilisateur" in filters:
        params.append(("agent", filters["utilisateur"]))
    if "patient" in filters:
        params.append(("patient", filters["patient"]))
    if "du" in filters:
        params.append(("date", f"ge{filters['du']}"))
    if "au" in filters:
        params.append(("date", f"le{filters['au']}"))
    return params


def row(event: dict[str, Any]) -> dict[str, Any]:
    """One event as the page's line: when, who, from where, what, which patient(s),
    outcome."""
    agents = event.get("agent") or []
    requestor = next((a for a in agents if a.get("requestor")), agents[0] if agents else {})
    who = requestor.get("who") or {}
    patients = [e["what"]["reference"] for e in event.get("entity") or []
                if str((e.get("what") or {}).get("reference", "")).startswith("Patient/")]
    subtype = ", ".join(c.get("display") or c.get("code", "")
                        for c in event.get("subtype") or [])
    return {"when": event.get("recorded", ""),
            "who": who.get("display") or who.get("reference") or
            (who.get("identifier") or {}).get("value", "—"),
            "where": (requestor.get("network") or {}).get("address", "—"),
            "what": subtype or (event.get("type") or {}).get("display") or
            (event.get("type") or {}).get("code", ""),
            "action": event.get("action", ""), "patients": patients,
            "outcome": OUTCOMES.get(str(event.get("outcome", "")), event.get("outcome", "")),
            "failed": str(event.get("outcome", "0")) != "0"}


def _render(request: Request, user: User, verified: Report | None = None) -> Response:
    filters = _filters(request)
    found = user.fhir.search("AuditEvent", _params(filters))
    events = [row(e) for e in found.entries("AuditEvent")] if found.ok else []
    sink = console(request).core.audit
    seq, digest = sink.head() if sink is not None else (0, GENESIS)
    return console(request).render(
        request, "audit.html", user, title="Audit", filters=filters, events=events,
        error=found.message, head_sequence=seq, head_hash=digest, verified=verified,
        more=bool(found.link("next")))


@router.get("/audit", name="audit")
def page(request: Request, user: Auditor) -> Response:
    return _render(request, user)


@router.post("/audit/verifier", name="audit-verify")
def verify(request: Request, user: Auditor,
           form: Posted) -> Response:
    """Walk the whole chain (``teleimagerie audit verify``): on request, not on every
    page load (it reads every event)."""
    sink = console(request).core.audit
    return _render(request, user, sink.verify() if sink is not None else None)
