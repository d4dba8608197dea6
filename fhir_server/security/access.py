"""Per-request rights and the guarded data view (R-SEC-1, R-SEC-2, R-SEC-4, R-ACT-1).

:class:`Access` answers "may this principal do letter X on type T, and whose data does
it reach?" from the intersection of its roles (:mod:`roles`) and SMART scopes.
:class:`GuardedStore` wraps the store for one request so that *every* interaction —
reads, searches and every inner set of their chains and ``_has``, includes, counts,
aggregates, history, bundle entries, operations, writes — goes through one guard:
:meth:`GuardedStore.guard`, query terms the store compiles (ADR 0005, ADR 0020).

- A search gets the guard of its type, and every chained target and ``_has`` source
  gets the guard of its own type, so no inner set reaches a hidden resource (no oracle
  through a chain, a ``_has`` or a count).
- A read, an include, a history entry is visible when the same guard matches it (one
  indexed query per type and batch), so reads and searches can never disagree.
- Resources of other patients are absent: 404, never 403, on reads and on every write
  path (an update, a conditional update, a transaction entry on a hidden id is a 404,
  not a 409 that would tell it exists). A write that would *create* is checked as a
  create, whichever verb carries it (update-as-create, R-SEC-2).

Documents are also hidden by their masking codes in the query, and by the patient's
opposition to the sharing a role does after it (:mod:`masking`, R-CONS-5).
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import orjson

from fhir_server.core.errors import ErrorKind, FhirError, not_found
from fhir_server.core.limits import Limits
from fhir_server.search.extract import IndexRows
from fhir_server.search.query import (
    AllOf,
    AnyOf,
    Chain,
    Has,
    InCare,
    Not,
    QueryParser,
    SearchQuery,
    Term,
    escape,
)
from fhir_server.search.registry import get
from fhir_server.security import masking
from fhir_server.security.care import (
    SUBSCRIPTION_OWNER,
    Relationship,
    owned_tags,
    request_refs,
    self_key,
)
from fhir_server.security.compartment import (
    NARROWING_PARAM,
    in_compartment,
    patients_of,
    references,
)
from fhir_server.security.consent import applicable, consent_rows, opposed_in
from fhir_server.security.principal import Principal
from fhir_server.security.roles import ROLES
from fhir_server.store.base import APPEND_ONLY_TYPES, Page, Store, Stored
from fhir_server.store.versions import MetaOwner

ALL = None  # reach: every patient


@dataclass(frozen=True)
class Reach:
    """Whose data a principal reaches for one (type, letter), when not everyone's:
    the care relationship (:mod:`care`), named patients (the patient role's own record),
    and at most ``only`` (a ``patient/`` scope's launch patient)."""

    care: bool = False
    own: frozenset[str] = field(default_factory=frozenset)
    only: frozenset[str] | None = None


NOTHING = Reach()
_NOWHERE: Term = Not(AllOf([]))  # matches no resource
_BATCH = 100  # ids per visibility query


def forbidden(message: str) -> FhirError:
    return FhirError(ErrorKind.FORBIDDEN, message)


def _parser() -> QueryParser:
    return QueryParser(Limits(max_or_values=10_000), strict=True)


class Access:
    """What one principal may do, computed lazily and cached for the request."""

    def __init__(self, principal: Principal, store: Store, limits: Limits) -> None:
        self.principal = principal
        self.store = store
        self.limits = limits
        self._relationship: Relationship | None = None
        self._reach: dict[tuple[str, str], Reach | bool | None] = {}
        self._consents: dict[str, list[Any]] = {}  # patient -> their active Consents
        self.roles = [ROLES[r] for r in principal.roles if r in ROLES]

    def permits(self, rtype: str, letter: str) -> bool:
        return self._compute(rtype, letter) is not False

    def require(self, rtype: str, letter: str) -> None:
        if not self.roles:
            raise forbidden("the token carries no role known to this server (R-ACT-1); "
                            f"known roles: {', '.join(sorted(ROLES))}")
        if not any(letter in r.letters(rtype) for r in self.roles):
            raise forbidden(f"role(s) {', '.join(r.code for r in self.roles)} may not "
                            f"{_VERB[letter]} {rtype}")
        if not any(s.grants(rtype, letter) for s in self.principal.scopes):
            raise forbidden(f"no SMART scope grants '{letter}' on {rtype}")

    def reach(self, rtype: str, letter: str) -> Reach | None:
        """Whose data of ``rtype`` is reachable for ``letter``; ``ALL`` when everyone's."""
        value = self._compute(rtype, letter)
        if value is False:
            return NOTHING
        return value  # type: ignore[return-value]

    def _compute(self, rtype: str, letter: str) -> Reach | bool | None:
        key = (rtype, letter)
        if key not in self._reach:
            self._reach[key] = self._evaluate(rtype, letter)
        return self._reach[key]

    def _evaluate(self, rtype: str, letter: str) -> Reach | bool | None:
        roles = [r for r in self.roles if letter in r.letters(rtype)]
        scopes = [s for s in self.principal.scopes if s.grants(rtype, letter)]
        if not roles or not scopes:
            return False
        if not in_compartment(rtype):
            return ALL
        own = frozenset([self.principal.patient] if self.principal.patient else [])
        by_scope_all = any(s.context != "patient" for s in scopes)
        if any(r.reach == "all" for r in roles):
            return ALL if by_scope_all else Reach(own=own)
        reach = Reach(care=any(r.reach == "care" for r in roles),
                      own=own if any(r.reach == "self" for r in roles) else frozenset())
        return reach if by_scope_all else Reach(reach.care, reach.own, only=own)

    def masked(self, rtype: str, letter: str) -> frozenset[str]:
        """The masking codes hiding a document from this principal (no role through
        which it acts on ``rtype`` sees through them)."""
        roles = [r for r in self.roles if letter in r.letters(rtype)]
        return masking.ALL.difference(*(r.unmasks for r in roles))

    def withheld(self, rtype: str, letter: str) -> frozenset[str]:
        """The sharings (``dmp``, ``professionnels``) an opposition withholds documents
        from, for this principal; empty when one of its roles shares nothing."""
        roles = [r for r in self.roles if letter in r.letters(rtype)]
        if not roles or any(not r.shares for r in roles):
            return frozenset()
        return frozenset(r.shares for r in roles)

    def opposed(self, patient: str, request: str | None, sharings: frozenset[str]) -> bool:
        """Did the patient oppose each of ``sharings`` (R-CONS-5)? Their Consents are
        read once per request (a page of documents is mostly one patient's)."""
        if patient not in self._consents:
            self._consents[patient] = consent_rows(self.store, self.limits,
                                                   f"Patient/{patient}")
        found = applicable(self._consents[patient], request)
        return all(opposed_in(found, s) for s in sharings)

    def relationship(self) -> Relationship:
        if self._relationship is None:
            self._relationship = Relationship(self.store, self.limits, self.principal)
        return self._relationship

    def parties(self) -> set[str]:
        return self.relationship().who

    @property
    def asserts_care(self) -> bool:
        """A person acting through a care role: what they make themselves party to is
        recorded as their own assertion (R-SEC-2)."""
        return not self.principal.is_system and any(r.reach == "care" for r in self.roles)


_VERB = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}


class GuardedStore(MetaOwner):
    """The store as one principal may see it, recording the patients it touched."""

    def __init__(self, inner: Store, access: Access) -> None:
        # a Bundle entry is dispatched on its Bundle's view: guard the store itself, once
        # (a system principal's view and the workflow's save unwrap one level)
        self.inner: Store = inner.inner if isinstance(inner, GuardedStore) else inner
        self.access = access
        self.supports_transactions = inner.supports_transactions
        self.savepoints = inner.savepoints
        self.serial_units = inner.serial_units
        self.touched: dict[str, set[str]] = {}  # "Type/id" -> patient ids (for the audit)
        # off for a Bulk Data export's pages: its audit is the kick-off's and each
        # download's (ADR 0025), not one entry per patient of 100 000 resources
        self.records_touched = True
        # what a Binary's securityContext names, read once for its patients and its masking
        self._contexts: dict[tuple[str, str], dict[str, Any] | None] = {}

    # -- pass-through -------------------------------------------------------------------
    def write(self, durable: bool = True) -> AbstractContextManager[None]:
        return self.inner.write(durable)

    def lock(self, key: str) -> AbstractContextManager[None]:
        return self.inner.lock(key)

    def close(self) -> None:
        self.inner.close()

    def outgoing(self, items: list[Stored], param_keys: list[str]) -> list[tuple[str, str]]:
        return self.inner.outgoing(items, param_keys)

    # -- the guard ----------------------------------------------------------------------
    def guard(self, rtype: str, letter: str) -> list[Term] | None:
        """The terms narrowing ``rtype`` to what this principal may see for ``letter``
        (``[]``: everything; None: nothing — no right). The one guard (R-SEC-2)."""
        if not self.access.permits(rtype, letter):
            return None
        reach = self.access.reach(rtype, letter)
        terms: list[Term] = []
        if reach is not ALL and in_compartment(rtype):
            if rtype == "Binary":
                terms.append(self._through_context(reach))
            else:
                terms += self.patient_terms(rtype, reach, registered=True)
        if rtype == "Subscription" and not any(r.code == "server" for r in self.access.roles):
            # each principal's own (issue 31); the server's notifier and sender see all
            key = escape(self_key(self.access.principal))
            terms.append(_parser().parse(rtype, [("_tag", f"{SUBSCRIPTION_OWNER}|{key}")])
                         .terms[0])
        hidden = self.access.masked(rtype, letter)
        if hidden and rtype == "DocumentReference":
            terms.append(_masked_labels(hidden))
        elif hidden and rtype == "Binary":  # a Binary follows its document's masking
            param = get("Binary", "tlm-security-context")
            assert param is not None
            terms.append(Not(Chain(param, ["DocumentReference"], [_masked_labels(hidden, True)])))
        return terms

    def patient_terms(self, rtype: str, reach: Reach, registered: bool = False) -> list[Term]:
        """``rtype``'s resources whose patient ``reach`` covers (through the type's
        patient parameter; for Patient, itself). ``registered``: the Patient type's own
        guard, where the Patients a care role registered are reached too (those
        resources only: not through a Binary's context, not for other types)."""
        param = None if rtype == "Patient" else get(rtype, NARROWING_PARAM[rtype])
        sets, since = self.access.relationship().sets() if reach.care else ([], [])
        if registered and reach.care and rtype == "Patient":
            sets = [*sets, self.access.relationship().registered()]
        terms: list[Term] = [InCare(param, sets, sorted(reach.own), since)]
        if reach.only is not None:
            terms.append(InCare(param, [], sorted(reach.only), []))
        return terms

    def _through_context(self, reach: Reach) -> Term:
        """A Binary is reached through what its securityContext names (R-SEC-2)."""
        param = get("Binary", "tlm-security-context")
        assert param is not None
        targets = [t for t in NARROWING_PARAM if t not in APPEND_ONLY_TYPES]
        return Chain(param, targets, [AllOf(self.patient_terms(t, reach)) for t in targets])

    def reachable(self, patients: set[str], rtype: str, letter: str) -> bool:
        """Does ``reach`` cover each of these patients (any relationship: what a write
        for a patient needs; what a history entry naming them needs)? The Patients a
        care role registered count for the Patient type only (their update, history)."""
        reach = self.access.reach(rtype, letter)
        if reach is ALL:
            return True
        sets = self.access.relationship().patient_sets() if reach.care else []
        if reach.care and rtype == "Patient":
            sets = [*sets, self.access.relationship().registered()]
        terms: list[Term] = [InCare(None, sets, sorted(reach.own), [])]
        if reach.only is not None:
            terms.append(InCare(None, [], sorted(reach.only), []))
        return len(self._matching("Patient", sorted(patients), terms)) == len(patients)

    def _matching(self, rtype: str, ids: list[str], terms: list[Term]) -> set[str]:
        """The ids among ``ids`` of live ``rtype`` resources matching ``terms``."""
        found: set[str] = set()
        parser = _parser()
        for i in range(0, len(ids), _BATCH):
            part = ids[i:i + _BATCH]
            query = parser.parse(rtype, [("_id", ",".join(part))])
            query.terms += terms
            query.count = len(part)
            query.total = "none"
            found |= {item.id for item in self.inner.search(query).items}
        return found

    def narrowed(self, rtype: str, terms: list[Term]) -> list[Term]:
        """``terms`` with every chained target and ``_has`` source narrowed by its own
        type's guard (search right needed; an inner type without it matches nothing,
        or is refused when it is the only one)."""
        out: list[Term] = []
        for term in terms:
            if isinstance(term, Chain):
                guards = [self.guard(t, "s") for t in term.target_types]
                if all(g is None for g in guards):
                    raise forbidden(f"chained search through {term.param.name}: no right "
                                    f"to search {', '.join(term.target_types)}")
                out.append(Chain(term.param, term.target_types, [
                    _NOWHERE if g is None else AllOf([*self.narrowed(t, [inner]), *g])
                    for t, inner, g in zip(term.target_types, term.inner, guards,
                                           strict=True)]))
            elif isinstance(term, Has):
                guard = self.guard(term.source_type, "s")
                if guard is None:
                    raise forbidden(f"_has: no right to search {term.source_type}")
                out.append(Has(term.source_type, term.ref,
                               [*self.narrowed(term.source_type, term.inner), *guard]))
            elif isinstance(term, AnyOf):
                out.append(AnyOf(self.narrowed(rtype, term.options)))
            elif isinstance(term, AllOf):
                out.append(AllOf(self.narrowed(rtype, term.terms)))
            elif isinstance(term, Not):
                out.append(Not(AllOf(self.narrowed(rtype, [term.term]))))
            else:
                out.append(term)
        return out

    # -- visibility ---------------------------------------------------------------------
    def patients(self, item: Stored) -> set[str]:
        if item.body is None:
            return set()
        resource = orjson.loads(item.body)
        found = patients_of(resource)
        if item.type == "Binary" and not found:
            for ref in references(resource, "Binary"):
                rtype, _, rid = ref.partition("/")
                if in_compartment(rtype) and rid:
                    target = self._context(rtype, rid.split("/")[0])
                    if target is not None:
                        found |= patients_of(target)
        return found

    def _context(self, rtype: str, rid: str) -> dict[str, Any] | None:
        key = (rtype, rid)
        if key not in self._contexts:
            stored = self.inner.read(rtype, rid)
            self._contexts[key] = orjson.loads(stored.body) if stored is not None and \
                stored.body else None
        return self._contexts[key]

    def _letter(self, rtype: str, letter: str) -> str | None:
        """The letter a resource is seen through: included resources need a search
        right only."""
        if self.access.permits(rtype, letter):
            return letter
        if letter == "r" and self.access.permits(rtype, "s"):
            return "s"
        return None

    def visible_many(self, items: Iterable[Stored], letter: str = "r") -> list[Stored]:
        """The items (current versions) the guard lets this principal see, in order:
        one query per type and batch, the same terms as a search."""
        items = list(items)
        seen: dict[str, set[str]] = {}
        for rtype in {i.type for i in items}:
            used = self._letter(rtype, letter)
            guard = self.guard(rtype, used) if used else None
            group = [i for i in items if i.type == rtype]
            if guard is None:
                seen[rtype] = set()
            elif not guard:
                seen[rtype] = {i.id for i in group if not i.deleted}
            else:
                seen[rtype] = self._matching(rtype, sorted({i.id for i in group
                                                            if not i.deleted}), guard)
        kept = [i for i in items if i.id in seen[i.type] and self._shared(i, letter)]
        for item in kept:
            self.touched[f"{item.type}/{item.id}"] = self.patients(item)
        return kept

    def visible(self, item: Stored, letter: str = "r") -> bool:
        return bool(self.visible_many([item], letter))

    def _shared(self, item: Stored, letter: str) -> bool:
        """A document of a patient opposed to the sharing this role does (R-CONS-5)."""
        if item.type not in masking.DOCUMENT_TYPES:
            return True
        sharings = self.access.withheld(item.type, letter)
        if not sharings:
            return True
        document = self._document_of(item)
        if document is None:
            return True
        request = next((r for r in (ref.get("reference") for ref in
                                    (document.get("context") or {}).get("related") or []
                                    if isinstance(ref, dict))
                        if isinstance(r, str) and r.startswith("ServiceRequest/")), None)
        return not any(self.access.opposed(p, request, sharings) for p in self.patients(item))

    def _document_of(self, item: Stored) -> dict[str, Any] | None:
        if item.body is None:
            return None
        resource: dict[str, Any] = orjson.loads(item.body)
        if item.type == "DocumentReference":
            return resource
        target = ((resource.get("securityContext") or {}).get("reference") or "").split("/")
        if len(target) < 2 or target[0] != "DocumentReference":
            return None
        return self._context("DocumentReference", target[1])

    def read(self, rtype: str, rid: str) -> Stored | None:
        item = self.inner.read(rtype, rid)
        if item is None:
            return None
        if item.deleted:  # a deletion is seen by whoever reaches every patient's data
            return item if self._letter(rtype, "r") and \
                self.access.reach(rtype, "r") is ALL else None
        return item if self.visible(item) else None

    def vread(self, rtype: str, rid: str, vid: int) -> Stored | None:
        item = self.inner.vread(rtype, rid, vid)
        if item is None:
            return None
        return item if self._versions_visible(rtype, rid, [item], "r") else None

    def _versions_visible(self, rtype: str, rid: str, versions: list[Stored],
                          letter: str) -> list[Stored]:
        """Versions of one resource: shown when its current version is visible and each
        version names only reachable patients (a deletion: reach over every patient)."""
        if self.access.reach(rtype, letter) is ALL and self._letter(rtype, letter) and not (
                rtype in masking.DOCUMENT_TYPES and (self.access.masked(rtype, letter) or
                                                     self.access.withheld(rtype, letter))):
            return versions  # documents: their masking and oppositions first (issue 31)
        current = self.inner.read(rtype, rid)
        if current is None or current.deleted or not self.visible(current, letter):
            return []
        named: dict[int, set[str]] = {v.vid: self.patients(v) for v in versions}
        every = set().union(*named.values())
        if every and in_compartment(rtype) and not self.reachable(every, rtype, letter):
            reach_each = {p for p in every if self.reachable({p}, rtype, letter)}
            return [v for v in versions if not v.deleted and named[v.vid] <= reach_each]
        return [v for v in versions if not v.deleted]

    def read_many(self, keys: list[tuple[str, str]]) -> list[Stored]:
        return self.visible_many(self.inner.read_many(keys), "r")

    def incoming(self, param_keys: list[str], targets: list[tuple[str, str]]) -> list[Stored]:
        return self.visible_many(self.inner.incoming(param_keys, targets), "r")

    def _narrow(self, query: SearchQuery) -> bool:
        """Narrow ``query`` — its own type and every inner set — in the query itself, so
        pages, totals and aggregates only count what may be seen; False when nothing
        may."""
        guard = self.guard(query.type, "s")
        if guard is None:
            return False
        query.terms = [*self.narrowed(query.type, query.terms), *guard]
        return True

    def values(self, query: SearchQuery, keys: list[str]) -> dict[str, list[tuple[Any, ...]]]:
        return self.inner.values(query, keys) if self._narrow(query) else {k: [] for k in keys}

    def tally(self, query: SearchQuery, keys: list[str], by: str | None = None
              ) -> dict[str, list[tuple[Any, ...]]]:
        return (self.inner.tally(query, keys, by) if self._narrow(query)
                else {k: [] for k in keys})

    def summarize(self, name: str, days: tuple[int, int], where: list[tuple[str, Any]],
                  group: list[str]) -> list[tuple[Any, ...]] | None:
        """A summary counts every patient's resources: only for a principal whose guard
        does not narrow its type (``[]``); None otherwise (the caller searches instead)."""
        from fhir_server.store.base import SUMMARIES

        if self.guard(SUMMARIES[name].rtype, "s") != []:
            return None
        return self.inner.summarize(name, days, where, group)

    def summary_rows(self, name: str, days: tuple[int, int], where: list[tuple[str, Any]],
                     columns: list[str]) -> list[tuple[Any, ...]] | None:
        from fhir_server.store.base import SUMMARIES

        if self.guard(SUMMARIES[name].rtype, "s") != []:
            return None
        return self.inner.summary_rows(name, days, where, columns)

    def fill_summaries(self, limit: int = 2000) -> int:  # store.base.FILL_CHUNK
        return self.inner.fill_summaries(limit)  # derived rows only: no data is revealed

    def search(self, query: SearchQuery, count_only: bool = False) -> Page:
        if not self._narrow(query):
            return Page([], 0)
        page = self.inner.search(query, count_only)
        kept = [i for i in page.items if self._shared(i, "s")]
        if len(kept) < len(page.items):  # left out after the query (an opposition): the
            page.total = None            # count would be wrong, and would tell they exist
        if self.records_touched:
            for item in kept:
                self.touched[f"{item.type}/{item.id}"] = self.patients(item)
        page.items = kept
        return page

    def history(self, rtype: str | None, rid: str | None, since: int | None, count: int,
                cursor: dict[str, Any] | None, counted: bool = True) -> Page:
        page = self.inner.history(rtype, rid, since, count, cursor, counted)
        if rid is not None and rtype is not None:
            page.items = self._versions_visible(rtype, rid, page.items, "r")
            for item in page.items:
                self.touched[f"{item.type}/{item.id}"] = self.patients(item)
            return page
        if rtype is None or self.access.reach(rtype, "s") is not ALL:
            page.total = None  # the unfiltered count would leak other patients' activity
        kept: list[Stored] = []
        for item in page.items:
            if self._versions_visible(item.type, item.id, [item], "s"):
                kept.append(item)
                self.touched[f"{item.type}/{item.id}"] = self.patients(item)
        page.items = kept
        return page

    # -- writes -------------------------------------------------------------------------
    def put(self, item: Stored, rows: IndexRows | None) -> None:
        self.check_write(item)
        self.inner.put(item, rows)
        self._contexts.clear()

    # The journal's records are the server's: the audit sink writes them to the store
    # itself, and they list every patient, so no principal's view reads them either.
    def journal_append(self, records: list[tuple[int, int, bytes]]) -> None:
        raise FhirError(ErrorKind.FORBIDDEN, "the audit journal is written by the server")

    def journal_last(self) -> bytes | None:
        raise FhirError(ErrorKind.FORBIDDEN, "the audit journal is read through AuditEvent")

    def journal_records(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        raise FhirError(ErrorKind.FORBIDDEN, "the audit journal is read through AuditEvent")

    def journal_backlog(self) -> int:
        return self.inner.journal_backlog()

    def index_journal(self, limit: int = 1000) -> int:
        return self.inner.index_journal(limit)  # derived rows only: no data is revealed

    def _check_server_owned(self, item: Stored, previous: Stored | None) -> None:
        """Mass assignment: ``meta.security`` is the server's (confidentiality, masking).

        A client may send it back unchanged (read-modify-write) but not set or change
        it; ``versionId``/``lastUpdated`` are always overwritten by the server, the
        server's ``meta.tag`` systems restored (:func:`owned_meta`).
        """
        if item.body is None:
            return
        labels = (orjson.loads(item.body).get("meta") or {}).get("security") or []
        before: list[Any] = []
        if previous is not None and previous.body is not None and not previous.deleted:
            before = (orjson.loads(previous.body).get("meta") or {}).get("security") or []
        if labels != before:
            raise FhirError(ErrorKind.FORBIDDEN, "meta.security is managed by the server and "
                            "cannot be set or changed by a client", expression=["meta.security"])

    def owned_meta(self, rtype: str, resource: dict[str, Any],
                   previous: Stored | None) -> list[dict[str, Any]]:
        """The new version's ``meta.tag``: the server's tags kept from the previous
        version whatever the client sent, and a self-assertion recorded when a person
        acting through a care role makes themselves party to a request or registers a
        new Patient — which opens that Patient resource only (R-SEC-2, ADR 0020)."""
        before = orjson.loads(previous.body) if previous is not None and previous.body \
            and not previous.deleted else None
        added = None
        if self.access.asserts_care:
            care = self.access.relationship()
            if rtype == "ServiceRequest" and care.is_party(resource) and \
                    not (before is not None and care.is_party(before)):
                added = care.key
            elif rtype == "Patient" and before is None:
                added = care.key
        owner = self_key(self.access.principal) if rtype == "Subscription" else None
        return owned_tags(resource, before, added, owner)

    def check_write(self, item: Stored) -> None:
        current = self.inner.read(item.type, item.id)
        live = current is not None and not current.deleted
        if live and current is not None and not self.visible(current):
            # hidden: as absent on every write path — a 404, never the store's 409
            # "changed concurrently" that would tell it exists
            raise not_found(item.type, item.id)
        # update-as-create (and a PUT reviving a deletion) is a create (R-SEC-2)
        letter = "d" if item.deleted else ("u" if live else "c")
        self.access.require(item.type, letter)
        self._check_server_owned(item, current)
        reach = self.access.reach(item.type, letter)
        found = self.patients(item)
        self.touched[f"{item.type}/{item.id}"] = found
        if reach is ALL or not in_compartment(item.type) or item.deleted:
            return
        if live and current is not None and found != self.patients(current):
            # moving a resource to other patients is the identity feed's (a merge), not a
            # professional's: it would carry what it opens along (R-SEC-2)
            raise forbidden(f"the patient of {item.type}/{item.id} cannot be changed "
                            "(R-SEC-2)")
        if found and self.reachable(found, item.type, letter):
            return
        if not found and item.type != "Patient" and not _self_only(self.access, item.type,
                                                                  letter):
            return
        if item.type == "Patient" and letter == "c" and reach.care and found == {item.id}:
            return  # a new patient: its creator reaches it (recorded in its meta.tag)
        if item.type == "ServiceRequest" and item.body is not None and reach.care and \
                request_refs(orjson.loads(item.body)) & self.access.parties():
            return  # party by their own assertion: opens what comes after it (ADR 0020)
        raise forbidden(f"{item.type}/{item.id} concerns a patient outside your care "
                        "relationship (R-SEC-2)")


def _self_only(access: Access, rtype: str, letter: str) -> bool:
    return all(r.reach == "self" for r in access.roles if letter in r.letters(rtype))


def _masked_labels(hidden: frozenset[str], positive: bool = False) -> Term:
    """Documents labelled with one of ``hidden`` (``positive``) or none of them."""
    codes = ",".join(f"{masking.SYSTEM}|{c}" for c in sorted(hidden))
    key = "security-label" if positive else "security-label:not"
    return _parser().parse("DocumentReference", [(key, codes)]).terms[0]
