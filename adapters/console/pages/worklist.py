"""The worklist (issue 30 page 1; R-VAL-5, R-SEC-2): the requests the user's care
relationship reaches, by state, priority and due time, late ones highlighted, filtered
by site, modality and act kind, refreshed without reload (htmx polling of the rows).

One search of the fulfilment Tasks through the core (``Task?code=…&_sort=tlm-due``,
including their request, patient and site), so the list, its count and its pages are
exactly what the API answers this user."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from adapters.console import requests as rq
from adapters.console.web import Nav, User, console, requires
from fhir_server.workflow.machine import OPEN_STATES, STATE_SYSTEM, STATES

router = APIRouter()
# the roles with a care relationship to requests (security/roles.py reach "care")
CARE_ROLES = frozenset({"remote-imager", "secretary", "radiographer", "requesting-physician",
                        "nuclear-physician", "local-physician"})
NAV = (Nav("Demandes", "/console/demandes", CARE_ROLES, order=10),)
# the pages of requests open to these roles; the core narrows what each one sees
CareUser = Annotated[User, Depends(requires(*CARE_ROLES))]
PAGE_SIZE = 50


def _filters(request: Request) -> dict[str, str]:
    q = request.query_params
    return {"etat": q.get("etat", "ouvertes"), "site": q.get("site", ""),
            "modalite": q.get("modalite", ""), "type": q.get("type", ""),
            "retard": q.get("retard", ""), "curseur": q.get("curseur", "")}


def _params(f: dict[str, str], now: datetime) -> list[tuple[str, str]]:
    """The Task search of the filters (workflow/search.py: tlm-due, tlm-site,
    tlm-modality)."""
    # the searchset carries its guarded total; sites are named from the directory list
    # (an include of each costs a guarded lookup: benchmarks/console.py)
    params = [("code", rq.act_kind_param(f["type"])), ("_sort", "tlm-due"),
              ("_count", str(PAGE_SIZE)), ("_include", "Task:focus"),
              ("_include", "Task:patient")]
    if f["etat"] in STATES:
        params.append(("business-status", f"{STATE_SYSTEM}|{f['etat']}"))
    elif f["etat"] != "toutes":
        params.append(("business-status", ",".join(f"{STATE_SYSTEM}|{s}" for s in STATES
                                                    if s in OPEN_STATES)))
    if f["site"]:
        params.append(("tlm-site", f"Organization/{f['site']}"))
    if f["modalite"]:
        params.append(("tlm-modality", f["modalite"]))
    if f["retard"]:
        params.append(("tlm-due", "lt" + now.isoformat(timespec="seconds")))
    if f["curseur"]:
        params.append(("_cursor", f["curseur"]))
    return params


def _cursor(url: str | None) -> str:
    """The ``_cursor`` of a Bundle's next link (the page after this one)."""
    if not url:
        return ""
    from urllib.parse import parse_qs, urlsplit

    return (parse_qs(urlsplit(url).query).get("_cursor") or [""])[0]


def _load(user: User, f: dict[str, str], sites: list[tuple[str, str]]) -> dict[str, Any]:
    now = datetime.now(UTC)
    answer = user.fhir.search("Task", _params(f, now))
    if not answer.ok:
        return {"error": answer.message, "rows": [], "total": None, "next": ""}
    included: dict[str, dict[str, Any]] = {
        f"Organization/{sid}": {"name": name} for sid, name in sites}
    included.update({f"{r['resourceType']}/{r['id']}": r
                     for r in answer.entries(mode="include")})
    return {"error": "", "rows": rq.rows(answer.entries("Task", "match"), included, now),
            "total": answer.resource.get("total"), "next": _cursor(answer.link("next"))}


def _sites(user: User) -> list[tuple[str, str]]:
    """The structures of the directory (the site filter's choices)."""
    found = user.fhir.search("Organization", [("_count", "200"), ("_sort", "name"),
                                              ("_elements", "name")])
    return [(str(o["id"]), str(o.get("name") or o["id"])) for o in found.entries(
        "Organization")]


@router.get("/demandes", name="console-worklist")
def worklist(request: Request, user: CareUser) -> Response:
    here = console(request)
    f = _filters(request)
    states = [("ouvertes", "Toutes les demandes ouvertes"), ("toutes", "Tous les états"),
              *((code, s.display) for code, s in STATES.items())]
    sites = _sites(user)
    return here.render(request, "worklist.html", user, title="Demandes", filters=f,
                       states=states, sites=sites, modalities=rq.MODALITIES,
                       kinds=list(rq.KIND_LABELS.items()), priorities=rq.PRIORITIES,
                       kind_labels=rq.KIND_LABELS,
                       poll=here.config.poll_seconds, **_load(user, f, sites))


@router.get("/demandes/lignes", name="console-worklist-rows")
def worklist_rows(request: Request, user: CareUser) -> Response:
    """The table's body and count (htmx: polled, and swapped when a filter changes)."""
    here = console(request)
    return here.render(request, "worklist_rows.html", user, filters=_filters(request),
                       priorities=rq.PRIORITIES, kind_labels=rq.KIND_LABELS,
                       poll=here.config.poll_seconds,
                       **_load(user, _filters(request), _sites(user)))
