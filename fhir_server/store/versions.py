"""Writing a new version of a resource: server-owned meta, index extraction, history, in
the caller's write unit (http.html#versioning). Every writer uses it — an interaction,
the workflow, the break-the-glass alert — so it sits on the storage protocol, below the
guard (issue 28 item 1: layers that point one way)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Protocol

import orjson

from fhir_server.core.errors import ErrorKind, FhirError
from fhir_server.search.extract import IndexRows, extract
from fhir_server.search.values import format_instant, now_us
from fhir_server.store.base import Store, Stored
from fhir_server.validation.resource import base_issues


class MetaOwner(ABC):
    """A store view that owns part of ``meta``: the security guard
    (``security.access.GuardedStore``) sets the server's tags, never a client's (R-SEC-2).
    An abstract base class, not a Protocol, so the check on every write is a plain
    ``isinstance``."""

    @abstractmethod
    def owned_meta(self, rtype: str, resource: dict[str, Any],
                   previous: Stored | None) -> list[dict[str, Any]]:
        """The ``meta`` entries this view sets on ``resource`` (the server's tags)."""


class WriteObserver(Protocol):
    """Told of every new version in its write unit, with the index rows just extracted
    (issue 31: subscriptions match these, never re-running searches); what it writes
    commits with the version or not at all, an error fails the write."""

    def __call__(self, server: object, store: Store, item: Stored, rows: IndexRows | None,
                 previous: Stored | None) -> None: ...


def store_version(server: object, store: Store, rtype: str, rid: str,
                  resource: dict[str, Any] | None, method: str,
                  previous: Stored | None, checked: bool = False) -> Stored:
    """Write a new version: server-owned meta, index extraction, history (one write unit).

    A resource the server or an adapter built (``checked`` false) is held to the base
    specification like a client's (issue 25): an invalid one is a server fault (500)
    and is not stored. ``server`` (or None) is the writer's server: its
    ``write_observers`` (:class:`WriteObserver`) are told of the version."""
    vid = previous.vid + 1 if previous else 1
    updated = max(now_us(), previous.updated + 1 if previous else 0)
    body = None
    rows = None
    if resource is not None:
        meta = {k: v for k, v in (resource.get("meta") or {}).items()
                if k not in ("versionId", "lastUpdated")}
        meta = {"versionId": str(vid), "lastUpdated": format_instant(updated), **meta}
        if isinstance(store, MetaOwner):  # the server's tags: never a client's (R-SEC-2)
            tags = store.owned_meta(rtype, resource, previous)
            meta = {k: v for k, v in meta.items() if k != "tag"} | ({"tag": tags} if tags else {})
        rest = {k: v for k, v in resource.items() if k not in ("resourceType", "id", "meta")}
        resource = {"resourceType": rtype, "id": rid, "meta": meta, **rest}
        if not checked:
            refuse_built(resource, rtype)
        body = orjson.dumps(resource)
        rows = extract(resource)
    item = Stored(rtype, rid, vid, updated, resource is None, body, method)
    store.put(item, rows)
    for observer in getattr(server, "write_observers", ()):  # the server's, issue 31
        observer(server, store, item, rows, previous)
    return item


def refuse_built(resource: dict[str, Any], rtype: str) -> None:
    issues = base_issues(resource, rtype)
    if issues:
        raise FhirError(ErrorKind.INTERNAL, f"the server built an invalid {rtype}: "
                        f"{issues[0].diagnostics}", issues=issues)
