"""The RIS loop end to end, one scenario per entry point (issue 24; R-REP-5, R-REP-6,
R-INT-2, R-SEC-6): ``teleimagerie serve`` in a subprocess with every listener (HTTP,
MLLP, DICOM, delivery), a fake RIS on MLLP, a fake DMP XDS.b repository and an aiosmtpd
MSSanté relay. Only public interfaces are driven (``demo/loop.py``: HTTP, MLLP, DICOM
C-STORE, the CLI); what each peer receives is parsed with independent libraries
(python-hl7, hl7apy, lxml, the e-mail package) and must arrive exactly once. At the end,
no log line of any process holds a patient's identifier, name or birth date, or a token.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hl7
import pytest
from hl7apy.parser import parse_segment
from lxml import etree

from demo.loop import Loop, environment, listening, wait
from tests import peers
from tests.e2e.harness import free_port, start, stop

pytestmark = pytest.mark.e2e
V3 = {"v3": "urn:hl7-org:v3"}
# what identifies the three patients (the log grep looks for each)
PATIENTS = {
    "hl7": {"ins": "283052312345678", "ipp": "IPP-DEMO-0001", "family": "ARNAUDET",
            "given": "Ysoline", "born": ("19830522", "1983-05-22")},
    "dicom-first": {"ins": "279035121518989", "ipp": "IPP-DEMO-0002",
                    "family": "CHARPENTIER", "given": "Xavière",
                    "born": ("19790315", "1979-03-15")},
    "fhir": {"ins": "291077512345612", "ipp": "IPP-DEMO-0003", "family": "BERTHELOT",
             "given": "Zoé", "born": ("19910704", "1991-07-04")},
}


class System:
    def __init__(self, tmp: Path) -> None:
        self.ris = peers.MllpPeer(lambda m: peers.ack(m, "AA"))
        self.xds, self.smtp = peers.XdsPeer(), peers.SmtpPeer()
        cert, key = peers.certificate(tmp)
        self.data, self.log = tmp / "data", tmp / "server.log"
        http, mllp, dicom = free_port(), free_port(), free_port()
        # debug level and the access log on: the redaction must hold where it is hardest
        env = environment(self.data, http, mllp, dicom, self.ris.port, self.xds.url,
                          self.smtp.port, cert, key, TELEIMG_LOG_LEVEL="debug")
        self.proc = start(env, ready=lambda: listening(mllp) and listening(dicom),
                          log=self.log, access_log=True)
        self.loop = Loop(f"http://127.0.0.1:{http}", mllp, dicom, self.data, env)
        self.refs = self.loop.directory()

    def close(self) -> None:
        stop(self.proc)
        for peer in (self.ris, self.xds, self.smtp):
            peer.close()

    def ris_got(self, kind: str, placer: str) -> list[hl7.Message]:
        """What the RIS received of ``kind`` (MSH-9) about ``placer``, python-hl7 parsed."""
        out = []
        for raw in list(self.ris.messages):
            msg = hl7.parse(raw.decode("utf-8"))
            if str(msg.segment("MSH")[9]).startswith(kind) and \
                    str(msg.segment("ORC")[2][0][0]) == placer:
                out.append(msg)
        return out

    def dmp_got(self, ins: str) -> list[dict[str, Any]]:
        return [r for r in list(self.xds.requests) if r["parts"] and ins.encode() in
                next(iter(r["parts"].values()))]

    def mails_about(self, family: str) -> list[Any]:
        out = []
        for mail in list(self.smtp.mails):
            pdf = next((p for p in mail.iter_attachments()
                        if p.get_content_type() == "application/pdf"), None)
            if pdf is not None and family.encode() in _pdf_text(pdf.get_content()):
                out.append(mail)
        return out


def _pdf_text(data: bytes) -> bytes:
    import io

    from pypdf import PdfReader

    return "".join(p.extract_text() for p in PdfReader(io.BytesIO(data)).pages).encode()


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    s = System(tmp_path_factory.mktemp("loop"))
    try:
        yield s
    finally:
        s.close()


def _settled(system: System, sr: dict[str, Any]) -> dict[str, str]:
    states = system.loop.settled(sr["id"], 3)
    assert len(states) == 3, states
    return states


def _check_mdm(msg: hl7.Message, placer: str, ins: str, structure: str,
               identifiers: int) -> None:
    """MDM^T02 per the ANS CI-SIS *Transmission de documents CDA en HL7v2*: to the
    structure that asked (MSH-6 its FINESS), PID-3 as separate repetitions, the CDA in
    OBX-5 (ED, Base64) carrying the INS, and the MetaDMPMSS answers."""
    msh, pid = msg.segment("MSH"), msg.segment("PID")
    assert str(msh[9]) == "MDM^T02^MDM_T02" and str(msh[6]) == "750000001"
    assert str(msh[21]) == "2.1^CISIS_CDA_HL7_V2"
    values = {str(rep[0]) for rep in pid[3]}
    assert ins in values and len(pid[3]) == identifiers, str(pid[3])
    assert str(msg.segment("ORC")[1]) == "NW" and str(msg.segment("ORC")[2][0][0]) == placer
    obx = [s for s in msg.segments("OBX")]
    document = base64.b64decode(str(obx[0][5][0][4]))
    cda = etree.fromstring(document)
    assert cda.tag == "{urn:hl7-org:v3}ClinicalDocument"
    assert ins in [i.get("extension") for i in cda.iterfind(
        ".//v3:recordTarget//v3:id", V3)]
    meta = {str(s[3][0][0]): str(s[5][0][0]) for s in obx[1:] if str(s[3][0][2]) ==
            "MetaDMPMSS"}
    assert meta["DESTDMP"] == "N"  # we feed the DMP ourselves: the RIS must not
    assert structure.startswith("Organization/")


def test_order_over_hl7_comes_back_to_the_ris_dmp_and_mssante(system: System) -> None:
    """Flux 1 over MLLP → accept (flux 3 back) → flux 4 → C-STORE → final report: the
    RIS receives one ORU^R01 OK and one MDM^T02, the DMP one ITI-41, the requester one
    MSSanté mail; an EHR finds and reads the N3 over MHD."""
    loop, p = system.loop, PATIENTS["hl7"]
    assert loop.send_hl7("01-orm-o01-nw-scanner-thorax.hl7") == ["AA"]
    sr = loop.request_of("DEMO-0001")
    assert sr is not None
    loop.validate(sr)
    [oru] = wait(lambda: system.ris_got("ORU^R01", "DEMO-0001"), 20)
    assert str(oru.segment("ORC")[1]) == "OK"
    pid3 = oru.segment("PID")[3]
    assert {str(r[0]) for r in pid3} == {p["ins"], p["ipp"]}  # two repetitions, unescaped
    assert "\\R\\" not in str(oru)
    parsed = parse_segment(str(oru.segment("PID")), version="2.5")  # hl7apy reads it too
    assert len(parsed.pid_3) == 2
    assert loop.send_hl7("02-omi-o23-sr-scanner-thorax.hl7") == ["AA"]
    uid = loop.images("DEMO-0001", p["ipp"], f"{p['family']}^{p['given']}", p["born"][0],
                      study_uid="1.2.250.1.999.77.1")
    study = wait(lambda: (s := loop.study(uid)) and s.get("basedOn") and s, 30)
    assert study["basedOn"] == [{"reference": f"ServiceRequest/{sr['id']}"}]
    assert wait(lambda: loop.state(sr["id"]) == "images-disponibles", 10)
    loop.report(sr, study)
    states = _settled(system, sr)
    structure = next(k.split(" ", 1)[1] for k in states if k.startswith("ris "))
    assert set(states.values()) == {"envoye"}, states
    time.sleep(2)  # further passes of both outboxes send nothing again
    [mdm] = system.ris_got("MDM^T02", "DEMO-0001")
    _check_mdm(mdm, "DEMO-0001", p["ins"], structure, identifiers=2)  # IPP, INS
    assert len(system.ris_got("ORU^R01", "DEMO-0001")) == 1
    [submission] = system.dmp_got(p["ins"])
    assert submission["root"].findtext(".//{http://www.w3.org/2005/08/addressing}Action") \
        == "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"
    [mail] = system.mails_about(p["family"])
    assert mail["To"] == "paul.demandeur@ch-proximite.mssante.fr"
    [document] = loop.pull(p["ins"])
    assert b"ClinicalDocument" in document and p["ins"].encode() in document


def test_study_before_its_order_is_attached_and_reported(system: System) -> None:
    """The modality sends before the RIS: the study waits with a provisional identity,
    the order attaches it (by the placer number the header carried), the request goes
    straight to images-disponibles once accepted; the order's identity (from the RIS,
    qualified) takes over the provisional one, so the RIS, MSSanté and the DMP get the
    report as on the order-first path (R-EXAM-1, R-REP-5, R-REP-6)."""
    loop, p = system.loop, PATIENTS["dicom-first"]
    uid = loop.images("DEMO-0002", p["ipp"], f"{p['family']}^{p['given']}", p["born"][0])
    waiting = wait(lambda: loop.study(uid), 30)
    assert not waiting.get("basedOn")
    assert loop.send_hl7("03-orm-o01-nw-after-images.hl7") == ["AA"]
    sr = loop.request_of("DEMO-0002")
    assert sr is not None
    assert loop.study(uid)["basedOn"] == [{"reference": f"ServiceRequest/{sr['id']}"}]
    loop.validate(sr)
    assert loop.state(sr["id"]) == "images-disponibles"
    loop.report(sr, loop.study(uid))
    states = _settled(system, sr)
    # the order's qualified identity (PID-32 VALI) replaced the header's provisional one:
    # the DMP gets the report as on the order-first path (same patient, same result)
    assert states["dmp"] == "envoye", states
    assert [v for k, v in states.items() if k.startswith("ris ")] == ["envoye"]
    [mdm] = wait(lambda: system.ris_got("MDM^T02", "DEMO-0002"), 10)
    assert str(mdm.segment("MSH")[6]) == "750000001"
    assert wait(lambda: len(system.ris_got("ORU^R01", "DEMO-0002")) == 1, 20)
    assert len(system.dmp_got(p["ins"])) == 1


def test_request_over_fhir_comes_back_to_its_structure(system: System) -> None:
    """An EHR posts the request (requester: a PractitionerRole of the site): no HL7
    order, so no flux 3; the site's RIS still gets the MDM^T02, the DMP the ITI-41."""
    loop, p = system.loop, PATIENTS["fhir"]
    sr = loop.request_over_fhir("DEMO-0003", system.refs, p["family"], p["ins"])
    loop.validate(sr)
    uid = loop.images("DEMO-0003", p["ipp"], f"{p['family']}^{p['given']}", p["born"][0])
    study = wait(lambda: (s := loop.study(uid)) and s.get("basedOn") and s, 30)
    loop.report(sr, study)
    states = _settled(system, sr)
    assert set(states.values()) == {"envoye"}, states
    time.sleep(1)
    [mdm] = system.ris_got("MDM^T02", "DEMO-0003")
    _check_mdm(mdm, "DEMO-0003", p["ins"], system.refs["site"], identifiers=1)
    assert system.ris_got("ORU^R01", "DEMO-0003") == []
    assert len(system.dmp_got(p["ins"])) == 1
    assert len(system.mails_about(p["family"])) == 1
    assert len(loop.pull(p["ins"])) == 1


def test_no_log_line_identifies_a_patient_or_carries_a_token(system: System) -> None:
    """R-SEC-6, after the scenarios above (module order): every line every process of
    the server wrote, at debug level with the access log on."""
    text = system.log.read_text(encoding="utf-8", errors="replace")
    assert "GET /fhir/" in text  # the access log was on
    leaks = []
    for name, who in PATIENTS.items():
        for value in (who["ins"], who["ipp"], who["family"], who["given"], *who["born"]):
            for line in text.splitlines():
                if value.lower() in line.lower():
                    leaks.append(f"{name}: {value!r} in {line[:200]}")
    leaks += [line[:200] for line in text.splitlines() if re.search(r"eyJ[\w-]{10,}\.", line)]
    assert not leaks, "\n".join(leaks[:20])
