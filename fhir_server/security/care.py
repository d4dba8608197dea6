"""The care relationship (R-SEC-2): the patients of the requests a professional is party to.

A professional is party to an imaging request when they (their Practitioner, one of
their PractitionerRoles) or their structure (Organization, by FINESS from the token or
from their PractitionerRoles) is its requester or its performer, or when the requester
is a PractitionerRole of their structure (the requesting site's team). Everything is
computed from indexed searches on the live data, once per request, so a new request
opens access at once and a cancelled assignment closes it.
"""

from __future__ import annotations

import orjson

from fhir_server.core.limits import Limits
from fhir_server.search.query import QueryParser, escape
from fhir_server.security.principal import FINESS_OID, FINESS_URL, Principal
from fhir_server.store.base import Store, Stored


def all_matches(store: Store, limits: Limits, rtype: str,
                params: list[tuple[str, str]]) -> list[Stored]:
    # strict: a parameter the table lacks must fail loudly, not match everything
    parser = QueryParser(Limits(default_count=limits.max_count, max_count=limits.max_count),
                         strict=True)
    query = parser.parse(rtype, params)
    query.total = "none"
    out: list[Stored] = []
    while True:
        page = store.search(query)
        out.extend(page.items)
        if page.next_cursor is None:
            return out
        query.cursor = page.next_cursor


def _token(system: str, value: str) -> str:
    return f"{system}|{escape(value)}"


def parties(store: Store, limits: Limits, principal: Principal) -> set[str]:
    """References (``Type/id``) that stand for this principal in a request."""
    refs: set[str] = set()
    ids = principal.identifiers()
    if ids:
        pracs = all_matches(store, limits, "Practitioner",
                            [("identifier", ",".join(_token(s, v) for s, v in ids))])
        refs.update(f"Practitioner/{p.id}" for p in pracs)
    orgs: set[str] = set()
    if principal.organizations:
        tokens = [_token(s, f) for f in principal.organizations for s in (FINESS_OID, FINESS_URL)]
        orgs.update(f"Organization/{o.id}" for o in
                    all_matches(store, limits, "Organization", [("identifier", ",".join(tokens))]))
    if refs:
        roles = all_matches(store, limits, "PractitionerRole",
                            [("practitioner", ",".join(sorted(refs)))])
        refs.update(f"PractitionerRole/{r.id}" for r in roles)
        orgs.update(o for o in (_org_of(r) for r in roles) if o)
    return refs | orgs | {f"team:{o}" for o in orgs}


def _org_of(role: Stored) -> str | None:
    body = orjson.loads(role.body or b"{}")
    ref = (body.get("organization") or {}).get("reference")
    return ref if isinstance(ref, str) and ref.startswith("Organization/") else None


def care_patients(store: Store, limits: Limits, principal: Principal) -> set[str]:
    """Ids of the patients of every request this principal is party to."""
    who = parties(store, limits, principal)
    direct = sorted(r for r in who if not r.startswith("team:"))
    teams = sorted(r[5:] for r in who if r.startswith("team:"))
    requests: list[Stored] = []
    if direct:
        joined = ",".join(direct)
        requests += all_matches(store, limits, "ServiceRequest", [("requester", joined)])
        requests += all_matches(store, limits, "ServiceRequest", [("performer", joined)])
    if teams:
        requests += all_matches(store, limits, "ServiceRequest",
                                [("requester:PractitionerRole.organization", ",".join(teams))])
    return {rid for rtype, rid in store.outgoing(requests, ["ServiceRequest.subject"])
            if rtype == "Patient" and rid}
