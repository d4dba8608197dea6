"""The HL7 v2 adapter, behind the MLLP framing: ANS Volet Téléradiologie flux 1–4 and the
PAM-FR identity feed, on both stores (issue 6; R-INT-2, R-EXAM-1, R-REQ-1..3, R-VAL-*)."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import pytest

from adapters.hl7v2.message import Message
from adapters.hl7v2.mllp import Frame, ServerLimits, serve
from adapters.hl7v2.outbox import Sender
from adapters.hl7v2.records import INBOUND, KIND_SYSTEM, OUTBOUND
from adapters.hl7v2.settings import Hl7Settings
from fhir_server.server.dispatch import FhirServer
from tests.behaviour.hl7_world import (
    IG,
    INS_TEST,
    PAM,
    PLACER_OID,
    Hl7World,
    adt,
    ig_samples,
    omi,
    orm,
    pid,
)

PLACER = f"urn:oid:{PLACER_OID}"


@pytest.fixture
def world(secured: FhirServer, tmp_path: Path) -> Hl7World:
    return Hl7World(secured, tmp_path)


def _ext(resource: dict[str, Any], name: str) -> Any:
    return next((e for e in resource.get("extension") or [] if e["url"].endswith(name)), None)


def test_new_order_maps_patient_request_and_observations(world: Hl7World) -> None:
    """Flux 1 (ORM^O01 NW) -> Patient (INS, traits), requester at its site, request in
    state recue with the IG's OBX groups (R-REQ-1..3, R-EXAM-1)."""
    ack = world.send(orm())
    assert ack["MSA"][1:3] == ["AA", "1"]
    assert ack["MSH"][2:6] == ["TLRapp", "TLRfacility", "RIS-PROX", "CH-PROX"]
    assert ack["MSH"][8] == "ACK^O01^ACK"
    sr = world.one(f"ServiceRequest?identifier={PLACER}|DEM-1")
    patient = world.one(f"Patient?identifier={INS_TEST}|283052312345678")
    assert {(i["system"], i["value"]) for i in patient["identifier"]} == {
        (INS_TEST, "283052312345678"), ("urn:oid:1.2.250.1.999.2", "IPP001")}
    assert patient["name"][0]["use"] == "official" and patient["name"][0]["family"] == \
        "DUPONT" and patient["name"][0]["given"] == ["Claire", "Marie"]
    assert patient["birthDate"] == "1983-05-22" and patient["gender"] == "female"
    birth = _ext(patient, "patient-birthPlace")["valueAddress"]
    assert birth["district"] == "45234"
    status = _ext(patient, "fr-core-identity-reliability")["extension"][0]["valueCoding"]
    assert status["code"] == "VALI"
    assert patient["address"][0]["city"] == "ORLÉANS"
    assert sr["subject"]["reference"] == f"Patient/{patient['id']}"
    assert sr["authoredOn"].startswith("2026-11-22T09:25:00")
    assert sr["reasonCode"][0]["text"] == "Céphalées brutales"
    assert sr["bodySite"][0]["coding"][0]["code"] == "774007"
    assert _ext(sr, "tlm-modality")["valueCoding"]["code"] == "CT"
    assert _ext(sr, "tlm-laterality")["valueCodeableConcept"]["coding"][0]["code"] == \
        "7771000"
    assert _ext(sr, "tlm-pregnancy-status")["valueCodeableConcept"]["coding"][0][
        "code"] == "60001007"
    assert _ext(sr, "tlm-objective")["valueCodeableConcept"]["coding"][0]["code"] == "suivi"
    role = world.one(f"PractitionerRole?_id={sr['requester']['reference'].split('/')[1]}")
    assert role["practitioner"]["reference"] == world.refs["requester"]
    assert role["organization"]["reference"] == world.refs["site"]
    assert role["telecom"][0]["value"] == "+33600000000"
    assert sr["performer"] == [{"reference": world.refs["imager"]}]
    observations = {o["code"]["coding"][0]["code"]: o for o in world.search(
        f"Observation?subject=Patient/{patient['id']}")}
    assert observations["29463-7"]["valueQuantity"] == {
        "value": 58.5, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"}
    assert observations["8302-2"]["valueQuantity"]["value"] == 165
    assert observations["11322-5"]["valueString"] == "Hypertension artérielle"
    assert world.state(sr["id"]) == "recue"


def test_message_store_keeps_raw_bytes_and_outcome(world: Hl7World) -> None:
    """R-INT-2: the raw message is stored byte for byte with its ACK and results."""
    message = orm()
    world.send(message, peer="10.1.2.3:999")
    record = world.one(f"Basic?code={KIND_SYSTEM}|{INBOUND}&hl7-status=processed")
    raw_ref = _ext(record, "hl7v2-raw")["valueReference"]["reference"]
    binary = world.read(raw_ref)
    assert base64.b64decode(binary["data"]) == message
    assert _ext(record, "hl7v2-type")["valueCode"] == "ORM^O01"
    assert _ext(record, "hl7v2-peer")["valueString"] == "10.1.2.3:999"
    assert record["identifier"][0]["value"] == "RIS-PROX^CH-PROX^1"
    results = [e["valueReference"]["reference"] for e in record["extension"]
               if e["url"].endswith("hl7v2-result")]
    assert any(r.startswith("ServiceRequest/") for r in results)
    assert record["subject"]["reference"].startswith("Patient/")
    events = world.search("AuditEvent?type=http://dicom.nema.org/resources/ontology/DCM|"
                          "110107")
    assert any(e["entity"][0]["what"]["reference"] == f"Basic/{record['id']}"
               for e in events)


def test_duplicate_is_not_processed_twice(world: Hl7World) -> None:
    """Same MSH-3/4/10: the stored ACK is sent again, nothing is written twice."""
    first = world.send(orm())
    again = world.send(orm())
    assert again["raw"] == first["raw"]
    assert len(world.search(f"ServiceRequest?identifier={PLACER}|DEM-1")) == 1
    assert len(world.search(f"Basic?code={KIND_SYSTEM}|{INBOUND}")) == 1


def _application_acks(world: Hl7World) -> list[Message]:
    out = []
    for record in world.search(f"Basic?code={KIND_SYSTEM}|{OUTBOUND}&hl7-type=ACK"):
        raw_ref = _ext(record, "hl7v2-raw")["valueReference"]["reference"]
        out.append(Message(base64.b64decode(world.read(raw_ref)["data"])))
    return out


def test_enhanced_mode_commits_then_acknowledges_the_application(world: Hl7World) -> None:
    """MSH-15/16 AL (HL7 v2.5.1 §2.9.3): CA as soon as the message is durably kept, the
    flow afterwards, and the AA as a message of ours queued for the sender (R-INT-2)."""
    commit = world.send(orm(control="E1", ack_types=("AL", "AL")))
    assert commit["MSA"][1:3] == ["CA", "E1"]
    assert "ERR" not in commit
    record = world.one(f"Basic?code={KIND_SYSTEM}|{INBOUND}")
    assert _ext(record, "hl7v2-status")["valueCode"] == "received"
    assert not world.search(f"ServiceRequest?identifier={PLACER}|DEM-1")

    assert world.receiver.drain() == 1
    world.one(f"ServiceRequest?identifier={PLACER}|DEM-1")
    record = world.one(f"Basic?code={KIND_SYSTEM}|{INBOUND}")
    assert _ext(record, "hl7v2-status")["valueCode"] == "processed"
    [ack] = _application_acks(world)
    assert ack.require("MSA").get(1) == "AA" and ack.require("MSA").get(2) == "E1"
    assert ack.receiver == ("RIS-PROX", "CH-PROX")
    assert (ack.msh.get(15), ack.msh.get(16)) == ("AL", "NE")  # the RIS commits it
    queued = world.one(f"Basic?code={KIND_SYSTEM}|{OUTBOUND}")
    assert _ext(queued, "hl7v2-destination")["valueString"] == "CH-PROX"  # MSH-4 route
    assert _ext(queued, "hl7v2-status")["valueCode"] == "pending"


def test_enhanced_mode_duplicate_is_committed_and_processed_once(world: Hl7World) -> None:
    message = orm(control="E2", ack_types=("AL", "AL"))
    assert world.send(message)["MSA"][1] == "CA"
    assert world.send(message)["MSA"][1] == "CA"
    world.receiver.drain()
    assert world.send(message)["MSA"][1] == "CA"
    assert world.receiver.drain() == 0
    assert len(world.search(f"Basic?code={KIND_SYSTEM}|{INBOUND}")) == 1
    assert len(_application_acks(world)) == 1


def test_enhanced_mode_unsupported_version_is_commit_rejected(world: Hl7World) -> None:
    ack = world.send(orm(control="E3", version="2.3", ack_types=("AL", "AL")))
    assert ack["MSA"][1] == "CR"
    assert ack["ERR"][3].startswith("203^")
    assert world.receiver.drain() == 0
    record = world.one(f"Basic?code={KIND_SYSTEM}|{INBOUND}")
    assert _ext(record, "hl7v2-status")["valueCode"] == "rejected"
    assert not _application_acks(world)


@pytest.mark.parametrize(("accept", "application", "commit_sent", "app_acks"), [
    ("NE", "ER", False, []),      # success: neither wanted
    ("ER", "SU", False, ["AA"]),  # success: the application ACK only
    ("SU", "NE", True, []),
])
def test_enhanced_mode_sends_only_the_acks_asked_for(
        world: Hl7World, accept: str, application: str, commit_sent: bool,
        app_acks: list[str]) -> None:
    """MSH-15/16 conditions, HL7 table 0155 (AL, NE, ER, SU)."""
    answer = world.send(orm(control="E4", ack_types=(accept, application)))
    assert bool(answer) is commit_sent
    world.receiver.drain()
    world.one(f"ServiceRequest?identifier={PLACER}|DEM-1")
    assert [a.require("MSA").get(1) for a in _application_acks(world)] == app_acks


def test_enhanced_mode_content_error_gives_application_error(world: Hl7World) -> None:
    """An OMI for an unknown order is committed (CA), then answered AE with its ERR, the
    message kept in error (R-INT-2)."""
    assert world.send(omi(control="E5", placer="INCONNU", ack_types=("ER", "ER"))) == {}
    world.receiver.drain()
    [ack] = _application_acks(world)
    assert ack.require("MSA").get(1) == "AE"
    assert ack.segment("ERR") is not None
    record = world.one(f"Basic?code={KIND_SYSTEM}|{INBOUND}")
    assert _ext(record, "hl7v2-status")["valueCode"] == "error"


def test_enhanced_mode_message_committed_before_a_stop_is_processed_after(
        world: Hl7World, secured: FhirServer) -> None:
    """A CA was sent, then the listener stopped before processing: the next start
    processes every committed message — more than a recovery batch —, in the order
    they were committed (issue 27 item 2: recovery stopped at 1 000 and a resend answered
    "committed already" without processing)."""
    from dataclasses import replace

    from adapters.hl7v2.receiver import Receiver

    streets = [f"{n} rue des Lilas" for n in range(7)]

    def moved(n: int) -> bytes:  # one patient moving house in turn: the order shows
        return adt("A31", f"R{n}", patient=pid().replace("12 rue des Lilas", streets[n])
                   ).replace(b"|||||FRA", b"|||AL|AL|FRA")

    for n in range(len(streets)):
        assert world.send(moved(n))["MSA"][1] == "CA"
    restarted = Receiver(secured, replace(world.settings, recovery_batch=2))
    # a resend of a committed, unprocessed message: CA again, queued, processed once
    resent = restarted.receive(Frame(moved(3)), "10.0.0.5:40001")
    assert resent is not None and b"MSA|CA|R3" in resent
    assert restarted.recover() == len(streets)
    assert restarted.drain() == 1  # the resend's queue entry: settled already, skipped
    patient = world.one(f"Patient?identifier={INS_TEST}|283052312345678")
    assert patient["address"][0]["line"] == [streets[-1]]
    history = world.ris.get(f"/fhir/Patient/{patient['id']}/_history?_count=100").json()
    assert len(history["entry"]) == len(streets)  # each applied once
    assert world.receiver.drain() == len(streets)  # the stopped process's queue: skipped
    assert not world.search(f"Basic?code={KIND_SYSTEM}|{INBOUND}&hl7-status=received")
    acks = _application_acks(world)
    assert sorted(a.require("MSA").get(2) for a in acks) == [f"R{n}" for n in range(7)]


def test_resend_of_a_committed_message_is_processed_once_without_recovery(
        world: Hl7World, secured: FhirServer) -> None:
    """The resend alone (no recovery run) gets the committed message processed."""
    from adapters.hl7v2.receiver import Receiver

    message = orm(control="E7", ack_types=("AL", "AL"))
    assert world.send(message)["MSA"][1] == "CA"
    restarted = Receiver(secured, world.settings)
    assert b"MSA|CA|E7" in (restarted.receive(Frame(message), "10.0.0.5:1") or b"")
    assert restarted.drain() == 1
    world.one(f"ServiceRequest?identifier={PLACER}|DEM-1")
    assert restarted.recover() == 0 and world.receiver.drain() == 1
    assert len(_application_acks(world)) == 1


def test_new_order_resent_with_new_control_id_is_idempotent(world: Hl7World) -> None:
    world.send(orm(control="1"))
    assert world.send(orm(control="2"))["MSA"][1] == "AA"
    assert len(world.search(f"ServiceRequest?identifier={PLACER}|DEM-1")) == 1
    assert len(world.search("Patient?family=DUPONT")) == 1


def test_cancel_order_with_reason(world: Hl7World) -> None:
    """Flux 2 (ORM^O01 CA): the request is cancelled with the ORC-16 reason."""
    world.send(orm())
    ack = world.send(orm(control="2", order_control="CA",
                         reason="DOUBLON^Demande en doublon^L"))
    assert ack["MSA"][1] == "AA"
    sr = world.one(f"ServiceRequest?identifier={PLACER}|DEM-1")
    assert sr["status"] == "revoked" and world.state(sr["id"]) == "annulee"
    assert world.task(sr["id"])["statusReason"]["text"] == "Demande en doublon"


def test_cancel_before_its_order_is_held_then_applied(world: Hl7World) -> None:
    """Flux 2 overtaking flux 1: the CA is kept (held), acknowledged, and applied when
    the NW arrives — never lost (ADR 0010)."""
    ack = world.send(orm(control="9", placer="DEM-9", order_control="CA",
                         reason="^Examen fait ailleurs"))
    assert ack["MSA"][1] == "AA"
    assert world.search("Basic?hl7-status=held")
    world.send(orm(control="10", placer="DEM-9"))
    sr = world.one(f"ServiceRequest?identifier={PLACER}|DEM-9")
    assert world.state(sr["id"]) == "annulee"
    assert not world.search("Basic?hl7-status=held")


def test_post_exam_information_makes_study_available(world: Hl7World) -> None:
    """Flux 4 (OMI^O23 SR) after the imager accepted: ImagingStudy (Study UID, accession,
    act, viewer), contrast product and device; the request reaches images-disponibles."""
    world.send(orm())
    sr = world.one(f"ServiceRequest?identifier={PLACER}|DEM-1")
    world.consent("acte", "teleimagerie", patient=sr["subject"]["reference"])
    assert world.op(world.imager, sr["id"], "accept").status_code == 200
    ack = world.send(omi())
    assert ack["MSA"][1] == "AA", ack
    study = world.one(f"ImagingStudy?based-on=ServiceRequest/{sr['id']}")
    ids = {i["system"]: i["value"] for i in study["identifier"]}
    assert ids["urn:dicom:uid"] == "urn:oid:1.2.250.1.999.3.1"
    assert ids["urn:oid:1.2.250.1.999.4"] == "ACC-1"
    assert study["procedureCode"][0]["coding"][0]["code"] == "ACQK001"
    assert study["started"].startswith("2026-11-22T10:15:00")
    endpoint = world.read(study['endpoint'][0]['reference'])
    assert endpoint["address"] == "https://drimbox.ch-prox.fr/viewer?study=1"
    admin = world.one(f"MedicationAdministration?subject={sr['subject']['reference']}")
    assert admin["contained"][0]["batch"]["lotNumber"] == "LOT-42"
    assert admin["dosage"]["dose"]["value"] == 80
    assert admin["contained"][0]["code"]["coding"][0]["code"] == "V08AB02"
    assert world.one("Device?identifier=SN-CT-0007")["modelNumber"] == "Scanner 64 barrettes"
    assert world.state(sr["id"]) == "images-disponibles"


def test_post_exam_for_unknown_order_is_refused_and_kept(world: Hl7World) -> None:
    ack = world.send(omi(placer="INCONNUE"))
    assert ack["MSA"][1] == "AE" and ack["ERR"][3].startswith("204^")
    assert world.search("Basic?hl7-status=error")


@pytest.mark.parametrize(("message", "code", "error", "location"), [
    (orm(patient=pid(family="")), "AE", "101", "PID^1^5"),
    (orm(patient=pid(born="2026-13")), "AE", "102", "PID^1^7"),
    (orm(obx=[]), "AE", "101", "OBX"),
    (orm(order_control="XO"), "AE", "103", "ORC^1^1"),
    (orm(version="2.3"), "AR", "203", "MSH^1^12"),
    (orm(processing="X"), "AR", "202", "MSH^1^11"),
    (orm(charset="EBCDIC"), "AR", "102", "MSH^1^18"),
    (b"MSH|^~\\&|A|B|C|D|20261122||ORM^O02^ORM_O02|7|P|2.5.1\rPID|||1\r", "AR", "201",
     "MSH^1^9"),
    (b"MSH|^~\\&|A|B|C|D|20261122||SIU^S12^SIU_S12|8|P|2.5.1\r", "AR", "200", "MSH^1^9"),
    (b"garbage that is not HL7", "AR", "100", "MSH"),
])
def test_bad_messages_get_error_ack_and_are_kept(world: Hl7World, message: bytes, code: str,
                                                 error: str, location: str) -> None:
    """AE for content errors, AR for what we do not take; ERR-2/3/4 per the IG; the raw
    message is kept marked in error (R-INT-2)."""
    ack = world.send(message)
    assert ack["MSA"][1] == code
    assert ack["ERR"][2] == location and ack["ERR"][3].split("^")[0] == error
    assert ack["ERR"][3].endswith("^HL70357") and ack["ERR"][4] == "E"
    assert ack["ERR"][8]  # the diagnostic text (ERR-7)
    status = "rejected" if code == "AR" else "error"
    kept = world.search(f"Basic?code={KIND_SYSTEM}|{INBOUND}&hl7-status={status}")
    assert len(kept) == 1
    raw = world.read(_ext(kept[0], "hl7v2-raw")["valueReference"]["reference"])
    assert base64.b64decode(raw["data"]) == message
    assert not world.search("ServiceRequest?identifier=" + PLACER + "|DEM-1")


def test_latin1_message_decoded_from_msh18(world: Hl7World) -> None:
    message = orm(charset="8859/1").decode().replace(
        "UNICODE UTF-8", "8859/1").encode("iso8859-1")
    assert world.send(message)["MSA"][1] == "AA"
    patient = world.one("Patient?family=DUPONT")
    assert patient["address"][0]["city"] == "ORLÉANS"


def test_wrong_byte_for_declared_charset_is_an_error_not_a_crash(world: Hl7World) -> None:
    message = orm().replace("ORLÉANS".encode(), "ORL\xc9ANS".encode("latin-1"))
    ack = world.send(message)
    assert ack["MSA"][1] == "AE" and ack["ERR"][2] == "MSH^1^18"


def _by_control(world: Hl7World, control: str) -> list[dict[str, Any]]:
    """Inbound records found by the MSH-10 an ACK echoes (``hl7 list --control``)."""
    return world.search(f"Basic?code={KIND_SYSTEM}|{INBOUND}&hl7-control={control}")


@pytest.mark.parametrize(("accept", "application", "field"), [
    ("XX", "AL", 15), ("0", "", 15), ("&&&", "NE", 15), ("al ", "XX", 16)])
def test_invalid_ack_condition_is_answered_ar_in_original_mode(
        world: Hl7World, accept: str, application: str, field: int) -> None:
    """Issue 27 item 11: an MSH-15/16 outside HL7 table 0155 got no ACK at all (the
    sender waited forever). Now: AR in original mode (no MSH-15/16 on the ACK), ERR 103
    at the field, nothing processed, kept and found by its MSH-10; sent again, the same
    answer."""
    message = orm(control=f"M{field}{len(accept)}", ack_types=(accept, application))
    ack = world.send(message)
    assert ack["MSA"][1:3] == ["AR", f"M{field}{len(accept)}"]
    assert ack["ERR"][2] == f"MSH^1^{field}" and ack["ERR"][3].startswith("103^")
    assert len(ack["MSH"]) <= 15 or ack["MSH"][14:16] in (["", ""], [""])
    assert world.receiver.drain() == 0
    assert not world.search(f"ServiceRequest?identifier={PLACER}|DEM-1")
    [record] = _by_control(world, f"M{field}{len(accept)}")
    assert _ext(record, "hl7v2-status")["valueCode"] == "rejected"
    assert not _application_acks(world)
    assert world.send(message)["raw"] == ack["raw"]


HUGE = b"MSH|^~\\&|RIS|CH|TLRapp|TLRfacility|2026||ORM^O01|HUGE1|P|2.5.1\r" + \
    b"NTE|1||" + b"x" * 100_000 + b"\r"


@pytest.mark.parametrize(("message", "code", "error", "control"), [
    (b"MSH|^~", "AR", "100", ""),  # truncated MSH
    (b"MSH|^~\\&|RIS|CH|TLRapp", "AE", "101", ""),  # truncated before MSH-10
    (b"MSH|^^\\&|RIS|CH|TLRapp|TLRfacility|2026||ORM^O01|DELIM1|P|2.5.1\r", "AR", "102",
     "DELIM1"),  # a delimiter used twice
    (b"MSH#^~\\&|RIS|CH|TLRapp|TLRfacility|2026||ORM^O01|SEP1|P|2.5.1\r", "AE", "101",
     ""),  # MSH-1 '#' used nowhere else: one field, no MSH-10 to echo
    (b"MSH|^~\\&|RIS|CH|TLRapp|TLRfacility|2026|||NOTYPE1|P|2.5.1\rPID|||1\r", "AR", "200",
     "NOTYPE1"),  # MSH-9 missing
    (b"MSH|^~\\&|RIS|CH|TLRapp|TLRfacility|2026||ORM^O01|VER1|P|9.9\r", "AR", "203",
     "VER1"),  # MSH-12 unknown version
    (b"", "AR", "100", ""),  # empty message
    (b"MSH|^~\\&|RIS|CH|TLRapp|TLRfacility|2026||ORM^O01|LAT1|P|2.5.1|||||FRA|UNICODE UTF-8\r"
     b"PID|||1||ORL\xc9ANS\r", "AE", "102", "LAT1"),  # latin-1 byte, UTF-8 declared
    (b"MSH|^~\\&|RIS|CH|TLRapp|TLRfacility|2026||ORM^O01|BIN1|P|2.5.1|||||FRA|EBCDIC\r\xff\xfe",
     "AR", "102", "BIN1"),  # charset we cannot read
])
def test_malformed_messages_get_an_ack_with_err_and_are_kept(
        world: Hl7World, message: bytes, code: str, error: str, control: str) -> None:
    """Issue 27 item 11 and its neighbours: every message gets an ACK with ERR, its raw
    bytes are kept, and when the ACK echoes an MSH-10 the record is found by it — also
    when the message does not parse (the key read best-effort from the raw MSH)."""
    ack = Message(world.send(message)["raw"])  # in the sender's delimiters, if usable
    msa, err = ack.require("MSA"), ack.require("ERR")
    assert msa.get(1) == code and err.get(3) == error
    assert err.get(8)  # the user message (ERR-8)
    assert msa.get(2) == control
    [kept] = world.search(f"Basic?code={KIND_SYSTEM}|{INBOUND}")
    raw = world.read(_ext(kept, "hl7v2-raw")["valueReference"]["reference"])
    assert base64.b64decode(raw.get("data", "")) == message
    if control:
        [found] = _by_control(world, control)
        assert found["id"] == kept["id"]


def test_oversize_message_is_answered_and_its_head_kept(world: Hl7World) -> None:
    from adapters.hl7v2.mllp import FrameDecoder, frame

    [f] = FrameDecoder(50_000).feed(frame(HUGE))
    assert f.oversize
    ack = world.receiver.receive(f, "10.0.0.5:1")
    assert ack is not None and b"MSA|AR|HUGE1" in ack and b"ERR||MSH|207^" in ack
    [found] = _by_control(world, "HUGE1")
    raw = world.read(_ext(found, "hl7v2-raw")["valueReference"]["reference"])
    assert HUGE.startswith(base64.b64decode(raw["data"]))


def test_hl7_list_finds_a_message_by_the_control_id_its_ack_echoes(
        world: Hl7World, capsys: Any) -> None:
    from adapters.hl7v2 import cli

    world.send(orm(control="FIND-1"))
    world.send(b"MSH|^^\\&|RIS|CH|TLRapp|TLRfacility|2026||ORM^O01|FIND-2|P|2.5.1\r")
    world.send(orm(control="OTHER", placer="DEM-2"))
    capsys.readouterr()
    for control, status, key in (("FIND-1", "processed", "own"),
                                 ("FIND-2", "rejected", "unreadable")):
        assert cli.listing(world.receiver, False, None, 50, control) == 0
        [line] = capsys.readouterr().out.splitlines()
        assert f" {status} " in line and f"^{control}  {key} " in line
    assert cli.listing(world.receiver, False, "nonsense", 50) == 2
    assert "unknown status" in capsys.readouterr().err


def test_identity_conflict_is_flagged_never_merged(world: Hl7World) -> None:
    """R-EXAM-1: same INS, another birth date -> AE, Flag on the patient, no change."""
    world.send(orm())
    ack = world.send(orm(control="2", placer="DEM-2", patient=pid(born="19830523")))
    assert ack["MSA"][1] == "AE" and "identité discordante" in ack["ERR"][8]
    patient = world.one("Patient?family=DUPONT")
    assert patient["birthDate"] == "1983-05-22"
    flag = world.one(f"Flag?patient=Patient/{patient['id']}")
    assert flag["code"]["coding"][0]["code"] == "identite-a-verifier"
    assert not world.search(f"ServiceRequest?identifier={PLACER}|DEM-2")


def test_fixed_message_can_be_reprocessed(world: Hl7World) -> None:
    """A message in error is reprocessed once the cause is fixed (here: its order came)."""
    assert world.send(omi())["MSA"][1] == "AE"  # no such order yet
    record = world.one("Basic?hl7-status=error")
    world.send(orm())
    sr = world.one(f"ServiceRequest?identifier={PLACER}|DEM-1")
    world.consent("acte", "teleimagerie", patient=sr["subject"]["reference"])
    assert world.op(world.imager, sr["id"], "accept").status_code == 200
    again = world.receiver.reprocess(record["id"])
    assert again.status == "processed" and again.ack_code == "AA", again.error
    assert world.state(sr["id"]) == "images-disponibles"
    assert not world.search("Basic?hl7-status=error")


def test_identity_feed_creates_updates_and_never_downgrades(world: Hl7World) -> None:
    """PAM-FR A28 creates, A31/A08 update the traits; a provisional identity does not
    overwrite a qualified one (R-EXAM-1)."""
    assert world.send(adt("A28", "a1"))["MSA"][1] == "AA"
    world.send(adt("A31", "a2", pid(family="DUPONT", given="Claire")))
    world.send(adt("A08", "a3", pid(family="DUPONT", given="Claire",
                                    status="VALI").replace("12 rue des Lilas",
                                                           "3 place du Martroi")))
    patient = world.one("Patient?family=DUPONT")
    assert patient["address"][0]["line"] == ["3 place du Martroi"]
    world.send(adt("A08", "a4", pid(ins="", given="Clara", status="PROV")))
    assert world.one("Patient?family=DUPONT")["name"][0]["given"][0] == "Claire"


def test_merge_repoints_resources_and_links_patients(world: Hl7World) -> None:
    """A40: the merged patient's requests move to the survivor; both keep a link."""
    world.send(adt("A28", "m1", pid(ins="", ipp="IPP-OLD", family="MARTIN",
                                    status="PROV")))
    world.send(orm(control="m2", placer="DEM-M", patient=pid(ins="", ipp="IPP-OLD",
                                                              family="MARTIN",
                                                              status="PROV")))
    world.send(adt("A28", "m3", pid(ipp="IPP-NEW", family="MARTIN")))
    old = world.one("Patient?identifier=urn:oid:1.2.250.1.999.2|IPP-OLD")
    new = world.one("Patient?identifier=urn:oid:1.2.250.1.999.2|IPP-NEW")
    ack = world.send(adt("A40", "m4", pid(ipp="IPP-NEW", family="MARTIN"),
                         mrg="IPP-OLD^^^CH-PROX&1.2.250.1.999.2&ISO^PI"))
    assert ack["MSA"][1] == "AA", ack
    sr = world.one(f"ServiceRequest?identifier={PLACER}|DEM-M")
    assert sr["subject"]["reference"] == f"Patient/{new['id']}"
    old = world.one(f"Patient?_id={old['id']}")
    assert old["active"] is False and old["link"][0] == {
        "other": {"reference": f"Patient/{new['id']}"}, "type": "replaced-by"}
    new = world.one(f"Patient?_id={new['id']}")
    assert {"other": {"reference": f"Patient/{old['id']}"}, "type": "replaces"} in new["link"]


def test_identifier_change(world: Hl7World) -> None:
    """A47: the IPP is corrected on the same patient."""
    world.send(adt("A28", "c1", pid(ipp="IPP-ERR")))
    ack = world.send(adt("A47", "c2", pid(ipp="IPP-OK"),
                         mrg="IPP-ERR^^^CH-PROX&1.2.250.1.999.2&ISO^PI"))
    assert ack["MSA"][1] == "AA", ack
    patient = world.one("Patient?identifier=urn:oid:1.2.250.1.999.2|IPP-OK")
    assert not world.search("Patient?identifier=urn:oid:1.2.250.1.999.2|IPP-ERR")
    assert patient["family" if False else "name"][0]["family"] == "DUPONT"


def test_decision_queues_one_oru_and_sender_delivers(world: Hl7World) -> None:
    """Flux 3: an accept through FHIR queues ORU^R01 OK with the protocol, once; the
    sender retries while the RIS is down and settles on its AA (R-INT-2)."""
    world.send(orm())
    sr = world.one(f"ServiceRequest?identifier={PLACER}|DEM-1")
    world.consent("acte", "teleimagerie", patient=sr["subject"]["reference"])
    r = world.op(world.imager, sr["id"], "accept", protocol="Scanner sans injection")
    assert r.status_code == 200, r.text
    queued = world.search(f"Basic?code={KIND_SYSTEM}|{OUTBOUND}&hl7-status=pending")
    assert len(queued) == 1
    raw_ref = _ext(queued[0], "hl7v2-raw")["valueReference"]["reference"]
    oru = Message(base64.b64decode(world.read(raw_ref)["data"]))
    assert oru.message_type[:2] == ("ORU", "R01")
    assert oru.receiver == ("RIS-PROX", "CH-PROX")
    orc = oru.require("ORC")
    assert orc.get(1) == "OK" and orc.get(2) == "DEM-1" and orc.get(2, 3) == PLACER_OID
    assert orc.get(12) == "810000000101"
    obx = oru.require("OBX")
    assert base64.b64decode(obx.get(5, 5)).decode() == "Scanner sans injection"
    pid_seg = oru.require("PID")
    assert "283052312345678" in pid_seg.raw(3) and pid_seg.get(32) == "VALI"

    received: list[bytes] = []

    async def scenario() -> None:
        async def ris(frame: Frame, peer: str) -> bytes:
            received.append(frame.payload)
            msg = Message(frame.payload)
            return (f"MSH|^~\\&|RIS-PROX|CH-PROX|TLRapp|TLRfacility|20261122||ACK^R01^ACK|"
                    f"9|P|2.5.1\rMSA|AA|{msg.control_id}\r").encode()

        probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = probe.sockets[0].getsockname()[1]
        probe.close()
        await probe.wait_closed()
        settings = Hl7Settings(routes={"750000001": ("127.0.0.1", port)}, retry_base=0.0)
        sender = Sender(world.core, settings)
        assert await sender.run_once() == 1  # the RIS is down: stays pending
        pending = world.one("Basic?hl7-status=pending")
        assert "injoignable" in _ext(pending, "hl7v2-error")["valueString"]
        server = await serve(ris, "127.0.0.1", port, ServerLimits())
        async with server:
            assert await sender.run_once() == 1
        assert await sender.run_once() == 0

    asyncio.run(scenario())
    assert len(received) == 1
    sent = world.one(f"Basic?code={KIND_SYSTEM}|{OUTBOUND}")
    assert _ext(sent, "hl7v2-status")["valueCode"] == "sent"
    assert _ext(sent, "hl7v2-attempts")["valueInteger"] == 2


def test_refusal_queues_oru_oc_with_reason(world: Hl7World) -> None:
    world.send(orm())
    sr = world.one(f"ServiceRequest?identifier={PLACER}|DEM-1")
    reason = {"coding": [{"system": "https://teleimagerie.fr/fhir/CodeSystem/"
                          "teleimagerie-refusal-reason", "code": "hors-perimetre"}]}
    r = world.op(world.imager, sr["id"], "refuse", reason=reason, text="Hors périmètre")
    assert r.status_code == 200, r.text
    queued = world.one(f"Basic?code={KIND_SYSTEM}|{OUTBOUND}")
    raw_ref = _ext(queued, "hl7v2-raw")["valueReference"]["reference"]
    oru = Message(base64.b64decode(world.read(raw_ref)["data"]))
    assert oru.require("ORC").get(1) == "OC"
    assert oru.require("ORC").get(16, 2) == "Hors périmètre"


def test_request_created_over_rest_sends_no_oru(world: Hl7World) -> None:
    sr = world.request()
    world.consent("acte", "teleimagerie")
    assert world.op(world.imager, sr, "accept").status_code == 200
    assert not world.search(f"Basic?code={KIND_SYSTEM}|{OUTBOUND}")


@pytest.mark.skipif(not IG.exists(), reason="ANS IG samples not present in ../shared")
def test_ig_samples_flux_1_2_4(world: Hl7World) -> None:
    """The IG's own sample messages (exemples.md): NW, OMI and CA, acknowledged AA with
    the IG's ACK shape (MSH swapped, ACK^<event>^ACK, MSA-2 = MSH-10)."""
    nw, ca, _oru, omi_sample = ig_samples()
    ack = world.send(nw)
    assert ack["MSA"][1:3] == ["AA", "000001"], ack
    assert ack["MSH"][2:6] == ["TLRapp", "TLRfacility", "StructureApp", "StructureFacility"]
    assert ack["MSH"][10] == "P" and ack["MSH"][11] == "2.5.1" and ack["MSH"][16] == "FRA"
    sr = world.one("ServiceRequest?identifier=urn:oid:1.2.250.1.748.12345678.12|OPN101")
    patient = world.read(sr['subject']['reference'])
    assert patient["identifier"][0] == {
        "system": INS_TEST, "value": "279035121518989",
        "type": {"coding": [{"system": "https://hl7.fr/ig/fhir/core/CodeSystem/"
                             "fr-core-cs-v2-0203", "code": "INS-NIR-TEST"}]}}
    assert patient["name"][0]["family"] == "PAT-TROIS" and patient["birthDate"] == \
        "1979-03-28"
    assert _ext(sr, "tlm-modality")["valueCoding"]["code"] == "MR"
    org = world.one("Organization?identifier=urn:oid:1.2.250.1.71.4.2.2|300017985")
    assert org["name"] == "Structure-Y"
    world.consent("acte", "teleimagerie", patient=sr["subject"]["reference"])
    verifier = world.one("Practitioner?identifier=urn:oid:1.2.250.1.71.4.2.1|801234564895")
    assert verifier["name"][0]["family"] == "Eric"
    r = world.op(world.ris, sr["id"], "accept",
                 practitioner={"reference": world.refs["imager"]})
    assert r.status_code == 200, r.text
    assert world.send(omi_sample)["MSA"][1] == "AA"
    study = world.one(f"ImagingStudy?based-on=ServiceRequest/{sr['id']}")
    assert {"system": "urn:dicom:uid", "value": "urn:oid:1.2.250.1.213.4.5.2.1.101"} in \
        study["identifier"]
    assert world.state(sr["id"]) == "images-disponibles"
    assert world.send(ca)["MSA"][1:3] == ["AA", "000002"]
    assert world.state(sr["id"]) == "annulee"


@pytest.mark.skipif(not (PAM / "SGL").exists(), reason="ANS PAM-FR samples not present")
def test_pam_fr_samples(world: Hl7World) -> None:
    """The ANS PAM-FR admission (A01) and discharge (A03) samples update one patient."""
    for name in ("admission.er7", "sortie.er7"):
        data = (PAM / "SGL" / name).read_bytes()
        assert world.send(data)["MSA"][1] == "AA"
    patient = world.one(f"Patient?identifier={INS_TEST}|279035121518989")
    assert {i["value"] for i in patient["identifier"]} == {"000003", "279035121518989"}
