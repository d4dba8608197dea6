"""Every message we send, read back by three readers (issue 24 item 2).

Repetitions, components and subcomponents must be real delimiters and only data escaped
(HL7 v2.5.1 ch. 2 §2.5–2.7): each outbound message type is built with data holding every
delimiter and the escape character, two PID-3 repetitions (INS + IPP) and accents, then
parsed by our reader (``adapters.hl7v2.message``), hl7apy and python-hl7, and compared
field by field to what was meant.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import quote

import hl7
import pytest
from hl7apy.parser import parse_message

from adapters.hl7v2 import er7, mdm_t02, oru_r01
from adapters.hl7v2.ack import Problem, build_ack
from adapters.hl7v2.datatypes import LOCAL_AUTHORITY, RPPS_OID, STRUCTURE_OID
from adapters.hl7v2.er7 import Segment, comp, rep, sub
from adapters.hl7v2.message import Message, escape
from adapters.hl7v2.settings import Hl7Settings
from fhir_server.workflow.identity import reliability

NASTY = "a|b^c&d~e\\f"  # every delimiter and the escape character
INS = "283052312345678"
INS_OID = "1.2.250.1.213.1.4.8"
IPP = "IPP^1&2~3|4\\5"
IPP_AUTHORITY = "HÔP^A&B~C|D\\E"
FAMILY = "O'NEIL^X|Y&Z~W\\V"
GIVEN = ["Jérôme", "Zoé&Lou"]
PLACER = {"system": "urn:oid:1.2.250.1.999.1", "value": "DEM^1&2~3|4\\5"}
PROTOCOL = "Scanner sans injection\nséquences ^|&~\\ à faire"
SETTINGS = Hl7Settings(application="TLR^app", facility="TLR&fac",
                       platform_name="Plateforme ~ téléradiologie|X", platform_id="750000001")
RECEIVER = ("RIS|A", "CH^B~C")

PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "identifier": [
        {"system": f"urn:oid:{INS_OID}", "value": INS},
        {"system": LOCAL_AUTHORITY + quote(IPP_AUTHORITY, safe=""), "value": IPP,
         "type": {"coding": [{"code": "PI"}]}},
    ],
    "name": [{"use": "official", "family": FAMILY, "given": GIVEN}],
    "birthDate": "1952-03-23",
    "gender": "male",
    "extension": [reliability("VALI")],
}
IMAGER: dict[str, Any] = {
    "resourceType": "Practitioner",
    "identifier": [{"system": f"urn:oid:{RPPS_OID}", "value": "810000000101"}],
    "name": [{"family": "D'ARC^B&C", "given": ["Élise~|\\"]}],
}
GP: dict[str, Any] = {
    "resourceType": "Practitioner",
    "identifier": [{"system": f"urn:oid:{RPPS_OID}", "value": "810000000202"}],
    "name": [{"family": "MÉDECIN|TRAITANT", "given": ["Anne^Marie"]}],
}


def test_writer_escapes_data_only_and_trims() -> None:
    cx = rep(comp("1^2", "", "", sub("A&B", "1.2", "ISO"), "INS", ""), comp("3", "", ""), "")
    assert er7.field(cx) == "1\\S\\2^^^A\\T\\B&1.2&ISO^INS~3"
    # a line break is data outside FT/TX (\Xhh\), a formatting command inside (\.br\)
    assert er7.field("a~b|c\r\n") == "a\\R\\b\\F\\c\\X0D\\\\X0A\\"
    assert er7.field(er7.text("a~b\r\nc\nd\re")) == "a\\R\\b\\.br\\c\\.br\\d\\.br\\e"
    assert er7.parse_field(er7.field(cx)) == rep(comp("1^2", "", "", sub("A&B", "1.2", "ISO"),
                                                     "INS"), "3")
    assert er7.segment(Segment("MSH", {3: "A", 9: comp("ACK"), 12: ""})) == \
        "MSH|^~\\&|A||||||ACK"
    assert er7.segment(Segment("NTE", {1: "", 3: None})) == "NTE"
    with pytest.raises(TypeError):
        er7.field(["a", "b"])  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Segment("MSH", {2: "^~\\&"})


# every C0 control character: VT (0x0B) and FS (0x1C) frame MLLP, CR ends a segment
CONTROLS = "".join(chr(c) for c in range(0x20))


def _only_segment_ends(raw: bytes, segments: int) -> None:
    """No control byte in ``raw`` but the CR ending each segment (HL7 v2.5 §2.7.4), and
    an MLLP frame of it decodes to exactly ``raw``."""
    from adapters.hl7v2.mllp import FrameDecoder, frame

    assert [b for b in set(raw) if b < 0x20] == [0x0D]
    assert raw.count(b"\r") == segments and raw.endswith(b"\r")
    [decoded] = FrameDecoder(1 << 20).feed(frame(raw))
    assert decoded.payload == raw


@pytest.mark.parametrize("value", [CONTROLS, f"a{CONTROLS}b", "\x0b\x1c\r", "x\x00y"])
def test_control_characters_are_escaped_as_hex_data(value: str) -> None:
    """Issue 24: C0 characters passed through unescaped and broke the MLLP framing and
    segment boundaries; each is written \\Xhh\\ and every reader gets it back."""
    encoded = er7.field(comp(value, value))
    assert not any(ord(c) < 0x20 for c in encoded)
    assert encoded.count("\\X") == 2 * sum(ord(c) < 0x20 for c in value)
    raw = er7.message([Segment("MSH", {3: "A", 9: comp("ORU", "R01"), 10: "1",
                                       12: "2.5.1"}),
                       Segment("PID", {1: "1", 5: comp(value, value)})]).encode()
    _only_segment_ends(raw, 2)
    for view in _views(raw):
        _check(view, {("PID", 5, 1, 1, 1): value, ("PID", 5, 1, 2, 1): value})


def test_control_characters_in_patient_data_and_err_text() -> None:
    """A name holding VT/FS/CR (PID-5, not formatted) stays one value; the ACK's ERR-7/8
    (TX) carry a line break as \\.br\\ and other controls as \\Xhh\\ (§2.7.4, §2.7.6)."""
    family = "DUPONT\x0bX\x1c\rY"
    patient = {**PATIENT, "name": [{**PATIENT["name"][0], "family": family}]}
    raw = oru_r01.build(SETTINGS, RECEIVER, patient, PLACER, "OK", IMAGER, PROTOCOL, None)
    _only_segment_ends(raw, 5)
    for view in _views(raw):
        _check(view, {("PID", 5, 1, 1, 1): family})
    text = "ligne 1\nligne 2\x1c\x0bfin"
    ack = build_ack(_inbound(), "AE", [Problem("102", text, "PID^1^5")])
    _only_segment_ends(ack, 3)
    assert b"ligne 1\\.br\\ligne 2\\X1C\\\\X0B\\fin" in ack
    for view in _views(ack):  # python-hl7 reads \.br\ as CR, ours as LF
        assert view.get("ERR", 7).replace("\r", "\n") == text, type(view).__name__


def test_unreadable_message_with_control_characters_in_msh10_gets_a_clean_ack() -> None:
    from adapters.hl7v2.receiver import _header_guess

    header = _header_guess(b"MSH|^~\\&|A|B|||x||ZZZ|C\x0b1\x1c|P|2.5.1")
    assert header[2] == "C\x0b1\x1c"
    ack = build_ack(None, "AR", [Problem("102", "illisible")], raw_header=header)
    _only_segment_ends(ack, 3)
    assert Message(ack).require("MSA").get(2) == "C\x0b1\x1c"


# -- three readers behind one question: the data value at SEG[n]-F.R.C.S ---------------
class View(Protocol):
    names: list[str]

    def get(self, seg: str, f: int, r: int = 1, c: int = 1, s: int = 1, n: int = 1) -> str:
        ...

    def reps(self, seg: str, f: int, n: int = 1) -> int:
        ...


class Ours:
    def __init__(self, raw: bytes) -> None:
        self.msg = Message(raw)
        self.names = [s.name for s in self.msg.segments]

    def get(self, seg: str, f: int, r: int = 1, c: int = 1, s: int = 1, n: int = 1) -> str:
        reps = self.msg.all(seg)[n - 1].repetitions(f)
        return reps[r - 1].component(c, s) if r <= len(reps) else ""

    def reps(self, seg: str, f: int, n: int = 1) -> int:
        return len(self.msg.all(seg)[n - 1].repetitions(f))


class PythonHl7:
    """python-hl7: ``extract_field`` unescapes."""

    def __init__(self, raw: bytes, codec: str = "utf-8") -> None:
        self.msg = hl7.parse(raw.decode(codec))
        self.names = [str(s[0]) for s in self.msg]

    def _seg(self, seg: str, n: int) -> Any:
        return self.msg.segments(seg)[n - 1]

    def get(self, seg: str, f: int, r: int = 1, c: int = 1, s: int = 1, n: int = 1) -> str:
        try:
            return str(self._seg(seg, n).extract_field(n, f, r, c, s))
        except IndexError:
            return ""

    def reps(self, seg: str, f: int, n: int = 1) -> int:
        segment = self._seg(seg, n)
        if f >= len(segment):
            return 0
        value = segment[f]
        return sum(isinstance(x, hl7.Repetition) for x in value) or (1 if str(value) else 0)


def _position(name: str) -> int:
    head, _, tail = name.rpartition("_")
    return int(tail) if head and tail.isdigit() else 1


def _encoded(node: Any) -> str:
    """A leaf's text as hl7apy read it, still encoded: ``to_er7()`` would escape again
    the backslash of a sequence hl7apy does not know (``\\Xhh\\``)."""
    value = getattr(getattr(node, "value", None), "value", None)
    if isinstance(value, str):
        return value
    children = list(getattr(node, "children", ()))
    return _encoded(children[0]) if len(children) == 1 else str(node.to_er7())


class Hl7apy:
    """hl7apy's tree (no unescaping of its own: leaves go through python-hl7's)."""

    def __init__(self, raw: bytes, codec: str = "utf-8", skip: tuple[str, ...] = ()) -> None:
        text = raw.decode(codec)
        kept = "\r".join(s for s in text.split("\r") if s and s[:3] not in skip)
        self.msg = parse_message(kept, find_groups=False)
        self.unescape: Callable[[str], str] = hl7.parse(text).unescape
        self.names = [s.name for s in self.msg.children]

    def _field(self, seg: str, f: int, n: int) -> list[Any]:
        segment = [s for s in self.msg.children if s.name == seg][n - 1]
        return [x for x in segment.children if x.name == f"{seg}_{f}"]

    def get(self, seg: str, f: int, r: int = 1, c: int = 1, s: int = 1, n: int = 1) -> str:
        reps = self._field(seg, f, n)
        if r > len(reps):
            return ""
        comps = {_position(x.name): x for x in reps[r - 1].children}
        if c not in comps:
            return ""
        component = comps[c]
        subs = {_position(x.name): x for x in getattr(component, "children", ())
                if _position(x.name) > 1 or x.name.endswith("_1")}
        if not subs:
            return self.unescape(_encoded(component)) if s == 1 else ""
        return self.unescape(_encoded(subs[s])) if s in subs else ""

    def reps(self, seg: str, f: int, n: int = 1) -> int:
        return len(self._field(seg, f, n))


Expected = dict[tuple[Any, ...], str]


def _views(raw: bytes, codec: str = "utf-8", skip: tuple[str, ...] = ()) -> list[View]:
    return [Ours(raw), Hl7apy(raw, codec, skip), PythonHl7(raw, codec)]


def _check(view: View, expected: Expected) -> None:
    """``expected``: (seg, field[, rep, comp, sub[, nth segment]]) -> data value."""
    got = {}
    for key in expected:
        seg, f, *rest = key
        r, c, s, n = ([*rest, 1, 1, 1, 1])[:4]
        got[key] = view.get(seg, f, r, c, s, n)
    assert got == expected, type(view).__name__


def _b64(view: View, seg: str, f: int, n: int = 1) -> bytes:
    return base64.b64decode(view.get(seg, f, 1, 5, 1, n))


PID: Expected = {
    ("PID", 3, 1, 1, 1): INS,
    ("PID", 3, 1, 4, 1): "ASIP-SANTE-INS-NIR",
    ("PID", 3, 1, 4, 2): INS_OID,
    ("PID", 3, 1, 4, 3): "ISO",
    ("PID", 3, 1, 5, 1): "INS",
    ("PID", 3, 2, 1, 1): IPP,
    ("PID", 3, 2, 4, 1): IPP_AUTHORITY,
    ("PID", 3, 2, 5, 1): "PI",
    ("PID", 5, 1, 1, 1): FAMILY,
    ("PID", 5, 1, 2, 1): GIVEN[0],
    ("PID", 5, 1, 3, 1): " ".join(GIVEN),
    ("PID", 5, 1, 7, 1): "L",
    ("PID", 7): "19520323",
    ("PID", 8): "M",
    ("PID", 32): "VALI",
}


def _xcn(person: dict[str, Any], seg: str, f: int, n: int = 1) -> Expected:
    name = person["name"][0]
    return {
        (seg, f, 1, 1, 1, n): person["identifier"][0]["value"],
        (seg, f, 1, 2, 1, n): name["family"],
        (seg, f, 1, 3, 1, n): name["given"][0],
        (seg, f, 1, 9, 1, n): "ASIP-SANTE-PS",
        (seg, f, 1, 9, 2, n): RPPS_OID,
        (seg, f, 1, 9, 3, n): "ISO",
        (seg, f, 1, 10, 1, n): "D",
        (seg, f, 1, 13, 1, n): "IDNPS",
    }


def _ei(seg: str, f: int) -> Expected:
    return {(seg, f, 1, 1, 1): PLACER["value"], (seg, f, 1, 2, 1): "",
            (seg, f, 1, 3, 1): PLACER["system"].removeprefix("urn:oid:"),
            (seg, f, 1, 4, 1): "ISO"}


def _pid_repetitions(view: View) -> None:
    assert view.reps("PID", 3) == 2, type(view).__name__
    assert view.reps("PID", 5) == 1, type(view).__name__


# -- flux 3: ORU^R01 --------------------------------------------------------------------
def _oru_header(view: View) -> None:
    _check(view, {("MSH", 3): "TLR^app", ("MSH", 4): "TLR&fac", ("MSH", 5): "RIS|A",
                  ("MSH", 6): "CH^B~C", ("MSH", 9, 1, 1, 1): "ORU",
                  ("MSH", 9, 1, 2, 1): "R01", ("MSH", 9, 1, 3, 1): "ORU_R01",
                  ("MSH", 12): "2.5.1", ("MSH", 17): "FRA", ("MSH", 18): "UNICODE UTF-8",
                  ("MSH", 21, 1, 1, 1): "1.0", ("MSH", 21, 1, 2, 1): "CISIS_TLR_HL7_V2"})


def _oru_order(view: View, decision: str) -> None:
    _check(view, {
        ("ORC", 1): decision, **_ei("ORC", 2), **_ei("OBR", 2), **_xcn(IMAGER, "ORC", 12),
        **_xcn(IMAGER, "OBR", 16),
        ("ORC", 17, 1, 1, 1): "PLATEFORME_TLR", ("ORC", 17, 1, 3, 1): "TLR_TYPE_ORGANISATION",
        ("ORC", 21, 1, 1, 1): SETTINGS.platform_name,
        ("ORC", 21, 1, 6, 1): "ASIP-SANTE-ST", ("ORC", 21, 1, 6, 2): STRUCTURE_OID,
        ("ORC", 21, 1, 6, 3): "ISO", ("ORC", 21, 1, 7, 1): "FINEG",
        ("ORC", 21, 1, 10, 1): "750000001",
        ("OBR", 4, 1, 1, 1): "REPONSE_DEMANDE",
        ("OBR", 4, 1, 2, 1): "Réponse à une demande d’examen d'imagerie",
        ("OBR", 4, 1, 3, 1): "TLR_OBR_PROCEDURE",
    })


def test_oru_r01_ok_round_trips() -> None:
    raw = oru_r01.build(SETTINGS, RECEIVER, PATIENT, PLACER, "OK", IMAGER, PROTOCOL, None)
    for view in _views(raw):
        assert view.names == ["MSH", "PID", "ORC", "OBR", "OBX"], type(view).__name__
        _oru_header(view)
        _pid_repetitions(view)
        _check(view, PID)
        _oru_order(view, "OK")
        _check(view, {("ORC", 16): "", ("OBX", 1): "1", ("OBX", 2): "ED",
                      ("OBX", 3, 1, 1, 1): "PROTOCOLE_IMAGERIE",
                      ("OBX", 3, 1, 2, 1): "Protocole d'imagerie médicale",
                      ("OBX", 3, 1, 3, 1): "TLR_OBSERVATION",
                      ("OBX", 5, 1, 1, 1): "", ("OBX", 5, 1, 2, 1): "TEXT",
                      ("OBX", 5, 1, 3, 1): "", ("OBX", 5, 1, 4, 1): "Base64",
                      ("OBX", 11): "F"})
        assert _b64(view, "OBX", 5).decode() == PROTOCOL


def test_oru_r01_oc_round_trips() -> None:
    reason = {"coding": [{"code": "HORS_PERIMETRE"}], "text": f"Hors périmètre {NASTY}"}
    raw = oru_r01.build(SETTINGS, RECEIVER, PATIENT, PLACER, "OC", IMAGER, PROTOCOL, reason)
    for view in _views(raw):
        assert view.names == ["MSH", "PID", "ORC", "OBR"], type(view).__name__
        _oru_header(view)
        _pid_repetitions(view)
        _check(view, PID)
        _oru_order(view, "OC")
        _check(view, {("ORC", 16, 1, 1, 1): "HORS_PERIMETRE",
                      ("ORC", 16, 1, 2, 1): f"Hors périmètre {NASTY}",
                      ("ORC", 16, 1, 3, 1): "TLR_MOTIF_REFUS"})


def test_oru_r01_is_a_valid_v251_structure() -> None:
    """hl7apy, strict (structure, data types, lengths), finds the ORU_R01 groups in what
    we send (data within the v2.5.1 lengths: an HD-1 is 20 characters at most)."""
    from hl7apy.consts import VALIDATION_LEVEL

    patient = {**PATIENT, "identifier": [PATIENT["identifier"][0], {
        **PATIENT["identifier"][1], "system": LOCAL_AUTHORITY + quote("HÔP^A&B")}]}
    raw = oru_r01.build(SETTINGS, RECEIVER, patient, PLACER, "OK", IMAGER, PROTOCOL, None)
    msg = parse_message(raw.decode(), validation_level=VALIDATION_LEVEL.STRICT)
    assert msg.name == "ORU_R01"
    pid = msg.oru_r01_patient_result.oru_r01_patient.pid
    assert [r.cx_5.to_er7() for r in pid.pid_3] == ["INS", "PI"]


# -- MDM^T02 / T10 / T04 ----------------------------------------------------------------
CDA = "<ClinicalDocument>Compte rendu é ^|&~\\</ClinicalDocument>".encode()
AUTHOR_ORG = "CH de l'Ouest ^|&~\\"
MAIL = f"Cher confrère,\nle compte rendu {NASTY}"


def _mdm(event: str) -> bytes:
    routing = mdm_t02.Routing(flags={"DESTDMP": True, "DESTMSSANTEPS": True},
                              recipients=[(oru_r01.xcn(GP), "anne&co@test.mssante.fr")],
                              mail_body=MAIL)
    # the placer as adapters.delivery.channels hands it: an encoded EI
    placer = f"{escape(PLACER['value'])}^^{PLACER['system'].removeprefix('urn:oid:')}^ISO"
    author = comp("810000000101", "D'ARC^B&C", "Élise~|\\", "", "", "", "", "",
                  sub("ASIP-SANTE-PS", RPPS_OID, "ISO"), "D", "", "", "IDNPS")
    org = comp(AUTHOR_ORG, "", "", "", "", sub("ASIP-SANTE-ST", STRUCTURE_OID, "ISO"),
               "FINEG", "", "", "750000002")
    return mdm_t02.build(SETTINGS, RECEIVER, event, "delivery-1", PATIENT, CDA,
                         "1.2.250.1.999.3^DOC^2", "1.2.250.1.999.3^DOC|1", "20261122093000",
                         author, org, placer, routing)


@pytest.mark.parametrize(("event", "order", "status"), [
    ("T02", "NW", "F"), ("T10", "RO", "C"), ("T04", "CA", "D")])
def test_mdm_round_trips(event: str, order: str, status: str) -> None:
    raw = _mdm(event)
    ours = Ours(raw)
    assert ours.names == ["MSH", "EVN", "PID", "PV1", "ORC", "OBR", "TXA", "OBX", "PRT",
                          "PRT", *["OBX"] * 11]
    # hl7apy's v2.6 has no PRT (a v2.7 segment the IG adds): it reads the others
    readers: list[View] = [ours, Hl7apy(raw, skip=("PRT",)), PythonHl7(raw)]
    for view in readers:
        _pid_repetitions(view)
        _check(view, PID)
        _check(view, {
            ("MSH", 3): "TLR^app", ("MSH", 5): "RIS|A", ("MSH", 6): "CH^B~C",
            ("MSH", 9, 1, 1, 1): "MDM", ("MSH", 9, 1, 2, 1): event,
            ("MSH", 9, 1, 3, 1): "MDM_T02", ("MSH", 10): mdm_t02.control_id("delivery-1"),
            ("MSH", 12): "2.6", ("MSH", 18): "UNICODE UTF-8",
            ("MSH", 21, 1, 1, 1): "2.1", ("MSH", 21, 1, 2, 1): "CISIS_CDA_HL7_V2",
            ("PV1", 2): "N", ("ORC", 1): order, **_ei("ORC", 2), **_ei("OBR", 2),
            ("OBR", 4, 1, 1, 1): "18748-4", ("OBR", 4, 1, 2, 1): "CR d'imagerie médicale",
            ("OBR", 4, 1, 3, 1): "LN",
            ("TXA", 2): "18748-4", ("TXA", 3): "TEXT", ("TXA", 4): "20261122093000",
            ("TXA", 12, 1, 1, 1): "DOC^2", ("TXA", 12, 1, 3, 1): "1.2.250.1.999.3",
            ("TXA", 12, 1, 4, 1): "ISO",
            ("TXA", 13, 1, 1, 1): "DOC|1" if event == "T10" else "",
            ("TXA", 13, 1, 3, 1): "1.2.250.1.999.3" if event == "T10" else "",
            ("TXA", 17): "AU", ("TXA", 22): "810000000101",
            ("OBX", 2): "ED", ("OBX", 3, 1, 1, 1): "18748-4",
            ("OBX", 5, 1, 2, 1): "text", ("OBX", 5, 1, 3, 1): "XML",
            ("OBX", 5, 1, 4, 1): "Base64", ("OBX", 11): status,
        })
        assert _b64(view, "OBX", 5) == CDA
        meta = {view.get("OBX", 3, 1, 1, 1, n): view.get("OBX", 5, 1, 1, 1, n)
                for n in range(2, 12)}
        assert meta == {code: "Y" if code in ("DESTDMP", "DESTMSSANTEPS") else "N"
                        for code, _ in mdm_t02.META}
        _check(view, {("OBX", 3, 1, 2, 1, 3): "Document Non Visible par le patient",
                      ("OBX", 3, 1, 3, 1, 3): "MetaDMPMSS",
                      ("OBX", 5, 1, 3, 1, 3): "expandedYes-NoIndicator",
                      ("OBX", 3, 1, 1, 1, 12): "CORPSMAIL_PS", ("OBX", 11, 1, 1, 1, 12): "F"})
        assert _b64(view, "OBX", 5, 12).decode() == MAIL
    with_prt: list[View] = [ours, PythonHl7(raw)]
    for view in with_prt:
        _check(view, {("PRT", 2): "UC", ("PRT", 4, 1, 1, 1): "SB",
                      ("PRT", 4, 1, 3, 1): "participation", **_xcn(IMAGER, "PRT", 5),
                      ("PRT", 8, 1, 1, 1): AUTHOR_ORG, ("PRT", 8, 1, 6, 2): STRUCTURE_OID,
                      ("PRT", 8, 1, 10, 1): "750000002",
                      ("PRT", 4, 1, 1, 1, 2): "RCT", **_xcn(GP, "PRT", 5, 2),
                      ("PRT", 15, 1, 2, 1, 2): "NET", ("PRT", 15, 1, 3, 1, 2): "X.400",
                      ("PRT", 15, 1, 4, 1, 2): "anne&co@test.mssante.fr"})


# -- acknowledgements -------------------------------------------------------------------
def _inbound(enhanced: bool = False) -> Message:
    ack_types = "AL|NE" if enhanced else "|"
    return Message(
        ("MSH|^~\\&|RIS\\S\\A\\T\\B|CH\\R\\1\\F\\É\\E\\|TLRapp|TLRfacility|20261122093000||"
         f"ORM^O01^ORM_O01|C\\S\\1\\T\\2|P|2.5.1|||{ack_types}|FRA|UNICODE UTF-8\r"
         "PID|||1^^^A&1.2&ISO^PI\r").encode())


def _ack_header(view: View, code: str, control: str) -> None:
    _check(view, {("MSH", 3): "TLRapp", ("MSH", 4): "TLRfacility", ("MSH", 5): "RIS^A&B",
                  ("MSH", 6): "CH~1|É\\", ("MSH", 9, 1, 1, 1): "ACK",
                  ("MSH", 9, 1, 2, 1): "O01", ("MSH", 9, 1, 3, 1): "ACK",
                  ("MSH", 11): "P", ("MSH", 12): "2.5.1", ("MSH", 17): "FRA",
                  ("MSH", 18): "UNICODE UTF-8", ("MSA", 1): code, ("MSA", 2): control})


def test_original_ack_aa_round_trips() -> None:
    raw = build_ack(_inbound(), "AA")
    for view in _views(raw):
        assert view.names == ["MSH", "MSA"], type(view).__name__
        _ack_header(view, "AA", "C^1&2")
        _check(view, {("MSH", 15): "", ("MSH", 16): ""})


def test_original_ack_ae_with_err_round_trips() -> None:
    text = f"PID-5 absent {NASTY} é"
    raw = build_ack(_inbound(), "AE", [Problem("101", text, "PID^1^5")])
    for view in _views(raw):
        assert view.names == ["MSH", "MSA", "ERR"], type(view).__name__
        _ack_header(view, "AE", "C^1&2")
        _check(view, {("ERR", 2, 1, 1, 1): "PID", ("ERR", 2, 1, 2, 1): "1",
                      ("ERR", 2, 1, 3, 1): "5", ("ERR", 3, 1, 1, 1): "101",
                      ("ERR", 3, 1, 2, 1): "Required field missing",
                      ("ERR", 3, 1, 3, 1): "HL70357", ("ERR", 4): "E",
                      ("ERR", 7): text, ("ERR", 8): text})


def test_enhanced_application_ack_round_trips() -> None:
    msg = _inbound(enhanced=True)
    assert msg.enhanced
    raw = build_ack(msg, "AE", [Problem("204", f"demande inconnue {NASTY}", "ORC^1^2")],
                    ack_types=("AL", "NE"))
    for view in _views(raw):
        _ack_header(view, "AE", "C^1&2")
        _check(view, {("MSH", 15): "AL", ("MSH", 16): "NE",
                      ("ERR", 3, 1, 1, 1): "204",
                      ("ERR", 3, 1, 2, 1): "Unknown key identifier",
                      ("ERR", 7): f"demande inconnue {NASTY}"})


def test_ack_answers_in_the_senders_delimiters_and_charset() -> None:
    inbound = Message("MSH#$*!@#RIS!S!A#CH#TLRapp#TLRfacility#2026##ORM$O01#X!T!1#P#2.5.1"
                      "#####FRA#8859/15\rPID###1$$$A@1.2@ISO$PI\r".encode("iso8859-15"))
    raw = build_ack(inbound, "AE", [Problem("102", f"valeur € invalide {NASTY}", "PID^1^3")])
    assert raw.startswith(b"MSH#$*!@#")
    for view in _views(raw, "iso8859-15"):
        _check(view, {("MSH", 5): "RIS$A", ("MSH", 18): "8859/15", ("MSA", 2): "X@1",
                      ("ERR", 2, 1, 1, 1): "PID", ("ERR", 2, 1, 3, 1): "3",
                      ("ERR", 3, 1, 3, 1): "HL70357",
                      ("ERR", 7): f"valeur € invalide {NASTY}"})


def test_ack_of_an_unreadable_message_escapes_what_it_echoes_once() -> None:
    """The header of a message we cannot parse is read with its own delimiters when they
    are usable: MSH-3 and MSH-10 come back escaped once, not twice (issue 24 item 2)."""
    from adapters.hl7v2.receiver import _header_guess

    header = _header_guess(b"MSH|^~\\&|AP\\S\\P|FAC|||x||ZZZ|C\\F\\1|")
    assert header == ("AP^P", "FAC", "C|1")
    ack = build_ack(None, "AR", [Problem("102", "illisible")], raw_header=header)
    msa = ack.split(b"\r")[1]
    assert msa == b"MSA|AR|C\\F\\1"
