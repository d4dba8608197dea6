"""Parse -> ACK never fails, whatever the bytes (issue 6 "Robustness"): every input gets
an ACK with an MSA segment (unless its MSH-15 asked for none), and the receiver keeps
serving."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from adapters.hl7v2.message import Message
from adapters.hl7v2.mllp import Frame
from fhir_server.server.dispatch import FhirServer
from tests.behaviour.hl7_world import Hl7World, orm

VALID = orm()


@pytest.fixture
def world(secured: FhirServer, tmp_path: Path) -> Hl7World:
    return Hl7World(secured, tmp_path)


def _mutations() -> st.SearchStrategy[bytes]:
    def mutate(data: tuple[int, int, bytes]) -> bytes:
        at, cut, insert = data
        at %= len(VALID)
        return VALID[:at] + insert + VALID[at + cut:]
    return st.tuples(st.integers(0, len(VALID)), st.integers(0, 40),
                     st.binary(max_size=30)).map(mutate)


def test_any_bytes_get_an_ack(world: Hl7World) -> None:
    @settings(max_examples=120, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.one_of(st.binary(max_size=300), _mutations(),
                     st.text(max_size=200).map(lambda t: ("MSH|^~\\&|" + t).encode())))
    @example(b"MSH\rPID|1")  # a header line without its field separator
    def check(data: bytes) -> None:
        ack = world.receiver.receive(Frame(data), "fuzz:1")
        world.receiver.drain()  # enhanced mode: the processing after the commit ACK
        if ack is None:  # only when MSH-15 (enhanced mode) asked for no commit ACK
            assert Message(data).enhanced
            return
        parsed = Message(ack)
        assert parsed.require("MSA").get(1) in ("AA", "AE", "AR", "CA", "CE", "CR")

    check()
    # and it still works afterwards
    assert world.send(orm(control="after-fuzz", placer="DEM-F"))["MSA"][1] == "AA"


def test_huge_repetition_count_is_answered(world: Hl7World) -> None:
    pid = "PID|||" + "~".join(f"{i}^^^A&1.2.3&ISO^PI" for i in range(200_000)) + "||X^Y"
    message = VALID.replace(VALID.split(b"\r")[1], pid.encode())
    ack = world.send(message)
    assert ack["MSA"][1] == "AE" and ack["ERR"][2] == "PID^1^3"
