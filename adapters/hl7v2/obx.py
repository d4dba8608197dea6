"""OBX groups of the Volet Téléradiologie: OBX-3 names the concept (table TLR_OBSERVATION
or LOINC), OBX-4 ``n.m`` groups the segments of one occurrence ("Utilisation du champ
OBX-4", ``sub-id.md``)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from adapters.hl7v2.message import Message, Segment


@dataclass
class Obx:
    segment: Segment
    code: str  # OBX-3.1
    value_type: str  # OBX-2
    occurrence: str  # n of OBX-4 n.m ("1" when absent)
    part: str  # m of OBX-4 n.m ("1" when absent)

    @property
    def location(self) -> str:
        return f"OBX^{self.segment.index}^5"

    def text(self) -> str:
        return self.segment.get(5)

    def encapsulated(self) -> str:
        """ED (OBX-5: ^TEXT^^Base64^data) decoded; the raw data when it is not Base64."""
        f = self.segment.field(5)
        data, encoding = f.component(5), f.component(4).upper()
        if encoding == "BASE64" and data:
            try:
                return base64.b64decode(data, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                return data
        return data or f.component(1)


def groups(msg: Message) -> dict[str, dict[str, dict[str, Obx]]]:
    """OBX-3.1 -> occurrence n -> part m -> segment."""
    out: dict[str, dict[str, dict[str, Obx]]] = {}
    for seg in msg.all("OBX"):
        code = seg.get(3).upper()
        sub = seg.get(4) or "1.1"
        n, _, m = sub.partition(".")
        obx = Obx(seg, code, seg.get(2).upper(), n or "1", m or "1")
        out.setdefault(code, {}).setdefault(obx.occurrence, {})[obx.part] = obx
    return out

