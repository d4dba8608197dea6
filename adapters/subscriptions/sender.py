"""Sending notifications over rest-hook (issue 31, ADR 0024; R4 subscription.html,
Subscriptions R5 Backport IG "R4 notifications").

A requested rest-hook subscription is activated by a *handshake* (a notification Bundle
of type ``handshake``, event count 0): a 2xx makes it ``active``, a refusal ``error``.
Notifications leave per subscription in event order, one Bundle each (``history``: the
SubscriptionStatus as a ``Parameters``, then the focus — its id only, or the version the
owner could read at the event — unless the payload is ``empty``). A failure keeps the
notification and every later one of the subscription waiting (exponential backoff); after
``max_attempts`` the notification is a dead letter and the subscription goes to ``error``
(the client sees the gap in the event numbers and reads ``$events``). Every attempt is
audited with the subscriber as the destination (BALP).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from adapters.exchange import DCM, ENTITY_TYPE, OBJECT_ROLE, event
from adapters.passes import repeat
from adapters.principals import SUBSCRIPTION_OUTBOX
from adapters.subscriptions import endpoints
from adapters.subscriptions.outbox import Notification, Outbox, State
from adapters.subscriptions.settings import SubscriptionSettings
from fhir_server.search.query import QueryParser
from fhir_server.security.system import as_system
from fhir_server.subscriptions.registry import Active, read_subscription
from fhir_server.subscriptions.topics import NOTIFICATION_PROFILE, STATUS_PROFILE
from fhir_server.workflow.records import body, now, save

if TYPE_CHECKING:
    from fhir_server.server.dispatch import FhirServer

log = logging.getLogger("teleimagerie.subscriptions")
Post = Callable[[str, bytes, dict[str, str], float], int]


def _post(url: str, content: bytes, headers: dict[str, str], timeout: float) -> int:
    return httpx.post(url, content=content, headers=headers, timeout=timeout,
                      follow_redirects=False).status_code


def later(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


def status_parameters(base: str, active: Active, status: str, kind: str, count: int,
                      notes: list[Notification]) -> dict[str, Any]:
    """The backport's SubscriptionStatus on R4 (a ``Parameters``)."""
    params: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference":
                                                    f"{base}/Subscription/{active.id}"}}]
    if active.topic:
        params.append({"name": "topic", "valueCanonical": active.topic})
    params += [{"name": "status", "valueCode": status}, {"name": "type", "valueCode": kind},
               {"name": "events-since-subscription-start", "valueString": str(count)}]
    for note in notes:
        part: list[dict[str, Any]] = [
            {"name": "event-number", "valueString": str(note.number)},
            {"name": "timestamp", "valueInstant": note.timestamp}]
        if note.focus:
            part.append({"name": "focus", "valueReference": {
                "reference": f"{base}/{note.focus.split('/_history/')[0]}"}})
        part += [{"name": "additional-context", "valueReference": {
            "reference": f"{base}/{c.split('/_history/')[0]}"}} for c in note.context]
        params.append({"name": "notification-event", "part": part})
    return {"resourceType": "Parameters", "id": str(uuid.uuid4()),
            "meta": {"profile": [STATUS_PROFILE]}, "parameter": params}


def notification_bundle(base: str, active: Active, status: str, kind: str, count: int,
                        notes: list[Notification],
                        read: Callable[[str], dict[str, Any] | None]) -> dict[str, Any]:
    """A backport R4 notification Bundle (``history``); ``read`` gives a version's body
    for a ``full-resource`` payload."""
    entries: list[dict[str, Any]] = [{
        "fullUrl": f"urn:uuid:{uuid.uuid4()}",
        "resource": status_parameters(base, active, status, kind, count, notes),
        "request": {"method": "GET", "url": f"{base}/Subscription/{active.id}/$status"},
        "response": {"status": "200"}}]
    for note in notes:
        for ref in ([note.focus] if note.focus else []) + list(note.context):
            plain = ref.split("/_history/")[0]
            entry: dict[str, Any] = {"fullUrl": f"{base}/{plain}",
                                     "request": {"method": "PUT", "url": plain},
                                     "response": {"status": "200"}}
            if note.payload == "full-resource":
                resource = read(ref)
                if resource is not None:
                    entry["resource"] = resource
            entries.append(entry)
    return {"resourceType": "Bundle", "id": str(uuid.uuid4()),
            "meta": {"profile": [NOTIFICATION_PROFILE]}, "type": "history",
            "timestamp": now(), "entry": entries}


class Sender:
    """Works the rest-hook notifications: one pass with :meth:`run_once`."""

    def __init__(self, server: FhirServer, settings: SubscriptionSettings | None = None,
                 base_url: str = "", post: Post | None = None) -> None:
        self.server = server
        self.settings = settings or SubscriptionSettings.from_env()
        self.base = base_url.rstrip("/")
        self.post = post or _post
        self.outbox = Outbox(server)
        self.state = State(server)
        self.wake = asyncio.Event()

    async def run(self, interval: float = 1.0) -> None:
        async def once() -> int:
            return await asyncio.get_running_loop().run_in_executor(None, self.run_once)
        await repeat(once, self.wake, interval, log)

    def run_once(self) -> int:
        """Handshakes, then every due subscription's notifications in order; how many
        notifications were sent."""
        self.activate()
        sent = 0
        seen: set[str] = set()
        for due in self.outbox.due("rest-hook"):
            if due.subscription in seen:
                continue
            seen.add(due.subscription)
            sent += self.send_subscription(due.subscription)
        return sent

    # -- subscriptions ---------------------------------------------------------------------
    def subscription(self, sid: str) -> tuple[dict[str, Any], Active] | None:
        resource = body(as_system(self.server, SUBSCRIPTION_OUTBOX).read("Subscription", sid))
        if resource is None:
            return None
        try:
            return resource, read_subscription(resource, self.server.limits)
        except Exception:  # an unreadable subscription is left alone
            return None

    def set_status(self, resource: dict[str, Any], status: str, error: str = "") -> None:
        changed = {**resource, "status": status}
        changed.pop("error", None)
        if error:
            changed["error"] = error[:500]
        with as_system(self.server, SUBSCRIPTION_OUTBOX).write():
            save(self.server, "Subscription", resource["id"], changed)

    def activate(self) -> None:
        """Requested subscriptions: a websocket one is active at once, a rest-hook one
        after its handshake; an expired one is turned off."""
        query = QueryParser(self.server.limits, strict=True).parse(
            "Subscription", [("status", "requested"), ("_count", "100")])
        for item in as_system(self.server, SUBSCRIPTION_OUTBOX).search(query).items:
            found = self.subscription(item.id)
            if found is None:
                continue
            resource, active = found
            if active.expired(int(datetime.now(UTC).timestamp() * 1_000_000)):
                self.set_status(resource, "off")
            elif active.channel == "websocket":
                self.set_status(resource, "active")
            else:
                ok, detail = self.deliver(resource, active, "handshake", [])
                self.set_status(resource, "active" if ok else "error",
                                "" if ok else f"handshake: {detail}")

    def send_subscription(self, sid: str) -> int:
        """Send the subscription's pending notifications in event order, stopping at the
        first that fails (the later ones wait for it: per-subscription order)."""
        found = self.subscription(sid)
        if found is None:
            return 0
        resource, active = found
        if resource.get("status") != "active":
            return 0  # error or off: kept, sent if the client asks for it again
        sent = 0
        for note in self.outbox.pending(sid):
            if note.next_attempt and note.next_attempt > now():
                return sent  # the head backs off; nothing after it may overtake it
            note.attempts += 1
            ok, detail = self.deliver(resource, active, "event-notification", [note])
            if ok:
                note.state, note.detail, note.next_attempt = "envoye", detail, None
                self.outbox.update(note)
                sent += 1
                continue
            if note.attempts >= self.settings.max_attempts:
                note.state, note.next_attempt = "lettre-morte", None
                note.detail = f"{note.attempts} essais ; dernier : {detail}"
                self.outbox.update(note)
                self.set_status(resource, "error", f"notification {note.number}: {detail}")
            else:
                delay = self.settings.backoff(note.attempts)
                note.state, note.detail, note.next_attempt = "nouvel-essai", detail, \
                    later(delay)
                self.outbox.update(note)
                log.warning("subscription %s: event %d, retry %d in %.0f s", sid,
                            note.number, note.attempts, delay)
            return sent
        return sent

    # -- one POST -------------------------------------------------------------------------
    def deliver(self, resource: dict[str, Any], active: Active, kind: str,
                notes: list[Notification]) -> tuple[bool, str]:
        # the event count as of the last event it carries (a gap tells a lost one)
        count = notes[-1].number if notes else 0
        bundle = notification_bundle(self.base, active, "active" if notes else "requested",
                                     kind, count, notes, self._version)
        headers = {"Content-Type": "application/fhir+json"}
        for header in active.headers:
            name, _, value = header.partition(":")
            if name.strip() and "\n" not in header and "\r" not in header:
                headers[name.strip()] = value.strip()
        try:
            endpoints.check(active.endpoint, self.settings)  # again: names move
            status = self.post(str(active.endpoint), orjson.dumps(bundle), headers,
                               self.settings.timeout)
            ok, detail = 200 <= status < 300, f"HTTP {status}"
        except endpoints.Refused as exc:
            ok, detail = False, f"refusé : {exc}"
        except Exception as exc:  # network: retried
            ok, detail = False, f"{type(exc).__name__}: {exc}"[:300]
        self.audit(active, kind, notes, ok, detail)
        return ok, detail

    def _version(self, ref: str) -> dict[str, Any] | None:
        """The version the owner could read at the event (decided then, kept as a
        ``_history`` reference): read with the outbox's rights."""
        rtype, rid, _, vid = [*ref.split("/"), "", ""][:4]
        store = as_system(self.server, SUBSCRIPTION_OUTBOX)
        item = store.vread(rtype, rid, int(vid)) if vid.isdigit() else store.read(rtype, rid)
        return orjson.loads(item.body) if item is not None and item.body else None

    def audit(self, active: Active, kind: str, notes: list[Notification], ok: bool,
               detail: str) -> None:
        """BALP Export: the subscriber (its endpoint, the owner) as the destination."""
        if self.server.audit is None:
            return
        entities: list[dict[str, Any]] = [{
            "what": {"reference": f"Subscription/{active.id}"},
            "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
            "role": {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
            "description": f"{kind} " + ", ".join(str(n.number) for n in notes)}]
        for note in notes:
            entities += [{"what": {"reference": ref},
                          "type": {"system": ENTITY_TYPE, "code": "2",
                                   "display": "System Object"},
                          "role": {"system": OBJECT_ROLE, "code": "4",
                                   "display": "Domain Resource"}}
                         for ref in ([note.focus] if note.focus else []) + list(note.context)]
        host = httpx.URL(str(active.endpoint)).host if active.endpoint else ""
        remote = {"display": f"{active.owner or 'abonné'} ({host})"}
        patient = next((n.patient for n in notes if n.patient), None)
        self.server.audit.record([event(
            {"system": DCM, "code": "110106", "display": "Export"}, "R", "0" if ok else "4",
            remote, host, self.server.name, False, entities, patient=patient,
            error="" if ok else detail,
            subtype=[{"system": "http://hl7.org/fhir/restful-interaction",
                      "code": "subscription-notification",
                      "display": f"Subscription {kind}"}])], durable=True)
