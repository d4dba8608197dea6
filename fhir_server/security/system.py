"""Named system principals acting through the guard (issue 28 item 5, ADR 0022).

Everything that reads or keeps data for an adapter goes through the same
:class:`~fhir_server.security.access.GuardedStore` as every API call (ADR 0005, 0020):

- an adapter reading patient data for a message or a study acts as the system principal
  it already is for the core (``hl7:<app>^<facility>`` with the ``ris`` role,
  ``dicom:<AE>`` with ``pacs``: ADR 0010, 0011);
- the records the server keeps for itself — the HL7 message journal, the delivery Tasks,
  the CDA documents of a report, the queue gauges — are kept by *named* principals
  (:func:`server_principal`, defined in ``adapters/principals.py``) holding the
  :data:`SERVER` role, narrowed to least privilege by their ``system/`` scopes (the
  right is role ∩ scope, R-SEC-2).

The ``server`` role is not in the token role table (:data:`roles.ROLES`): no token can
carry it (an unknown role grants nothing), only a principal built in-process does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from fhir_server.core.resource_types import (
    DIRECTORY,
    PATIENT_DATA,
    PATIENT_MESSAGES,
    SUBSCRIPTIONS,
    classified,
)
from fhir_server.search.query import Term, types_read
from fhir_server.security import masking
from fhir_server.security.access import ALL, Access, GuardedStore
from fhir_server.security.principal import Principal
from fhir_server.security.roles import Role
from fhir_server.security.scopes import parse_scopes
from fhir_server.store.base import Store, Stored

if TYPE_CHECKING:
    from fhir_server.core.limits import Limits


class Core(Protocol):
    """What a system principal's guard needs of the server (the security layer does not
    name the server layer: issue 28 item 1)."""

    store: Store
    limits: Limits

ISSUER = "urn:teleimagerie:server"
# the server's own rights: every patient's data and message records, the directory; never
# the trail (AuditEvent: the audit sink's). A principal's scopes narrow it to its task.
SERVER = Role("server", "Le serveur (ses propres registres, système)", "all", dict.fromkeys(
    (*classified(PATIENT_DATA), *classified(PATIENT_MESSAGES), *classified(DIRECTORY),
     *classified(SUBSCRIPTIONS)), "cruds"), system=True)
INTERNAL_ROLES = {SERVER.code: SERVER}
# the rights of each server principal (module constants), computed once per (type,
# letter) for the process: they depend on its roles and scopes only
_RIGHTS: dict[int, tuple[Principal, dict[tuple[str, str], Any]]] = {}


def server_principal(name: str, scopes: str) -> Principal:
    """A named principal of the server (``system:<name>``) with the :data:`SERVER` role
    and ``scopes`` (``system/Type.letters``, space-separated): its least privilege."""
    return Principal(sub=f"system:{name}", issuer=ISSUER, roles=(SERVER.code,),
                     scopes=parse_scopes(scopes), name=f"teleimagerie ({name})")


class SystemStore(GuardedStore):
    """The guard of a system principal. It is nobody's request: what it reads is not
    recorded for an audit (the interaction it serves names what it writes,
    :func:`fhir_server.workflow.records.save`), so a principal reaching every patient
    does not parse bodies nor read a Binary's context to name their patients — no
    query beyond the guard's own, none for such a principal."""

    def __init__(self, inner: Store, access: Access) -> None:
        super().__init__(inner, access)
        self._quiet = all(r.reach == "all" and not r.shares and r.unmasks >= masking.ALL
                          for r in access.roles)

    def read(self, rtype: str, rid: str) -> Stored | None:
        # every resource of a type it reads is visible to it: the guard says so once
        if self._quiet and self.access.reach(rtype, "r") is ALL:
            return self.inner.read(rtype, rid)
        return super().read(rtype, rid)

    def narrowed(self, rtype: str, terms: list[Term]) -> list[Term]:
        # every type the search reads is wholly visible to it: the query is the store's
        # own (no sub-select added, nothing re-wrapped page after page)
        if self._quiet and all(self.access.reach(t, "s") is ALL
                               for t in types_read(rtype, terms)):
            return terms
        return super().narrowed(rtype, terms)

    def patients(self, item: Stored) -> set[str]:
        # reach "all", nothing masked nor withheld: the patients decide nothing (reads, history,
        # writes are all reached), they would only feed ``touched``
        return set() if self._quiet else super().patients(item)


def as_system(server: Core, principal: Principal) -> GuardedStore:
    """The store as ``principal`` (a system principal) may see it: one guard per call;
    a server principal's rights are computed once per type for the process, a peer's
    (``hl7:…``, ``dicom:…``) once per call."""
    store = server.store
    inner = store.inner if isinstance(store, GuardedStore) else store
    access = Access(principal, inner, server.limits)
    if principal.issuer == ISSUER:
        access.roles += [INTERNAL_ROLES[r] for r in principal.roles if r in INTERNAL_ROLES]
        known = _RIGHTS.get(id(principal))
        if known is None or known[0] is not principal:
            known = _RIGHTS[id(principal)] = (principal, access._reach)
        access._reach = known[1]
    return SystemStore(inner, access)
