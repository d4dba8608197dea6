"""The route table: method + FHIR RESTful path -> interaction (FHIR R4 http.html §2.21).

One table, read by every way in (Medplum's router shape): the ASGI read fast path, the
FastAPI endpoint, Bundle entries (``entry.request.method`` + ``url``) and the ``Allow``
header of a 405, so they all reach the same interactions.

A pattern is a path of segments: a literal (``_search``), ``$op`` (any ``$name``), or a
capture (``{type}``, ``{id}``, ``{vid}``, ``{compartment}``). Patterns are tried in
table order, the system-level ones first; the first whose segments match decides, and
the method then picks the interaction (none: 405). A path past the system-level
patterns names a resource type, checked (404 "not supported") before the method.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from fhir_server.core.errors import ErrorKind, FhirError
from fhir_server.core.model import FhirRequest, Interaction, RequestContext
from fhir_server.core.params import check_integer_params
from fhir_server.core.resource_types import require_supported
from fhir_server.search.compartments import is_compartment
from fhir_server.validation import base_spec


def _on(get: Interaction | None = None, head: Interaction | None = None,
        **others: Interaction) -> Mapping[str, Interaction]:
    """A pattern's method -> interaction map (``HEAD`` answers as ``GET`` when given)."""
    table = {method.upper(): interaction for method, interaction in others.items()}
    if get is not None:
        table["GET"] = get
    if head is not None:
        table["HEAD"] = head
    return table


Do = Interaction
# (pattern, method -> interaction), in the order they are tried (http.html summary table)
SYSTEM_ROUTES: tuple[tuple[str, Mapping[str, Interaction]], ...] = (
    ("", _on(Do.SEARCH_SYSTEM, Do.SEARCH_SYSTEM, post=Do.BATCH)),
    ("_search", _on(post=Do.SEARCH_SYSTEM)),
    ("metadata", _on(Do.CAPABILITIES)),
    # DELETE: a Bulk Data export's status URL only (DELETE_OPERATIONS)
    ("$op", _on(Do.OPERATION, post=Do.OPERATION, delete=Do.OPERATION)),
    ("_history", _on(Do.HISTORY_SYSTEM)),
)
TYPE_ROUTES: tuple[tuple[str, Mapping[str, Interaction]], ...] = (
    ("{type}/$op", _on(Do.OPERATION, post=Do.OPERATION)),
    ("{type}/{id}/$op", _on(Do.OPERATION, post=Do.OPERATION)),
    ("{type}", _on(Do.SEARCH_TYPE, Do.SEARCH_TYPE, post=Do.CREATE, put=Do.UPDATE,
                   delete=Do.DELETE, patch=Do.PATCH)),
    ("{type}/_search", _on(post=Do.SEARCH_TYPE)),
    ("{type}/_history", _on(Do.HISTORY_TYPE)),
    ("{type}/{id}", _on(Do.READ, Do.READ, put=Do.UPDATE, delete=Do.DELETE, patch=Do.PATCH)),
    # GET [base]/Patient/[id]/[type]?… (search.html#compartments); [type] may be *
    ("{type}/{id}/{compartment}", _on(Do.SEARCH_COMPARTMENT, Do.SEARCH_COMPARTMENT)),
    ("{type}/{id}/{compartment}/_search", _on(post=Do.SEARCH_COMPARTMENT)),
    ("{type}/{id}/_history", _on(Do.HISTORY_INSTANCE, Do.HISTORY_INSTANCE)),
    ("{type}/{id}/_history/{vid}", _on(Do.VREAD, Do.VREAD)),
)
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
# the system operations a DELETE reaches: cancelling a Bulk Data export (issue 31)
DELETE_OPERATIONS = frozenset({"export-poll-status"})


@dataclass(frozen=True, slots=True)
class Route:
    """One compiled pattern: its segments and the interaction of each method it takes."""

    pattern: str
    segments: tuple[str, ...]
    methods: Mapping[str, Interaction]

    def matches(self, parts: list[str]) -> bool:
        for want, got in zip(self.segments, parts, strict=True):  # the table is by length
            if want[0] == "{":
                if want == "{compartment}" and (got[0] == "_" or not is_compartment(parts[0])):
                    return False
            elif want == "$op":
                if got[0] != "$":
                    return False
            elif want != got:
                return False
        return True

    def captures(self, parts: list[str]) -> dict[str, str]:
        return {want: got for want, got in zip(self.segments, parts, strict=True)
                if want[0] in "{$"}


def _regex(segments: tuple[str, ...]) -> str:
    out = []
    for want in segments:
        if want == "$op":
            out.append(r"\$[^/]*")
        elif want == "{compartment}":  # and the type has compartments: checked after
            out.append(r"[^/_][^/]*")
        elif want[0] == "{":
            out.append(r"[^/]+")
        else:
            out.append(re.escape(want))
    return "/".join(out)


Compiled = dict[int, tuple[tuple[Route, ...], re.Pattern[str]]]


def _compile(table: tuple[tuple[str, Mapping[str, Interaction]], ...]) -> Compiled:
    """The table by number of segments (a path is only tried against its own length),
    each length's patterns as one regular expression whose alternatives keep the table's
    order: one ``fullmatch`` finds the first pattern that fits."""
    routes = [Route(p, tuple(s for s in p.split("/") if s), m) for p, m in table]
    out: Compiled = {}
    for n in sorted({len(r.segments) for r in routes}):
        same = tuple(r for r in routes if len(r.segments) == n)
        out[n] = same, re.compile("|".join(f"(?P<r{i}>{_regex(r.segments)})"
                                           for i, r in enumerate(same)))
    return out


_SYSTEM = _compile(SYSTEM_ROUTES)
_TYPE = _compile(TYPE_ROUTES)


def _first(table: Compiled, parts: list[str], joined: str) -> Route | None:
    entry = table.get(len(parts))
    if entry is None:
        return None
    routes, pattern = entry
    found = pattern.fullmatch(joined)
    if found is None or found.lastgroup is None:
        return None
    i = int(found.lastgroup[1:])
    if "{compartment}" not in routes[i].segments or is_compartment(parts[0]):
        return routes[i]
    # a type without compartments: the patterns after this one, in order
    return next((later for later in routes[i + 1:] if later.matches(parts)), None)


def match(path: str) -> tuple[Route | None, list[str]]:
    """The route a path (relative to the FHIR base) takes, whatever the method, and its
    segments; ``None`` when no pattern fits (405). 404 for an unsupported type."""
    parts = path.split("/")
    if "" in parts:
        parts = [p for p in parts if p]
        path = "/".join(parts)
    found = _first(_SYSTEM, parts, path)
    if found is None and parts:
        require_supported(parts[0])  # past the system-level patterns: a type, 404 first
        found = _first(_TYPE, parts, path)
    return found, parts


def read_target(path: str) -> tuple[str, str] | None:
    """(type, id) when ``path`` (under ``/fhir/``) is a read of a type we serve, else
    ``None``: the fast path's question, answered from the same table."""
    try:
        found, parts = match(path)
    except FhirError:
        return None
    if found is None or found.methods.get("GET") is not Do.READ:
        return None
    return parts[0], parts[1]


def route(method: str, path: str, params: list[tuple[str, str]], *, body: Any = None,
          headers: dict[str, str] | None = None, base_url: str = "",
          context: RequestContext | None = None) -> FhirRequest:
    """Resolve ``path`` (relative to the FHIR base, no leading slash) into a request.

    Integer result parameters (``_count``, ``_offset``) are range-checked here, for
    HTTP and Bundle entries alike (400, issue 27)."""
    method = method.upper()
    check_integer_params(params)
    found, parts = match(path)
    interaction = found.methods.get(method) if found is not None else None
    if method == "DELETE" and found is not None and found.pattern == "$op" and \
            parts[0][1:] not in DELETE_OPERATIONS:
        interaction = None
    if found is None or interaction is None:
        raise FhirError(ErrorKind.METHOD_NOT_ALLOWED,
                        f"{method} /{'/'.join(parts)} is not a supported FHIR interaction")
    got = found.captures(parts)
    req = FhirRequest(interaction, got.get("{type}"), got.get("{id}"), got.get("{vid}"),
                      params=params, body=body, headers=headers or {}, base_url=base_url,
                      context=context or RequestContext(), method=method)
    if "{compartment}" in got:
        compartment = got["{compartment}"]
        req.compartment_search = compartment if compartment == "*" else \
            require_supported(compartment)
    if "$op" in got:
        req.operation = got["$op"][1:]
        if req.operation != "validate":  # $validate reports on what it is given
            _check_parameters(body)
    return req


def allowed(path: str) -> str:
    """The ``Allow`` header of a 405: the methods the table takes on ``path``."""
    try:
        found, _ = match(path)
    except FhirError:  # a type we do not serve: every method meets the same 404
        return ", ".join(METHODS)
    takes = dict(found.methods) if found is not None else {}
    if found is not None and found.pattern == "$op" and \
            path.strip("/")[1:] not in DELETE_OPERATIONS:
        takes.pop("DELETE", None)
    return ", ".join(m for m in METHODS if m in takes)


def _check_parameters(body: Any) -> None:
    """An operation's ``Parameters`` body meets the base specification like any resource
    (types, no NUL or other control character in a string, known nested resource types):
    its values end up in stored resources, so a bad one is the client's 400, not the
    server's 500 when it stores what it built (issue 27). ``"parameter": []`` is taken
    for no parameter, as clients send it."""
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        if body.get("parameter") == []:
            body = {k: v for k, v in body.items() if k != "parameter"}
        issues = base_spec.check(body, "Parameters")
        if issues:
            raise FhirError(ErrorKind.STRUCTURE, issues[0].diagnostics, issues=issues)


def split_url(url: str) -> tuple[str, list[tuple[str, str]]]:
    """``Patient?identifier=x`` -> (``Patient``, [(identifier, x)]); 400 for a URL that
    cannot be split (``http://[::1``)."""
    try:
        parts = urlsplit(url)
        return parts.path, parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        raise FhirError(ErrorKind.INVALID, f"not a URL: {url[:200]!r}") from None
