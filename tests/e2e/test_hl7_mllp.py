"""End to end over real sockets: ``teleimagerie serve`` with its MLLP listener, a RIS
sending flux 1/2/4 and receiving flux 3 (issue 6, R-INT-2)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from adapters.hl7v2.message import Message
from adapters.hl7v2.mllp import FrameDecoder, MllpClient, frame
from fhir_server.security.devissuer import DevIssuer
from tests.behaviour.hl7_world import omi, orm
from tests.e2e.harness import free_port, server_env, start, stop

pytestmark = pytest.mark.e2e
RPPS = "urn:oid:1.2.250.1.71.4.2.1"
FINESS = "urn:oid:1.2.250.1.71.4.2.2"
R38 = "https://mos.esante.gouv.fr/NOS/TRE_R38-SpecialiteOrdinale/FHIR/TRE-R38-SpecialiteOrdinale"


class Ris:
    """A RIS's inbound MLLP port: records what it gets, answers AA."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.received: list[bytes] = []
        self._sock: socket.socket | None = None

    def start(self) -> None:
        if self._sock is not None:
            return
        self._sock = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        assert self._sock is not None
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            decoder = FrameDecoder(1 << 20)
            with conn:
                while data := conn.recv(65536):
                    for f in decoder.feed(data):
                        self.received.append(f.payload)
                        control = Message(f.payload).control_id
                        conn.sendall(frame(f"MSH|^~\\&|RIS-PROX|CH-PROX|TLRapp|TLR|2026||"
                                           f"ACK^R01^ACK|a{control}|P|2.5.1\rMSA|AA|{control}\r"
                                           .encode()))


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int, Path, Ris]]:
    data = tmp_path_factory.mktemp("hl7")
    http_port, mllp_port, ris_port = free_port(), free_port(), free_port()
    env = server_env(data, http_port, TELEIMG_MLLP_PORT=str(mllp_port),
                     TELEIMG_HL7_ROUTES=f"750000001=127.0.0.1:{ris_port};"
                                       f"CH-PROX=127.0.0.1:{ris_port}",
                     TELEIMG_HL7_RETRY_BASE="0.3", TELEIMG_HL7_RETRY_MAX="1")

    def listening() -> bool:
        with socket.create_connection(("127.0.0.1", mllp_port), timeout=1):
            return True

    proc = start(env, workers=2, ready=listening)
    try:
        yield f"http://127.0.0.1:{http_port}/fhir", mllp_port, data, Ris(ris_port)
    finally:
        stop(proc)


def _send(port: int, *messages: bytes) -> list[Message]:
    async def go() -> list[bytes]:
        async with MllpClient("127.0.0.1", port, timeout=30) as client:
            return [await client.send(m) for m in messages]
    return [Message(a) for a in asyncio.run(go())]


def _client(data: Path, roles: list[str], **claims: object) -> httpx.Client:
    system = roles == ["ris"]
    token = DevIssuer(data).mint(sub=f"e2e:{roles[0]}", roles=roles,
                                 scopes=["system/*.cruds" if system else "user/*.cruds"],
                                 acr=None if system else "eidas2",
                                 **claims)  # type: ignore[arg-type]
    return httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30)


def test_orders_over_mllp_and_decision_back_to_the_ris(
        system: tuple[str, int, Path, Ris]) -> None:
    url, port, data, ris = system
    api = _client(data, ["ris"])
    # directory: the site and a qualified remote imager
    assert api.post(f"{url}/Organization", json={
        "resourceType": "Organization", "name": "CH de proximité",
        "identifier": [{"system": FINESS, "value": "750000001"}]}).status_code == 201
    assert api.post(f"{url}/Practitioner", json={
        "resourceType": "Practitioner", "name": [{"family": "IMAGEUR"}],
        "identifier": [{"system": RPPS, "value": "810000000101"}],
        "qualification": [{"code": {"coding": [{"system": R38, "code": "SM44"}]}}]}
    ).status_code == 201

    # flux 1 then flux 2 on one connection; then a duplicate and garbage
    nw, ca = orm(control="e1", placer="E2E-1"), orm(control="e2", placer="E2E-1",
                                                   order_control="CA", reason="^Doublon")
    acks = _send(port, nw, ca, nw, b"MSH|^~\\&|X")
    assert [a.require("MSA").get(1) for a in acks] == ["AA", "AA", "AA", "AE"]
    assert acks[2].control_id == acks[0].control_id  # the stored ACK, sent again
    sr = api.get(f"{url}/ServiceRequest?identifier=urn:oid:1.2.250.1.999.1|E2E-1").json()
    assert sr["entry"][0]["resource"]["status"] == "revoked"

    # flux 1, the imager accepts over FHIR: ORU^R01 OK reaches the RIS once it is up
    assert _send(port, orm(control="e3", placer="E2E-2"))[0].require("MSA").get(1) == "AA"
    sr = api.get(f"{url}/ServiceRequest?identifier=urn:oid:1.2.250.1.999.1|E2E-2"
                 ).json()["entry"][0]["resource"]
    consent = {"resourceType": "Consent", "status": "active",
               "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                     "consentscope", "code": "treatment"}]},
               "category": [{"coding": [{"system": "https://teleimagerie.fr/fhir/CodeSystem/"
                                         "teleimagerie-consent-category", "code": c}]}
                            for c in ("acte", "teleimagerie")],
               "patient": sr["subject"], "performer": [sr["subject"]],
               "dateTime": "2026-11-22T09:00:00+01:00",
               "extension": [{"url": "https://teleimagerie.fr/fhir/StructureDefinition/"
                                     "tlm-consent-method",
                              "valueCodeableConcept": {"coding": [{
                                  "system": "https://teleimagerie.fr/fhir/CodeSystem/"
                                            "teleimagerie-consent-method",
                                  "code": "oral"}]}}],
               "provision": {"type": "permit"}}
    r = api.post(f"{url}/Consent", json=consent)
    assert r.status_code == 201, r.text
    imager = _client(data, ["remote-imager"], id_nat_ps="810000000101")
    r = imager.post(f"{url}/ServiceRequest/{sr['id']}/$accept", json={
        "resourceType": "Parameters",
        "parameter": [{"name": "protocol", "valueString": "Scanner cérébral sans injection"}]})
    assert r.status_code == 200, r.text
    time.sleep(1.0)  # the RIS is down: the outbox retries
    ris.start()
    deadline = time.monotonic() + 20
    while not ris.received and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(ris.received) == 1
    oru = Message(ris.received[0])
    assert oru.message_type[:2] == ("ORU", "R01") and oru.require("ORC").get(1) == "OK"
    assert oru.require("ORC").get(2) == "E2E-2"

    # flux 4: the study arrives, the request has its images
    assert _send(port, omi(control="e4", placer="E2E-2", study_uid="1.2.3.4.5")
                 )[0].require("MSA").get(1) == "AA"
    task = api.get(f"{url}/Task?focus=ServiceRequest/{sr['id']}").json()["entry"][0]
    assert task["resource"]["businessStatus"]["coding"][0]["code"] == "images-disponibles"
    time.sleep(0.5)
    assert len(ris.received) == 1  # never sent twice


def test_enhanced_mode_commit_ack_then_application_ack_to_the_ris(
        system: tuple[str, int, Path, Ris]) -> None:
    """MSH-15/16 AL: CA on the connection, then our ACK^O01 with AA delivered to the
    sender's route (HL7 v2.5.1 §2.9.3; R-INT-2)."""
    url, port, data, ris = system
    ris.start()
    [commit] = _send(port, orm(control="enh-1", placer="E2E-ENH", ack_types=("AL", "AL")))
    assert commit.require("MSA").get(1) == "CA"
    assert commit.require("MSA").get(2) == "enh-1"
    deadline = time.monotonic() + 20

    def application_acks() -> list[Message]:
        return [m for m in map(Message, list(ris.received))
                if m.message_type[0] == "ACK" and m.require("MSA").get(2) == "enh-1"]

    while not application_acks() and time.monotonic() < deadline:
        time.sleep(0.2)
    [ack] = application_acks()
    assert ack.require("MSA").get(1) == "AA"
    api = _client(data, ["ris"])
    found = api.get(f"{url}/ServiceRequest?identifier=urn:oid:1.2.250.1.999.1|E2E-ENH").json()
    assert len(found["entry"]) == 1


def test_control_id_reused_on_concurrent_connections_is_taken_once(
        system: tuple[str, int, Path, Ris]) -> None:
    """Issue 24: six different messages under one MSH-10 on six connections at once:
    exactly one is processed (AA), the others answered AE 205, over real sockets."""
    url, port, data, _ = system

    async def one(message: bytes) -> bytes:
        async with MllpClient("127.0.0.1", port, timeout=60) as client:
            return await client.send(message)

    async def burst() -> list[bytes]:
        return await asyncio.gather(*(one(orm(control="race-1", placer=f"E2E-RACE-{n}"))
                                      for n in range(6)))

    acks = [Message(a) for a in asyncio.run(burst())]
    assert sorted(a.require("MSA").get(1) for a in acks) == ["AA"] + ["AE"] * 5
    assert all(a.require("ERR").get(3) == "205" for a in acks
               if a.require("MSA").get(1) == "AE")
    api = _client(data, ["ris"])
    found = [e for n in range(6) for e in api.get(
        f"{url}/ServiceRequest?identifier=urn:oid:1.2.250.1.999.1|E2E-RACE-{n}"
    ).json().get("entry", [])]
    assert len(found) == 1


@pytest.mark.parametrize(("variable", "value"), [
    ("TELEIMG_MLLP_PORT", "70000"), ("TELEIMG_MLLP_PORT", "abc"),
    ("TELEIMG_HL7_MAX_ATTEMPTS", "0"), ("TELEIMG_HL7_ROUTES", "750000001=ris:99999")])
def test_unusable_hl7_setting_stops_serve_with_one_line_exit_2(
        tmp_path: Path, variable: str, value: str) -> None:
    """Issue 24: TELEIMG_MLLP_PORT=70000 was a traceback from the listener process;
    every HL7 setting is checked first: one line naming it, exit status 2 — from
    `serve` and from `hl7 listen` alone."""
    import subprocess
    import sys

    from tests.e2e.harness import ROOT

    env = server_env(tmp_path, free_port(), TELEIMG_DELIVERY="off", **{variable: value})
    for command in (["serve", "--no-access-log"], ["hl7", "listen"]):
        proc = subprocess.run([sys.executable, "-m", "teleimagerie.cli", *command], env=env,
                              cwd=ROOT, capture_output=True, timeout=60)
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        assert proc.returncode == 2, (command, err)
        assert len(err) == 1 and err[0].startswith(variable), (command, err)
