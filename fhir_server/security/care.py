"""The care relationship (R-SEC-2) as query terms: whose record a professional reaches.

A professional is *party* to an imaging request when they (their Practitioner, one of
their PractitionerRoles) or their structure (Organization, by FINESS from the token or
from their PractitionerRoles) is its requester or its performer, or when the requester
is a PractitionerRole of their structure (the requesting site's team).

Being party opens a patient's record in two ways (ADR 0020):

- **the whole record** when someone else made them party — the request was written by
  another user or a connector (a RIS order naming the imager, a colleague's request at
  their site);
- **what comes after the request** when they made themselves party (they created the
  request naming themselves, or added themselves to it): the request, and whatever is
  created for that patient from then on — never what existed before it. The server
  records such self-assertions in the resource's ``meta.tag`` (system
  :data:`SELF_ASSERTED`, code: the writer's idNatPs); clients cannot set or remove
  those tags (:func:`owned_tags`).

A care role that **registers a new Patient** reaches that Patient resource only (read,
update, history: :meth:`Relationship.registered`, on the Patient type alone) — never
what others write for that patient, which an identity feed may attach to it later (an
HL7 order matched by INS): registering someone is no relationship with their record.
Their data comes only through requests, as above (the registrant's own request naming
themselves opens what comes after it).

A declared, justified **break-the-glass** (:mod:`breakglass`) opens one patient's whole
record for a limited time; it is a server-written Flag, which the guard reads like the
requests.

Nothing here lists patients: every set is a sub-select compiled by the store
(:class:`~fhir_server.search.query.InCare`), so a professional party to thousands of
requests costs the same query as one party to a single request (issue 27 item 6).
"""

from __future__ import annotations

from typing import Any

import orjson

from fhir_server.core.canonical import url
from fhir_server.core.limits import Limits
from fhir_server.search.query import (
    AllOf,
    AnyOf,
    Not,
    Opened,
    PatientSet,
    QueryParser,
    Term,
    escape,
)
from fhir_server.search.registry import get
from fhir_server.search.values import format_instant, now_us
from fhir_server.security.principal import FINESS_OID, FINESS_URL, Principal
from fhir_server.store.base import Store, Stored

# meta.tag systems only the server writes (stripped from what clients send)
SELF_ASSERTED = url("CodeSystem", "tlm-self-asserted")  # code: who made themselves party
BREAK_GLASS = url("CodeSystem", "tlm-break-glass")  # code: whose break-the-glass grant
# code: who owns a Subscription (issue 31); its notifications carry what they may read
SUBSCRIPTION_OWNER = url("CodeSystem", "tlm-subscription-owner")
SERVER_TAGS = frozenset({SELF_ASSERTED, BREAK_GLASS, SUBSCRIPTION_OWNER})
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
_CHUNK = 100  # values per internal OR list (far below the store limits)


def all_matches(store: Store, limits: Limits, rtype: str,
                params: list[tuple[str, str]]) -> list[Stored]:
    # strict: a parameter the table lacks must fail loudly, not match everything
    parser = QueryParser(Limits(default_count=limits.max_count, max_count=limits.max_count,
                                max_or_values=10_000), strict=True)
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
    """References (``Type/id``) that stand for this principal in a request, and
    ``team:Organization/id`` for the structures whose site team they belong to."""
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


def self_key(principal: Principal) -> str:
    """Who a principal is in the server's tags: their idNatPs, else issuer and subject."""
    return principal.id_nat_ps or f"{principal.issuer}#{principal.sub}"


def request_refs(request: dict[str, Any]) -> set[str]:
    """The requester and performer references of a ServiceRequest."""
    refs = {(request.get("requester") or {}).get("reference")}
    refs |= {p.get("reference") for p in request.get("performer") or [] if isinstance(p, dict)}
    return {r for r in refs if isinstance(r, str)}


class Relationship:
    """One principal's care relationship as query terms, built once per request."""

    def __init__(self, store: Store, limits: Limits, principal: Principal) -> None:
        self.store = store
        self.principal = principal
        self.who = parties(store, limits, principal)
        self.key = self_key(principal)
        self._parser = QueryParser(Limits(max_or_values=10_000), strict=True)
        self._party = self._party_term()
        self._sets: tuple[list[PatientSet], list[Opened]] | None = None
        self._any: list[PatientSet] | None = None
        self._registered: PatientSet | None = None

    def _term(self, rtype: str, key: str, value: str) -> Term:
        return self._parser.parse(rtype, [(key, value)]).terms[0]

    def _party_term(self) -> Term | None:
        """The requests this principal is party to: requester or performer is one of
        their references, or the requester is a PractitionerRole of their structure."""
        direct = sorted(r for r in self.who if not r.startswith("team:"))
        teams = sorted(r[5:] for r in self.who if r.startswith("team:"))
        options: list[Term] = []
        for i in range(0, len(direct), _CHUNK):
            joined = ",".join(direct[i:i + _CHUNK])
            options += [self._term("ServiceRequest", "requester", joined),
                        self._term("ServiceRequest", "performer", joined)]
        for i in range(0, len(teams), _CHUNK):
            options.append(self._term("ServiceRequest", "requester:PractitionerRole."
                                      "organization", ",".join(teams[i:i + _CHUNK])))
        return AnyOf(options) if options else None

    def tagged(self, rtype: str) -> Term:
        """Resources on which this principal asserted themselves (``meta.tag``)."""
        return self._term(rtype, "_tag", _token(SELF_ASSERTED, self.key))

    def break_glass(self) -> Term:
        """This principal's break-the-glass grants still running: server-written Flags
        (``meta.security`` BTG, which no client may set) tagged with their key."""
        return AllOf([self._term("Flag", "_security", f"{ACT_REASON}|BTG"),
                      self._term("Flag", "_tag", _token(BREAK_GLASS, self.key)),
                      self._term("Flag", "date", f"ge{format_instant(now_us())}")])

    def sets(self) -> tuple[list[PatientSet], list[Opened]]:
        """(patients whose whole record is reached, patients reached from a request on);
        the same objects every call, so a statement computes each set once."""
        if self._sets is None:
            self._sets = self._build_sets()
        return self._sets

    def _build_sets(self) -> tuple[list[PatientSet], list[Opened]]:
        subject = get("ServiceRequest", "subject")
        flagged = get("Flag", "patient")
        assert subject is not None and flagged is not None
        whole = [PatientSet("Flag", flagged, [self.break_glass()])]
        since: list[Opened] = []
        if self._party is not None:
            whole.append(PatientSet("ServiceRequest", subject,
                                    [self._party, Not(self.tagged("ServiceRequest"))]))
            since.append(Opened("ServiceRequest", subject,
                                [self._party, self.tagged("ServiceRequest")]))
        return whole, since

    def registered(self) -> PatientSet:
        """The Patients this principal registered (``meta.tag``): a set for the guard of
        the Patient type only — it opens those Patient resources, never the record
        others write for them (R-SEC-2, ADR 0020). The same object every call."""
        if self._registered is None:
            self._registered = PatientSet("Patient", None, [self.tagged("Patient")])
        return self._registered

    def patient_sets(self) -> list[PatientSet]:
        """Patients with any relationship (what a write for a patient needs)."""
        if self._any is None:
            whole, since = self.sets()
            self._any = [*whole, *(PatientSet(o.source_type, o.ref, o.terms) for o in since)]
        return self._any

    def is_party(self, request: dict[str, Any]) -> bool:
        """Is this principal party to the request as written (the same rule as the
        query terms, read from the body)?"""
        refs = request_refs(request)
        if refs & self.who:
            return True
        requester = (request.get("requester") or {}).get("reference")
        if isinstance(requester, str) and requester.startswith("PractitionerRole/"):
            role = self.store.read("PractitionerRole", requester.split("/")[1])
            if role is not None and not role.deleted:
                return f"team:{_org_of(role)}" in self.who
        return False


def owned_tags(resource: dict[str, Any], previous: dict[str, Any] | None,
               added: str | None, owner: str | None = None) -> list[dict[str, Any]]:
    """The ``meta.tag`` list of a new version: the client's tags of other systems, the
    server's tags of the previous version (never set or removed by a client), ``added``
    (a self-assertion by that key) and ``owner`` (a new Subscription's creator)."""
    def ours(tag: Any) -> bool:
        return isinstance(tag, dict) and tag.get("system") in SERVER_TAGS

    tags = [t for t in (resource.get("meta") or {}).get("tag") or [] if not ours(t)]
    kept = [t for t in ((previous or {}).get("meta") or {}).get("tag") or [] if ours(t)]
    if added is not None and not any(t.get("system") == SELF_ASSERTED and
                                     t.get("code") == added for t in kept):
        kept.append({"system": SELF_ASSERTED, "code": added,
                     "display": "party by their own assertion (R-SEC-2)"})
    if owner is not None and not any(t.get("system") == SUBSCRIPTION_OWNER for t in kept):
        kept.append({"system": SUBSCRIPTION_OWNER, "code": owner})
    return tags + kept
