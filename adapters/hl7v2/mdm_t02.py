"""MDM^T02 / T10 / T04 carrying a CDA document to the RIS (ANS CI-SIS *Transmission de
documents CDA en HL7v2*, ``profils-messages.md``; samples in ``ans-hl7v2-exemples/Vague
2/Trans_Doc-CDA-HL7V2``): HL7 v2.6 with the IG's PRT segments, MSH-21
``2.1^CISIS_CDA_HL7_V2``.

| event | ORC-1 | OBX-11 | meaning |
|---|---|---|---|
| T02 | NW | F | first transmission |
| T10 | RO | C | a new version replaces TXA-13 |
| T04 | CA | D | the document is to be deleted |

The document goes Base64 in the first OBX (ED); the *MetaDMPMSS* OBX (``meta-dmp-mss.md``)
tell the RIS what to do with it: publish to the DMP (DESTDMP), mail it to the
professionals in the PRT ``RCT`` segments (DESTMSSANTEPS), and its visibility.

Written with the structured ER7 writer (:mod:`adapters.hl7v2.er7`): hl7apy's v2.6
structures have no PRT (a v2.7 segment the IG adds). Fields that come to us already
encoded (the XDS metadata's XCN / XON, the channel's EI) are read back into structure
with :func:`~adapters.hl7v2.er7.parse_field` and written again, data escaped.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field
from typing import Any

from adapters.hl7v2 import er7
from adapters.hl7v2.ack import timestamp
from adapters.hl7v2.er7 import Comp, Field, Segment, comp
from adapters.hl7v2.oru_r01 import pid_segment
from adapters.hl7v2.settings import Hl7Settings

EVENTS = {"T02": ("NW", "F"), "T10": ("RO", "C"), "T04": ("CA", "D")}
DOC_TYPE = comp("18748-4", "CR d'imagerie médicale", "LN")
YES_NO = "expandedYes-NoIndicator"
# MetaDMPMSS codes, in the IG's order, with their labels
META = (
    ("MASQUE_PS", "Masqué aux professionnels de Santé"),
    ("INVISIBLE_PATIENT", "Document Non Visible par le patient"),
    ("INVISIBLE_REP_LEGAUX", "Non visible par les représentants Légaux du patient"),
    ("CONNEXION_SECRETE", "Connexion Secrete"),
    ("MODIF_CONF_CODE", "Modification Confidentiality Code"),
    ("DESTDMP", "Destinataire DMP"),
    ("DESTMSSANTEPS", "Destinataire (Professionnel de Santé, organisation ou BAL applicative)"),
    ("DESTMSSANTEPAT", "Destinataire Patient"),
    ("ACK_RECEPTION", "Accusé de réception"),
    ("ACK_LECTURE_MSS", "Accusé de lecture"),
)


@dataclass
class Routing:
    """The MetaDMPMSS answers (Y/N) and the MSSanté recipients (XCN encoded as
    :func:`adapters.hl7v2.oru_r01.xcn` gives it, or structured; address)."""

    flags: dict[str, bool] = field(default_factory=dict)
    recipients: list[tuple[str | Comp, str]] = field(default_factory=list)
    mail_body: str = ""


def control_id(delivery_id: str) -> str:
    """MSH-10, stable across retries of one delivery: the RIS can drop a duplicate."""
    return uuid.uuid5(uuid.NAMESPACE_OID, delivery_id).hex[:20]


def _txa_id(unique_id: str) -> Field:
    """TXA-12/13: ``extension^^root^ISO`` for an id with an extension, else the root
    (``unique_id`` is ``root^extension`` as the CDA metadata gives it)."""
    root, _, ext = unique_id.partition("^")
    return comp(ext, "", root, "ISO") if ext else root


def _structured(value: str | Comp) -> Field:
    """A field handed to us encoded (standard delimiters, data escaped) or structured."""
    return er7.parse_field(value) if isinstance(value, str) else value


def _ed(document: bytes, kind: str = "") -> Comp:
    return comp("", "text", kind, "Base64", base64.b64encode(document).decode())


def build(settings: Hl7Settings, receiver: tuple[str, str], event: str, delivery_id: str,
          patient: dict[str, Any], document: bytes, unique_id: str, replaces: str | None,
          created: str, author_xcn: str | Comp, author_xon: str | Comp,
          placer: str | Comp, routing: Routing) -> bytes:
    """The message (segments ended by CR). ``author_xcn`` / ``author_xon`` are the
    signing imager and their structure as the XDS metadata gives them (PRT-5 / PRT-8 of
    the ``SB`` participation); ``placer`` the ORC-2 / OBR-2 entity identifier. Those
    three are encoded ER7 text (standard delimiters, data escaped) or structured."""
    order_control, result_status = EVENTS[event]
    author = _structured(author_xcn)
    ei = _structured(placer)
    now = timestamp()[:14]
    segments = [
        Segment("MSH", {3: settings.application, 4: settings.facility, 5: receiver[0],
                        6: receiver[1], 7: now, 9: comp("MDM", event, "MDM_T02"),
                        10: control_id(delivery_id), 11: "P", 12: "2.6", 17: "FRA",
                        18: "UNICODE UTF-8", 21: comp("2.1", "CISIS_CDA_HL7_V2")}),
        Segment("EVN", {2: now}),
        pid_segment(patient),
        Segment("PV1", {1: "1", 2: "N"}),
        Segment("ORC", {1: order_control, 2: ei}),
        Segment("OBR", {1: "1", 2: ei, 4: DOC_TYPE}),
        Segment("TXA", {1: "1", 2: "18748-4", 3: "TEXT", 4: created, 12: _txa_id(unique_id),
                        13: _txa_id(replaces) if event == "T10" and replaces else None,
                        17: "AU", 22: er7.first(author)}),
        Segment("OBX", {1: "1", 2: "ED", 3: DOC_TYPE, 5: _ed(document, "XML"),
                        11: result_status}),
    ]
    if author:
        segments.append(Segment("PRT", {2: "UC", 4: comp("SB", "", "participation"),
                                        5: author, 8: _structured(author_xon)}))
    for person, address in routing.recipients:
        segments.append(Segment("PRT", {2: "UC", 4: comp("RCT", "", "participation"),
                                        5: _structured(person),
                                        15: comp("", "NET", "X.400", address)}))
    n = 1
    for code, label in META:
        n += 1
        value = "Y" if routing.flags.get(code) else "N"
        segments.append(Segment("OBX", {1: str(n), 2: "CWE", 3: comp(code, label, "MetaDMPMSS"),
                                        5: comp(value, "", YES_NO), 11: "F"}))
    if routing.mail_body:
        n += 1
        segments.append(Segment("OBX", {
            1: str(n), 2: "ED", 3: comp("CORPSMAIL_PS", "Corps du mail pour un PS", "MetaDMPMSS"),
            5: _ed(routing.mail_body.encode()), 11: "F"}))
    return er7.message(segments).encode("utf-8")
