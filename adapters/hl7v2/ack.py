"""Acknowledgements (HL7 v2.5.1 §2.9; ANS Volet Téléradiologie, ``acquittement.md``).

The ACK swaps MSH-3/4 and MSH-5/6, keeps MSH-11, answers ``ACK^<event>^ACK``, MSA-1
AA/AE/AR (original mode) or CA/CE/CR (enhanced mode commit acknowledgement), MSA-2 the
acknowledged MSH-10, and for errors one ERR segment: ERR-2 location, ERR-3 code from HL7
table 0357, ERR-4 severity (table 0516), ERR-7 diagnostic and ERR-8 user message.
Written with :mod:`adapters.hl7v2.er7` in the delimiters and MSH-18 charset of the
message answered.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from adapters.hl7v2 import er7
from adapters.hl7v2.er7 import Segment, comp
from adapters.hl7v2.message import CHARSETS, DEFAULT_CHARSET, Delimiters, Message

# HL7 table 0155 (accept/application acknowledgment conditions, MSH-15/MSH-16)
CONDITIONS = ("AL", "NE", "ER", "SU")

# HL7 table 0357 (message error condition codes)
ERROR_CODES: dict[str, str] = {
    "0": "Message accepted",
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "202": "Unsupported processing id",
    "203": "Unsupported version id",
    "204": "Unknown key identifier",
    "205": "Duplicate key identifier",
    "206": "Application record locked",
    "207": "Application internal error",
}


@dataclass
class Problem:
    """One error to report in ERR (ERR-2 location like ``PID^1^3``)."""

    code: str
    text: str
    location: str = ""
    severity: str = "E"  # table 0516: E error, W warning, I information


def timestamp() -> str:
    return datetime.now().astimezone().strftime("%Y%m%d%H%M%S%z")


def build_ack(msg: Message | None, code: str, problems: list[Problem] | None = None,
              app: str = "TLRapp", facility: str = "TLRfacility",
              raw_header: tuple[str, ...] | None = None,
              ack_types: tuple[str, str] = ("", "")) -> bytes:
    """The acknowledgement of ``msg`` (or of an unreadable message: ``raw_header`` gives
    what could be read of its MSH: sending app, facility, control id). ``ack_types``
    (MSH-15, MSH-16) are valued on an application ACK sent in enhanced mode, which is a
    message of its own that the peer commits (§2.9.3)."""
    d = msg.delimiters if msg else Delimiters()
    if msg is not None:
        sender, sender_fac = msg.sender
        receiver, receiver_fac = msg.receiver
        event = msg.message_type[1]
        control, processing = msg.control_id, msg.processing_id or "P"
        charset = msg.charset if msg.charset in CHARSETS else DEFAULT_CHARSET
    else:
        sender, sender_fac, control = (raw_header or ("", "", ""))[:3]
        receiver, receiver_fac, event, processing, charset = app, facility, "", "P", \
            DEFAULT_CHARSET
    segments = [
        Segment("MSH", {3: receiver or app, 4: receiver_fac or facility, 5: sender,
                        6: sender_fac, 7: timestamp(),
                        9: comp("ACK", event, "ACK") if event else "ACK",
                        10: uuid.uuid4().hex[:20], 11: processing, 12: "2.5.1",
                        15: ack_types[0], 16: ack_types[1], 17: "FRA", 18: charset}),
        Segment("MSA", {1: code, 2: control}),
    ]
    for p in problems or []:
        segments.append(Segment("ERR", {
            # ERL: our locations are written SEG^seq^field[^rep^comp^sub]
            2: comp(*p.location.split("^")) if p.location else None,
            3: comp(p.code, ERROR_CODES.get(p.code, ""), "HL70357"), 4: p.severity,
            # ERR-7 diagnostic information and ERR-8 user message are TX (§2.15.5)
            7: er7.text(p.text[:1000]), 8: er7.text(p.text[:250])}))
    codec = CHARSETS.get(charset, "utf-8")
    return er7.message(segments, d).encode(codec, errors="replace")


def ack_code(problems: list[Problem], reject: bool, enhanced: bool) -> str:
    """MSA-1 (HL7 table 0008): AA/AE/AR, or the commit codes CA/CE/CR of enhanced mode."""
    if not problems:
        return "CA" if enhanced else "AA"
    if reject:
        return "CR" if enhanced else "AR"
    return "CE" if enhanced else "AE"


def wanted(condition: str, code: str) -> bool:
    """Whether an ACK with MSA-1 ``code`` is sent under MSH-15/16 ``condition`` (HL7
    table 0155: AL always, NE never, ER only on error/reject, SU only on success). Empty
    in enhanced mode counts as AL: answering too much loses nothing."""
    condition = condition.upper() or "AL"
    success = code in ("AA", "CA")
    return condition == "AL" or (condition == "ER" and not success) or \
        (condition == "SU" and success)


def mode_problem(msg: Message) -> Problem | None:
    """MSH-15 or MSH-16 valued outside HL7 table 0155 (issue 27): the sender's mode cannot
    be known, so the message is answered as in original mode (§2.9.2), AR with ERR 103
    at MSH-15/16 and nothing processed — never left without an answer."""
    for n in (15, 16):
        value = msg.msh.get(n)
        if value and value.upper() not in CONDITIONS:
            return Problem("103", f"MSH-{n} {value[:20]!r} hors table HL7 0155 (AL, NE, ER, "
                           "SU) : message rejeté, à réémettre corrigé", f"MSH^1^{n}")
    return None


def enhanced(msg: Message) -> bool:
    """Enhanced acknowledgement mode: MSH-15/16 valued (§2.9.3) with values of table
    0155; otherwise the original mode's rules (and an AR for a bad value)."""
    return msg.enhanced and mode_problem(msg) is None
