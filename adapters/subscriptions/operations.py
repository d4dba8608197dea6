"""The subscription operations (issue 31; Subscriptions R5 Backport IG, R4):
``Subscription/[id]/$status``, ``Subscription/[id]/$events`` (the kept notifications by
event number, as the owner may read them now), ``Subscription/[id]/$get-ws-binding-token``
and ``Subscription/$topics`` (the topics, in the backport's Basic form). Each runs on the
caller's guarded store: a Subscription that is not the caller's is absent (404)."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from adapters.subscriptions.outbox import Outbox, State
from adapters.subscriptions.sender import notification_bundle, status_parameters
from fhir_server.core.errors import ErrorKind, FhirError, invalid, not_found
from fhir_server.core.model import FhirRequest, FhirResponse
from fhir_server.subscriptions.registry import Active, read_subscription
from fhir_server.subscriptions.topics import TOPICS

if TYPE_CHECKING:
    from fhir_server.server.dispatch import FhirServer

WS_PATH = "/fhir-ws/subscriptions"
TOKEN_LIFETIME = 300.0


def _mine(server: FhirServer, req: FhirRequest) -> tuple[dict[str, Any], Active]:
    """The caller's Subscription (the guard narrows Subscriptions to their owner)."""
    item = server.store.read("Subscription", req.id or "")
    if item is None or item.deleted or item.body is None:
        raise not_found("Subscription", req.id or "")
    resource = orjson.loads(item.body)
    return resource, read_subscription(resource, server.limits)


def _number(req: FhirRequest, name: str) -> int | None:
    value = req.param(name)
    if value is None:
        return None
    if not str(value).isdigit():
        raise invalid(f"{name} must be a non-negative integer", name)
    return int(value)


def status(server: FhirServer, req: FhirRequest) -> FhirResponse:
    resource, active = _mine(server, req)
    count = State(server).events(active.id)
    return FhirResponse(200, {}, resource={
        "resourceType": "Bundle", "type": "searchset", "total": 1, "entry": [{
            "resource": status_parameters(req.base_url, active, resource.get("status", ""),
                                          "query-status", count, []),
            "search": {"mode": "match"}}]})


def events(server: FhirServer, req: FhirRequest) -> FhirResponse:
    """The events between ``eventsSinceNumber`` and ``eventsUntilNumber`` (inclusive),
    ``content`` empty / id-only / full-resource (the subscription's by default). Full
    resources are read now, through the caller's guard."""
    resource, active = _mine(server, req)
    since, until = _number(req, "eventsSinceNumber"), _number(req, "eventsUntilNumber")
    content = req.param("content") or active.payload
    if content not in ("empty", "id-only", "full-resource"):
        raise invalid("content: empty, id-only or full-resource", "content")
    notes = Outbox(server).events(active.id, since, until)
    for note in notes:
        note.payload = content
        if content == "empty":
            note.focus, note.context = None, ()

    def read(ref: str) -> dict[str, Any] | None:
        rtype, rid, _, vid = [*ref.split("/"), "", ""][:4]
        item = server.store.vread(rtype, rid, int(vid)) if vid.isdigit() else \
            server.store.read(rtype, rid)
        return orjson.loads(item.body) if item is not None and item.body else None

    bundle = notification_bundle(req.base_url, active, resource.get("status", ""),
                                 "query-event", State(server).events(active.id), notes, read)
    return FhirResponse(200, {}, resource=bundle)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def binding_token(server: FhirServer, req: FhirRequest) -> FhirResponse:
    """A short-lived token a websocket client sends as ``bind-with-token <token>``."""
    _, active = _mine(server, req)
    if active.channel != "websocket":
        raise FhirError(ErrorKind.UNPROCESSABLE, "$get-ws-binding-token: the subscription's "
                        "channel is not websocket")
    secret = secrets.token_urlsafe(24)
    expires = time.time() + TOKEN_LIFETIME
    State(server).set_token(active.id, _token_hash(secret), expires)
    ws = req.base_url.replace("https://", "wss://").replace("http://", "ws://")
    ws = ws.rsplit("/fhir", 1)[0] + WS_PATH
    return FhirResponse(200, {}, resource={"resourceType": "Parameters", "parameter": [
        {"name": "token", "valueString": f"{active.id}.{secret}"},
        {"name": "expiration", "valueDateTime": datetime.fromtimestamp(expires, UTC)
         .isoformat(timespec="seconds").replace("+00:00", "Z")},
        {"name": "subscription", "valueString": active.id},
        {"name": "websocket-url", "valueUrl": ws}]})


def check_token(server: FhirServer, token: str) -> str | None:
    """The subscription a binding token is for, None when it is unknown or expired."""
    sid, _, secret = token.partition(".")
    if not sid or not secret:
        return None
    known = State(server).token(sid)
    if known is None or known[1] < time.time() or \
            not secrets.compare_digest(known[0], _token_hash(secret)):
        return None
    return sid


def topic_list(server: FhirServer, req: FhirRequest) -> FhirResponse:
    entries = [{"fullUrl": t.url, "resource": t.as_basic(), "search": {"mode": "match"}}
               for t in TOPICS.values()]
    return FhirResponse(200, {}, resource={"resourceType": "Bundle", "type": "searchset",
                                           "total": len(entries), "entry": entries})


OPERATIONS: dict[tuple[str | None, str], Callable[[FhirServer, FhirRequest], FhirResponse]] = {
    ("Subscription", "status"): status, ("Subscription", "events"): events,
              ("Subscription", "get-ws-binding-token"): binding_token,
              ("Subscription", "topics"): topic_list}
