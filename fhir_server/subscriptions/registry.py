"""Active subscriptions, compiled once and cached per process (issue 31).

:func:`read_subscription` turns a Subscription (R4, or R4 with the R5 Backport IG's
topic) into an :class:`Active`: its criteria compiled (:mod:`criteria`), its topic, its
channel and payload. :class:`Registry` keeps the active ones of the store, by resource
type and anchor, and answers "which subscriptions does this write match?" from the write's
index rows. It is invalidated at once when this process writes a Subscription, and
re-read when another process did (one ``_history`` probe per ``refresh`` seconds at
most), so a write pays a dictionary lookup and its candidates' predicates, not a query.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from fhir_server.core.errors import invalid
from fhir_server.core.limits import Limits
from fhir_server.search.extract import IndexRows
from fhir_server.search.query import QueryParser
from fhir_server.security.care import SUBSCRIPTION_OWNER
from fhir_server.security.system import Core, as_system, server_principal
from fhir_server.store.base import Stored
from fhir_server.subscriptions.criteria import Bucket, Predicate, Rows, compile_criteria
from fhir_server.subscriptions.topics import FILTER_CRITERIA, PAYLOAD_CONTENT, TOPICS

if TYPE_CHECKING:
    from fhir_server.store.base import Store

# reads the Subscriptions to match (each principal otherwise sees its own only)
READER = server_principal("subscriptions", "system/Subscription.rs")
PAYLOADS = ("empty", "id-only", "full-resource")
CHANNELS = ("rest-hook", "websocket")
DEFAULT_PAYLOAD = "id-only"  # issue 31: the least a notification may carry


@dataclass(frozen=True)
class Active:
    """One subscription as the matcher and the notifier need it."""

    id: str
    types: tuple[str, ...]  # the resource types it is about
    predicates: tuple[Predicate, ...]  # criteria (or the topic's filters): any matches
    topic: str | None  # a backport topic's canonical URL; None: criteria-based
    channel: str
    payload: str
    endpoint: str | None
    headers: tuple[str, ...]
    end: int | None  # µs since the epoch
    owner: str | None  # the owner's key (meta.tag, security.care.self_key)
    status: str = "active"

    def expired(self, now_us: int) -> bool:
        return self.end is not None and now_us >= self.end


def read_subscription(resource: dict[str, Any], limits: Limits | None = None) -> Active:
    """An :class:`Active` from a Subscription; a 400 (invalid) on what is not served."""
    channel = resource.get("channel") or {}
    kind = channel.get("type")
    if kind not in CHANNELS:
        raise invalid(f"Subscription.channel.type {kind!r}: this server notifies over "
                      f"{' and '.join(CHANNELS)}", "Subscription.channel.type")
    payload = DEFAULT_PAYLOAD
    for ext in (channel.get("_payload") or {}).get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == PAYLOAD_CONTENT:
            payload = ext.get("valueCode") or ""
    if payload not in PAYLOADS:
        raise invalid(f"payload content {payload!r}: one of {', '.join(PAYLOADS)}",
                      "Subscription.channel.payload")
    criteria = resource.get("criteria")
    if not isinstance(criteria, str) or not criteria.strip():
        raise invalid("Subscription.criteria is required", "Subscription.criteria")
    topic = TOPICS.get(criteria.strip())
    if topic is not None:
        filters = [e.get("valueString") for e in (resource.get("_criteria") or {}).get(
            "extension") or [] if isinstance(e, dict) and e.get("url") == FILTER_CRITERIA]
        predicates = tuple(compile_criteria(f, limits) for f in filters if isinstance(f, str))
        for p in predicates:
            if p.type not in topic.focus:
                raise invalid(f"filter on {p.type}: topic {topic.url} is about "
                              f"{', '.join(topic.focus)}", "Subscription.criteria")
        types = topic.focus
    elif criteria.startswith(("http://", "https://")):
        raise invalid(f"unknown topic {criteria}: see Basic?code=SubscriptionTopic or "
                      "the CapabilityStatement", "Subscription.criteria")
    else:
        predicates = (compile_criteria(criteria, limits),)
        types = (predicates[0].type,)
    end = resource.get("end")
    tags = (resource.get("meta") or {}).get("tag") or []
    owner = next((t.get("code") for t in tags if isinstance(t, dict) and
                  t.get("system") == SUBSCRIPTION_OWNER), None)
    return Active(
        id=str(resource.get("id") or ""), types=types, predicates=predicates,
        topic=topic.url if topic else None, channel=kind, payload=payload,
        endpoint=channel.get("endpoint"),
        headers=tuple(h for h in channel.get("header") or [] if isinstance(h, str)),
        end=_instant_us(end) if isinstance(end, str) else None, owner=owner,
        status=str(resource.get("status") or "requested"))


def _instant_us(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1_000_000)


@dataclass
class _Snapshot:
    criteria: dict[str, Bucket] = field(default_factory=dict)  # type -> bucket
    topics: dict[str, list[Active]] = field(default_factory=dict)  # topic -> subscriptions
    stamp: int = 0  # µs: Subscriptions written after it are not in it
    checked: float = 0.0  # monotonic time of the last probe


class Registry:
    """The active subscriptions of one store, for the process (thread-safe)."""

    def __init__(self, refresh: float = 1.0) -> None:
        self.refresh = refresh
        self._snapshot: _Snapshot | None = None
        self._lock = threading.Lock()

    def invalidate(self) -> None:
        self._snapshot = None

    def matching(self, server: Core, item: Stored, rows: IndexRows) -> list[Active]:
        """The criteria-based subscriptions ``item``'s new version matches."""
        bucket = self._current(server).criteria.get(item.type)
        if bucket is None:
            return []
        view = Rows(rows)
        now = time.time_ns() // 1000
        found: dict[str, Active] = {}  # one notification per subscription and write
        for predicate, active in bucket.candidates(view):
            if active.id not in found and predicate.matches(view) and not active.expired(now):
                found[active.id] = active
        return list(found.values())

    def scanned(self, server: Core, rtype: str) -> int:
        """How many active subscriptions on ``rtype`` no anchor nor bound indexes (each
        is evaluated on every write of the type)."""
        bucket = self._current(server).criteria.get(rtype)
        return len(bucket.scan) if bucket is not None else 0

    def on_topic(self, server: Core, topic: str) -> list[Active]:
        now = time.time_ns() // 1000
        return [a for a in self._current(server).topics.get(topic, ()) if not a.expired(now)]

    def _current(self, server: Core) -> _Snapshot:
        snap = self._snapshot
        if snap is not None and time.monotonic() - snap.checked < self.refresh:
            return snap
        with self._lock:
            snap = self._snapshot
            if snap is not None and time.monotonic() - snap.checked < self.refresh:
                return snap
            if snap is None or self._changed_since(server, snap.stamp):
                snap = self._load(server)
            snap.checked = time.monotonic()
            self._snapshot = snap
            return snap

    @staticmethod
    def _changed_since(server: Core, stamp: int) -> bool:
        page = as_system(server, READER).history("Subscription", None, stamp, 1, None,
                                                  counted=False)
        return bool(page.items)

    @staticmethod
    def _load(server: Core) -> _Snapshot:
        snap = _Snapshot(stamp=time.time_ns() // 1000 - 1)
        for resource in active_subscriptions(as_system(server, READER), server.limits):
            try:
                active = read_subscription(resource, server.limits)
            except Exception:  # one unreadable subscription stops no write
                continue
            if active.topic is not None:
                snap.topics.setdefault(active.topic, []).append(active)
                continue
            for predicate in active.predicates:
                snap.criteria.setdefault(predicate.type, Bucket()).add(
                    predicate, (predicate, active))
        return snap


def active_subscriptions(store: Store, limits: Limits) -> list[dict[str, Any]]:
    """Every active Subscription's body, page after page — and those in ``error``: their
    events are still numbered and kept, sent in order once the client asks for the
    subscription again (at least once, no event lost while its endpoint is down)."""
    query = QueryParser(limits, strict=True).parse("Subscription", [
        ("status", "active,error"), ("_count", "500")])
    out: list[dict[str, Any]] = []
    while True:
        page = store.search(query)
        out += [orjson.loads(i.body) for i in page.items if i.body]
        if page.next_cursor is None:
            return out
        query.cursor = page.next_cursor
