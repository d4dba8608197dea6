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

Written by hand, segment by segment: hl7apy's v2.6 structures have no PRT (a v2.7
segment the IG adds), and being strict on write here means escaping every value.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field
from typing import Any

from adapters.hl7v2.ack import timestamp
from adapters.hl7v2.message import escape
from adapters.hl7v2.oru_r01 import pid_fields
from adapters.hl7v2.settings import Hl7Settings

EVENTS = {"T02": ("NW", "F"), "T10": ("RO", "C"), "T04": ("CA", "D")}
DOC_TYPE = "18748-4^CR d'imagerie médicale^LN"
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
    """The MetaDMPMSS answers (Y/N) and the MSSanté recipients (XCN, address)."""

    flags: dict[str, bool] = field(default_factory=dict)
    recipients: list[tuple[str, str]] = field(default_factory=list)
    mail_body: str = ""


def control_id(delivery_id: str) -> str:
    """MSH-10, stable across retries of one delivery: the RIS can drop a duplicate."""
    return uuid.uuid5(uuid.NAMESPACE_OID, delivery_id).hex[:20]


def _txa_id(unique_id: str) -> str:
    """TXA-12/13: ``extension^^root^ISO`` for an id with an extension, else the root."""
    root, _, ext = unique_id.partition("^")
    return f"{escape(ext)}^^{escape(root)}^ISO" if ext else escape(root)


def build(settings: Hl7Settings, receiver: tuple[str, str], event: str, delivery_id: str,
          patient: dict[str, Any], document: bytes, unique_id: str, replaces: str | None,
          created: str, author_xcn: str, author_xon: str, placer: str, routing: Routing
          ) -> bytes:
    """The message (segments joined by CR). ``author_xcn`` / ``author_xon`` are the
    signing imager and their structure as the XDS metadata gives them (PRT-5 / PRT-8 of
    the ``SB`` participation); ``placer`` the ORC-2 / OBR-2 entity identifier."""
    order_control, result_status = EVENTS[event]
    pid = pid_fields(patient)
    segments = [
        ["MSH", "^~\\&", escape(settings.application), escape(settings.facility),
         escape(receiver[0]), escape(receiver[1]), timestamp()[:14], "",
         f"MDM^{event}^MDM_T02", control_id(delivery_id), "P", "2.6", "", "", "", "",
         "FRA", "UNICODE UTF-8", "", "", "2.1^CISIS_CDA_HL7_V2"],
        ["EVN", "", timestamp()[:14]],
        ["PID", "", "", pid["pid_3"], "", pid["pid_5"], "", pid["pid_7"], pid["pid_8"],
         *[""] * 23, pid["pid_32"]],
        ["PV1", "1", "N"],
        ["ORC", order_control, placer],
        ["OBR", "1", placer, "", DOC_TYPE],
        ["TXA", "1", "18748-4", "TEXT", created, "", "", "", "", "", "", "",
         _txa_id(unique_id), _txa_id(replaces) if event == "T10" and replaces else "",
         "", "", "", "AU", "", "", "", "", author_xcn.split("^")[0] if author_xcn else ""],
        ["OBX", "1", "ED", DOC_TYPE, "",
         "^text^XML^Base64^" + base64.b64encode(document).decode(), "", "", "", "", "",
         result_status, ""],
    ]
    if author_xcn:
        segments.append(["PRT", "", "UC", "", "SB^^participation", author_xcn, "", "",
                         author_xon])
    for person, address in routing.recipients:
        segments.append(["PRT", "", "UC", "", "RCT^^participation", person, *[""] * 9,
                         f"^NET^X.400^{escape(address)}"])
    n = 1
    for code, label in META:
        n += 1
        value = "Y" if routing.flags.get(code) else "N"
        segments.append(["OBX", str(n), "CWE", f"{code}^{escape(label)}^MetaDMPMSS", "",
                         f"{value}^^{YES_NO}", "", "", "", "", "", "F", ""])
    if routing.mail_body:
        n += 1
        segments.append(["OBX", str(n), "ED", "CORPSMAIL_PS^Corps du mail pour un PS^"
                         "MetaDMPMSS", "", "^text^^Base64^" + base64.b64encode(
                             routing.mail_body.encode()).decode(), "", "", "", "", "", "F",
                         ""])
    return b"\r".join("|".join(s).encode("utf-8") for s in segments) + b"\r"
