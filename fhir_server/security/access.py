"""Per-request rights and the guarded data view (R-SEC-1, R-SEC-2, R-ACT-1).

:class:`Access` answers "may this principal do letter X on type T, and for which
patients?" from the intersection of its roles (:mod:`roles`) and SMART scopes.
:class:`GuardedStore` wraps the store for one request so that *every* interaction —
reads, searches and their includes, history, bundle entries, operations — only sees
resources the principal may see and only writes where it may write. Resources of
other patients are simply absent (404, never 403: no existence leak across patients),
searches are narrowed in the query itself so paging and totals stay right. Documents
are also hidden by their masking codes and by the patient's opposition to the sharing a
role does (:mod:`masking`, R-CONS-5).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import orjson

from fhir_server.core.errors import ErrorKind, FhirError
from fhir_server.core.limits import Limits
from fhir_server.search.extract import IndexRows
from fhir_server.search.query import QueryParser, SearchQuery
from fhir_server.security import masking
from fhir_server.security.care import care_patients, parties
from fhir_server.security.compartment import (
    NARROWING_PARAM,
    in_compartment,
    patients_of,
    references,
)
from fhir_server.security.principal import Principal
from fhir_server.security.roles import ROLES
from fhir_server.store.base import Page, Store, Stored

ALL = None  # reach: every patient
Reach = frozenset[str] | None


def forbidden(message: str) -> FhirError:
    return FhirError(ErrorKind.FORBIDDEN, message)


class Access:
    """What one principal may do, computed lazily and cached for the request."""

    def __init__(self, principal: Principal, store: Store, limits: Limits) -> None:
        self.principal = principal
        self.store = store
        self.limits = limits
        self._care: frozenset[str] | None = None
        self._parties: set[str] | None = None
        self._reach: dict[tuple[str, str], Reach | bool] = {}
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

    def reach(self, rtype: str, letter: str) -> Reach:
        """Patients reachable for (type, letter); ``ALL`` when unrestricted."""
        value = self._compute(rtype, letter)
        if value is False:
            return frozenset()
        return value  # type: ignore[return-value]

    def _compute(self, rtype: str, letter: str) -> Reach | bool:
        key = (rtype, letter)
        if key not in self._reach:
            self._reach[key] = self._evaluate(rtype, letter)
        return self._reach[key]

    def _evaluate(self, rtype: str, letter: str) -> Reach | bool:
        roles = [r for r in self.roles if letter in r.letters(rtype)]
        scopes = [s for s in self.principal.scopes if s.grants(rtype, letter)]
        if not roles or not scopes:
            return False
        if not in_compartment(rtype):
            return ALL
        own = frozenset([self.principal.patient] if self.principal.patient else [])
        by_role: Reach
        if any(r.reach == "all" for r in roles):
            by_role = ALL
        else:
            by_role = frozenset()
            if any(r.reach == "care" for r in roles):
                by_role |= self.care()
            if any(r.reach == "self" for r in roles):
                by_role |= own
        by_scope: Reach = ALL if any(s.context != "patient" for s in scopes) else own
        if by_role is ALL:
            return by_scope
        if by_scope is ALL:
            return by_role
        return by_role & by_scope

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
        from fhir_server.workflow.consent import applicable, consent_rows, opposed_in

        if patient not in self._consents:
            self._consents[patient] = consent_rows(self.store, self.limits,
                                                   f"Patient/{patient}")
        found = applicable(self._consents[patient], request)
        return all(opposed_in(found, s) for s in sharings)

    def care(self) -> frozenset[str]:
        if self._care is None:
            self._care = frozenset(care_patients(self.store, self.limits, self.principal))
        return self._care

    def parties(self) -> set[str]:
        if self._parties is None:
            self._parties = parties(self.store, self.limits, self.principal)
        return self._parties


_VERB = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}
_WRITE_LETTER = {"POST": "c", "PUT": "u", "PATCH": "u", "DELETE": "d"}


class GuardedStore:
    """The store as one principal may see it, recording the patients it touched."""

    def __init__(self, inner: Store, access: Access) -> None:
        # a Bundle entry is dispatched on its Bundle's view: guard the store itself, once
        # (raw_store() and the workflow rules unwrap one level)
        self.inner: Store = inner.inner if isinstance(inner, GuardedStore) else inner
        self.access = access
        self.supports_transactions = inner.supports_transactions
        self.touched: dict[str, set[str]] = {}  # "Type/id" -> patient ids (for the audit)
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

    def visible(self, item: Stored, letter: str = "r") -> bool:
        if not self.access.permits(item.type, letter):
            # included resources: a search right on the type is enough to see them
            if letter != "r" or not self.access.permits(item.type, "s"):
                return False
            letter = "s"
        reach = self.access.reach(item.type, letter)
        if item.deleted:
            return reach is ALL
        found = self.patients(item)
        if reach is not ALL and in_compartment(item.type):
            if not found:
                return item.type != "Patient" and not self._self_only(item.type, letter)
            if not (found & reach):
                return False
        if item.type in masking.DOCUMENT_TYPES and not self._document_visible(item, letter,
                                                                               found):
            return False
        self.touched[f"{item.type}/{item.id}"] = found
        return True

    def _document_visible(self, item: Stored, letter: str, patients: set[str]) -> bool:
        """Masking and opposition (:mod:`masking`): a Binary follows its document."""
        hidden = self.access.masked(item.type, letter)
        sharings = self.access.withheld(item.type, letter)
        if not hidden and not sharings:
            return True
        document = self._document_of(item)
        if document is None:
            return True
        if hidden & masking.labels(document):
            return False
        if sharings:
            request = next((r for r in (ref.get("reference") for ref in
                                        (document.get("context") or {}).get("related") or []
                                        if isinstance(ref, dict))
                            if isinstance(r, str) and r.startswith("ServiceRequest/")), None)
            return not any(self.access.opposed(p, request, sharings) for p in patients)
        return True

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

    def _self_only(self, rtype: str, letter: str) -> bool:
        return all(r.reach == "self" for r in self.access.roles if letter in r.letters(rtype))

    def _filter(self, items: list[Stored], letter: str) -> list[Stored]:
        return [i for i in items if self.visible(i, letter)]

    def read(self, rtype: str, rid: str) -> Stored | None:
        item = self.inner.read(rtype, rid)
        return item if item is not None and self.visible(item) else None

    def vread(self, rtype: str, rid: str, vid: int) -> Stored | None:
        item = self.inner.vread(rtype, rid, vid)
        return item if item is not None and self.visible(item) else None

    def read_many(self, keys: list[tuple[str, str]]) -> list[Stored]:
        return self._filter(self.inner.read_many(keys), "r")

    def incoming(self, param_keys: list[str], targets: list[tuple[str, str]]) -> list[Stored]:
        return self._filter(self.inner.incoming(param_keys, targets), "r")

    def _narrow(self, query: SearchQuery) -> bool:
        """Narrow ``query`` to the reachable patients in the query itself, so pages, totals
        and aggregates only count reachable data; False when nothing is reachable."""
        reach = self.access.reach(query.type, "s")
        if reach is not ALL and query.type in NARROWING_PARAM:
            if not reach:
                return False
            param = NARROWING_PARAM[query.type]
            values = sorted(reach) if param == "_id" else [f"Patient/{p}" for p in sorted(reach)]
            extra = QueryParser(self.access.limits).parse(query.type, [(param, ",".join(values))])
            query.terms = [*query.terms, *extra.terms]
        hidden = self.access.masked(query.type, "s") if query.type == "DocumentReference" \
            else frozenset()
        if hidden:  # masked documents are left out by the query: pages and totals stay right
            extra = QueryParser(self.access.limits).parse(query.type, [(
                "security-label:not", ",".join(f"{masking.SYSTEM}|{c}" for c in sorted(hidden)))])
            query.terms = [*query.terms, *extra.terms]
        return True

    def values(self, query: SearchQuery, keys: list[str]) -> dict[str, list[tuple[Any, ...]]]:
        return self.inner.values(query, keys) if self._narrow(query) else {k: [] for k in keys}

    def search(self, query: SearchQuery, count_only: bool = False) -> Page:
        if not self._narrow(query):
            return Page([], 0)
        page = self.inner.search(query, count_only)
        kept = self._filter(page.items, "s")
        if len(kept) < len(page.items):  # left out after the query (an opposition): the
            page.total = None            # count would be wrong, and would tell they exist
        page.items = kept
        return page

    def history(self, rtype: str | None, rid: str | None, since: int | None, count: int,
                cursor: dict[str, Any] | None, counted: bool = True) -> Page:
        page = self.inner.history(rtype, rid, since, count, cursor, counted)
        letter = "r" if rid else "s"
        if rid is not None and rtype is not None:
            # an instance's deletions are shown when its live versions are visible
            if not any(self.visible(i, "r") for i in page.items if not i.deleted) and \
                    self.access.reach(rtype, "r") is not ALL:
                page.items = []
            else:
                page.items = [i for i in page.items if i.deleted or self.visible(i, "r")]
            return page
        if rtype is None or self.access.reach(rtype, letter) is not ALL:
            page.total = None  # the unfiltered count would leak other patients' activity
        page.items = self._filter(page.items, letter)
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

    def _check_server_owned(self, item: Stored) -> None:
        """Mass assignment: ``meta.security`` is the server's (confidentiality, masking).

        A client may send it back unchanged (read-modify-write) but not set or change
        it; ``versionId``/``lastUpdated`` are always overwritten by the server.
        """
        if item.body is None:
            return
        labels = (orjson.loads(item.body).get("meta") or {}).get("security") or []
        before: list[Any] = []
        if item.vid > 1:
            previous = self.inner.read(item.type, item.id)
            if previous is not None and previous.body is not None:
                before = (orjson.loads(previous.body).get("meta") or {}).get("security") or []
        if labels != before:
            raise FhirError(ErrorKind.FORBIDDEN, "meta.security is managed by the server and "
                            "cannot be set or changed by a client", expression=["meta.security"])

    def check_write(self, item: Stored) -> None:
        letter = _WRITE_LETTER.get(item.method, "u")
        self.access.require(item.type, letter)
        self._check_server_owned(item)
        reach = self.access.reach(item.type, letter)
        found = self.patients(item)
        self.touched[f"{item.type}/{item.id}"] = found
        if reach is ALL or not in_compartment(item.type) or item.deleted:
            return
        if found and found <= reach:
            return
        if not found and item.type != "Patient" and not self._self_only(item.type, letter):
            return
        if item.type == "Patient" and item.method == "POST" and \
                any(r.reach == "care" for r in self.access.roles if "c" in r.letters("Patient")):
            return  # a new patient enters the care relationship with its first request
        if item.type == "ServiceRequest" and item.body is not None:
            body = orjson.loads(item.body)
            refs = {(body.get("requester") or {}).get("reference")}
            refs |= {p.get("reference") for p in body.get("performer") or []
                     if isinstance(p, dict)}
            if refs & self.access.parties():
                return  # the requester (or assigned imager) creates the care relationship
        raise forbidden(f"{item.type}/{item.id} concerns a patient outside your care "
                        "relationship (R-SEC-2)")

