"""Map a FHIR RESTful URL and method to a :class:`FhirRequest` (FHIR R4 http.html §2.21).

Used by the HTTP adapter and by Bundle entries (``entry.request.method`` + ``url``),
so both reach the same interactions.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

from fhir_server.core.errors import ErrorKind, FhirError
from fhir_server.core.model import FhirRequest, Interaction, RequestContext
from fhir_server.core.params import check_integer_params
from fhir_server.core.resource_types import require_supported
from fhir_server.search.compartments import is_compartment
from fhir_server.validation import base_spec


def route(method: str, path: str, params: list[tuple[str, str]], *, body: Any = None,
          headers: dict[str, str] | None = None, base_url: str = "",
          context: RequestContext | None = None) -> FhirRequest:
    """Resolve ``path`` (relative to the FHIR base, no leading slash) into a request.

    Integer result parameters (``_count``, ``_offset``) are range-checked here, for
    HTTP and Bundle entries alike (400, issue 27)."""
    method = method.upper()
    parts = [p for p in path.strip("/").split("/") if p]
    req = FhirRequest(Interaction.READ, params=params, body=body, headers=headers or {},
                      base_url=base_url, context=context or RequestContext(), method=method)
    check_integer_params(params)

    def bad() -> FhirError:
        return FhirError(ErrorKind.METHOD_NOT_ALLOWED,
                         f"{method} /{'/'.join(parts)} is not a supported FHIR interaction")

    if not parts:
        if method == "POST":
            req.interaction = Interaction.BATCH
            return req
        if method in ("GET", "HEAD"):  # GET [base]?_type=…&… (search.html#system)
            req.interaction = Interaction.SEARCH_SYSTEM
            return req
        raise bad()
    if parts == ["_search"]:
        if method != "POST":
            raise bad()
        req.interaction = Interaction.SEARCH_SYSTEM
        return req
    if parts[0] == "metadata" and len(parts) == 1:
        if method != "GET":
            raise bad()
        req.interaction = Interaction.CAPABILITIES
        return req
    if parts[-1].startswith("$") and len(parts) <= 3:
        req.interaction = Interaction.OPERATION
        req.operation = parts[-1][1:]
        if len(parts) > 1:
            req.resource_type = require_supported(parts[0])
        if len(parts) == 3:
            req.id = parts[1]
        if method not in ("GET", "POST"):
            raise bad()
        if req.operation != "validate":  # $validate reports on what it is given
            _check_parameters(body)
        return req
    if parts[0] == "_history" and len(parts) == 1:
        if method != "GET":
            raise bad()
        req.interaction = Interaction.HISTORY_SYSTEM
        return req
    req.resource_type = require_supported(parts[0])
    n = len(parts)
    if n == 1:
        req.interaction = {
            "GET": Interaction.SEARCH_TYPE, "POST": Interaction.CREATE,
            "PUT": Interaction.UPDATE, "DELETE": Interaction.DELETE, "PATCH": Interaction.PATCH,
            "HEAD": Interaction.SEARCH_TYPE,
        }.get(method) or _raise(bad())
        return req
    if n == 2 and parts[1] == "_search":
        if method != "POST":
            raise bad()
        req.interaction = Interaction.SEARCH_TYPE
        return req
    if n == 2 and parts[1] == "_history":
        if method != "GET":
            raise bad()
        req.interaction = Interaction.HISTORY_TYPE
        return req
    req.id = parts[1]
    if n == 2:
        req.interaction = {
            "GET": Interaction.READ, "HEAD": Interaction.READ, "PUT": Interaction.UPDATE,
            "DELETE": Interaction.DELETE, "PATCH": Interaction.PATCH,
        }.get(method) or _raise(bad())
        return req
    if is_compartment(req.resource_type) and not parts[2].startswith("_") and (
            (n == 3 and method in ("GET", "HEAD")) or
            (n == 4 and parts[3] == "_search" and method == "POST")):
        # GET [base]/Patient/[id]/[type]?… (search.html#compartments); [type] may be *
        req.interaction = Interaction.SEARCH_COMPARTMENT
        req.compartment_search = parts[2] if parts[2] == "*" else require_supported(parts[2])
        return req
    if parts[2] == "_history" and method in ("GET", "HEAD"):
        if n == 3:
            req.interaction = Interaction.HISTORY_INSTANCE
            return req
        if n == 4:
            req.interaction = Interaction.VREAD
            req.version_id = parts[3]
            return req
    raise bad()


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


def _raise(exc: FhirError) -> Any:
    raise exc


def split_url(url: str) -> tuple[str, list[tuple[str, str]]]:
    """``Patient?identifier=x`` -> (``Patient``, [(identifier, x)]); 400 for a URL that
    cannot be split (``http://[::1``)."""
    try:
        parts = urlsplit(url)
        return parts.path, parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        raise FhirError(ErrorKind.INVALID, f"not a URL: {url[:200]!r}") from None
