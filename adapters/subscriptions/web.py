"""The websocket channel (issue 31; R4 subscription.html "websocket", the Backport IG's
``bind-with-token``): a client opens ``/fhir-ws/subscriptions``, sends
``bind-with-token <token>`` (from ``Subscription/[id]/$get-ws-binding-token``), gets
``bound <id>``, then ``ping <id>`` for each notification of that subscription, in event
order — each one audited and marked sent (the content is read with ``$events``). The
socket works the same outbox as the rest-hook sender, from whichever HTTP worker holds it.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from adapters.subscriptions.operations import WS_PATH, check_token
from adapters.subscriptions.outbox import Outbox
from adapters.subscriptions.sender import Sender
from fhir_server.config import Settings
from fhir_server.server.dispatch import FhirServer

log = logging.getLogger("teleimagerie.subscriptions")
POLL = 0.2  # seconds between looks at the outbox for a bound socket


def mount(app: FastAPI, core: FhirServer, settings: Settings) -> None:
    """Adds the websocket route (a :data:`fhir_server.http.app.Mount`)."""

    async def socket(ws: WebSocket) -> None:
        await ws.accept()
        loop = asyncio.get_running_loop()
        bound: list[str] = []
        sender = Sender(core)
        try:
            while True:
                try:
                    text = await asyncio.wait_for(ws.receive_text(), POLL)
                except TimeoutError:
                    text = None
                if text is not None:
                    verb, _, arg = text.strip().partition(" ")
                    if verb == "bind-with-token":
                        sid = await loop.run_in_executor(None, check_token, core, arg.strip())
                        if sid is None:
                            await ws.send_text("error invalid or expired token")
                            continue
                        bound.append(sid)
                        await ws.send_text(f"bound {sid}")
                    elif verb == "ping":
                        await ws.send_text("pong")
                    else:
                        await ws.send_text(f"error unknown command {verb[:20]}")
                for sid in bound:
                    for note in await loop.run_in_executor(None, Outbox(core).pending, sid):
                        await ws.send_text(f"ping {sid}")
                        note.attempts += 1
                        note.state, note.detail, note.next_attempt = "envoye", "websocket", None
                        await loop.run_in_executor(None, _sent, sender, note)
        except WebSocketDisconnect:
            return

    app.add_api_websocket_route(WS_PATH, socket)


def _sent(sender: Sender, note: object) -> None:
    from adapters.subscriptions.outbox import Notification

    assert isinstance(note, Notification)
    sender.outbox.update(note)
    found = sender.subscription(note.subscription)
    if found is not None:
        sender.audit(found[1], "event-notification", [note], True, "websocket")
