"""FHIRPath invariants compiled once into Python closures (FHIRPath N1 §5-6; ADR 0027).

The profiles' invariants are a handful of shapes — paths, ``exists()``, ``empty()``,
``count()`` compared with a number, ``where(...)``, ``all(...)``, ``extension('url')``,
``ofType(T)`` after a choice element, ``=``/``!=``/``in`` against literals, ``and``/``or``/
``implies``/``not()``, ``startsWith()``, ``matches()``. :func:`compile_fast` turns those into
closures over the JSON with fhirpathpy's own semantics (its navigation of choice elements
through the R4 model tables, its three-valued logic, its treatment of empty operands);
anything else compiles to ``None`` and stays with fhirpathpy.

At run time a closure raises :class:`Fallback` wherever fhirpathpy would convert or
complain (a primitive's ``_name`` extension, a non-singleton where one is expected, a
value that is not a string, boolean or integer in a comparison): the caller then asks
fhirpathpy, so every answer — including its error messages — stays fhirpathpy's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fhirpathpy.models import models
from fhirpathpy.parser import parse

MODEL: dict[str, Any] = models["r4"]


class Fallback(Exception):  # a signal, not an error
    """This evaluation is left to fhirpathpy."""


class Unsupported(Exception):
    """This expression is left to fhirpathpy."""


class Node:
    """A navigated element: its JSON value and its FHIR type path, as fhirpathpy's
    ``ResourceNode`` has them."""

    __slots__ = ("data", "path")

    def __init__(self, data: Any, path: str | None) -> None:
        self.data = data
        self.path = path


Items = list[Any]  # Nodes and plain values (literals, computed booleans and integers)
Fn = Callable[[Items], Items]

_ELSEWHERE: dict[str, str] = MODEL["pathsDefinedElsewhere"]
_CHOICES: dict[str, list[str]] = MODEL["choiceTypePaths"]
_TYPES: dict[str, str] = MODEL["path2Type"]


_PARENTS: dict[str, str] = MODEL["type2Parent"]


def _derives(path: str, type_name: str) -> bool:
    seen = path
    while seen in _PARENTS:
        seen = _PARENTS[seen]
        if seen == type_name:
            return True
    return False


def _child(value: Any, path: str) -> Node:
    """fhirpathpy's ``ResourceNode``: a nested resource is typed by its resourceType."""
    if isinstance(value, dict) and isinstance(value.get("resourceType"), str):
        return Node(value, value["resourceType"])
    return Node(value, path)


def _node(item: Any) -> Node:
    if isinstance(item, Node):
        return item
    path = item.get("resourceType") if isinstance(item, dict) else None
    return Node(item, path if isinstance(path, str) else None)


def _member(key: str) -> Fn:
    """fhirpathpy's ``create_reduce_member_invocation``: choice elements through the R4
    model's ``choiceTypePaths`` (the first type present wins), types through
    ``path2Type``."""
    def run(items: Items) -> Items:
        out: Items = []
        for raw in items:
            res = _node(raw)
            data = res.data
            if not isinstance(data, dict):
                raise Fallback  # a primitive's navigation, a Quantity: fhirpathpy's own
            child = f"{res.path}.{key}" if res.path else f"_.{key}"
            child = _ELSEWHERE.get(child, child)
            types = _CHOICES.get(child)
            value = None
            if types:
                for suffix in types:
                    field = key + suffix
                    if "_" + field in data:
                        raise Fallback
                    value = data.get(field)
                    if value is not None:
                        child += suffix
                        break
            else:
                if "_" + key in data:
                    raise Fallback
                value = data.get(key)
                if key == "extension":
                    child = "Extension"
            child = _TYPES.get(child, child)
            if value is None or value == []:
                continue
            if isinstance(value, list):
                out += [_child(v, child) for v in value]
            else:
                out.append(_child(value, child))
        return out
    return run


def _scalar(item: Any) -> Any:
    """A comparable value: a string, boolean or integer (what fhirpathpy compares as is)."""
    data = item.data if isinstance(item, Node) else item
    if type(data) not in (str, bool, int):
        raise Fallback
    return data


def _boolean(items: Items) -> Any:
    """A logical operand: True, False or [] (fhirpathpy's ``["Boolean"]`` parameter)."""
    if not items:
        return []
    if len(items) > 1:
        raise Fallback
    data = items[0].data if isinstance(items[0], Node) else items[0]
    if data is True or data is False:
        return data
    raise Fallback


def _or(a: Any, b: Any) -> Any:
    if isinstance(b, list):
        return True if a is True else []
    if isinstance(a, list):
        return True if b is True else []
    return a or b


def _and(a: Any, b: Any) -> Any:
    if isinstance(b, list):
        return False if a is False else []
    if isinstance(a, list):
        return [] if b is True else False
    return a and b


def _implies(a: Any, b: Any) -> Any:
    if isinstance(b, list):
        return True if a is False else []
    if isinstance(a, list):
        return True if b is True else []
    if a is False:
        return True
    return a and b


LOGIC = {"or": _or, "and": _and, "implies": _implies}


def _arraify(value: Any) -> Items:
    if isinstance(value, list):
        return value
    return [] if value is None else [value]


def _string_singleton(items: Items) -> str:
    if len(items) != 1:
        raise Fallback
    data = items[0].data if isinstance(items[0], Node) else items[0]
    if not isinstance(data, str):
        raise Fallback
    return data


class _Compiler:
    def __init__(self) -> None:
        # closures whose value does not depend on the focus (literals and their unions),
        # with that value: computed once, here
        self.constants: dict[Fn, Items] = {}

    def expr(self, node: dict[str, Any]) -> Fn:
        kind = node["type"]
        method = getattr(self, kind, None)
        if method is None:
            raise Unsupported(kind)
        result: Fn = method(node)
        return result

    # -- terms -------------------------------------------------------------------------
    def TermExpression(self, node: dict[str, Any]) -> Fn:
        return self.expr(node["children"][0])

    def ParenthesizedTerm(self, node: dict[str, Any]) -> Fn:
        return self.expr(node["children"][0])

    def InvocationTerm(self, node: dict[str, Any]) -> Fn:
        return self.invocation(node["children"][0], lambda items: items)

    def LiteralTerm(self, node: dict[str, Any]) -> Fn:
        value = self.literal(node["children"][0])
        return self.constant([value])

    def constant(self, value: Items) -> Fn:
        def fn(items: Items) -> Items:
            return value
        self.constants[fn] = value
        return fn

    def literal(self, node: dict[str, Any]) -> Any:
        text = node.get("text", "")
        if node["type"] == "StringLiteral" and "\\" not in text:
            return text[1:-1]
        if node["type"] == "BooleanLiteral":
            return text == "true"
        if node["type"] == "NumberLiteral" and text.isdigit():
            return int(text)
        raise Unsupported(node["type"])

    def InvocationExpression(self, node: dict[str, Any]) -> Fn:
        return self.invocation(node["children"][1], self.expr(node["children"][0]))

    def invocation(self, node: dict[str, Any], source: Fn) -> Fn:
        kind = node["type"]
        if kind == "MemberInvocation":
            key = node["children"][0]["text"].replace("`", "")
            if key[:1].isupper():
                raise Unsupported("type filter")
            member = _member(key)
            return lambda items: member(source(items))
        if kind == "ThisInvocation":
            return source
        if kind == "FunctionInvocation":
            functn = node["children"][0]
            name = functn["children"][0]["text"]
            params = functn["children"][1]["children"] if len(functn["children"]) > 1 else []
            return self.function(name, params, source)
        raise Unsupported(kind)

    # -- functions ---------------------------------------------------------------------
    def function(self, name: str, params: list[dict[str, Any]], source: Fn) -> Fn:
        if name in ("exists", "empty", "count", "not") and not params:
            return self.existence(name, source)
        if name in ("where", "exists", "all") and len(params) == 1:
            return self.filtering(name, self.expr(params[0]), source)
        if name in ("extension", "startsWith", "matches", "ofType") and len(params) == 1:
            return self.with_argument(name, params[0], source)
        raise Unsupported(name)

    @staticmethod
    def existence(name: str, source: Fn) -> Fn:
        if name == "exists":
            return lambda items: [bool(source(items))]
        if name == "empty":
            return lambda items: [not source(items)]
        if name == "count":
            return lambda items: [len(source(items))]

        def negate(items: Items) -> Items:
            found = source(items)
            if len(found) != 1:
                return []
            value = _boolean(found)
            return [not value]
        return negate

    @staticmethod
    def filtering(name: str, criteria: Fn, source: Fn) -> Fn:
        def where(items: Items) -> Items:
            out = []
            for item in source(items):
                result = criteria([item])
                if result:
                    first = result[0]
                    if first is not True and first is not False:
                        raise Fallback  # fhirpathpy takes a value's truthiness
                    if first:
                        out.append(item)
            return out

        if name == "where":
            return where
        if name == "exists":
            return lambda items: [bool(where(items))]

        def every(items: Items) -> Items:
            for item in source(items):
                result = criteria([item])
                if not (len(result) == 1 and result[0] is True):
                    if len(result) == 1 and not isinstance(result[0], bool):
                        raise Fallback
                    return [False]
            return [True]
        return every

    def with_argument(self, name: str, param: dict[str, Any], source: Fn) -> Fn:
        if name == "ofType":
            return self.of_type(param, source)
        argument = self.constant_string(param)
        if name == "extension":
            return self.extension(argument, source)
        if name == "startsWith":
            def starts_with(items: Items) -> Items:
                found = source(items)
                if not found:
                    return []
                return [_string_singleton(found).startswith(argument)]
            return starts_with
        pattern = re.compile(argument, re.DOTALL)

        def matches(items: Items) -> Items:
            found = source(items)
            if not found:
                return []
            return [pattern.search(_string_singleton(found)) is not None]
        return matches

    @staticmethod
    def of_type(param: dict[str, Any], source: Fn) -> Fn:
        type_name = param.get("text", "")
        if not re.fullmatch(r"[A-Z][A-Za-z]+", type_name):
            raise Unsupported("ofType")

        def of_type(items: Items) -> Items:
            out = []
            for item in source(items):
                path = item.path if isinstance(item, Node) else None
                if not path or "." in path or not path[0].isupper():
                    raise Fallback  # only a navigated complex type is read here
                if path == type_name:
                    out.append(item)
                elif _derives(path, type_name):
                    raise Fallback  # a profile of the type (Age is a Quantity)
            return out
        return of_type

    @staticmethod
    def extension(url: str, source: Fn) -> Fn:
        """fhirpathpy's ``extension()``: the first extension with that url, per item."""
        def extension(items: Items) -> Items:
            out: Items = []
            for raw in source(items):
                data = raw.data if isinstance(raw, Node) else raw
                if not isinstance(data, dict):
                    continue
                found = data.get("extension", [])
                if not isinstance(found, list) or not all(
                        isinstance(e, dict) and "url" in e for e in found):
                    raise Fallback
                for e in found:
                    if e["url"] == url:
                        out.append(Node(e, "Extension"))
                        break
            return out
        return extension

    def constant_string(self, param: dict[str, Any]) -> str:
        node = param
        while node["type"] in ("TermExpression", "LiteralTerm") and node.get("children"):
            node = node["children"][0]
        value = self.literal(node)
        if not isinstance(value, str) or not value:
            raise Unsupported("argument")
        return value

    # -- operators ---------------------------------------------------------------------
    def operands(self, node: dict[str, Any]) -> tuple[Fn, Fn]:
        left, right = node["children"]
        return self.expr(left), self.expr(right)

    def UnionExpression(self, node: dict[str, Any]) -> Fn:
        left, right = self.operands(node)
        if left in self.constants and right in self.constants:
            out: Items = []
            for value in (*self.constants[left], *self.constants[right]):
                if value not in out:
                    out.append(value)
            return self.constant(out)

        def union(items: Items) -> Items:
            out: Items = []
            for value in (*left(items), *right(items)):
                if isinstance(value, Node):
                    raise Fallback  # fhirpathpy's distinct() of nodes: by data and path
                if _scalar(value) not in [_scalar(v) for v in out]:
                    out.append(value)
            return out
        return union

    def EqualityExpression(self, node: dict[str, Any]) -> Fn:
        operator = node["terminalNodeText"][0]
        if operator not in ("=", "!="):
            raise Unsupported(operator)
        left, right = self.operands(node)
        negate = operator == "!="

        def equal(items: Items) -> Items:
            a, b = left(items), right(items)
            if not a or not b:
                return []
            if len(a) != len(b):
                return [negate]
            if len(a) > 1:
                raise Fallback
            return [(_scalar(a[0]) == _scalar(b[0])) != negate]
        return equal

    def MembershipExpression(self, node: dict[str, Any]) -> Fn:
        if node["terminalNodeText"][0] != "in":
            raise Unsupported("contains")
        left, right = self.operands(node)
        if self.constants.get(right):
            allowed = frozenset(_scalar(v) for v in self.constants[right])

            def member_of_constants(items: Items) -> Items:
                a = left(items)
                if not a:
                    return []
                if len(a) > 1:
                    raise Fallback
                return [_scalar(a[0]) in allowed]
            return member_of_constants

        def member(items: Items) -> Items:
            a, b = left(items), right(items)
            if not a:
                return []
            if not b:
                return [False]
            if len(a) > 1:
                raise Fallback
            value = _scalar(a[0])
            return [any(_scalar(v) == value for v in b)]
        return member

    def InequalityExpression(self, node: dict[str, Any]) -> Fn:
        operator = node["terminalNodeText"][0]
        left, right = self.operands(node)
        compare = {">": int.__gt__, "<": int.__lt__, ">=": int.__ge__,
                   "<=": int.__le__}.get(operator)
        if compare is None:
            raise Unsupported(operator)

        def inequality(items: Items) -> Items:
            a, b = left(items), right(items)
            if not a or not b:
                return []
            if len(a) != 1 or len(b) != 1 or type(a[0]) is not int or type(b[0]) is not int:
                raise Fallback  # counts only
            return [compare(a[0], b[0])]
        return inequality

    def AdditiveExpression(self, node: dict[str, Any]) -> Fn:
        if node["terminalNodeText"][0] != "+":
            raise Unsupported("-")
        left, right = self.operands(node)

        def plus(items: Items) -> Items:
            a, b = left(items), right(items)
            if not a or not b:
                return []
            if len(a) != 1 or len(b) != 1 or type(a[0]) is not int or type(b[0]) is not int:
                raise Fallback  # counts only
            return [a[0] + b[0]]
        return plus

    def logic(self, node: dict[str, Any]) -> Fn:
        operator = node["terminalNodeText"][0]
        combine = LOGIC.get(operator)
        if combine is None:
            raise Unsupported(operator)
        left, right = self.operands(node)
        return lambda items: _arraify(combine(_boolean(left(items)), _boolean(right(items))))

    OrExpression = AndExpression = ImpliesExpression = logic


def compile_fast(expression: str) -> Callable[[Any], list[Any]] | None:
    """A closure giving what ``fhirpathpy.evaluate(resource, expression)`` gives (raising
    :class:`Fallback` where it cannot vouch for that), or None for an expression outside
    the compiled shapes."""
    try:
        tree = parse(expression)  # type: ignore[no-untyped-call]
        body = _Compiler().expr(tree["children"][0])
    except Exception:  # whatever is not compiled stays with fhirpathpy
        return None

    def run(resource: Any) -> list[Any]:
        return [item.data if isinstance(item, Node) else item for item in body([resource])]
    return run
