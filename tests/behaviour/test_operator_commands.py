"""Operator commands cannot destroy work, and a reused MSH-10 is never answered with
another message's ACK (issue 24; R-INT-2), on both stores.

``teleimagerie hl7 reprocess|replay`` apply to inbound messages not yet processed,
``hl7 resend`` to outbound messages not pending, ``delivery retry`` to dead-lettered,
refused or held deliveries: anything else is refused with what would apply (exit 2,
nothing changed), and what is done is audited with the operator.
"""

from __future__ import annotations

import base64
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from adapters.delivery import cli as delivery_cli
from adapters.delivery.outbox import Delivery, Outbox
from adapters.hl7v2 import cli
from adapters.hl7v2.outbox import Sender
from adapters.hl7v2.receiver import Refused
from adapters.hl7v2.records import INBOUND, KIND_SYSTEM, OUTBOUND, REUSED_CONTROL_SYSTEM
from fhir_server.server.dispatch import FhirServer
from fhir_server.workflow.records import view
from tests.behaviour.hl7_world import PLACER_OID, Hl7World, orm

PLACER = f"urn:oid:{PLACER_OID}"
OPERATOR = "exploitant@poste-1"
ACTIONS = "https://teleimagerie.fr/fhir/CodeSystem/teleimagerie-operator-action"


@pytest.fixture
def world(secured: FhirServer, tmp_path: Path) -> Hl7World:
    return Hl7World(secured, tmp_path)


def _status(world: Hl7World, record_id: str) -> str:
    record = world.receiver.messages.get(record_id)
    assert record is not None
    return record.status


def _oru(world: Hl7World) -> str:
    """An order over HL7, accepted over FHIR: its ORU^R01 waits in the outbox (flux 3)."""
    assert world.send(orm())["MSA"][1] == "AA"
    sr = world.one(f"ServiceRequest?identifier={PLACER}|DEM-1")
    world.consent("acte", "teleimagerie", patient=sr["subject"]["reference"])
    assert world.op(world.imager, sr["id"], "accept").status_code == 200
    [queued] = world.search(f"Basic?code={KIND_SYSTEM}|{OUTBOUND}&hl7-status=pending")
    return str(queued["id"])


def _inbound(world: Hl7World, status: str = "processed") -> str:
    return str(world.one(f"Basic?code={KIND_SYSTEM}|{INBOUND}&hl7-status={status}")["id"])


def _operator_events(world: Hl7World, ref: str, action: str) -> list[dict[str, Any]]:
    events = world.search(f"AuditEvent?entity={ref}&_count=100")
    return [e for e in events if any(s.get("system") == ACTIONS and s.get("code") == action
                                     for s in e.get("subtype") or [])]


# -- hl7 reprocess / replay --------------------------------------------------------------

def test_reprocess_of_an_outbound_message_is_refused_and_changes_nothing(
        world: Hl7World, capsys: Any) -> None:
    """Issue 24: reprocessing our pending ORU would parse it as a RIS's message and flip
    it to rejected (the acceptance would never leave). Pending, it needs nothing: the
    refusal names no command (``resend`` refuses a pending message too)."""
    oru = _oru(world)
    before = world.read(f"Basic/{oru}")
    assert cli.reprocess(world.receiver, [oru], OPERATOR) == 2
    err = capsys.readouterr().err
    assert "outbound" in err and "nothing to do" in err and "resend" not in err
    after = world.read(f"Basic/{oru}")
    assert after["meta"]["versionId"] == before["meta"]["versionId"]
    assert _status(world, oru) == "pending"
    with pytest.raises(Refused):
        world.receiver.reprocess(oru)
    assert cli.replay(world.receiver, "pending", 100, OPERATOR) == 2  # no outbound either
    assert _status(world, oru) == "pending"
    # failed, it is `resend` that applies: the refusal says so, and resend takes it
    _set(world, oru, "failed")
    assert cli.reprocess(world.receiver, [oru], OPERATOR) == 2
    assert f"teleimagerie hl7 resend {oru}" in capsys.readouterr().err
    assert cli.resend(world.receiver, [oru], OPERATOR) == 0


def _set(world: Hl7World, record_id: str, status: str) -> None:
    record = world.receiver.messages.get(record_id)
    assert record is not None
    record.status = status
    world.receiver.messages.update(record)


def test_reprocess_refuses_processed_unknown_and_mixed_lists(world: Hl7World,
                                                             capsys: Any) -> None:
    """A processed message is not applied again over later changes; an unknown id is
    an error; when one id of a list is refused, none is acted on."""
    assert world.send(orm(control="P1"))["MSA"][1] == "AA"
    processed = _inbound(world)
    assert world.send(orm(control="P2", placer="DEM-9", order_control="CA",
                          reason="^Doublon"))["MSA"][1] == "AA"  # held: its NW is unknown
    held = _inbound(world, "held")
    assert cli.reprocess(world.receiver, [processed], OPERATOR) == 2
    assert "already processed" in capsys.readouterr().err
    assert cli.reprocess(world.receiver, ["no-such-id"], OPERATOR) == 2
    assert "no such HL7 message record" in capsys.readouterr().err
    version = world.read(f"Basic/{held}")["meta"]["versionId"]
    assert cli.reprocess(world.receiver, [held, "no-such-id"], OPERATOR) == 2
    assert "nothing done" in capsys.readouterr().err
    assert world.read(f"Basic/{held}")["meta"]["versionId"] == version
    assert cli.replay(world.receiver, "processed", 100, OPERATOR) == 2
    assert _status(world, processed) == "processed"


def test_reprocess_of_a_message_in_error_is_audited_with_the_operator(
        world: Hl7World, capsys: Any) -> None:
    from tests.behaviour.hl7_world import omi

    assert world.send(omi())["MSA"][1] == "AE"  # no such order yet
    record = _inbound(world, "error")
    assert cli.reprocess(world.receiver, [record], OPERATOR) == 1  # still in error
    assert capsys.readouterr().out.startswith(f"{record}: error AE")
    [audit] = _operator_events(world, f"Basic/{record}", "reprocess")
    assert audit["action"] == "U"
    requestor = next(a for a in audit["agent"] if a["requestor"])
    assert requestor["who"]["identifier"]["value"] == OPERATOR


# -- hl7 resend --------------------------------------------------------------------------

def test_resend_queues_a_failed_message_again_and_is_audited(world: Hl7World,
                                                             capsys: Any) -> None:
    """A failed ORU (the RIS answered AE) goes back to pending, next attempt now, attempts
    reset; an AuditEvent names the operator and the count before."""
    oru = _oru(world)
    record = world.receiver.messages.get(oru)
    assert record is not None
    record.status, record.ack_code, record.attempts = "failed", "AE", 3
    record.error, record.next_attempt = "AE 204 commande inconnue", None
    world.receiver.messages.update(record)

    assert cli.resend(world.receiver, [oru], OPERATOR) == 0
    assert "attempts reset, 3 before" in capsys.readouterr().out
    again = world.receiver.messages.get(oru)
    assert again is not None and again.status == "pending" and again.attempts == 0
    assert again.ack is None and again.ack_code == ""
    assert again.next_attempt is not None and again.next_attempt <= \
        datetime.now(UTC).isoformat().replace("+00:00", "Z")
    assert oru in [r.id for r in Sender(world.core, world.settings).due()]
    [audit] = _operator_events(world, f"Basic/{oru}", "resend")
    assert audit["type"]["code"] == "110106" and audit["action"] == "U"
    requestor = next(a for a in audit["agent"] if a["requestor"])
    assert requestor["who"]["identifier"]["value"] == OPERATOR
    description = audit["entity"][0]["description"]
    assert "failed AE" in description and "3 essai(s)" in description
    assert any(e["what"].get("reference", "").startswith("Patient/")
               for e in audit["entity"])

    # pending now: a second resend does not apply
    assert cli.resend(world.receiver, [oru], OPERATOR) == 2
    assert "already pending" in capsys.readouterr().err
    assert len(_operator_events(world, f"Basic/{oru}", "resend")) == 1


def test_resend_of_an_inbound_message_or_unknown_id_is_refused(world: Hl7World,
                                                                capsys: Any) -> None:
    world.send(orm())
    inbound = _inbound(world)
    version = world.read(f"Basic/{inbound}")["meta"]["versionId"]
    assert cli.resend(world.receiver, [inbound], OPERATOR) == 2
    err = capsys.readouterr().err
    # processed: reprocess would refuse it too, so it is not offered
    assert "resend applies to messages we send" in err and "hl7 reprocess" not in err
    assert "already processed" in err
    assert cli.resend(world.receiver, ["nope"], OPERATOR) == 2
    assert "no such HL7 message record" in capsys.readouterr().err
    assert world.read(f"Basic/{inbound}")["meta"]["versionId"] == version
    assert not _operator_events(world, f"Basic/{inbound}", "resend")
    # in error, reprocess applies: offered, and it takes it
    from tests.behaviour.hl7_world import omi

    world.send(omi(control="O1", placer="INCONNU"))
    failed = _inbound(world, "error")
    assert cli.resend(world.receiver, [failed], OPERATOR) == 2
    assert f"teleimagerie hl7 reprocess {failed}" in capsys.readouterr().err
    assert cli.reprocess(world.receiver, [failed], OPERATOR) == 1  # still unknown: AE


def test_every_refusal_names_only_a_command_that_applies(world: Hl7World,
                                                         capsys: Any) -> None:
    """Issue 24: no refusal says "use X" where X refuses too. For a record in every
    status, each command that refuses it may name another command on it; that one must
    then accept it."""
    from adapters.hl7v2.records import STATUSES

    world.send(orm(control="R1"))
    inbound = _inbound(world)
    oru = _oru(world)
    world.send(b"MSH|^~\\&|RIS|CH|A|B|2026||ORM^O01|BAD|P|2.5.1|||||FRA|EBCDIC\r")
    [unreadable] = [r.id for r in world.receiver.messages.find(
        [("code", f"{KIND_SYSTEM}|{INBOUND}"), ("hl7-status", "rejected")])]
    checks = {"reprocess": world.receiver.check_reprocess,
              "resend": world.receiver.check_resend}
    named = 0
    for record_id, statuses in ((inbound, STATUSES[:5]), (oru, STATUSES[5:]),
                                (unreadable, ("rejected",))):
        for status in statuses:
            _set(world, record_id, status)
            for command, check in checks.items():
                try:
                    check(record_id)
                except Refused as exc:
                    for other in re.findall(rf"teleimagerie hl7 (\w+) {record_id}", str(exc)):
                        assert other != command, str(exc)
                        checks[other](record_id)  # must not refuse
                        named += 1
    assert named >= 5  # the pairs where the other command does apply were named
    capsys.readouterr()


def test_an_id_given_twice_is_acted_on_once(world: Hl7World, capsys: Any) -> None:
    """Issue 24: `hl7 reprocess ID ID` crashed (the second pass found it processed)."""
    from tests.behaviour.hl7_world import omi

    world.send(omi(control="O2", placer="INCONNU"))
    failed = _inbound(world, "error")
    assert cli.reprocess(world.receiver, [failed, failed], OPERATOR) == 1
    captured = capsys.readouterr()
    assert "given more than once" in captured.err
    assert captured.out.count(f"{failed}:") == 1
    assert len(_operator_events(world, f"Basic/{failed}", "reprocess")) == 1
    oru = _oru(world)
    _set(world, oru, "dead")
    assert cli.resend(world.receiver, [oru, oru], OPERATOR) == 0
    assert capsys.readouterr().out.count(f"{oru}:") == 1
    assert len(_operator_events(world, f"Basic/{oru}", "resend")) == 1


# -- delivery retry ----------------------------------------------------------------------

def _delivery(world: Hl7World, n: int, state: str) -> str:
    d = Delivery(id=f"d{n}-{state}", channel="dmp", document="DocumentReference/doc",
                 patient=world.refs["patient"], report="DiagnosticReport/cr", version=1,
                 address="DMP", state=state, attempts=3)
    with view(world.core).write():
        Outbox(world.core).add(d)
    return d.id


@pytest.mark.parametrize(("state", "why"), [
    ("envoye", "already sent"), ("annule", "cancelled"), ("a-envoyer", "already queued"),
    ("nouvel-essai", "already queued")])
def test_delivery_retry_refuses_what_does_not_apply(world: Hl7World, capsys: Any,
                                                    state: str, why: str) -> None:
    outbox = Outbox(world.core)
    task = _delivery(world, 1, state)
    before = world.read(f"Task/{task}")
    assert delivery_cli.retry(outbox, task, OPERATOR) == 2
    assert why in capsys.readouterr().err
    assert world.read(f"Task/{task}")["meta"]["versionId"] == before["meta"]["versionId"]
    assert not _operator_events(world, f"Task/{task}", "retry")


def test_delivery_retry_of_an_unknown_id_is_refused(world: Hl7World, capsys: Any) -> None:
    assert delivery_cli.retry(Outbox(world.core), "no-such-task", OPERATOR) == 2
    assert "no delivery no-such-task" in capsys.readouterr().err


@pytest.mark.parametrize("state", ["lettre-morte", "rejete", "bloque-opposition"])
def test_delivery_retry_sends_dead_refused_and_held_again_audited(
        world: Hl7World, capsys: Any, state: str) -> None:
    outbox = Outbox(world.core)
    task = _delivery(world, 2, state)
    assert delivery_cli.retry(outbox, task, OPERATOR) == 0
    assert "a-envoyer" in capsys.readouterr().out
    again = outbox.get(task)
    assert again is not None and again.state == "a-envoyer" and again.attempts == 0
    [audit] = _operator_events(world, f"Task/{task}", "retry")
    assert state in audit["entity"][0]["description"]
    requestor = next(a for a in audit["agent"] if a["requestor"])
    assert requestor["who"]["identifier"]["value"] == OPERATOR


# -- a control id reused for another message ----------------------------------------------

def _crlf_and_new_timestamp(message: bytes) -> bytes:
    return message.replace(b"20261122093000", b"20261122094500").replace(b"\r", b"\r\n")


def test_same_control_id_same_content_gets_the_stored_ack(world: Hl7World) -> None:
    """A resend may carry a new MSH-7 and other line endings: still the same message."""
    first = world.send(orm())
    again = world.send(_crlf_and_new_timestamp(orm()))
    assert again["raw"] == first["raw"]
    assert len(world.search(f"Basic?code={KIND_SYSTEM}|{INBOUND}")) == 1


def test_control_id_reused_for_another_message_is_refused_and_kept_apart(
        world: Hl7World) -> None:
    """Issue 24: a different message under a stored (MSH-3, MSH-4, MSH-10) gets AE 205 at
    MSH^1^10, is kept (status error, listed), never processed, and never taken for the
    original: the original's resend still gets the original's ACK."""
    first = world.send(orm(control="1", placer="DEM-1"))
    assert first["MSA"][1] == "AA"
    other = orm(control="1", placer="DEM-2")
    ack = world.send(other)
    assert ack["MSA"][1:3] == ["AE", "1"]
    assert ack["ERR"][2] == "MSH^1^10" and ack["ERR"][3].startswith("205^")
    assert ack["ERR"][8] == "MSH-10 déjà utilisé pour un autre message"
    assert not world.search(f"ServiceRequest?identifier={PLACER}|DEM-2")

    [kept] = world.search(f"Basic?code={KIND_SYSTEM}|{INBOUND}&hl7-status=error")
    assert kept["identifier"] == [{"system": REUSED_CONTROL_SYSTEM,
                                   "value": "RIS-PROX^CH-PROX^1"}]
    raw_ref = next(e for e in kept["extension"] if e["url"].endswith("hl7v2-raw"))
    assert base64.b64decode(world.read(raw_ref["valueReference"]["reference"])["data"]) \
        == other
    original = world.receiver.messages.by_control("RIS-PROX^CH-PROX^1")
    assert original is not None and original.id != kept["id"]
    events = world.search(f"AuditEvent?entity=Basic/{kept['id']}")
    assert any(e["outcome"] == "4" for e in events)

    # the original sent again: its own ACK; the reusing message again: the same AE
    assert world.send(orm(control="1", placer="DEM-1"))["raw"] == first["raw"]
    assert world.send(other)["raw"] == ack["raw"]
    assert len(world.search(f"Basic?code={KIND_SYSTEM}|{INBOUND}")) == 2

    # replay leaves it alone (its sender was told to use a new MSH-10)
    assert cli.replay(world.receiver, "error", 100, OPERATOR) == 0
    assert _status(world, kept["id"]) == "error"


def test_control_id_reused_in_enhanced_mode_is_commit_error(world: Hl7World) -> None:
    """Enhanced mode: CE with ERR 205 on the commit, nothing queued, no application ACK;
    the original's resend is still committed (CA) and processed once."""
    message = orm(control="E1", ack_types=("AL", "AL"))
    assert world.send(message)["MSA"][1] == "CA"
    ack = world.send(orm(control="E1", placer="DEM-2", ack_types=("AL", "AL")))
    assert ack["MSA"][1:3] == ["CE", "E1"] and ack["ERR"][3].startswith("205^")
    assert world.receiver.drain() == 1
    assert world.send(_crlf_and_new_timestamp(message))["MSA"][1] == "CA"
    assert world.receiver.drain() == 0
    world.one(f"ServiceRequest?identifier={PLACER}|DEM-1")
    assert not world.search(f"ServiceRequest?identifier={PLACER}|DEM-2")
    acks = world.search(f"Basic?code={KIND_SYSTEM}|{OUTBOUND}&hl7-type=ACK")
    assert len(acks) == 1  # the original's AA only
    statuses = sorted(r.status for r in world.receiver.messages.find(
        [("code", f"{KIND_SYSTEM}|{INBOUND}")]))
    assert statuses == ["error", "processed"]


# -- through the command line (sqlite: the CLI opens the data directory) -----------------

@pytest.mark.skipif(bool(os.environ.get("TELEIMG_TEST_MONGODB_URI")), reason="CLI uses sqlite")
def test_cli_refuses_reprocess_of_outbound_and_resends_it(tmp_path: Path, monkeypatch: Any,
                                                           capsys: Any) -> None:
    from teleimagerie.cli import main
    from tests.conftest import make_store, secured_core

    store = make_store("sqlite", tmp_path)
    core = secured_core(store, tmp_path)
    try:
        world = Hl7World(core, tmp_path)
        oru = _oru(world)
        monkeypatch.setenv("TELEIMG_DATA_DIR", str(tmp_path / "data"))
        monkeypatch.delenv("TELEIMG_STORE_URL", raising=False)
        capsys.readouterr()
        assert main(["hl7", "reprocess", oru]) == 2
        assert "pending: the sender delivers it" in capsys.readouterr().err
        assert _status(world, oru) == "pending"
        assert main(["hl7", "resend", oru]) == 2  # pending already
        assert "already pending" in capsys.readouterr().err
        assert main(["delivery", "retry", "no-such-task"]) == 2
    finally:
        assert core.audit is not None
        core.audit.close()
        store.close()


@pytest.mark.parametrize("ack_types", [("", ""), ("AL", "AL")])
def test_control_id_reused_by_messages_arriving_together_is_taken_once(
        world: Hl7World, ack_types: tuple[str, str]) -> None:
    """Issue 24: two different messages under one MSH-10 arriving at once were both
    processed (lookup, then insert). The lookup and the insert are one unit under the
    store's lock: exactly one owns the key and is processed, the others get AE (CE)
    205. Several rounds of four connections released together."""
    import threading

    accepted, refused = ("CA", "CE") if ack_types[0] else ("AA", "AE")
    for round_ in range(3):
        control = f"RACE{round_}"
        messages = [orm(control=control, placer=f"RACE-{round_}-{n}", ack_types=ack_types)
                    for n in range(4)]
        barrier = threading.Barrier(len(messages))
        answers: list[dict[str, Any]] = []

        def send(message: bytes, n: int, barrier: threading.Barrier,
                 answers: list[dict[str, Any]]) -> None:
            barrier.wait()
            answers.append(world.send(message, peer=f"10.0.0.{n}:4000"))

        threads = [threading.Thread(target=send, args=(m, n, barrier, answers))
                   for n, m in enumerate(messages)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        world.receiver.drain()
        codes = sorted(a["MSA"][1] for a in answers)
        assert codes == [accepted] + [refused] * 3, codes
        assert all(a["ERR"][3].startswith("205^") for a in answers if a["MSA"][1] == refused)
        created = [p for n in range(4) for p in
                   world.search(f"ServiceRequest?identifier={PLACER}|RACE-{round_}-{n}")]
        assert len(created) == 1
        owner = world.receiver.messages.by_control(f"RIS-PROX^CH-PROX^{control}")
        assert owner is not None and owner.status == "processed"
        assert len(world.receiver.messages.reusing(f"RIS-PROX^CH-PROX^{control}")) == 3


def test_listing_shows_the_real_control_key_and_whose_it_is(world: Hl7World,
                                                            capsys: Any) -> None:
    """Issue 24: describe() appended " (reused)" to the control id shown, which then
    matched no MSA-2; the key is shown as it is, whose it is in a column of its own."""
    from adapters.hl7v2.receiver import describe

    world.send(orm(control="7", placer="DEM-1"))
    world.send(orm(control="7", placer="DEM-2"))
    records = world.receiver.messages.find([("code", f"{KIND_SYSTEM}|{INBOUND}")])
    described = sorted((describe(r)["key"], describe(r)["control"], describe(r)["control_id"])
                       for r in records)
    assert described == [("own", "RIS-PROX^CH-PROX^7", "7"),
                         ("reused", "RIS-PROX^CH-PROX^7", "7")]
    capsys.readouterr()
    assert cli.listing(world.receiver, False, None, 50, "7") == 0
    lines = capsys.readouterr().out.splitlines()
    assert sorted(line.split()[4:6] for line in lines) == [
        ["RIS-PROX^CH-PROX^7", "own"], ["RIS-PROX^CH-PROX^7", "reused"]]


def test_outbound_message_becomes_a_dead_letter_after_its_retry_budget(
        world: Hl7World, capsys: Any) -> None:
    """Issue 24, flux 3: an ORU the RIS never acknowledges ends, after
    TELEIMG_HL7_MAX_ATTEMPTS attempts, in status ``dead`` — audited, listed by
    ``hl7 list --outbound --status dead``, sent again by ``hl7 resend`` — instead of
    being retried forever unseen."""
    import asyncio
    from dataclasses import replace

    oru = _oru(world)
    settings = replace(world.settings, routes={}, retry_base=0.0, max_attempts=3)
    sender = Sender(world.core, settings)
    for attempt in range(1, 4):
        assert asyncio.run(sender.run_once()) == 1
        record = world.receiver.messages.get(oru)
        assert record is not None and record.attempts == attempt
        assert record.status == ("dead" if attempt == 3 else "pending")
    assert asyncio.run(sender.run_once()) == 0  # never tried again on its own
    dead = world.receiver.messages.get(oru)
    assert dead is not None and dead.error.startswith("lettre morte après 3 essai(s)")
    events = world.search(f"AuditEvent?entity=Basic/{oru}")
    assert any(e["outcome"] != "0" and e["type"]["code"] == "110106" for e in events)
    capsys.readouterr()
    assert cli.listing(world.receiver, True, "dead", 50) == 0
    assert capsys.readouterr().out.startswith(f"{oru} ")
    assert cli.resend(world.receiver, [oru], OPERATOR) == 0
    again = world.receiver.messages.get(oru)
    assert again is not None and again.status == "pending" and again.attempts == 0
    assert "dead" in again.error and len(_operator_events(world, f"Basic/{oru}", "resend")) == 1
