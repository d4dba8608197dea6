"""Inbound processing: store, check, map, commit, acknowledge (R-INT-2; ADR 0010).

Order of events for every frame, so that nothing is acknowledged before it is durably
stored and nothing is lost:

1. the raw bytes and a ``received`` record are committed (message store);
2. the header is checked (type, event, version, processing id -> AR);
3. the flow maps the message to one FHIR transaction run through the core (profiles,
   workflow, security with the RIS's system principal, audit) -> AE on content errors;
4. the record is updated (``processed`` / ``error`` / ``rejected`` / ``held``) with the
   ACK, which is only then sent. A duplicate (same MSH-3, MSH-4, MSH-10 and the same
   content, MSH-7 and line endings aside) gets the stored ACK again; a record left
   ``received`` by a crash is processed when resent or by ``teleimagerie hl7 reprocess``
   — the flows are idempotent (conditional creates on business identifiers). A
   *different* message under a control key already used is not taken for a resend: it is
   answered AE (CE in enhanced mode) with ERR 205 and kept apart (issue 24).

Operator commands (``teleimagerie hl7 reprocess|replay|resend``) go through
:meth:`Receiver.reprocess` and :meth:`Receiver.resend`, which refuse (:class:`Refused`,
nothing changed) what does not apply to a record, and are audited (issue 24, R-INT-2).

Enhanced mode (MSH-15/16 valued, HL7 v2.5.1 §2.9.3): the commit ACK (CA, or CR for an
unsupported type/version/processing id) answers on the connection as soon as step 1 is
durable; steps 2–4 run in order on the worker (:meth:`Receiver.work`), and the
application ACK (AA/AE/AR) is queued in the outbox in the write unit that settles the
message, then delivered to the sender's route (``TELEIMG_HL7_ROUTES`` keyed by its
MSH-4). MSH-15 and MSH-16 say which of them are wanted (:func:`ack.wanted`).
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from adapters.exchange import Refused, operator_event, system_object
from adapters.hl7v2 import adt_pam, omi_o23, orm_o01
from adapters.hl7v2.ack import Problem, ack_code, build_ack, enhanced, mode_problem, wanted
from adapters.hl7v2.audit import exchange_event
from adapters.hl7v2.identity import IdentityConflict
from adapters.hl7v2.message import Delimiters, Message, MessageError, unescape
from adapters.hl7v2.mllp import Frame
from adapters.hl7v2.records import (
    INBOUND,
    KIND_SYSTEM,
    OUTBOUND,
    MessageStore,
    Record,
    control_key,
    now,
    same_message,
)
from adapters.hl7v2.settings import Hl7Settings
from adapters.hl7v2.tx import Context
from adapters.principals import HL7_JOURNAL
from adapters.transaction import flag_identity, literal
from fhir_server.security.principal import Principal
from fhir_server.security.scopes import parse_scopes
from fhir_server.security.system import as_system

if TYPE_CHECKING:
    from fhir_server.server.dispatch import FhirServer

log = logging.getLogger("teleimagerie.hl7")
ISSUER = "urn:teleimagerie:mllp"
# HL7 table 0357 205: the control key of another message (MSA-2 then names MSH-10)
REUSED = Problem("205", "MSH-10 déjà utilisé pour un autre message", "MSH^1^10")
# inbound statuses an operator may process again; never ``processed`` (it would apply
# an old message over later changes) nor an outbound record (issue 24)
REPROCESSABLE = ("received", "error", "rejected", "held")
__all__ = ["REPROCESSABLE", "Receiver", "Refused", "describe"]


@dataclass
class Outcome:
    """What a flow did: resources written, the patient, the order it concerns."""

    results: list[str] = field(default_factory=list)
    patient: str | None = None
    order: str = ""
    held: bool = False


Flow = Callable[[Context, Message], Outcome]


def _order(ctx: Context, msg: Message) -> Outcome:
    control = msg.require("ORC").get(1).upper()
    if control == "NW":
        results, patient, key = orm_o01.new_order(ctx, msg)
        return Outcome(results, patient, key)
    if control == "CA":
        request, key = orm_o01.cancel(ctx, msg)
        if request is None:
            return Outcome([], None, key, held=True)
        return Outcome([request], None, key)
    raise MessageError("103", f"ORC-1 {control!r} non pris en charge pour ORM^O01 (NW "
                       "demande, CA annulation)", "ORC^1^1")


def _post_exam(ctx: Context, msg: Message) -> Outcome:
    control = msg.require("ORC").get(1).upper()
    if control != "SR":
        raise MessageError("103", f"ORC-1 {control!r} non pris en charge pour OMI^O23 (SR)",
                           "ORC^1^1")
    results, patient, key = omi_o23.post_exam(ctx, msg)
    return Outcome(results, patient, key)


def _adt(ctx: Context, msg: Message) -> Outcome:
    event = msg.message_type[1]
    if event in adt_pam.MERGE_EVENTS:
        results, patient = adt_pam.merge(ctx, msg)
    elif event in adt_pam.IDENTIFIER_EVENTS:
        results, patient = adt_pam.change_identifier(ctx, msg)
    else:
        results, patient = adt_pam.identity_update(ctx, msg)
    return Outcome(results, patient)


# (MSH-9.1, MSH-9.2) -> flow: the messages we take (ANS TLR flux 1, 2, 4; PAM-FR)
FLOWS: dict[tuple[str, str], Flow] = {
    ("ORM", "O01"): _order,
    ("OMI", "O23"): _post_exam,
    **{("ADT", event): _adt for event in adt_pam.EVENTS},
}


class Receiver:
    """Turns one inbound frame into its ACK; never raises."""

    def __init__(self, server: FhirServer, settings: Hl7Settings) -> None:
        self.server = server
        self.settings = settings
        self.messages = MessageStore(server)
        # one message at a time through matching + commit: the identity match and the
        # conditional creates of two messages about one patient cannot interleave
        self._lock = threading.Lock()
        self._queue: queue.Queue[str] = queue.Queue()  # enhanced mode: records to process

    def principal(self, msg: Message | None) -> Principal:
        app, facility = msg.sender if msg else ("?", "?")
        return Principal(sub=f"hl7:{app}^{facility}", issuer=ISSUER, roles=("ris",),
                         scopes=parse_scopes("system/*.cruds"),
                         name=f"RIS {app} ({facility}) via MLLP", client_id=app or None)

    def receive(self, frame: Frame, peer: str) -> bytes | None:
        """The answer to ``frame`` on its connection (None: the sender wants none)."""
        try:
            return self._receive(frame, peer)
        except Exception:
            log.exception("HL7 message from %s: unexpected error", peer)
            return build_ack(None, "AR", [Problem("207", "erreur interne, message à "
                                                  "réémettre")], self.settings.application,
                             self.settings.facility, _header_guess(frame.payload))

    def _receive(self, frame: Frame, peer: str) -> bytes | None:
        raw = frame.payload
        if frame.oversize:
            problem = Problem("207", f"message de {frame.size} octets : au-delà de la "
                              f"taille maximale ({self.settings.max_message_bytes})", "MSH")
            return self._unreadable(raw, peer, problem, reject=True)
        try:
            msg = Message(raw)
        except MessageError as exc:
            return self._unreadable(raw, peer, Problem(exc.code, exc.text, exc.location),
                                    exc.reject)
        key = control_key(*msg.sender, msg.control_id)
        if not msg.control_id:
            return self._unreadable(raw, peer, Problem("101", "MSH-10 absent", "MSH^1^10"),
                                    reject=False, msg=msg)
        mode = enhanced(msg)  # an MSH-15/16 outside table 0155: original mode, AR below
        commit: tuple[str, bytes, list[Problem]] | None = None
        if mode:  # the commit ACK is decided from the header alone (§2.9.3)
            problems = self._header_problems(msg)
            code = ack_code(problems, bool(problems), enhanced=True)
            commit = (code, build_ack(msg, code, problems, self.settings.application,
                                      self.settings.facility), problems)
        previous, record = self._claim(msg, raw, key, peer, commit)
        if previous is not None and not same_message(self.messages.raw(previous), raw):
            return self._reused(msg, raw, key, peer, previous)
        if commit is not None:
            return self._commit(msg, key, peer, previous, record, commit)
        if previous is not None and previous.ack is not None:
            log.info("HL7 duplicate %s from %s: stored ACK sent again", key, peer)
            self._audit(previous, msg, peer, duplicate=True)
            return previous.ack
        record = previous or record
        assert record is not None
        return self.process(record, msg, peer)

    def _claim(self, msg: Message, raw: bytes, key: str, peer: str,
               commit: tuple[str, bytes, list[Problem]] | None
               ) -> tuple[Record | None, Record | None]:
        """(the record that owns ``key`` already, the record made for this message): the
        lookup and the insert are one write unit under the store's lock on the key, so
        of two messages under one key arriving at once (two connections, two processes)
        exactly one owns it; the other sees it and is a resend or a reuse (issue 24).

        Original mode: the new record need not reach the disk here — :meth:`process`
        commits durably before its ACK, which flushes this one too. Enhanced mode: the
        commit ACK follows at once, so the unit is durable (R-INT-2)."""
        store = as_system(self.server, HL7_JOURNAL)
        with store.lock(f"hl7v2-control:{key}"), store.write(durable=commit is not None):
            previous = self.messages.by_control(key)
            if previous is not None:
                return previous, None
            if commit is None:
                return None, self._keep(msg, raw, key, peer, "received")
            code, ack, problems = commit
            if problems:  # commit-rejected: kept with its answer, never processed
                return None, self._keep(msg, raw, key, peer, "rejected", ack=ack,
                                        ack_code=code, error="; ".join(
                                            f"{p.code} {p.text}" for p in problems))
            return None, self._keep(msg, raw, key, peer, "received", ack_code=code)

    def _keep(self, msg: Message, raw: bytes, key: str, peer: str, status: str,
              **fields: Any) -> Record:
        """A new inbound record of a readable message (raw bytes first, R-INT-2)."""
        return self.messages.add(INBOUND, raw, status, type="^".join(msg.message_type[:2]),
                                 control=key, control_id=msg.control_id, peer=peer,
                                 **fields)

    def _reused(self, msg: Message, raw: bytes, key: str, peer: str,
                original: Record) -> bytes | None:
        """A different message under the control key of ``original``: AE (CE in enhanced
        mode) with ERR 205, nothing processed; the message is kept as a record of its own,
        in ``error``, its key under the reused-key system so that resends of the original
        still find the original (issue 24). The same reusing message sent again gets its
        stored answer."""
        mode = enhanced(msg)
        code = "CE" if mode else "AE"
        for earlier in self.messages.reusing(key):
            if earlier.ack is not None and same_message(self.messages.raw(earlier), raw):
                log.info("HL7 %s from %s: reused control id sent again, same answer", key,
                         peer)
                self._audit(earlier, msg, peer, duplicate=True)
                return earlier.ack if not mode or \
                    wanted(msg.msh.get(15), earlier.ack_code) else None
        ack = build_ack(msg, code, [REUSED], self.settings.application,
                        self.settings.facility)
        record = self._keep(msg, raw, key, peer, "error", reused=True, ack=ack, ack_code=code,
                            error=f"{REUSED.code} {REUSED.text} (Basic/{original.id})")
        log.warning("HL7 %s from %s: control id of message Basic/%s reused for another "
                    "message: %s 205, kept as Basic/%s", key, peer, original.id, code,
                    record.id)
        self._audit(record, msg, peer)
        return ack if not mode or wanted(msg.msh.get(15), code) else None

    def _commit(self, msg: Message, key: str, peer: str, previous: Record | None,
                record: Record | None, commit: tuple[str, bytes, list[Problem]]
                ) -> bytes | None:
        """Enhanced mode: the message is durably kept (:meth:`_claim`); answer CA (or CR)
        and process it later, on the worker. A resend of a message committed but not yet
        processed (a stop came between) is queued again: a CA is a promise (issue 27),
        and the worker's status check processes it once however often it is queued."""
        code, ack, _ = commit
        if previous is not None:  # committed already: the same answer, processed once
            log.info("HL7 duplicate %s from %s: committed already (%s)", key, peer,
                     previous.status)
            self._audit(previous, msg, peer, duplicate=True)
            if previous.status == "received":
                self._queue.put(previous.id)
        elif record is not None:
            if record.status == "received":  # audited once processed
                self._queue.put(record.id)
            else:  # commit-rejected (CR): settled here
                self._audit(record, msg, peer)
        return ack if wanted(msg.msh.get(15), code) else None

    def work(self, timeout: float | None = None) -> bool:
        """Process the next committed message (enhanced mode); False when none came
        within ``timeout``. Run in order by one worker, so a sender's NW precedes its CA."""
        try:
            record_id = self._queue.get(timeout=timeout)
        except queue.Empty:
            return False
        self._process_committed(record_id)
        return True

    def _process_committed(self, record_id: str) -> bool:
        """Process one committed record if it is still ``received``; whether it is
        settled now (a record settled meanwhile counts as settled)."""
        try:
            record = self.messages.get(record_id)
            if record is None or record.status != "received":
                return True
            self.process(record, Message(self.messages.raw(record)), record.peer)
        except Exception:
            log.exception("HL7 message %s: unexpected error while processing", record_id)
        current = self.messages.get(record_id)
        return current is None or current.status != "received"

    def drain(self) -> int:
        """Process every queued message now; how many."""
        n = 0
        while self.work(timeout=0):
            n += 1
        return n

    def recover(self, stopping: Callable[[], bool] = lambda: False) -> int:
        """Process every message a stop left ``received`` — committed (CA sent) or taken
        in original mode, never settled — oldest first (the order they were committed
        in, the order :meth:`work` keeps), ``recovery_batch`` at a time, however many
        (issue 27: a CA is a promise; a batch is a page, never a cap). Keyset pages: one
        that fails again stays ``received`` (logged; ``hl7 reprocess`` or the next start)
        and never stops the others. Run by the worker before the live queue, so a message
        committed during recovery waits behind the older ones. How many were settled."""
        params = [("code", f"{KIND_SYSTEM}|{INBOUND}"), ("hl7-status", "received"),
                  ("_sort", "_lastUpdated")]
        settled = stuck = 0
        cursor: dict[str, Any] | None = None
        while not stopping():
            batch, cursor = self.messages.page(params, self.settings.recovery_batch, cursor)
            for record in batch:
                if stopping():
                    break
                if self._process_committed(record.id):
                    settled += 1
                else:
                    stuck += 1
            if batch:
                log.info("HL7 recovery: %d message(s) settled so far", settled)
            if cursor is None or not batch:
                break
        if stuck:
            log.error("HL7 recovery: %d message(s) still received after an error "
                      "(teleimagerie hl7 list --status received)", stuck)
        return settled

    def _unreadable(self, raw: bytes, peer: str, problem: Problem, reject: bool,
                    msg: Message | None = None) -> bytes:
        """A message we cannot take as it is (unreadable, or readable without MSH-10):
        the original-mode ACK with its ERR, the raw bytes kept with the key the ACK
        echoes — read best-effort from the raw MSH when the message does not parse — so
        that ``hl7 list --control`` finds it by MSA-2 (issue 27)."""
        code = ack_code([problem], reject, enhanced=False)
        guess = _header_guess(raw) if msg is None else (*msg.sender, msg.control_id)
        ack = build_ack(msg, code, [problem], self.settings.application,
                        self.settings.facility, guess)
        app, facility, control = (_printable(v) for v in guess[:3])
        keyed: dict[str, Any] = {"control": control_key(app, facility, control),
                                 "control_id": control, "unreadable": True} if control \
            else {}
        record = self.messages.add(INBOUND, raw, "rejected" if reject else "error",
                                   type="^".join(msg.message_type[:2]) if msg else "",
                                   peer=peer, ack=ack, ack_code=code,
                                   error=f"{problem.code} {problem.text}", **keyed)
        self._audit(record, msg, peer)
        return ack

    def process(self, record: Record, msg: Message, peer: str) -> bytes:
        """Run the flow of ``msg`` and settle ``record`` (also used to reprocess).

        On success the FHIR effects, the record's new status and the exchange's audit
        commit in one write unit; on failure that unit rolls back entirely and the error
        is recorded in a unit of its own (ADR 0010). Each unit first checks, inside
        itself, that ``record`` was not settled meanwhile — by the recovery, a resend
        or an operator's ``reprocess`` in another process — and then only returns the
        ACK it got: a message is processed once (issue 27). The store's lock on the
        record serialises processes on a store whose units do not (MongoDB)."""
        problems: list[Problem] = []
        reject = False
        outcome = Outcome()
        store = as_system(self.server, HL7_JOURNAL)
        # the receiver's own lock only where units run side by side (MongoDB): on SQLite
        # the unit serialises matching and commit, and a lock held across the commit
        # would keep the messages of other connections out of its group (issue 32)
        serial = nullcontext() if store.serial_units else self._lock
        with serial, store.lock(f"hl7v2-record:{record.id}"):
            try:
                flow = self._check_header(msg)
                ctx = Context(self.server, self.principal(msg), peer, uuid.uuid4().hex,
                              self.settings)
                with store.write():
                    done = self._settled_meanwhile(record)
                    if done is not None:
                        return done
                    outcome = flow(ctx, msg)
                    if not outcome.held and outcome.order and msg.message_type[0] == "ORM":
                        self._release_held(ctx, outcome.order)
                    return self._settle(record, msg, peer, outcome, [], False)
            except IdentityConflict as exc:
                problems.append(Problem(exc.code, exc.text, exc.location))
                outcome = Outcome(patient=exc.patient)
                self._flag_identity(exc)
            except MessageError as exc:
                problems.append(Problem(exc.code, exc.text, exc.location))
                outcome = Outcome()
                reject = exc.reject
            with store.write():
                done = self._settled_meanwhile(record)
                if done is not None:
                    return done
                return self._settle(record, msg, peer, outcome, problems, reject)

    def _settled_meanwhile(self, record: Record) -> bytes | None:
        """The ACK ``record`` got since it was read, if another path settled it."""
        current = self.messages.get(record.id)
        if current is not None and current.status != record.status and \
                current.ack is not None:
            return current.ack
        return None

    def _settle(self, record: Record, msg: Message, peer: str, outcome: Outcome,
                problems: list[Problem], reject: bool) -> bytes:
        code = ack_code(problems, reject, enhanced=False)
        # in enhanced mode the application ACK is a message of ours, committed by the peer
        ack = build_ack(msg, code, problems, self.settings.application,
                        self.settings.facility, ack_types=("AL", "NE") if enhanced(msg)
                        else ("", ""))
        record.ack, record.ack_code = ack, code
        record.status = "held" if outcome.held and not problems else \
            "rejected" if reject else "error" if problems else "processed"
        record.error = "; ".join(f"{p.code} {p.text}" for p in problems)
        record.results = outcome.results
        record.patient = outcome.patient or record.patient
        record.order = outcome.order or record.order
        if enhanced(msg) and wanted(msg.msh.get(16), code):  # queued in this write unit
            self.messages.add(OUTBOUND, ack, "pending", type="ACK", control=record.control,
                              patient=record.patient, order=record.order,
                              destination=msg.sender[1], decision=f"{code} {record.id}",
                              next_attempt=now())
        self.messages.update(record)
        self._audit(record, msg, peer)
        return ack

    def _header_problems(self, msg: Message) -> list[Problem]:
        try:
            self._check_header(msg)
        except MessageError as exc:
            return [Problem(exc.code, exc.text, exc.location)]
        return []

    def _check_header(self, msg: Message) -> Flow:
        """The flow of ``msg``, or MessageError (reject: AR/CR) for what we do not take:
        acknowledgement conditions, version, processing id, type and event."""
        bad_mode = mode_problem(msg)
        if bad_mode is not None:
            raise MessageError(bad_mode.code, bad_mode.text, bad_mode.location, reject=True)
        code, event, _ = msg.message_type
        version = msg.version
        if version not in self.settings.versions:
            raise MessageError("203", f"version {version!r} non prise en charge (2.5, 2.5.1)",
                               "MSH^1^12", reject=True)
        if msg.processing_id not in self.settings.processing_ids:
            raise MessageError("202", f"MSH-11 {msg.processing_id!r} non accepté "
                               f"({', '.join(sorted(self.settings.processing_ids))})",
                               "MSH^1^11", reject=True)
        flow = FLOWS.get((code, event))
        if flow is None:
            known = {c for c, _ in FLOWS}
            raise MessageError("201" if code in known else "200",
                               f"message {code}^{event} non pris en charge", "MSH^1^9",
                               reject=True)
        return flow

    def _release_held(self, ctx: Context, order: str) -> None:
        """A CA that arrived before its NW is applied now (flux 2)."""
        for held in self.messages.find([("hl7-order", literal(order)),
                                        ("hl7-status", "held")]):
            msg = Message(self.messages.raw(held))
            request, _ = orm_o01.cancel(ctx, msg)
            held.status = "processed"
            held.results = [r for r in [request] if r]
            self.messages.update(held)

    def _flag_identity(self, exc: IdentityConflict) -> None:
        if exc.patient:
            flag_identity(self.server, exc.patient, exc.text)

    def _audit(self, record: Record, msg: Message | None, peer: str,
               duplicate: bool = False) -> None:
        if self.server.audit is None:
            return
        self.server.audit.record([exchange_event(record, msg, peer, self.server.name,
                                                 inbound=True, duplicate=duplicate)],
                                 durable=True)

    # -- operator commands (issue 24) --------------------------------------------------
    def check_reprocess(self, record_id: str) -> Record:
        """The inbound record ``record_id`` if it may be processed again; KeyError when
        there is none, :class:`Refused` when reprocessing does not apply."""
        record = self.messages.get(record_id)
        if record is None:
            raise KeyError(record_id)
        if record.kind == OUTBOUND:
            # name `resend` only where it applies (every refusal points to what would)
            then = "it is pending: the sender delivers it, nothing to do" \
                if record.status == "pending" else \
                f"to send it again: teleimagerie hl7 resend {record_id}"
            raise Refused(f"{record_id}: outbound message ({record.type or '?'}, "
                          f"{record.status}): reprocess and replay apply to inbound messages "
                          f"only; {then}")
        if record.status not in REPROCESSABLE:
            raise Refused(f"{record_id}: already {record.status} ({record.type or '?'}, "
                          f"ACK {record.ack_code or '-'}): processing it again would apply it "
                          "over later changes; reprocess applies to messages "
                          f"{', '.join(REPROCESSABLE)}")
        try:
            Message(self.messages.raw(record))
        except MessageError as exc:
            raise Refused(f"{record_id}: unreadable message ({exc.text}): nothing can "
                          "process it; the sender must send it again, corrected") from None
        return record

    def reprocess(self, record_id: str, operator: str | None = None) -> Record:
        """Process an inbound message again (``teleimagerie hl7 reprocess``): after the
        checks of :meth:`check_reprocess`, through :meth:`process` (audited as an
        exchange), and, with ``operator``, an AuditEvent naming who asked."""
        record = self.check_reprocess(record_id)
        before = f"{record.status} {record.ack_code}".strip()
        self.process(record, Message(self.messages.raw(record)), record.peer)
        after = self.messages.get(record_id) or record
        if operator is not None:
            self._operator_audit(after, "reprocess", operator,
                                 f"{before} -> {after.status} {after.ack_code}".strip())
        return after

    def check_resend(self, record_id: str) -> Record:
        """The outbound record ``record_id`` if it may be queued again; KeyError when
        there is none, :class:`Refused` when resending does not apply."""
        record = self.messages.get(record_id)
        if record is None:
            raise KeyError(record_id)
        if record.kind != OUTBOUND:
            try:  # name `reprocess` only where it applies
                self.check_reprocess(record_id)
                then = f"to process it again: teleimagerie hl7 reprocess {record_id}"
            except Refused as exc:
                then = f"and reprocess does not apply either ({str(exc).split(': ', 1)[1]})"
            raise Refused(f"{record_id}: inbound message ({record.type or '?'}, "
                          f"{record.status}): resend applies to messages we send; {then}")
        if record.status == "pending":
            raise Refused(f"{record_id}: already pending ({record.type or '?'} to "
                          f"{record.destination or '?'}, {record.attempts} attempt(s), next "
                          f"{record.next_attempt or 'now'}): the sender sends it; nothing "
                          "to do")
        return record

    def resend(self, record_id: str, operator: str | None = None) -> Record:
        """Queue an outbound message again (``teleimagerie hl7 resend``): status
        ``pending``, next attempt now, the attempt count back to 0 (the backoff starts
        over; the count before is in the AuditEvent), the same bytes (same MSH-10).
        The record and the AuditEvent commit in one write unit."""
        record = self.check_resend(record_id)
        before = (f"{record.status} {record.ack_code}".strip() +
                  f", {record.attempts} essai(s)" +
                  (f", {record.error}" if record.error else ""))
        record.status, record.next_attempt, record.attempts = "pending", now(), 0
        record.ack, record.ack_code = None, ""
        record.error = f"renvoi manuel (avant : {before})"[:1000]
        with as_system(self.server, HL7_JOURNAL).write():
            self.messages.update(record)
            self._operator_audit(record, "resend", operator or "?", f"avant : {before}")
        return record

    def _operator_audit(self, record: Record, action: str, operator: str,
                        detail: str) -> None:
        """AuditEvent of an operator command on a message record: DCM 110107 *Import*
        (reprocess) or 110106 *Export* (resend), action U, subtype the command, the
        operator as requestor, the record and its patient as entities."""
        if self.server.audit is None:
            return
        entity = system_object(f"Basic/{record.id}", "4",
                               f"teleimagerie hl7 {action} : HL7 v2 {record.type or '?'} "
                               f"{record.control or '?'} — {detail}")
        self.server.audit.record([operator_event(
            "hl7", action, operator, self.server.name, record.kind == OUTBOUND, [entity],
            patient=record.patient)], durable=True)


def _header_guess(raw: bytes) -> tuple[str, ...]:
    """Sending app, facility, control id of a message we cannot parse (for its ACK)."""
    line = raw.split(b"\r", 1)[0].split(b"\n", 1)[0].decode("latin-1")
    if not line.startswith("MSH") or len(line) < 4 or line[3].isalnum() or \
            line[3].isspace():  # "MSH" alone or no usable field separator: nothing to read
        return ("", "", "")
    parts = line.split(line[3])
    comp = line[4] if len(line) > 4 else "^"
    # the values come back unescaped: build_ack escapes what it writes (never twice)
    chars = line[4:8] if len(line) >= 8 and len(set(line[3:8])) == 5 else ""
    d = Delimiters(line[3], *chars) if chars and not any(c.isalnum() for c in chars) \
        else None

    def get(i: int) -> str:
        value = parts[i].split(comp)[0] if i < len(parts) else ""
        return unescape(value, d) if d is not None else value

    return get(2), get(3), get(9)


def _printable(value: str) -> str:
    """A value read from bytes we could not parse, fit to keep in a record: control
    characters shown as ``\\xhh``, at most 199 characters (MSH-10 is ST 199 in v2.7)."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in value
                   ).strip()[:199]


def describe(record: Record) -> dict[str, Any]:
    """A record for listings: the control key as stored (the MSH-10 that MSA-2 echoes
    is ``control_id``) and, apart, why it is not the owner of that key."""
    return {"id": record.id, "status": record.status, "type": record.type,
            "control": record.control, "control_id": record.control_id,
            "key": "reused" if record.reused else "unreadable" if record.unreadable
            else "own" if record.control else "-",
            "ack": record.ack_code, "error": record.error,
            "patient": record.patient, "results": record.results}
