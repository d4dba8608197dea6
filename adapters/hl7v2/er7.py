"""A small structured ER7 writer for the messages we send (HL7 v2.5.1 ch. 2, §2.5
message construction rules, §2.6 delimiters, §2.7 escape sequences).

A segment is a name and its fields by HL7 number; a field is a tree whose inner nodes
are *structure* and whose leaves are *data*. Delimiters are written only between
structural parts; every leaf string goes through :func:`~adapters.hl7v2.message.escape`
(``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\``, every C0 control character — CR, LF, VT, FS… — as
``\\Xhh\\``), so a value holding ``|``, ``^``, ``&``, ``~``, ``\\`` or a control character
never splits a field, a segment or an MLLP frame. A line break is the formatting command
``\\.br\\`` only in a formatted-text value (:func:`text`, for FT/TX fields, §2.7.6).
MSH-1 and MSH-2 are written verbatim from the delimiters. Trailing empty fields,
repetitions, components and subcomponents are trimmed (§2.5).

The representation (types below, built with the helpers)::

    "O'NEIL^X"                               one data value (escaped): O'NEIL\\S\\X
    comp("1234", "", "", sub("A", "1.2", "ISO"), "INS")     components, the 4th with
                                             subcomponents: 1234^^^A&1.2&ISO^INS
    rep(comp("1", ...), comp("2", ...))      repetitions: 1^…~2^…
    text("ligne 1\\nligne 2")                FT/TX data: ligne 1\\.br\\ligne 2
    None or ""                               empty

Written by hand rather than with hl7apy: its v2.6 structures have no PRT segment (which
the ANS *Transmission de documents CDA en HL7v2* IG adds to MDM), and a string assigned to
an hl7apy field is data to it — it escapes the delimiters inside, so ``a~b`` becomes
``a\\R\\b`` instead of two repetitions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from adapters.hl7v2.message import Delimiters, escape, unescape


class Sub(tuple[str, ...]):
    """The subcomponents of one component (``&``), each a data value."""

    __slots__ = ()


class Comp(tuple[str | Sub, ...]):
    """The components of one repetition (``^``): data values or :class:`Sub`."""

    __slots__ = ()


class Rep(tuple[str | Comp, ...]):
    """The repetitions of a field (``~``): data values or :class:`Comp`."""

    __slots__ = ()


class Text(str):
    """A data value of a formatted-text field (FT, TX; e.g. ERR-7/8, NTE-3): its line
    breaks are written ``\\.br\\`` (HL7 v2.5 §2.7.6); in any other value a line break is
    data, ``\\X0A\\``."""

    __slots__ = ()


Component = str | Sub
Value = str | Comp
Field = str | Comp | Rep | None
STANDARD = Delimiters()  # the default | ^ ~ \ &


def sub(*parts: str) -> Sub:
    return Sub(parts)


def text(value: str) -> Text:
    return Text(value)


def comp(*components: Component) -> Comp:
    return Comp(components)


def rep(*repetitions: Value) -> Rep:
    return Rep(repetitions)


class Segment:
    """A segment: its name and its fields by HL7 number (``{3: …, 5: …}``)."""

    __slots__ = ("fields", "name")

    def __init__(self, name: str, fields: Mapping[int, Field] | None = None) -> None:
        if len(name) != 3 or not name.isalnum():
            raise ValueError(f"segment name {name!r}")
        fields = dict(fields or {})
        if name == "MSH" and (fields.keys() & {1, 2}):
            raise ValueError("MSH-1/MSH-2 come from the delimiters")
        if any(n < 1 for n in fields):
            raise ValueError("fields are numbered from 1")
        self.name = name
        self.fields = fields


def _trim(parts: list[str]) -> list[str]:
    while parts and not parts[-1]:
        parts.pop()
    return parts


def _join(sep: str, parts: Iterable[str]) -> str:
    return sep.join(_trim(list(parts)))


def _component(value: Component, d: Delimiters) -> str:
    if isinstance(value, Sub):
        return _join(d.subcomponent, (_leaf(p, d) for p in value))
    return _leaf(value, d)


def _repetition(value: Value, d: Delimiters) -> str:
    if isinstance(value, Comp):
        return _join(d.component, (_component(c, d) for c in value))
    return _leaf(value, d)


def _leaf(value: object, d: Delimiters) -> str:
    if not isinstance(value, str):
        raise TypeError(f"a data value is a str, not {type(value).__name__}: {value!r}")
    return escape(value, d, formatted=isinstance(value, Text))


def field(value: Field, d: Delimiters = STANDARD) -> str:
    """One field, encoded."""
    if value is None:
        return ""
    if isinstance(value, Rep):
        return _join(d.repetition, (_repetition(r, d) for r in value))
    if isinstance(value, Comp):
        return _repetition(value, d)
    if isinstance(value, (tuple, list)):  # a bare sequence: which level is it?
        raise TypeError(f"use comp()/sub()/rep() for a structured field: {value!r}")
    return _leaf(value, d)


def segment(seg: Segment, d: Delimiters = STANDARD) -> str:
    """One segment, encoded (no terminator)."""
    last = max(seg.fields, default=0)
    values = [field(seg.fields.get(n), d) for n in range(1, last + 1)]
    if seg.name == "MSH":  # MSH-1 is the separator itself, MSH-2 the encoding characters
        return d.field.join(["MSH", d.encoding_characters, *_trim(values[2:])])
    return d.field.join([seg.name, *_trim(values)])


def message(segments: Iterable[Segment], d: Delimiters = STANDARD) -> str:
    """The message: segments each ended by CR (§2.5.1)."""
    return "".join(segment(s, d) + "\r" for s in segments)


def parse_field(text: str, d: Delimiters = STANDARD) -> Field:
    """The inverse of :func:`field` for an encoded field handed to us as text (an XCN or
    an EI built elsewhere): split on the delimiters, leaves unescaped. The least
    structure that says the same: a single value stays a ``str``."""
    if not text:
        return None
    reps: list[Value] = []
    for r in text.split(d.repetition):
        comps: list[Component] = []
        for c in r.split(d.component):
            subs = [unescape(s, d) for s in c.split(d.subcomponent)]
            comps.append(Sub(subs) if len(subs) > 1 else subs[0])
        reps.append(Comp(comps) if len(comps) > 1 or isinstance(comps[0], Sub)
                    else comps[0])
    return Rep(reps) if len(reps) > 1 else reps[0]


def first(value: Field) -> str:
    """The first data value of a field (component 1 of repetition 1)."""
    node: Field | Sub = value
    while isinstance(node, (Rep, Comp, Sub)):
        node = node[0] if node else ""
    return node or ""
