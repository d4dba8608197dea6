"""Validation of incoming resources against the base R4 specification (ADR 0002, issue 25).

Malformed JSON -> 400 ``structure``. A resource that breaks the base specification ->
400 (R4 http.html "Bad Request": could not be parsed or failed basic FHIR validation
rules) with one issue per defect, each carrying the FHIRPath ``expression`` of the
element (operationoutcome.html). Two checks make up "the base specification":

* :mod:`fhir_server.validation.base_spec` — the JSON types of the R4 JSON format, the
  primitive formats, no null/empty values, unknown elements, and the required bindings;
* the fhir.resources R4B models — cardinality, required elements, choice elements,
  calendar validity of dates.

Profiles (``ProfileRegistry.check_write``) and business rules (the workflow) come on top
and answer 422 (Unprocessable Entity).
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from pydantic import ValidationError

from fhir_server.core.errors import ErrorKind, FhirError, Issue
from fhir_server.core.resource_types import model_class, require_supported
from fhir_server.validation import base_spec

ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
MAX_DEPTH = 64


def parse_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise FhirError(ErrorKind.STRUCTURE, f"malformed JSON: {exc}") from None


def check_id(rid: str, expression: str = "id") -> str:
    if not ID_RE.match(rid):
        raise FhirError(ErrorKind.INVALID, f"invalid resource id {rid!r} (FHIR id: "
                        "1-64 of A-Z a-z 0-9 - .)", expression=[expression])
    return rid


def _depth(value: Any, limit: int) -> int:
    """The nesting depth of ``value`` (a scalar inside the body counts as a level), or
    the first depth past ``limit``. Walked level by level: one list per level rather
    than one tuple per node (issue 32)."""
    level = [value]
    depth = 1
    while True:
        nested: list[Any] = []
        for node in level:
            if isinstance(node, dict):
                nested.extend(node.values())
            elif isinstance(node, list):
                nested.extend(node)
        if not nested:
            return depth
        depth += 1
        if depth > limit:
            return depth
        level = nested


def _path(rtype: str, loc: tuple[Any, ...]) -> str:
    out = rtype
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part != "__root__":
            out += f".{part}"
    return out


def validate_resource(body: Any, expected_type: str | None = None) -> dict[str, Any]:
    """Check that ``body`` is a structurally valid R4 resource of a supported type."""
    if not isinstance(body, dict):
        raise FhirError(ErrorKind.STRUCTURE, "the body must be a JSON object (a FHIR resource)")
    rtype = body.get("resourceType")
    if not isinstance(rtype, str):
        raise FhirError(ErrorKind.INVALID, "resourceType is missing", expression=["resourceType"])
    if expected_type is not None and rtype != expected_type:
        raise FhirError(ErrorKind.INVALID,
                        f"resourceType {rtype} does not match the URL type {expected_type}",
                        expression=["resourceType"])
    require_supported(rtype)
    if _depth(body, MAX_DEPTH) > MAX_DEPTH:
        raise FhirError(ErrorKind.INVALID, f"resource nested deeper than {MAX_DEPTH} levels")
    if "id" in body and (not isinstance(body["id"], str) or not ID_RE.match(body["id"])):
        raise FhirError(ErrorKind.INVALID, f"invalid resource id {body['id']!r}",
                        expression=[f"{rtype}.id"])
    issues = base_issues(body, rtype)
    if issues:
        raise FhirError(ErrorKind.STRUCTURE, issues[0].diagnostics, issues=issues)
    return body


def base_issues(body: dict[str, Any], rtype: str) -> list[Issue]:
    """Every way ``body`` breaks the base R4 specification, one issue per problem (the
    element-wise check first; the models' findings on other elements after it).

    The model runs only when the element-wise walk cannot prove it would accept the
    body (ADR 0027): a defect found, an element it requires missing, two values of one
    choice, a value its own validators might refuse. A valid resource — the common case
    — is checked once, without the model; every refused one gets the same issues."""
    issues, model_accepts = base_spec.walk(body, rtype)
    if model_accepts and not issues and body.get("resourceType") == rtype:
        return issues
    return with_model_issues(body, rtype, issues)


def with_model_issues(body: dict[str, Any], rtype: str, issues: list[Issue]) -> list[Issue]:
    """``issues`` (the element-wise walk's) and then what the R4B model refuses besides,
    each named by its element."""
    try:
        model_class(rtype).model_validate(body)
    except ValidationError as exc:
        seen = [e for i in issues for e in i.expression]
        for err in exc.errors():
            where = _path(rtype, tuple(err["loc"]))
            if any(where == e or where.startswith((e + ".", e + "[")) for e in seen):
                continue  # the same problem, already reported with its element
            kind = str(err["type"])
            issues.append(Issue(f"{where}: {err['msg']}", code="required" if "missing" in kind
                                else "structure" if kind == "extra_forbidden" else "value",
                                expression=[where]))
    except (TypeError, ValueError, AttributeError, LookupError) as exc:
        # the models' own validators crash on some wrong JSON types (fhir_core's url
        # validator on a number, a KeyError on a contained resourceType they do not
        # know); the element-wise check has reported those already (issue 27)
        if not issues:
            issues.append(Issue(f"{rtype}: not a valid resource ({exc})", code="structure",
                                expression=[rtype]))
    return issues
