"""The durable outbox of flux 3 (ORU^R01 to the RIS) and its sender (R-INT-2); the
application ACKs of enhanced mode go through it too.

When the remote imager accepts or refuses a request that came over HL7, the message is
written as a ``pending`` outbound record *in the same write unit as the decision*; its id
derives from the request and the decision, so one decision is never queued twice. The
sender delivers pending records to the route of the requesting structure (FINESS ->
host:port), retries with exponential backoff until the RIS answers AA (or CA), records an
AE (``failed``: resending the same content would fail again) and retries after an AR
(a circumstantial refusal), an unreachable peer, a missing route or an unreadable ACK.

The retries have a budget (``TELEIMG_HL7_MAX_ATTEMPTS``): a message not answered AA/CA
within it is a dead letter — status ``dead``, the last reason kept, audited like every
attempt that settles a message, listed by ``teleimagerie hl7 list --outbound --status
dead`` and sent again by ``teleimagerie hl7 resend ID`` (issue 24, R-INT-2). Nothing
waits forever unseen; nothing is dropped.

| outcome of attempt n | status | next |
|---|---|---|
| AA / CA | ``sent`` | — |
| AE / CE | ``failed`` | ``hl7 resend`` once the cause is fixed |
| AR / CR, unreachable, no route, bad ACK | ``pending`` | after ``base·2^(n-1)`` s, ≤ max |
| the same, n = ``TELEIMG_HL7_MAX_ATTEMPTS`` | ``dead`` | ``hl7 resend`` |
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from adapters.hl7v2 import oru_r01
from adapters.hl7v2.audit import exchange_event
from adapters.hl7v2.message import Message, MessageError
from adapters.hl7v2.mllp import MllpClient
from adapters.hl7v2.records import KIND_SYSTEM, OUTBOUND, MessageStore, Record, now
from adapters.hl7v2.settings import Hl7Settings
from adapters.hl7v2.tx import token
from adapters.passes import repeat
from adapters.transaction import literal
from fhir_server.workflow.events import Events, RequestStateChanged
from fhir_server.workflow.origin import origin
from fhir_server.workflow.records import load, ref_of

if TYPE_CHECKING:
    from fhir_server.server.dispatch import FhirServer
    from fhir_server.workflow.engine import Case

log = logging.getLogger("teleimagerie.hl7.outbox")
DECISIONS = {"accept": "OK", "refuse": "OC"}
_NS = uuid.UUID("6c1f1f5e-6a53-4f7e-9d0f-4b1e3f0c7a21")


class Outbox:
    def __init__(self, settings: Hl7Settings) -> None:
        self.settings = settings

    def subscribe(self, events: Events) -> None:
        events.subscribe(RequestStateChanged, self.state_changed)

    def state_changed(self, server: FhirServer, event: RequestStateChanged) -> None:
        """Queues the ORU of an accept / refuse (flux 3), in the decision's write unit."""
        name, case = event.transition, event.case
        decision = DECISIONS.get(name)
        if decision is None:
            return
        placer = next((i for i in case.request.get("identifier") or []
                       if any(c.get("code") == "PLAC" for c in
                              (i.get("type") or {}).get("coding") or [])), None)
        if placer is None:
            return
        key = token(placer["system"], placer["value"])
        messages = MessageStore(server)
        origin = messages.find([("hl7-order", literal(key)), ("hl7-type", "ORM^O01"),
                                ("hl7-status", "processed")], limit=1)
        if not origin:
            return  # not a request received over HL7: nobody to answer in v2
        record_id = str(uuid.uuid5(_NS, f"{case.task['id']}/{name}/"
                                        f"{case.task.get('lastModified')}"))
        if messages.get(record_id) is not None:
            return
        app, facility = origin[0].control.split("^")[:2]
        imager = load(server, ref_of(case.task.get("owner"))) if decision == "OK" else \
            _actor_practitioner(server)
        patient = load(server, case.patient) or {}
        raw = oru_r01.build(self.settings, (app, facility), patient, placer, decision,
                            imager, oru_r01.protocol_of(case.task),
                            case.task.get("statusReason"))
        messages.add(OUTBOUND, raw, "pending", record_id=record_id, type="ORU^R01",
                     patient=case.patient, order=key, destination=_finess(server, case),
                     decision=f"{name} {case.ref}", next_attempt=now())


def _actor_practitioner(server: FhirServer) -> dict[str, Any] | None:
    from fhir_server.security.access import GuardedStore

    store = server.store
    if isinstance(store, GuardedStore):
        mine = sorted(r for r in store.access.parties() if r.startswith("Practitioner/"))
        return load(server, mine[0]) if mine else None
    return None


def _finess(server: FhirServer, case: Case) -> str:
    """The requesting structure's route key (workflow.origin: one notion of who asked)."""
    return origin(server, case.request)[2]


class Sender:
    """Delivers due outbound records; one pass with :meth:`run_once`, forever with
    :meth:`run`."""

    def __init__(self, server: FhirServer, settings: Hl7Settings) -> None:
        self.server = server
        self.settings = settings
        self.messages = MessageStore(server)
        self.wake = asyncio.Event()

    def due(self) -> list[Record]:
        return self.messages.find([("code", f"{KIND_SYSTEM}|{OUTBOUND}"),
                                   ("hl7-status", "pending"), ("hl7-next", f"le{now()}"),
                                   ("_sort", "hl7-next")], limit=50)

    async def run_once(self) -> int:
        loop = asyncio.get_running_loop()
        records = await loop.run_in_executor(None, self.due)
        for record in records:
            await self._deliver(record)
        return len(records)

    async def run(self, interval: float = 1.0) -> None:
        await repeat(self.run_once, self.wake, interval, log)

    async def _deliver(self, record: Record) -> None:
        loop = asyncio.get_running_loop()
        route = self.settings.route(record.destination)
        raw = await loop.run_in_executor(None, self.messages.raw, record)
        record.attempts += 1
        if route is None:
            self._retry(record, f"aucune route TELEIMG_HL7_ROUTES pour la structure "
                                f"{record.destination or '?'}")
        else:
            try:
                async with MllpClient(*route, timeout=self.settings.send_timeout) as client:
                    answer = await client.send(raw)
                self._settle(record, answer)
            except (OSError, TimeoutError, ConnectionError) as exc:
                self._retry(record, f"{route[0]}:{route[1]} injoignable : {exc}")
        await loop.run_in_executor(None, self.messages.update, record)
        if self.server.audit is not None and record.status != "pending":
            msg = Message(raw)
            self.server.audit.record([exchange_event(record, msg, "%s:%s" % (route or (
                "", "")), self.server.name, inbound=False)], durable=True)

    def _settle(self, record: Record, answer: bytes) -> None:
        record.ack = answer
        try:
            ack = Message(answer)
            msa = ack.require("MSA")
            code = msa.get(1).upper()
        except MessageError as exc:
            self._retry(record, f"acquittement illisible : {exc.text}")
            return
        record.ack_code = code
        if code in ("AA", "CA"):
            record.status, record.error, record.next_attempt = "sent", "", None
        elif code in ("AE", "CE"):
            err = ack.segment("ERR")
            record.status, record.next_attempt = "failed", None
            record.error = f"{code} {err.get(8) or err.get(3, 2) if err else ''}".strip()
        else:
            self._retry(record, f"{code} : refus circonstanciel, nouvel essai")

    def _retry(self, record: Record, why: str) -> None:
        if record.attempts >= self.settings.max_attempts:  # the budget is spent
            record.status, record.next_attempt = "dead", None
            record.error = f"lettre morte après {record.attempts} essai(s) : {why}"[:1000]
            # ids only (R-SEC-6): the record and the peer's text stay in the store
            log.error("%s %s: no AA/CA after %d attempt(s): dead letter (teleimagerie "
                      "hl7 resend %s)", record.type, record.id, record.attempts, record.id)
            return
        delay = min(self.settings.retry_max,
                    self.settings.retry_base * 2 ** max(0, record.attempts - 1))
        record.status = "pending"
        record.error = why
        record.next_attempt = (datetime.now(UTC) + timedelta(seconds=delay)).isoformat(
            timespec="milliseconds").replace("+00:00", "Z")
        log.warning("%s %s: %s (essai %d, suivant dans %.0f s)", record.type, record.id,
                    why, record.attempts, delay)
