"""What the base R4 specification says of a resource's JSON, checked element by element
(FHIR R4 json.html, datatypes.html, terminologies.html#required; issue 25).

* **JSON types** (json.html#primitive): a boolean is ``true``/``false``; integer,
  positiveInt and unsignedInt are JSON integers in their 32-bit range (≥ 1, ≥ 0);
  a decimal is a JSON number; every other primitive is a JSON string.
* **Primitive formats**: the R4 regular expressions of date, dateTime, instant, time, id,
  code (no leading/trailing whitespace), uri/url/canonical (no whitespace), oid, uuid,
  base64Binary; strings are non-empty, without control characters other than tab, CR and
  LF, and a string (or markdown) is at most 1 MiB.
* **Nested resources** (``contained``, ``Bundle.entry.resource``, ``Parameters``): a
  concrete R4 resource type, checked as any resource; a contained resource contains none
  (dom-2) and has no ``meta.versionId``/``lastUpdated``/``security`` (dom-4, dom-5).
* **Shape**: no ``null`` (except the positional ``null`` of a primitive array beside its
  ``_name`` extension array), no empty object or array, an array exactly where the
  element repeats, no element the type does not define.
* **Required bindings** of the base specification on every coded element of the types we
  serve, their backbone elements and the datatypes they reach (``Identifier.use``,
  ``Narrative.status``, ``Quantity.comparator``…), from ``required_bindings.json``
  (derived by ``tools/derive_required_bindings.py`` from the R4 StructureDefinitions and
  the models' enum tables). Extensible and preferred bindings are not enforced.

Why not the models' strict mode (ADR 0002): fhir.resources re-validates every model
through its own ``__init__`` and every nested element through ``model_validate`` without
the ``strict`` flag, so ``model_validate(body, strict=True)`` still turns ``"yes"`` into
``True``; a global ``strict`` configuration rejects every date, dateTime, instant, time
and base64Binary of the official examples (312 errors on 203 examples), because they are
JSON strings. The element types here are read once from the same R4B models (the
generated form of the StructureDefinitions) and compiled into plans; the walk is a dict
lookup and a type test per element.

Every problem is one :class:`Issue` with the FHIRPath ``expression`` of the element
(``Patient.name[0].given[1]``).
"""

from __future__ import annotations

import calendar
import inspect
import json
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import TypeAdapter, ValidationError

from fhir_server.core.errors import Issue

BINDINGS_FILE = Path(__file__).with_name("required_bindings.json")
INT_MIN, INT_MAX = -2_147_483_648, 2_147_483_647
MAX_STRING = 1024 * 1024

_YEAR = r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"
_MONTH = r"(0[1-9]|1[0-2])"
_DAY = r"(0[1-9]|[1-2][0-9]|3[0-1])"
_TIME = r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?"
_ZONE = r"(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
PATTERNS: dict[str, re.Pattern[str]] = {
    "date": re.compile(rf"{_YEAR}(-{_MONTH}(-{_DAY})?)?"),
    "dateTime": re.compile(rf"{_YEAR}(-{_MONTH}(-{_DAY}(T{_TIME}{_ZONE})?)?)?"),
    "instant": re.compile(rf"{_YEAR}-{_MONTH}-{_DAY}T{_TIME}{_ZONE}"),
    "time": re.compile(_TIME),
    "id": re.compile(r"[A-Za-z0-9\-.]{1,64}"),
    "code": re.compile(r"[^\s]+( [^\s]+)*"),
    "uri": re.compile(r"\S+"),
    "url": re.compile(r"\S+"),
    "canonical": re.compile(r"\S+"),
    "oid": re.compile(r"urn:oid:[0-2](\.(0|[1-9][0-9]*))+"),
    "uuid": re.compile(r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"),
}
# base64Binary (RFC 4648): the R4 expression ``(\s*([0-9a-zA-Z\+\=]){4}\s*)+`` omits "/"
# and backtracks badly on large values; equivalent: base64 characters in groups of four,
# whitespace ignored, "=" only as padding.
BASE64 = re.compile(r"[A-Za-z0-9+/]*(={0,2})")
WHITESPACE = re.compile(r"\s+")
FORMATS = {
    "date": "YYYY, YYYY-MM or YYYY-MM-DD",
    "dateTime": "YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss(.sss)+zz:zz",
    "instant": "YYYY-MM-DDThh:mm:ss(.sss)+zz:zz, with a time zone",
    "time": "hh:mm:ss",
    "id": "1-64 of A-Z a-z 0-9 - .",
    "code": "no leading, trailing or double whitespace",
    "uri": "no whitespace", "url": "no whitespace", "canonical": "no whitespace",
    "oid": "urn:oid:1.2.3", "uuid": "urn:uuid: and a lower-case UUID",
}
SYNTAX: dict[str, re.Pattern[str]] = {
    "mime": re.compile(r"[\w!#$&^.+-]+/[\w!#$&^.+-]+(\s*;.*)?", re.ASCII),
    "currency": re.compile(r"[A-Z]{3}"),
    "type-name": re.compile(r"[A-Za-z][A-Za-z0-9]*"),
}
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
INTEGERS = {"integer": INT_MIN, "unsignedInt": 0, "positiveInt": 1}


@dataclass(slots=True)
class Element:
    """One JSON property of a type: how to check what it holds."""

    name: str
    many: bool
    kind: str  # a primitive type name, "complex", "resource" or "element" (``_name``)
    model: Any = None  # the model class of a complex element
    path: str = ""  # FHIR path of the element's definition (backbone elements)
    codes: frozenset[str] | None = None
    syntax: re.Pattern[str] | None = None
    value_set: str | None = None
    # whether the R4B model certainly accepts a value this check accepted (ADR 0027);
    # None: always (the model's own check of this type is implied by ours)
    sure: Callable[[Any], bool] | None = None


@dataclass(slots=True)
class Plan:
    """The elements of one type or backbone element, by JSON name, and what the R4B
    model checks of the object as a whole (ADR 0027): the elements it requires and
    its choice groups (formats.html#choice: at most one; ``required``: exactly one)."""

    path: str
    resource: bool
    elements: dict[str, Element] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    choices: tuple[tuple[tuple[str, ...], bool], ...] = ()


@cache
def _bindings() -> tuple[dict[str, dict[str, str]], dict[str, dict[str, Any]]]:
    data = json.loads(BINDINGS_FILE.read_text())
    return data["bindings"], data["valueSets"]


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(the element's type, whether it repeats) from a model field annotation."""
    many = False
    while True:
        origin = typing.get_origin(annotation)
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if origin is typing.Union or origin is types.UnionType:
            annotation = args[0]
        elif origin is list:
            many = True
            annotation = args[0]
        else:
            return annotation, many


def _primitive(annotation: Any) -> str | None:
    if annotation is bool:
        return "boolean"
    if typing.get_origin(annotation) is typing.Annotated:
        for meta in getattr(annotation, "__metadata__", ()):
            name = getattr(meta, "__visit_name__", None)
            if isinstance(name, str):
                return name
        if getattr(annotation.__origin__, "__name__", "") == "UUID":
            return "uuid"
    return None


def _complex(annotation: Any) -> str | None:
    if inspect.isclass(annotation) and annotation.__name__.endswith("Type") \
            and annotation.__module__.endswith("abc"):
        return str(annotation.__name__[:-4])
    return None


def _is_datatype(model: Any) -> bool:
    return bool(model.__module__.rsplit(".", 1)[-1] == model.__name__.lower())


_PLANS: dict[Any, Plan] = {}


def plan_of(model: Any, path: str) -> Plan:
    """The compiled plan of a model class; a backbone element keeps the path where it was
    first met (``Consent.provision`` also serves ``Consent.provision.provision``)."""
    found = _PLANS.get(model)
    if found is not None:
        return found
    bindings, value_sets = _bindings()
    owner, _, prefix = path.partition(".")
    bound = bindings.get(owner, {})
    plan = Plan(path, resource=hasattr(model, "has_resource_base") and
                model.has_resource_base() and path == model.__name__)
    plan.required, plan.choices = _object_rules(model)
    for name, info in model.model_fields.items():
        json_name = info.alias or name
        annotation, many = _unwrap(info.annotation)
        if name.endswith("__ext"):
            plan.elements[json_name] = Element(json_name, many, "element",
                                               get_fhir_model_class("FHIRPrimitiveExtension"),
                                               "Element")
            continue
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        # the ``_name`` of a primitive (FHIRPrimitiveExtension) holds id and extension
        if not extra.get("element_property") and (path != "Element" or name not in
                                                   ("id", "extension")):
            continue
        kind = _primitive(annotation)
        if kind is not None:
            element = Element(json_name, many, kind, sure=_sure(kind, annotation))
            vs = bound.get(f"{prefix}.{json_name}" if prefix else json_name)
            if vs is not None:
                element.value_set = vs
                rule = value_sets[vs]
                if "codes" in rule:
                    element.codes = frozenset(rule["codes"])
                else:
                    element.syntax = SYNTAX[rule["syntax"]]
            plan.elements[json_name] = element
            continue
        type_name = _complex(annotation)
        if type_name is None:
            raise TypeError(f"{path}.{json_name}: cannot read the type {info.annotation!r}")
        if type_name == "Resource":
            plan.elements[json_name] = Element(json_name, many, "resource")
            continue
        child = get_fhir_model_class(type_name)
        child_path = type_name if _is_datatype(child) else f"{path}.{json_name}"
        plan.elements[json_name] = Element(json_name, many, "complex", child, child_path)
    _PLANS[model] = plan
    return plan


def _object_rules(model: Any) -> tuple[tuple[str, ...], tuple[tuple[tuple[str, ...], bool],
                                                                ...]]:
    """What the R4B model checks of an object besides its elements' values: the fields
    pydantic requires and those its after-validator requires (a primitive with
    min = 1), and its choice groups with whether one is required."""
    fields = model.model_fields
    instance = model.model_construct()
    required = [info.alias or name for name, info in fields.items() if info.is_required()]
    required += [name for name, _ in instance.get_required_fields() if name not in required]
    choices = []
    for names in instance.get_one_of_many_fields().values():
        extra = fields[names[0]].json_schema_extra
        choices.append((tuple(fields[n].alias or n for n in names),
                        isinstance(extra, dict) and extra.get("one_of_many_required") is True))
    return tuple(required), tuple(choices)


# What the R4B models check of a primitive beyond what this module checks (ADR 0027),
# for a value this module accepted. The kinds absent here (base64Binary, uuid, any other)
# are checked with the model's own validator of the type: the model's answer by
# construction.
_MODEL_CODE = re.compile(r"[^\s]+(\s[^\s]+)*")
_MODEL_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_IMPLIED = frozenset({"boolean", "integer", "unsignedInt", "positiveInt", "id", "uri", "url",
                      "canonical", "oid", "markdown", "xhtml"})


def _sure_string(value: Any) -> bool:
    # the model's pattern ``[ \r\n\t\S]+`` is searched: one character that is not
    # Unicode white space suffices (its white space is within Python's ``isspace``)
    return not value.isspace()


def _sure_code(value: Any) -> bool:
    # the model's ``^[^\s]+(\s[^\s]+)*$``: the same on ASCII in both regex engines
    return bool(value.isascii() and _MODEL_CODE.fullmatch(value))


def _sure_decimal(value: Any) -> bool:
    return type(value) is int or _MODEL_DECIMAL.fullmatch(str(value)) is not None


def _sure_calendar(value: Any) -> bool:
    """date, dateTime, instant, time that matched their R4 regex: the model parses them
    (pydantic's ISO 8601 parser; a leap second as :59, any number of decimals) and
    refuses only a day past the end of its month (tests/unit/validation/test_model_skip)."""
    if len(value) < 10 or value[2] == ":":
        return True  # YYYY, YYYY-MM or a time: the regex is the model's whole check
    year, month, day = int(value[:4]), int(value[5:7]), int(value[8:10])
    return day <= calendar.monthrange(year, month)[1]


_SURE: dict[str, Callable[[Any], bool]] = {
    "string": _sure_string, "code": _sure_code, "decimal": _sure_decimal,
    "date": _sure_calendar, "dateTime": _sure_calendar, "instant": _sure_calendar,
    "time": _sure_calendar}


def _sure(kind: str, annotation: Any) -> Callable[[Any], bool] | None:
    if kind in _IMPLIED:
        return None
    if kind in _SURE:
        return _SURE[kind]
    adapter = TypeAdapter(annotation)

    def model_accepts(value: Any) -> bool:
        try:
            adapter.validate_python(value)
        except (ValidationError, ValueError, TypeError):
            return False
        return True
    return model_accepts


RESOURCE_NAME = re.compile(r"[A-Z][A-Za-z]{1,63}")
ABSTRACT = ("Resource", "DomainResource")


def resource_plan(rtype: str) -> Plan | None:
    """The plan of a concrete R4 resource type; None for anything else — a datatype
    (``Extension``), an abstract type, a name the models do not know (issue 27: every
    nested ``resourceType`` is checked, and names a client invents are never cached)."""
    if not RESOURCE_NAME.fullmatch(rtype) or rtype in ABSTRACT:
        return None
    return _resource_plan(rtype)


@lru_cache(maxsize=256)
def _resource_plan(rtype: str) -> Plan | None:
    try:
        model = get_fhir_model_class(rtype)
    except (KeyError, ValueError, ImportError, AttributeError):
        return None
    if model.__name__ != rtype or not model.has_resource_base():
        return None
    return plan_of(model, rtype)


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "the boolean " + ("true" if value else "false")
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "…"
        return f"the string {json.dumps(text, ensure_ascii=False)}"
    if isinstance(value, list):
        return "an array"
    return "an object"


def primitive_error(kind: str, value: Any) -> str | None:
    """Why ``value`` is not a valid JSON representation of the R4 primitive ``kind``."""
    check = _JSON_TYPED.get(kind)
    return check(kind, value) if check is not None else _string_error(kind, value)


def _boolean_error(kind: str, value: Any) -> str | None:
    return None if value is True or value is False else \
        f"must be a JSON boolean (true or false), not {_describe(value)}"


def _integer_error(kind: str, value: Any) -> str | None:
    if type(value) is not int:
        return f"must be a JSON integer ({kind}), not {_describe(value)}"
    low = INTEGERS[kind]
    if not low <= value <= INT_MAX:
        return f"{value} is out of range for {kind} ({low}..{INT_MAX})"
    return None


def _decimal_error(kind: str, value: Any) -> str | None:
    return None if type(value) in (int, float) else \
        f"must be a JSON number (decimal), not {_describe(value)}"


# the primitives JSON represents other than as a string
_JSON_TYPED: dict[str, Callable[[str, Any], str | None]] = {
    "boolean": _boolean_error, "decimal": _decimal_error,
    **{kind: _integer_error for kind in INTEGERS}}


def _string_error(kind: str, value: Any) -> str | None:
    """The primitives JSON represents as a string: non-empty, no control character, the
    R4 length limit, the type's regex, base64 for base64Binary."""
    if type(value) is not str:
        return f"must be a JSON string ({kind}), not {_describe(value)}"
    if not value:
        return f"must not be an empty string ({kind})"
    if CONTROL.search(value):
        return "must not contain control characters (other than tab, CR, LF)"
    if len(value) > MAX_STRING and kind in ("string", "markdown"):
        return f"longer than {MAX_STRING} characters (R4 string limit)"
    pattern = PATTERNS.get(kind)
    if pattern is not None and not pattern.fullmatch(value):
        return f"{_describe(value)} is not a valid {kind} ({FORMATS[kind]})"
    if kind == "base64Binary":
        data = WHITESPACE.sub("", value) if WHITESPACE.search(value) else value
        if len(data) % 4 or not BASE64.fullmatch(data):
            return "is not valid base64 (RFC 4648: groups of four base64 characters)"
    return None


def _plain_string(value: Any) -> bool:
    return type(value) is str and 0 < len(value) <= MAX_STRING and \
        CONTROL.search(value) is None


# what most values are, accepted without building an error message: each implies that
# primitive_error finds nothing (a code, uri, id or date: its R4 regex, which admits no
# control character, and non-empty)
_CODE_FAST = re.compile(r"[^\s\x00-\x1f\x7f]+( [^\s\x00-\x1f\x7f]+)*")
_URI_FAST = re.compile(r"[^\s\x00-\x1f\x7f]+")


def _matching(pattern: re.Pattern[str]) -> Callable[[Any], bool]:
    return lambda v: type(v) is str and pattern.fullmatch(v) is not None


FAST: dict[str, Any] = {
    "boolean": lambda v: v is True or v is False,
    "string": _plain_string, "markdown": _plain_string,
    "decimal": lambda v: type(v) is int or type(v) is float,
}
# the same for elements without a required binding (a bound one checks its value set)
FAST_UNBOUND: dict[str, Any] = {
    "code": _matching(_CODE_FAST), "uri": _matching(_URI_FAST), "url": _matching(_URI_FAST),
    "canonical": _matching(_URI_FAST),
    **{kind: _matching(PATTERNS[kind]) for kind in ("id", "date", "dateTime", "instant",
                                                      "time")},
}


class Walker:
    """Checks one resource; collects one issue per problem, and whether the R4B model
    would accept it all (``unsure`` set when that is not proven, ADR 0027)."""

    __slots__ = ("contained", "issues", "unsure")

    def __init__(self) -> None:
        self.issues: list[Issue] = []
        self.contained = False  # walking a contained resource (dom-2, dom-4, dom-5)
        self.unsure = False

    def add(self, expr: str, text: str, code: str = "structure") -> None:
        self.issues.append(Issue(f"{expr}: {text}", code=code, expression=[expr]))

    def resource(self, node: Any, expr: str) -> None:
        if type(node) is not dict:
            self.add(expr, f"a resource must be a JSON object, not {_describe(node)}")
            return
        rtype = node.get("resourceType")
        plan = resource_plan(rtype) if type(rtype) is str else None
        if plan is None:
            what = "is missing" if rtype is None else f"{_describe(rtype)} is not an R4 " \
                "resource type"
            self.add(f"{expr}.resourceType", what, "structure")
            return
        self.object(node, plan, expr)

    def object(self, node: dict[str, Any], plan: Plan, expr: str) -> None:
        if not node:
            self.add(expr, "an element must have a value or children: {} is not allowed")
            return
        elements = plan.elements
        for key, value in node.items():
            element = elements.get(key)
            if element is None:
                if key == "resourceType" and plan.resource:
                    continue
                self.add(f"{expr}.{key}", f"unknown element {key!r} (not defined for "
                         f"{plan.path})")
                continue
            where = f"{expr}.{key[1:]}" if element.kind == "element" else f"{expr}.{key}"
            if value is None:
                self.add(where, "null is not allowed (omit the element)")
            elif element.many:
                if type(value) is not list:
                    self.add(where, f"must be a JSON array (the element repeats), not "
                             f"{_describe(value)}")
                elif not value:
                    self.add(where, "an empty array is not allowed (omit the element)")
                else:
                    self.items(node, key, element, value, where)
            elif type(value) is list:
                self.add(where, "must not be an array (the element does not repeat)")
            else:
                self.value(element, value, where)
        if (plan.required or plan.choices) and not self.unsure:
            self.unsure = not _model_rules_hold(node, plan)

    def items(self, node: dict[str, Any], key: str, element: Element, values: list[Any],
              where: str) -> None:
        sibling: Any = None
        for i, value in enumerate(values):
            here = f"{where}[{i}]"
            if value is None:
                if element.kind not in ("complex", "resource"):
                    if sibling is None:
                        other = key[1:] if key.startswith("_") else "_" + key
                        sibling = node.get(other)
                        if type(sibling) is not list:
                            sibling = []
                    if i < len(sibling) and sibling[i] is not None:
                        self.unsure = True  # rare: left to the model
                        continue  # the value or its extensions are in the other array
                self.add(here, "null is not allowed here (only in a primitive array, "
                         "beside a value or extension at the same position)")
                continue
            self.value(element, value, here)

    def nested(self, element: Element, value: Any, where: str) -> None:
        """A resource inside a resource (contained, Bundle.entry.resource, Parameters):
        its type checked like any; a contained one holds no resource itself (dom-2) and
        no version, date or security label of its own (dom-4, dom-5)."""
        if self.contained:
            self.add(where, "a contained resource must not contain nested resources (dom-2)")
            return
        if element.name != "contained":
            self.resource(value, where)
            return
        self.contained = True
        try:
            self.resource(value, where)
        finally:
            self.contained = False
        meta = value.get("meta") if type(value) is dict else None
        if type(meta) is dict:
            for name, rule in (("versionId", "dom-4"), ("lastUpdated", "dom-4"),
                               ("security", "dom-5")):
                if name in meta:
                    self.add(f"{where}.meta.{name}", f"a contained resource has no "
                             f"meta.{name} of its own ({rule})", "invariant")

    def value(self, element: Element, value: Any, where: str) -> None:
        kind = element.kind
        if kind == "complex" or kind == "element":
            if type(value) is not dict:
                self.add(where, f"must be a JSON object, not {_describe(value)}")
            else:
                self.object(value, plan_of(element.model, element.path), where)
            return
        if kind == "resource":
            self.nested(element, value, where)
            return
        fast = FAST.get(kind)
        if fast is None and element.codes is None and element.syntax is None:
            fast = FAST_UNBOUND.get(kind)
        if (element.codes is not None and type(value) is str and value in element.codes) \
                or (fast is not None and fast(value)):
            pass  # the common case: a code of its required value set, a plain value
        else:
            self.refuse(element, value, where)
            if self.issues:
                return
        if element.sure is not None and not element.sure(value):
            self.unsure = True

    def refuse(self, element: Element, value: Any, where: str) -> None:
        """The issue of a primitive value outside the fast cases, if any."""
        error = primitive_error(element.kind, value)
        if error is not None:
            self.add(where, error, "structure" if "must be a JSON" in error else "value")
        elif element.codes is not None:
            if value not in element.codes:
                self.add(where, f"{_describe(value)} is not in the required value set "
                         f"{element.value_set} ({' | '.join(sorted(element.codes))})",
                         "code-invalid")
        elif element.syntax is not None and not element.syntax.fullmatch(value):
            self.add(where, f"{_describe(value)} is not a code of {element.value_set}",
                     "code-invalid")


def _model_rules_hold(node: dict[str, Any], plan: Plan) -> bool:
    """The elements the model requires are there, and no choice group has two values
    (or none when one is required)."""
    for name in plan.required:
        if node.get(name) is None:
            return False
    for names, required in plan.choices:
        found = 0
        for name in names:
            if name in node:
                found += 1
        if found > 1 or (required and not found):
            return False
    return True


def check(resource: dict[str, Any], expr: str | None = None) -> list[Issue]:
    """Every base-specification problem of ``resource`` (a JSON object with a known
    ``resourceType``), one issue each."""
    return walk(resource, expr)[0]


def walk(resource: dict[str, Any], expr: str | None = None) -> tuple[list[Issue], bool]:
    """:func:`check`, and whether the R4B model certainly accepts ``resource`` as well
    (the resource's type and the model's, its required elements and choice groups, the
    model's own primitive checks — ADR 0027). False means "not proven", not "refused"."""
    walker = Walker()
    walker.resource(resource, expr or str(resource.get("resourceType")))
    return walker.issues, not walker.unsure
