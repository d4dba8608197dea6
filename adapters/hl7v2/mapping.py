"""HL7 v2 -> FHIR field mappings as data (issue 28): a flow is a list of :class:`Table`,
one per FHIR resource, each a tuple of :class:`Row` — source field, FHIR element,
converter, requirement id — run by one generic mapper (:func:`apply`, :func:`each`,
:func:`per_occurrence`). The adapter README's field tables are generated from them
(``tools/hl7v2_readme.py``).

A row's ``source`` says where the value is, in the IG's words:

* ``SEG-n`` — the first repetition of field n (a :class:`~adapters.hl7v2.message.Field`,
  empty when the field is; the row gives nothing when the segment is absent);
* ``SEG-n*`` — every repetition: the converter is applied to each, empty results dropped,
  the list is the value;
* ``OBX CODE`` / ``OBX CODE n.m`` — the OBX whose OBX-3.1 is CODE, part m of OBX-4
  ``n.m`` (``sub-id.md``; part 1 when not given), as an :class:`~adapters.hl7v2.obx.Obx`;
  in :func:`per_occurrence`, the part of the occurrence being mapped;
* a special case — the converter is a named function marked :func:`special`: it gets
  the whole :class:`Source` (the message, the resource built so far) and the source
  says in words where it reads (``TQ1-9 / ORC-7.6 / OBR-27.6``, ``NTE FINALITE_EXAMEN``).

A row's ``target`` is the element path in the resource: ``birthDate``, ``batch.lotNumber``,
``contained.0.batch`` (an index into a list already there); ``extension[]`` appends (a list
value extends); ``.`` merges the value (a whole resource, e.g. XCN -> Practitioner) into
the resource. Empty values (``None``, ``""``, ``[]``, ``{}``: converters return a falsy
value for "nothing", never ``False`` or ``0`` as data) are not written; a row with
``required`` then fails the message (ACK AE, table 0357 code 101, ``required`` the ERR-7
text); a ``key`` row drops the resource instead (an occurrence without its identifier).
Rows run in table order, which is the order the message's errors are found in.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from adapters.hl7v2.message import Field, Message, MessageError, Segment
from adapters.hl7v2.obx import Obx, groups

Converter = Callable[[Any], Any]

_FIELD = re.compile(r"^([A-Z][A-Z0-9]{2})-(\d+)(\*?)$")
_OBX = re.compile(r"^OBX ([A-Za-z0-9_.-]+)(?: n\.(\d+))?$")


S = TypeVar("S", bound=Callable[..., Any])


def special(convert: S) -> S:
    """Marks a converter as a special case: it reads the :class:`Source` itself."""
    setattr(convert, "special", True)  # noqa: B010 (a function attribute)
    return convert


@dataclass(frozen=True)
class Row:
    """One mapping: ``source`` -> ``target`` through ``convert``, for ``requirement``."""

    source: str
    target: str
    convert: Converter
    requirement: str
    note: str = ""
    required: str = ""  # ERR-7 text when the source gives nothing (AE 101)
    where: str = ""  # ERR-2 location of that error (default: the source field)
    key: bool = False  # without a value, the resource is not made (per occurrence)
    # compiled from ``source``: "field", "fields", "obx" or "special"
    kind: str = field(init=False, default="special")
    segment: str = field(init=False, default="")
    number: int = field(init=False, default=0)
    obx_part: str = field(init=False, default="1")
    # compiled from ``target``: the path to the parent node, the leaf, "set", "append" or
    # "merge"
    parents: tuple[str | int, ...] = field(init=False, default=())
    leaf: str = field(init=False, default="")
    mode: str = field(init=False, default="set")
    simple: bool = field(init=False, default=True)  # "set" of a top-level element
    read: Callable[[Source], Any] = field(init=False, repr=False, compare=False,
                                          default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        *parents, leaf = self.target.split(".") if self.target != "." else ("",)
        self._set(parents=tuple(int(p) if p.isdigit() else p for p in parents),
                  leaf=leaf.removesuffix("[]"),
                  mode="merge" if self.target == "." else
                  "append" if leaf.endswith("[]") else "set")
        m = _FIELD.match(self.source)
        if getattr(self.convert, "special", False):
            self._set(segment=m.group(1), number=int(m.group(2))) if m else None
        elif m:
            self._set(kind="fields" if m.group(3) else "field", segment=m.group(1),
                      number=int(m.group(2)))
        elif (o := _OBX.match(self.source)) is not None:
            self._set(kind="obx", segment=o.group(1).upper(), obx_part=o.group(2) or "1")
        else:
            raise ValueError(f"{self.source!r}: not SEG-n[*] nor OBX CODE [n.m], and "
                             f"{self.convert.__name__} is not marked special")
        if not self.where:
            self._set(where=f"{self.segment}^1^{self.number}" if self.number else
                      self.source.split(" ")[0])
        self._set(read=_reader(self), simple=self.mode == "set" and not self.parents)

    def _set(self, **values: Any) -> None:
        for k, v in values.items():
            object.__setattr__(self, k, v)


@dataclass(frozen=True)
class Table:
    """The rows that make one FHIR resource of a flow (``resource`` names it in the
    README: ``ServiceRequest``, ``Practitioner (ORC-11)``…)."""

    resource: str
    rows: tuple[Row, ...]


class Source:
    """What the rows read: a message (or a lone segment, e.g. the PID of an ADT), its OBX
    groups, the occurrence being mapped, the resource built so far and values the flow
    already knows (``context``: the patient reference, the order key…)."""

    __slots__ = ("_obx", "_segments", "context", "message", "occurrence", "resource")

    def __init__(self, message: Message | None = None, *segments: Segment,
                 context: dict[str, Any] | None = None) -> None:
        self.message = message
        self._segments: dict[str, Segment | None] = {s.name: s for s in segments}
        self._obx: dict[str, dict[str, dict[str, Obx]]] | None = None
        self.context: dict[str, Any] = context or {}
        self.occurrence: dict[str, Obx] | None = None
        self.resource: dict[str, Any] = {}

    def segment(self, name: str) -> Segment | None:
        """The first segment ``name`` of the message (looked up once)."""
        if name not in self._segments:
            self._segments[name] = self.message.segment(name) if self.message else None
        return self._segments[name]

    def repetitions(self, name: str, n: int) -> list[Field]:
        """The repetitions of field ``name-n`` of the first segment ``name``."""
        seg = self.segment(name)
        return seg.repetitions(n) if seg is not None else []

    def field(self, name: str, n: int) -> Field | None:
        reps = self.repetitions(name, n)
        return reps[0] if reps else None

    @property
    def obx(self) -> dict[str, dict[str, dict[str, Obx]]]:
        """OBX-3.1 -> occurrence n -> part m (:func:`adapters.hl7v2.obx.groups`)."""
        if self._obx is None:
            self._obx = groups(self.message) if self.message else {}
        return self._obx

    def first_obx(self, code: str, part: str = "1") -> Obx | None:
        if self.occurrence is not None:
            return self.occurrence.get(part)
        for occurrence in (self.obx.get(code) or {}).values():
            if part in occurrence:
                return occurrence[part]
        return None


def _reader(row: Row) -> Callable[[Source], Any]:
    """The row's read-and-convert, made once per row: the tables run per message, so
    the kind of source is decided here, not on every message."""
    convert, name, n, part = row.convert, row.segment, row.number, row.obx_part
    if row.kind == "field":
        def read_field(src: Source) -> Any:
            seg = src.segment(name)
            if seg is None:
                return None
            reps = seg.repetitions(n)  # an absent field reads empty, as Segment.field
            return convert(reps[0] if reps else Field("", seg.delimiters))
        return read_field
    if row.kind == "fields":
        def read_fields(src: Source) -> Any:
            seg = src.segment(name)
            return [v for v in map(convert, seg.repetitions(n)) if v] if seg else None
        return read_fields
    if row.kind == "obx":
        def read_obx(src: Source) -> Any:
            o = src.first_obx(name, part)
            return convert(o) if o is not None else None
        return read_obx
    return convert


def value(row: Row, src: Source) -> Any:
    """The row's converted value (falsy when the source gives nothing)."""
    out = row.read(src)
    if not out and row.required:
        raise MessageError("101", row.required, row.where)
    return out


def put(resource: dict[str, Any], row: Row, item: Any) -> None:
    """Writes ``item`` at the row's ``target`` (see the module docstring)."""
    node: Any = resource
    for part in row.parents:
        node = node[part] if isinstance(part, int) else node.setdefault(part, {})
    leaf = row.leaf
    if row.mode == "set":
        node[leaf] = item
    elif row.mode == "merge":
        node.update(item)
    elif isinstance(item, list):
        node.setdefault(leaf, []).extend(item)
    else:
        node.setdefault(leaf, []).append(item)


def apply(table: Table, src: Source, resource: dict[str, Any] | None = None
          ) -> dict[str, Any] | None:
    """Runs every row of ``table`` into ``resource`` (a new one when not given); ``None``
    when a ``key`` row gives nothing."""
    out: dict[str, Any] = {} if resource is None else resource
    src.resource = out
    for row in table.rows:
        item = row.read(src)
        if not item:
            if row.required:
                raise MessageError("101", row.required, row.where)
            if row.key:
                return None
        elif row.simple:  # most rows: one element
            out[row.leaf] = item
        else:
            put(out, row, item)
    return out


def each(table: Table, src: Source) -> list[Any]:
    """One resource per row (rows whose target is ``.``): e.g. one Observation per OBX
    code of flux 1; rows that give nothing make nothing."""
    out = []
    for row in table.rows:
        src.resource = {}
        item = value(row, src)
        if item:
            out.append(item)
    return out


def per_occurrence(table: Table, src: Source, code: str, base: dict[str, Any] | None = None
                   ) -> list[tuple[str, dict[str, Any]]]:
    """``table`` applied to each occurrence n of the OBX group ``code`` (OBX-4 ``n.m``),
    in the order of n, each on a copy of ``base``: [(n, resource)], occurrences without
    their ``key`` row left out."""
    out = []
    try:
        for n, parts in sorted((src.obx.get(code) or {}).items()):
            src.occurrence = parts
            src.context["occurrence"] = n
            made = apply(table, src, dict(base or {}))
            if made is not None:
                out.append((n, made))
    finally:
        src.occurrence = None
    return out
