"""HL7 v2 messages read leniently (HL7 v2.5.1 ch. 2 "Control", §2.5–2.7).

A hand-written reader, not hl7apy's parser: it keeps every segment (Z-segments included),
does not need the structure to be valid to answer with a precise ACK, and is fast enough
for the throughput target (ADR 0010). Delimiters come from MSH-1/MSH-2, segments may end
with CR, LF or CRLF, the charset from MSH-18. Values are unescaped on access.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

# MSH-18 (HL7 table 0211) -> Python codec; the ANS IG allows UNICODE UTF-8 and 8859/15.
CHARSETS: dict[str, str] = {
    "UNICODE UTF-8": "utf-8",
    "UNICODE": "utf-8",
    "UTF-8": "utf-8",
    "8859/1": "iso8859-1",
    "8859/15": "iso8859-15",
    "ASCII": "ascii",
}
DEFAULT_CHARSET = "UNICODE UTF-8"


class MessageError(Exception):
    """The bytes are not an HL7 v2 message we can read: answered AR/AE (table 0357)."""

    def __init__(self, code: str, text: str, location: str = "", reject: bool = False) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.location = location
        self.reject = reject


@dataclass(frozen=True)
class Delimiters:
    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"

    @property
    def encoding_characters(self) -> str:
        return self.component + self.repetition + self.escape + self.subcomponent


_HEX = re.compile(r"^[0-9A-Fa-f]+$")
_C0 = re.compile(r"[\x00-\x1f]")  # C0 control characters (escaped as \Xhh\ on write)


def unescape(text: str, d: Delimiters) -> str:
    """§2.7 escape sequences: \\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\Xhh\\ (formatting ones dropped)."""
    esc = d.escape
    if not esc or esc not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        end = text.find(esc, i + 1) if ch == esc else -1
        if end < 0:
            out.append(ch)
            i += 1
            continue
        seq = text[i + 1:end]
        simple = {"F": d.field, "S": d.component, "T": d.subcomponent, "R": d.repetition,
                  "E": esc}
        if seq in simple:
            out.append(simple[seq])
        elif seq.startswith("X") and _HEX.match(seq[1:]) and len(seq) % 2 == 1:
            out.append(bytes.fromhex(seq[1:]).decode("latin-1"))
        elif seq in (".br", "H", "N") or seq.startswith((".sp", ".in", ".ti", "C", "M")):
            out.append("\n" if seq in (".br",) or seq.startswith(".sp") else "")
        else:  # not an escape sequence we know: keep it verbatim (lenient read)
            out.append(text[i:end + 1])
        i = end + 1
    return "".join(out)


def escape(text: str, d: Delimiters = Delimiters(), formatted: bool = False) -> str:
    """The inverse of :func:`unescape` for values we write (strict on write, HL7 v2.5
    §2.7): the delimiters and the escape character as ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\``, every
    C0 control character (0x00–0x1F: VT and FS would end an MLLP frame, CR a segment) as
    hexadecimal data ``\\Xhh\\`` (§2.7.4). ``formatted`` for FT/TX values only: a line
    break (CR, LF or CRLF) is then the formatting command ``\\.br\\`` (§2.7.6), which other
    data types do not have."""
    e = d.escape
    out = (text.replace(e, f"{e}E{e}").replace(d.field, f"{e}F{e}")
           .replace(d.component, f"{e}S{e}").replace(d.subcomponent, f"{e}T{e}")
           .replace(d.repetition, f"{e}R{e}"))
    if formatted:
        out = out.replace("\r\n", "\n").replace("\r", "\n").replace("\n", f"{e}.br{e}")
    return _C0.sub(lambda m: f"{e}X{ord(m.group()):02X}{e}", out)


class Field:
    """One repetition of a field: components and subcomponents, unescaped on access."""

    __slots__ = ("_comps", "_d", "raw")

    def __init__(self, raw: str, d: Delimiters) -> None:
        self.raw = raw
        self._d = d
        self._comps: list[str] | None = None

    def component(self, n: int, sub: int = 0) -> str:
        """Component ``n`` (1-based); with ``sub``, that subcomponent of it."""
        comps = self._comps
        if comps is None:
            comps = self._comps = self.raw.split(self._d.component)
        if n < 1 or n > len(comps):
            return ""
        value = comps[n - 1]
        if not value:
            return ""
        if sub:
            parts = value.split(self._d.subcomponent)
            value = parts[sub - 1] if sub <= len(parts) else ""
        # spaces around the encoded value are padding; an escaped character (\Xhh\) is
        # data, kept even when it is a control character at an end
        value = value.strip()
        return unescape(value, self._d) if self._d.escape in value else value

    def __bool__(self) -> bool:
        return bool(self.raw.strip(self._d.component + self._d.subcomponent + " "))

    @property
    def value(self) -> str:
        return self.component(1)


class Segment:
    """A segment; ``field(n)`` uses HL7 numbering (MSH-1 is the field separator)."""

    __slots__ = ("_d", "fields", "index", "name")

    def __init__(self, text: str, d: Delimiters, index: int) -> None:
        self._d = d
        self.index = index  # 1-based position in the message (ERR-2 location)
        parts = text.split(d.field)
        self.name = parts[0]
        if self.name == "MSH":  # MSH-1 is the separator itself, MSH-2 the encoding chars
            self.fields = ["MSH", d.field, *parts[1:]]
        else:
            self.fields = parts

    @property
    def delimiters(self) -> Delimiters:
        return self._d

    def raw(self, n: int) -> str:
        return self.fields[n] if 0 < n < len(self.fields) else ""

    def repetitions(self, n: int) -> list[Field]:
        raw = self.raw(n)
        if n <= 2 and self.name == "MSH":
            return [Field(raw, Delimiters(self._d.field, "\0", "\0", "\0", "\0"))]
        return [Field(r, self._d) for r in raw.split(self._d.repetition)] if raw else []

    def field(self, n: int) -> Field:
        reps = self.repetitions(n)
        return reps[0] if reps else Field("", self._d)

    def get(self, n: int, component: int = 1, sub: int = 0) -> str:
        return self.field(n).component(component, sub)


class Message:
    """A parsed message: ``raw`` bytes as received, decoded ``text``, segments in order."""

    def __init__(self, raw: bytes, default_charset: str = DEFAULT_CHARSET) -> None:
        self.raw = raw
        if not raw.startswith(b"MSH") or len(raw) < 8:
            raise MessageError("100", "le message ne commence pas par un segment MSH",
                               "MSH", reject=True)
        field_sep = chr(raw[3])
        encoding = raw[4:8].decode("latin-1")
        if field_sep.isalnum() or len(set(encoding[:4] + field_sep)) < 5 \
                or any(c.isalnum() or c in "\r\n" for c in encoding[:4]):
            raise MessageError("102", "délimiteurs MSH-1/MSH-2 invalides", "MSH^1^2",
                               reject=True)
        self.delimiters = Delimiters(field_sep, encoding[0], encoding[1], encoding[2],
                                     encoding[3])
        end = min((i for i in (raw.find(b"\r"), raw.find(b"\n")) if i >= 0), default=len(raw))
        header = Segment(raw[:end].decode("latin-1"), self.delimiters, 1)
        declared = header.get(18).upper()
        self.charset = declared or default_charset
        codec = CHARSETS.get(self.charset)
        if codec is None:
            raise MessageError("102", f"jeu de caractères MSH-18 non pris en charge : "
                               f"{declared!r} (UNICODE UTF-8, 8859/1, 8859/15)", "MSH^1^18",
                               reject=True)
        self.codec = codecs.lookup(codec).name
        try:
            text = raw.decode(self.codec)
        except UnicodeDecodeError as exc:
            raise MessageError("102", f"octet {raw[exc.start]:#04x} invalide en "
                               f"{self.charset} à la position {exc.start} (MSH-18)",
                               "MSH^1^18") from None
        lines = text.replace("\r\n", "\r").replace("\n", "\r").split("\r")
        self.segments = [Segment(line, self.delimiters, i + 1)
                         for i, line in enumerate(s for s in lines if s.strip())]
        self.msh = self.segments[0]

    # -- header ---------------------------------------------------------------------------
    @property
    def control_id(self) -> str:
        return self.msh.get(10)

    @property
    def message_type(self) -> tuple[str, str, str]:
        """(MSH-9.1 code, MSH-9.2 trigger event, MSH-9.3 structure)."""
        f = self.msh.field(9)
        return f.component(1).upper(), f.component(2).upper(), f.component(3).upper()

    @property
    def version(self) -> str:
        return self.msh.get(12)

    @property
    def processing_id(self) -> str:
        return self.msh.get(11)

    @property
    def sender(self) -> tuple[str, str]:
        return self.msh.get(3), self.msh.get(4)

    @property
    def receiver(self) -> tuple[str, str]:
        return self.msh.get(5), self.msh.get(6)

    @property
    def enhanced(self) -> bool:
        """Enhanced acknowledgement mode (MSH-15/16 valued, HL7 v2.5.1 §2.9.3)."""
        return bool(self.msh.get(15) or self.msh.get(16))

    def segment(self, name: str) -> Segment | None:
        return next((s for s in self.segments if s.name == name), None)

    def all(self, name: str) -> list[Segment]:
        return [s for s in self.segments if s.name == name]

    def require(self, name: str) -> Segment:
        found = self.segment(name)
        if found is None:
            raise MessageError("100", f"segment {name} obligatoire absent", name)
        return found
