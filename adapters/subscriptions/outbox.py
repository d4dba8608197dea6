"""The notifier and the notification outbox (issue 31, ADR 0024).

The :class:`Notifier` is a write observer of the core (``FhirServer.write_observers``,
:class:`fhir_server.store.versions.WriteObserver`) and a handler of the workflow's events:
both run in the write unit of the change. For each subscription the new version matches
(its criteria over the version's index rows, :mod:`fhir_server.subscriptions.registry`) or
each subscription of the event's topic, it decides **at the event** what the subscription's
owner may read — the same guard as the API (``as_system`` with the owner's principal: care
relationship, masking, opposition) — and keeps nothing when the owner may not read the
focus: no notification, no event number, not even the id. Otherwise it numbers the event
(``eventsSinceSubscriptionStart``, per subscription, in the unit: numbers are gapless and
ordered with the commits) and keeps a notification ``Task`` — the same durable outbox as
the report deliveries (ADR 0013: status, attempts, next attempt, last error) — that the
sender (:mod:`sender`) or the websocket (:mod:`web`) works, at least once, in order.

Each subscription's state is a ``Basic`` (same id): its owner's claims, recorded from the
principal that created it (so the guard can be rebuilt at each event), and its event count.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from adapters.delivery.outbox import EXT as DELIVERY_EXT
from adapters.delivery.outbox import SYSTEM as DELIVERY_SYSTEM
from adapters.delivery.outbox import register_all as register_delivery
from adapters.principals import SUBSCRIPTION_OUTBOX
from adapters.subscriptions import endpoints
from adapters.subscriptions.settings import SubscriptionSettings
from fhir_server.core.canonical import url
from fhir_server.core.errors import ErrorKind, FhirError
from fhir_server.search.extract import IndexRows, extract
from fhir_server.search.query import QueryParser
from fhir_server.search.registry import register_missing
from fhir_server.security.access import GuardedStore
from fhir_server.security.principal import Principal
from fhir_server.security.scopes import parse_scopes
from fhir_server.security.system import as_system
from fhir_server.store.base import Store, Stored
from fhir_server.subscriptions import topics
from fhir_server.subscriptions.criteria import Rows
from fhir_server.subscriptions.registry import Active, Registry, read_subscription
from fhir_server.workflow.events import (
    DocumentsAvailable,
    Events,
    ReportIssued,
    ReportWithdrawn,
    RequestStateChanged,
)
from fhir_server.workflow.records import body, now, ref_of, save

if TYPE_CHECKING:
    from fhir_server.server.dispatch import FhirServer

SYSTEM = url("CodeSystem", "teleimagerie-subscription")
CODE = "notification"  # Task.code of a notification
STATE = "etat-abonnement"  # Basic.code of a subscription's state
EXT = url("StructureDefinition", "subscription-")
_NS = uuid.UUID("9a7d3c52-1f0e-4c6b-8e2a-5b4f6d0c7e31")
# businessStatus code -> (Task.status, label)
STATES: dict[str, tuple[str, str]] = {
    "a-envoyer": ("requested", "à envoyer"),
    "nouvel-essai": ("requested", "nouvel essai programmé"),
    "envoye": ("completed", "envoyé"),
    "lettre-morte": ("failed", "abandonné après le nombre maximal d'essais"),
}
ROWS = [
    {"type": "Task", "name": "subscription-event", "kind": "number",
     "url": url("SearchParameter", "Task-subscription-event"),
     "paths": [{"expression": "Task.input.where(type.coding.code='evenement').value"}]},
]


def register_all() -> None:
    register_delivery()  # delivery-next: the due query shared with the deliveries
    register_missing(ROWS)


def _concept(code: str) -> dict[str, Any]:
    return {"coding": [{"system": SYSTEM, "code": code}]}


@dataclass
class Notification:
    """One event of one subscription, as kept in the outbox."""

    subscription: str  # its id
    number: int  # eventsSinceSubscriptionStart at this event
    channel: str
    payload: str  # empty | id-only | full-resource
    focus: str | None = None  # Type/id/_history/vid, as the owner could read it
    context: tuple[str, ...] = ()  # additional context, as the owner could read it
    topic: str | None = None
    patient: str | None = None  # for the audit
    timestamp: str = ""
    state: str = "a-envoyer"
    detail: str = ""
    attempts: int = 0
    next_attempt: str | None = None

    @property
    def id(self) -> str:
        return str(uuid.uuid5(_NS, f"{self.subscription}/{self.number}"))

    @property
    def status(self) -> str:
        return STATES[self.state][0]

    def resource(self) -> dict[str, Any]:
        inputs: list[dict[str, Any]] = [
            {"type": _concept("evenement"), "valueInteger": self.number},
            {"type": {"coding": [{"system": DELIVERY_SYSTEM, "code": "canal"}]},
             "valueCode": self.channel},
            {"type": _concept("contenu"), "valueCode": self.payload}]
        if self.focus:
            inputs.append({"type": _concept("focus"),
                           "valueReference": {"reference": self.focus}})
        inputs += [{"type": _concept("contexte"), "valueReference": {"reference": c}}
                   for c in self.context]
        if self.topic:
            inputs.append({"type": _concept("sujet"), "valueCanonical": self.topic})
        if self.patient:
            inputs.append({"type": _concept("patient"),
                           "valueReference": {"reference": self.patient}})
        ext: list[dict[str, Any]] = [{"url": f"{DELIVERY_EXT}attempts",
                                      "valueInteger": self.attempts}]
        if self.next_attempt:
            ext.append({"url": f"{DELIVERY_EXT}next-attempt", "valueDateTime": self.next_attempt})
        label = STATES[self.state][1]
        return {
            "resourceType": "Task", "id": self.id, "extension": ext, "status": self.status,
            "intent": "order",
            "businessStatus": {"coding": [{"system": DELIVERY_SYSTEM, "code": self.state,
                                           "display": label}],
                               "text": f"{label}{' — ' + self.detail if self.detail else ''}"},
            "code": {"coding": [{"system": SYSTEM, "code": CODE,
                                 "display": "Notification d'abonnement"}]},
            "focus": {"reference": f"Subscription/{self.subscription}"},
            "authoredOn": self.timestamp or now(), "lastModified": now(), "input": inputs}

    @classmethod
    def parse(cls, task: dict[str, Any]) -> Notification:
        def code(i: dict[str, Any]) -> str:
            return str(((i.get("type") or {}).get("coding") or [{}])[0].get("code"))

        inputs = task.get("input") or []
        by = {code(i): i for i in inputs}
        ext = {e.get("url", "")[len(DELIVERY_EXT):]: e for e in task.get("extension") or []}
        return cls(
            subscription=(ref_of(task.get("focus")) or "/").split("/", 1)[1],
            number=by["evenement"]["valueInteger"], channel=by["canal"]["valueCode"],
            payload=by["contenu"]["valueCode"],
            focus=ref_of((by.get("focus") or {}).get("valueReference")),
            context=tuple(r for r in (ref_of(i.get("valueReference")) for i in inputs
                                      if code(i) == "contexte") if r),
            topic=(by.get("sujet") or {}).get("valueCanonical"),
            patient=ref_of((by.get("patient") or {}).get("valueReference")),
            timestamp=task.get("authoredOn", ""),
            state=task["businessStatus"]["coding"][0]["code"],
            detail=task["businessStatus"].get("text", "").partition(" — ")[2],
            attempts=(ext.get("attempts") or {}).get("valueInteger", 0),
            next_attempt=(ext.get("next-attempt") or {}).get("valueDateTime"))


def claims(principal: Principal) -> dict[str, Any]:
    """What rebuilds the owner's rights at an event (no name, no token: R-SEC-6)."""
    return {"sub": principal.sub, "iss": principal.issuer, "roles": list(principal.roles),
            "scopes": [f"{s.context}/{s.type}.{s.letters}" for s in principal.scopes],
            "idNatPs": principal.id_nat_ps, "strong": principal.strong,
            "patient": principal.patient, "client_id": principal.client_id,
            "organizations": list(principal.organizations),
            "professions": list(principal.professions)}


def principal_of(data: dict[str, Any]) -> Principal:
    return Principal(sub=data["sub"], issuer=data["iss"], roles=tuple(data["roles"]),
                     scopes=parse_scopes(data["scopes"]), id_nat_ps=data.get("idNatPs"),
                     strong=bool(data.get("strong")), patient=data.get("patient"),
                     client_id=data.get("client_id"),
                     organizations=tuple(data.get("organizations") or ()),
                     professions=tuple(data.get("professions") or ()))


class State:
    """A subscription's state record (``Basic``, the subscription's id)."""

    def __init__(self, server: FhirServer) -> None:
        self.server = server

    def read(self, sid: str) -> dict[str, Any] | None:
        return body(as_system(self.server, SUBSCRIPTION_OUTBOX).read("Basic", sid))

    def owner(self, sid: str) -> Principal | None:
        state = self.read(sid)
        value = _ext(state, "owner") if state else None
        return principal_of(orjson.loads(value)) if isinstance(value, str) else None

    def events(self, sid: str) -> int:
        state = self.read(sid)
        return int(_ext(state, "events") or 0) if state else 0

    def write(self, sid: str, owner: dict[str, Any] | None, events: int) -> None:
        ext: list[dict[str, Any]] = [{"url": f"{EXT}events", "valueInteger": events}]
        if owner is not None:
            ext.append({"url": f"{EXT}owner", "valueString": orjson.dumps(owner).decode()})
        save(self.server, "Basic", sid, {**self._blank(sid), "extension": ext})

    @staticmethod
    def _blank(sid: str) -> dict[str, Any]:
        return {"resourceType": "Basic", "id": sid,
                "code": {"coding": [{"system": SYSTEM, "code": STATE}]},
                "subject": {"reference": f"Subscription/{sid}"}}

    def set_token(self, sid: str, digest: str, expires: float) -> None:
        """A websocket binding token's digest and expiry (the token itself is never kept)."""
        state = self.read(sid) or {}
        ext = [e for e in state.get("extension") or [] if e.get("url") != f"{EXT}ws-token"]
        ext.append({"url": f"{EXT}ws-token", "valueString": f"{digest} {expires:.0f}"})
        with as_system(self.server, SUBSCRIPTION_OUTBOX).write():
            save(self.server, "Basic", sid, {**state, "extension": ext})

    def token(self, sid: str) -> tuple[str, float] | None:
        value = _ext(self.read(sid), "ws-token")
        if not isinstance(value, str) or " " not in value:
            return None
        digest, expires = value.split(" ", 1)
        return digest, float(expires)

    def next_number(self, sid: str) -> int:
        """The next event number, counted in the caller's write unit (a concurrent unit
        counting the same subscription conflicts on the state's version and retries)."""
        state = self.read(sid) or {}
        number = int(_ext(state, "events") or 0) + 1
        ext = [e for e in state.get("extension") or [] if e.get("url") != f"{EXT}events"]
        ext.append({"url": f"{EXT}events", "valueInteger": number})
        save(self.server, "Basic", sid, {**self._blank(sid), **state, "extension": ext})
        return number


def _ext(resource: dict[str, Any] | None, name: str) -> Any:
    for e in (resource or {}).get("extension") or []:
        if isinstance(e, dict) and e.get("url") == f"{EXT}{name}":
            return e.get("valueString", e.get("valueInteger"))
    return None


class Notifier:
    """Matches every write of the server it is attached to, in the write's unit."""

    def __init__(self, settings: SubscriptionSettings | None = None,
                 registry: Registry | None = None) -> None:
        register_all()
        self.settings = settings or SubscriptionSettings.from_env()
        self.registry = registry or Registry()

    def attach(self, server: FhirServer, events: Events | None = None) -> None:
        server.write_observers.append(self)
        if events is not None:
            self.subscribe(events)

    def subscribe(self, events: Events) -> None:
        events.subscribe(RequestStateChanged, lambda server, e: self.topic(
            server, topics.REQUEST_STATE, e.case.ref, [f"Task/{e.case.task['id']}"]))
        events.subscribe(ReportIssued, lambda server, e: self._report(server, e.case))
        events.subscribe(ReportWithdrawn, lambda server, e: self.topic(
            server, topics.REPORT, f"DiagnosticReport/{e.report_id}", [e.case.ref]))
        events.subscribe(DocumentsAvailable, self._documents)

    def _documents(self, server: FhirServer, event: DocumentsAvailable) -> None:
        for document in event.documents.values():
            if document.get("id"):
                self.topic(server, topics.DOCUMENT, f"DocumentReference/{document['id']}", [])

    def _report(self, server: FhirServer, case: Any) -> None:
        from fhir_server.workflow.records import matches

        reports = matches(server, "DiagnosticReport", [("based-on", case.ref),
                                                        ("_sort", "-_lastUpdated")])
        if reports:
            self.topic(server, topics.REPORT, f"DiagnosticReport/{reports[0].id}",
                       [case.ref])

    # -- the write observer ---------------------------------------------------------------
    def __call__(self, server: object, store: Store, item: Stored, rows: IndexRows | None,
                 previous: Stored | None) -> None:
        core: FhirServer = server  # type: ignore[assignment]  # the core's own servers
        if item.type == "Subscription":
            self._subscription_written(core, store, item, previous)
            return
        if item.deleted or rows is None or _ours(rows):
            return
        for active in self.registry.matching(core, item, rows):
            self.notify(core, active, item, [])
        if item.type == "Task" and _dead_letter(rows) and not (
                previous is not None and previous.body and b'"lettre-morte"' in previous.body):
            self._topic_item(core, topics.DEAD_LETTER, item, rows, [])

    def _subscription_written(self, server: FhirServer, store: Store, item: Stored,
                              previous: Stored | None) -> None:
        """A client's Subscription: checked (criteria, channel, endpoint, status), its
        owner recorded at creation. The server's own status changes pass."""
        self.registry.invalidate()
        if item.deleted or item.body is None or not isinstance(store, GuardedStore):
            return
        resource = orjson.loads(item.body)
        try:
            active = read_subscription(resource, server.limits)
            if active.channel == "rest-hook":
                endpoints.check(active.endpoint, self.settings)
        except endpoints.Refused as exc:
            raise FhirError(ErrorKind.UNPROCESSABLE, f"Subscription.channel.endpoint: {exc}",
                            expression=["Subscription.channel.endpoint"]) from exc
        before = orjson.loads(previous.body) if previous is not None and previous.body and \
            not previous.deleted else None
        if active.status not in ("requested", "off") and (before or {}).get("status") != \
                active.status:
            raise FhirError(ErrorKind.UNPROCESSABLE, f"Subscription.status {active.status}: "
                            "a client asks for requested (or off); the server activates it",
                            expression=["Subscription.status"])
        scanned = [p for p in active.predicates if not p.anchors and p.ranged is None]
        if scanned and active.status == "requested" and (before or {}).get("status") != \
                "active" and self.registry.scanned(server, scanned[0].type) >= \
                self.settings.max_scanned:
            raise FhirError(ErrorKind.UNPROCESSABLE, f"Subscription.criteria: already "
                            f"{self.settings.max_scanned} subscriptions on {scanned[0].type} "
                            "with criteria nothing indexes; name a code, an id or a bound "
                            "(TELEIMG_SUBSCRIPTION_MAX_SCANNED)",
                            expression=["Subscription.criteria"])
        state = State(server)
        if state.read(item.id) is None:
            state.write(item.id, claims(store.access.principal), 0)

    # -- topics -----------------------------------------------------------------------------
    def topic(self, server: FhirServer, topic: str, focus: str,
              context: list[str]) -> None:
        """An event of ``topic`` about ``focus`` (Type/id), in the publishing unit."""
        if not self.registry.on_topic(server, topic):
            return
        reader = as_system(server, SUBSCRIPTION_OUTBOX)
        rtype, _, rid = focus.partition("/")
        item = reader.read(rtype, rid)
        if item is None or item.body is None:
            return
        extra = [c for c in (reader.read(*ref.split("/", 1)) for ref in context) if c]
        self._topic_item(server, topic, item, None, extra)

    def _topic_item(self, server: FhirServer, topic: str, item: Stored,
                    rows: IndexRows | None, context: list[Stored]) -> None:
        subscribed = self.registry.on_topic(server, topic)
        if not subscribed:
            return
        view: Rows | None = None
        for active in subscribed:
            if active.predicates:
                if view is None:
                    view = Rows(rows if rows is not None else
                                extract(orjson.loads(item.body or b"{}")))
                if not any(p.matches(view) for p in active.predicates
                           if p.type == item.type):
                    continue
            self.notify(server, active, item, context, topic)

    # -- one notification -------------------------------------------------------------------
    def notify(self, server: FhirServer, active: Active, focus: Stored,
               context: list[Stored], topic: str | None = None) -> Notification | None:
        """Keep the notification of ``focus`` for ``active`` — or nothing at all when its
        owner may not read ``focus`` now (R-SEC-2: not even its id)."""
        state = State(server)
        patient = None
        if active.owner is not None:  # a secured server: the owner's guard, at the event
            owner = state.owner(active.id)
            if owner is None:
                return None
            view = as_system(server, owner)
            if not view.visible(focus):
                return None
            context = view.visible_many(context)
            found = sorted(view.patients(focus))
            patient = f"Patient/{found[0]}" if len(found) == 1 else None
        number = state.next_number(active.id)
        note = Notification(
            subscription=active.id, number=number, channel=active.channel,
            payload=active.payload, topic=topic or active.topic, patient=patient,
            focus=None if active.payload == "empty" else
            f"{focus.type}/{focus.id}/_history/{focus.vid}",
            context=() if active.payload == "empty" else
            tuple(f"{c.type}/{c.id}/_history/{c.vid}" for c in context),
            timestamp=now())
        note.next_attempt = note.timestamp
        save(server, "Task", note.id, note.resource())
        return note


def _ours(rows: IndexRows) -> bool:
    """The outbox's own records: never notified (no notification of a notification)."""
    return any(r[1] == SYSTEM and r[0] in ("Task.code", "Basic.code") for r in rows.token)


def _dead_letter(rows: IndexRows) -> bool:
    return any(r[0] == "Task.business-status" and r[1] == DELIVERY_SYSTEM and
               r[2] == "lettre-morte" for r in rows.token)


class Outbox:
    """The notifications kept through the server's store."""

    def __init__(self, server: FhirServer) -> None:
        register_all()
        self.server = server

    def _search(self, params: list[tuple[str, str]]) -> list[Notification]:
        query = QueryParser(self.server.limits, strict=True).parse(
            "Task", [("code", f"{SYSTEM}|{CODE}"), *params])
        page = as_system(self.server, SUBSCRIPTION_OUTBOX).search(query)
        return [Notification.parse(t) for t in (body(i) for i in page.items) if t]

    def due(self, channel: str, limit: int = 200) -> list[Notification]:
        return self._search([("status", "requested"), ("delivery-channel", channel),
                             ("delivery-next", f"le{now()}"), ("_sort", "delivery-next"),
                             ("_count", str(limit))])

    def pending(self, sid: str, limit: int = 100) -> list[Notification]:
        """The subscription's notifications not sent yet, in event order."""
        return self._search([("focus", f"Subscription/{sid}"), ("status", "requested"),
                             ("_sort", "subscription-event"), ("_count", str(limit))])

    def events(self, sid: str, since: int | None, until: int | None,
               limit: int = 100) -> list[Notification]:
        params = [("focus", f"Subscription/{sid}"), ("_sort", "subscription-event"),
                  ("_count", str(limit))]
        if since is not None:
            params.append(("subscription-event", f"ge{since}"))
        if until is not None:
            params.append(("subscription-event", f"le{until}"))
        return self._search(params)

    def update(self, note: Notification) -> None:
        with as_system(self.server, SUBSCRIPTION_OUTBOX).write():
            save(self.server, "Task", note.id, note.resource())
