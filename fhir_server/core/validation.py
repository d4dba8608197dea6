"""Structural validation of incoming resources with the fhir.resources R4B models.

Malformed JSON -> 400 ``structure``; a resource that breaks the R4 structure -> 422
with one issue per defect, each carrying the FHIRPath ``expression`` of the element
(FHIR R4 http.html#2.21.0.2, operationoutcome.html). Profile rules come later
(profiles issue) on top of this.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from pydantic import ValidationError

from fhir_server.core.errors import ErrorKind, FhirError, Issue
from fhir_server.core.resource_types import model_class, require_supported

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
    stack = [(value, 1)]
    deepest = 0
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > limit:
            return depth
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return deepest


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
    try:
        model_class(rtype).model_validate(body)
    except ValidationError as exc:
        issues = [
            Issue(f"{_path(rtype, tuple(err['loc']))}: {err['msg']}",
                  code="structure" if err["type"] == "extra_forbidden" else "value",
                  expression=[_path(rtype, tuple(err["loc"]))])
            for err in exc.errors()
        ]
        raise FhirError(ErrorKind.UNPROCESSABLE, issues[0].diagnostics, issues=issues) from None
    return body
