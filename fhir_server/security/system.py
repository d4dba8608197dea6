"""Named system principals acting through the guard (issue 28 item 5, ADR 0022).

An adapter that reads patient data for a message or a study acts as the system
principal it already is for the core (``hl7:<app>^<facility>`` with the ``ris`` role,
``dicom:<AE>`` with ``pacs``: ADR 0010, 0011) and sees the store through the same
:class:`~fhir_server.security.access.GuardedStore` as every API call (ADR 0005, 0020)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fhir_server.security.access import Access, GuardedStore
from fhir_server.security.principal import Principal

if TYPE_CHECKING:
    from fhir_server.interactions.port import Server


def as_system(server: Server, principal: Principal) -> GuardedStore:
    """The store as ``principal`` (a system principal) may see it: one guard per call,
    whose rights are computed once per type (a few dictionary lookups)."""
    store = server.store
    inner = store.inner if isinstance(store, GuardedStore) else store
    return GuardedStore(inner, Access(principal, inner, server.limits))
