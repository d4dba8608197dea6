"""Who asked: the requesting structure of a téléimagerie request (issue 24; R-REQ-1,
R-REP-5, R-INT-2).

One notion for every entry point. The structure is resolved when the request's Task
opens (and again whenever the request is written) and recorded on that Task as its
``site`` input — server-owned, searchable (``Task?tlm-site=``), never forged by a client.
Everything downstream reads it from there through :func:`site`: the report documents'
custodian, the RIS delivery and its route (``TELEIMG_HL7_ROUTES``), the route of flux 3,
the per-site indicators.

Where it comes from, first found wins:

1. ``requester`` is an Organization — the structure itself asked;
2. ``requester`` is a PractitionerRole — its ``organization`` (HL7 flux 1: ORC-12 at
   ORC-21, ORC-17 its type, MSH-4 the sending facility; FHIR clients naming a role);
3. a ``performer`` Organization — a FHIR client naming the site that performs the exam,
   which in téléradiologie is the requesting site (the images are acquired there);
4. ``requester`` is a Practitioner with exactly one active PractitionerRole that names an
   organization — unambiguous, so it is taken; with several it is not guessed.

A study that came by DICOM before its order is attached to the request when the order
arrives (``studies.attach_waiting``), so it has the order's structure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fhir_server.security.principal import FINESS_URL
from fhir_server.workflow.machine import TASK_SYSTEM
from fhir_server.workflow.records import body, coding, load, ref_of, split, task_id, view
from profiles.spec import FINESS

if TYPE_CHECKING:
    from fhir_server.server.dispatch import FhirServer

# identifier systems of a structure's FINESS (FR Core; what ORC-21.10 carries with
# authority ASIP-SANTE-ST): the key of a RIS route. Any other identifier (a local code,
# a SIRET) is not a route key: a delivery keyed on it would go to the wrong RIS.
STRUCTURE_SYSTEMS = (FINESS, FINESS_URL, "http://finess.sante.gouv.fr")
SITE = "site"


def resolve(server: FhirServer, request: dict[str, Any]) -> str | None:
    """The Organization reference of the structure that asked (None: not stated)."""
    requester = ref_of(request.get("requester"))
    kind = (split(requester) or ("",))[0]
    if kind == "Organization":
        return requester
    if kind == "PractitionerRole":
        role = load(server, requester) or {}
        found = ref_of(role.get("organization")) if role.get("active") is not False else None
        if found:  # an ended role no longer speaks for its structure
            return found
    for performer in request.get("performer") or []:
        ref = ref_of(performer)
        if (split(ref) or ("",))[0] == "Organization":
            return ref
    if kind == "Practitioner":
        return _only_structure(server, requester or "")
    return None


def _only_structure(server: FhirServer, practitioner: str) -> str | None:
    from fhir_server.security.care import all_matches

    orgs = set()
    for item in all_matches(view(server), server.limits, "PractitionerRole",
                            [("practitioner", practitioner)]):
        role = body(item)
        if role is None or item.deleted or role.get("active") is False:
            continue
        org = ref_of(role.get("organization"))
        if org:
            orgs.add(org)
    return orgs.pop() if len(orgs) == 1 else None


def site_input(structure: str) -> dict[str, Any]:
    """The Task input that records the structure."""
    return {"type": {"coding": [coding(TASK_SYSTEM, SITE)]},
            "valueReference": {"reference": structure}}


def recorded(task: dict[str, Any] | None) -> str | None:
    """The structure recorded on a request's Task."""
    for i in (task or {}).get("input") or []:
        if any(c.get("code") == SITE and c.get("system") == TASK_SYSTEM
               for c in (i.get("type") or {}).get("coding") or []):
            return ref_of(i.get("valueReference"))
    return None


def with_site(task: dict[str, Any], structure: str | None) -> dict[str, Any]:
    """``task`` with its ``site`` input set to ``structure`` (removed when None)."""
    inputs = [i for i in task.get("input") or [] if recorded({"input": [i]}) is None]
    if structure:
        inputs.append(site_input(structure))
    out = {**task, "input": inputs}
    if not inputs:
        del out["input"]
    return out


def site(server: FhirServer, request: dict[str, Any] | None) -> str | None:
    """The structure that asked for ``request``: as recorded on its Task, else resolved
    now (a request not under the workflow yet)."""
    if not request:
        return None
    if request.get("id"):
        task = body(view(server).read("Task", task_id(str(request["id"]))))
        if task is not None:
            return recorded(task)
    return resolve(server, request)


def finess(organization: dict[str, Any] | None) -> str:
    """The structure's route key: its FINESS ('' when it has none)."""
    idents = [i for i in (organization or {}).get("identifier") or []
              if isinstance(i, dict) and isinstance(i.get("value"), str) and i["value"]]
    for system in STRUCTURE_SYSTEMS:
        for ident in idents:
            if ident.get("system") == system:
                return str(ident["value"])
    return ""


def origin(server: FhirServer, request: dict[str, Any] | None
           ) -> tuple[str | None, dict[str, Any] | None, str]:
    """(the structure's reference, the Organization, its route key) for ``request``."""
    ref = site(server, request)
    org = load(server, ref) if ref else None
    return ref, org, finess(org)
