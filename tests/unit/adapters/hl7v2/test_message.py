"""The v2 reader, MLLP framing and ACK builder (HL7 v2.5.1 ch. 2, appendix C; ANS
``acquittement.md``)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.hl7v2.ack import Problem, build_ack
from adapters.hl7v2.message import Delimiters, Message, MessageError, escape, unescape
from adapters.hl7v2.mllp import END, START, FrameDecoder, FramingError, frame

NW = (b"MSH|^~\\&|RIS|CH|TLRapp|TLRfacility|20261122093000||ORM^O01^ORM_O01|42|P|2.5.1|||||"
      b"FRA|UNICODE UTF-8\rPID|||123^^^A&1.2&ISO^PI~456^^^B&1.3&ISO^INS||NOM^Pr\\S\\nom\r")


def test_reads_header_and_components() -> None:
    msg = Message(NW)
    assert msg.control_id == "42" and msg.message_type == ("ORM", "O01", "ORM_O01")
    assert msg.sender == ("RIS", "CH") and msg.version == "2.5.1" and msg.codec == "utf-8"
    pid = msg.require("PID")
    assert [f.component(1) for f in pid.repetitions(3)] == ["123", "456"]
    assert pid.repetitions(3)[1].component(4, 2) == "1.3"
    assert pid.get(5, 2) == "Pr^nom"  # \S\ is the component separator, unescaped


def test_segments_may_end_with_lf_or_crlf() -> None:
    msg = Message(NW.replace(b"\r", b"\r\n"))
    assert [s.name for s in msg.segments] == ["MSH", "PID"]
    assert [s.name for s in Message(NW.replace(b"\r", b"\n")).segments] == ["MSH", "PID"]


def test_other_delimiters_are_honoured() -> None:
    msg = Message(b"MSH#$*!@#A#B#C#D#2026##ADT$A28#1#P#2.5\rPID###X$$$Y@1.2@ISO$PI")
    assert msg.message_type[:2] == ("ADT", "A28")
    assert msg.require("PID").get(3, 4, 2) == "1.2"


@pytest.mark.parametrize(("text", "value"), [
    ("a\\F\\b", "a|b"), ("a\\T\\b", "a&b"), ("a\\R\\b", "a~b"), ("a\\E\\b", "a\\b"),
    ("\\X41\\", "A"), ("l1\\.br\\l2", "l1\nl2"), ("odd\\", "odd\\"), ("\\Z9\\", "\\Z9\\")])
def test_escape_sequences(text: str, value: str) -> None:
    assert unescape(text, Delimiters()) == value


def test_escape_round_trip() -> None:
    value = "a|b^c&d~e\\f"
    assert unescape(escape(value), Delimiters()) == value


def test_charset_from_msh18() -> None:
    latin = NW.replace(b"UNICODE UTF-8", b"8859/15").replace(b"NOM", "JÉRÔME€".encode(
        "iso8859-15"))
    assert Message(latin).require("PID").get(5) == "JÉRÔME€"
    with pytest.raises(MessageError) as bad:
        Message(NW.replace(b"NOM", b"\xc9"))
    assert bad.value.code == "102" and bad.value.location == "MSH^1^18"


@pytest.mark.parametrize("raw", [b"", b"PID|1", b"MSH", b"MSHa^~\\&|", b"MSH|^^^^|A"])
def test_not_a_message(raw: bytes) -> None:
    with pytest.raises(MessageError):
        Message(raw)


def test_ack_follows_the_ig() -> None:
    """MSH swapped, ACK^<event>^ACK, MSA-2 = MSH-10, ERR-2/3/4/7/8."""
    msg = Message(NW)
    ack = build_ack(msg, "AE", [Problem("101", "PID-5 absent", "PID^1^5")]).decode()
    msh, msa, err = (s.split("|") for s in ack.strip("\r").split("\r"))
    assert msh[2:6] == ["TLRapp", "TLRfacility", "RIS", "CH"]
    assert msh[8] == "ACK^O01^ACK" and msh[10] == "P" and msh[11] == "2.5.1"
    assert msh[16:18] == ["FRA", "UNICODE UTF-8"]
    assert msa == ["MSA", "AE", "42"]
    assert err[2] == "PID^1^5" and err[3] == "101^Required field missing^HL70357"
    assert err[4] == "E" and err[8] == "PID-5 absent"


def test_frames_split_across_reads_and_several_per_read() -> None:
    decoder = FrameDecoder(1000)
    stream = frame(b"one") + frame(b"two") + frame(b"three")
    out = []
    for i in range(0, len(stream), 2):
        out += [f.payload for f in decoder.feed(stream[i:i + 2])]
    assert out == [b"one", b"two", b"three"]
    assert [f.payload for f in FrameDecoder(1000).feed(stream)] == [b"one", b"two", b"three"]


def test_oversize_frame_is_flagged_and_truncated() -> None:
    decoder = FrameDecoder(100)
    frames = decoder.feed(START + b"x" * 200_000 + END + frame(b"next"))
    assert frames[0].oversize and frames[0].size == 200_000
    assert len(frames[0].payload) == FrameDecoder.KEEP
    assert frames[1].payload == b"next" and not frames[1].oversize


def test_bytes_outside_a_frame_are_refused() -> None:
    with pytest.raises(FramingError):
        FrameDecoder(100).feed(b"GET / HTTP/1.1\r\n")
    assert FrameDecoder(100).feed(b"\r\n") == []


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400), st.integers(min_value=1, max_value=50))
def test_decoder_never_crashes_on_any_bytes(data: bytes, chunk: int) -> None:
    decoder = FrameDecoder(64)
    for i in range(0, len(data), chunk):
        try:
            decoder.feed(data[i:i + chunk])
        except FramingError:
            return
