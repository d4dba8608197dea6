"""Fast evaluation of the simple search paths (``Type.a.b.c``) over FHIR JSON.

Nine in ten R4 search parameter expressions are plain dotted paths, and most of the rest
filter a step on a literal (``extension.where(url='…').value``,
``input.where(type.coding.code='site')``); walking the JSON for them is ~50x cheaper than
a general FHIRPath evaluation, which matters on every write (the audit trail writes one
AuditEvent per read; the HL7 message store indexes each message). Choice elements
(``value[x]``) are resolved with the FHIRPath model's choice table. Anything else
(``as``, ``resolve``, other functions) is left to fhirpathpy.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fhirpathpy.models import models

_WHERE = r"(?:\.where\([a-z][A-Za-z]*(?:\.[a-z][A-Za-z]*)*\s*=\s*'[^'\\]*'\))?"
_SIMPLE = re.compile(r"^([A-Z][A-Za-z]+)((?:\.[a-z][A-Za-z]*" + _WHERE + ")+)$")
_STEP = re.compile(r"\.([a-z][A-Za-z]*)(?:\.where\(([a-z][A-Za-z.]*)\s*=\s*'([^']*)'\))?")
_MODEL = models["r4"]
_CHOICES: dict[str, list[str]] = _MODEL["choiceTypePaths"]
_TYPES: dict[str, str] = _MODEL["path2Type"]
_ELSEWHERE: dict[str, str] = _MODEL["pathsDefinedElsewhere"]


Filter = tuple[tuple[str, ...], str] | None  # (relative path, literal) of a where()


def _step_plan(rtype: str, steps: list[tuple[str, Filter]]
               ) -> list[tuple[str, tuple[str, ...], Filter]]:
    """For each step: (json key, choice keys, filter) following element definitions."""
    plan = []
    current = rtype
    for step, where in steps:
        path = f"{current}.{step}"
        path = _ELSEWHERE.get(path, path)
        choices = tuple(step + t[0].upper() + t[1:] for t in _CHOICES.get(path, ()))
        plan.append((step, choices, where))
        kind = _TYPES.get(path)
        current = kind if kind and kind[0].isupper() and kind not in (
            "BackboneElement", "Element") else path
    return plan


_EXTENSION_FN = re.compile(r"\.extension\('([^'\\]*)'\)")
_AS = re.compile(r"^(.+) as ([A-Za-z]+)$")


def top_keys(expression: str) -> tuple[str, ...] | None:
    """The keys of the resource's JSON object a simple path starts from (its first step
    and, for a choice element, each ``value[x]`` key); None when the path is not simple.
    A resource holding none of them has no value for the path."""
    expression = _EXTENSION_FN.sub(r".extension.where(url='\1')", expression)
    typed = _AS.match(expression)
    if typed is not None:
        expression = typed.group(1)
    match = _SIMPLE.match(expression)
    if match is None:
        return None
    first = _STEP.match(match.group(2))
    if first is None:
        return None
    step, choices, _ = _step_plan(match.group(1), [(first.group(1), None)])[0]
    return (step, *choices)


def compile_simple(expression: str) -> Callable[[dict[str, Any]], list[Any]] | None:
    # ``extension('url')`` is ``extension.where(url='url')``; ``path as T`` keeps the
    # choice element of type T only (FHIRPath "as" on a choice)
    expression = _EXTENSION_FN.sub(r".extension.where(url='\1')", expression)
    only_type = None
    typed = _AS.match(expression)
    if typed is not None:
        expression, only_type = typed.group(1), typed.group(2)
    match = _SIMPLE.match(expression)
    if match is None:
        return None
    rtype = match.group(1)
    steps: list[tuple[str, Filter]] = [
        (name, (tuple(sub.split(".")), literal) if sub else None)
        for name, sub, literal in _STEP.findall(match.group(2))]
    plan = _step_plan(rtype, steps)
    if only_type is not None:
        key, choices, where = plan[-1]
        wanted = key + only_type[0].upper() + only_type[1:]
        if wanted not in choices:
            return None
        plan[-1] = (wanted, (), where)

    def evaluate(resource: dict[str, Any]) -> list[Any]:
        if resource.get("resourceType") != rtype:
            return []
        nodes: list[Any] = [resource]
        for key, choices, where in plan:
            out = _children(nodes, (key, *choices))
            if where is not None:
                sub, literal = where
                out = [n for n in out if literal in _walk([n], sub)]
            nodes = out
            if not nodes:
                break
        return nodes

    return evaluate


def _children(nodes: list[Any], keys: tuple[str, ...]) -> list[Any]:
    out: list[Any] = []
    for node in nodes:
        if not isinstance(node, dict):
            continue
        for k in keys:
            value = node.get(k)
            if value is None:
                continue
            if isinstance(value, list):
                out.extend(v for v in value if v is not None)
            else:
                out.append(value)
    return out


def _walk(nodes: list[Any], path: tuple[str, ...]) -> list[Any]:
    for key in path:
        nodes = _children(nodes, (key,))
    return nodes
