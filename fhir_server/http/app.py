"""The FastAPI adapter: HTTP <-> FhirRequest/FhirResponse, nothing else (FHIR R4 http.html).

It parses the body by Content-Type (JSON, XML, JSON Patch, form for ``_search``),
resolves the URL with the route table (:mod:`fhir_server.interactions.routing`), calls
the server and writes the rendered bytes back. One read path (ADR 0004): a read is
served inline by :func:`serve_inline`; every other interaction runs in a worker thread
under its time budget. :class:`ReadFastPath` takes the ``GET`` queries (read, vread,
search, history) before FastAPI; the endpoint takes the rest.

Order of the checks, whatever the method and path (only ``GET``/``HEAD /fhir/metadata``
is public): no or bad token -> 401 (audited, R-SEC-1, R-SEC-3), also on paths and types
we do not serve; a resource type we do not serve -> 404 "not supported" (before any
right is looked at and before the body is read); a method the path does not take -> 405
with ``Allow``; then the body. Routes the composition root mounts (``mounts``: the
DICOMweb STOW-RS of :mod:`adapters.dicom.web`) authenticate through the same core.
Every answer under ``/fhir`` is an OperationOutcome when it is an error. CORS
(``TELEIMG_CORS_ORIGINS``) is Starlette's middleware, answering refusals in FHIR too.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware

from fhir_server import health, metrics
from fhir_server.config import Settings
from fhir_server.core.errors import ErrorKind, FhirError
from fhir_server.core.formats import from_xml
from fhir_server.core.model import FhirRequest, Interaction, RequestContext
from fhir_server.core.resource_types import is_supported, require_supported
from fhir_server.http import openapi, smart
from fhir_server.http.body import bound_malloc, read_body, run_watched
from fhir_server.interactions.capabilities import publish_security
from fhir_server.interactions.routing import METHODS, allowed, read_target, route
from fhir_server.runtime import warm
from fhir_server.server.dispatch import FhirServer, Rendered, render_error
from fhir_server.store.budget import Budget
from fhir_server.validation.resource import parse_json

log = logging.getLogger("teleimagerie.http")
# CORS (TELEIMG_CORS_ORIGINS): what a browser client may send and read
CORS_REQUEST_HEADERS = ("Authorization", "Content-Type", "If-Match", "If-None-Exist",
                        "If-None-Match", "If-Modified-Since", "Prefer", "X-Request-Id")
CORS_EXPOSED_HEADERS = ("ETag", "Location", "Content-Location", "Last-Modified",
                        "Preference-Applied", "X-Request-Id")
CORS_MAX_AGE = 3600  # seconds a browser may cache a preflight answer
_JSON = ("application/fhir+json", "application/json", "application/json+fhir", "text/json")
_XML = ("application/fhir+xml", "application/xml", "application/xml+fhir", "text/xml")


def _parse_body(raw: bytes, content_type: str, method: str, path: str) -> tuple[Any, bool]:
    """Return (body, form_params_used) according to Content-Type."""
    if not raw:
        return None, False
    ctype = content_type.split(";")[0].strip().lower()
    if ctype == "application/x-www-form-urlencoded" and path.endswith("_search"):
        try:
            return parse_qsl(raw.decode("utf-8"), keep_blank_values=True), True
        except UnicodeDecodeError:
            raise FhirError(ErrorKind.INVALID, "the form body is not UTF-8 (RFC 3986 "
                            "percent-encoding of UTF-8 bytes)") from None
    if ctype in _XML:
        return from_xml(raw), False
    if ctype in _JSON or ctype == "application/json-patch+json" or ctype == "":
        if method == "PATCH" and ctype not in ("application/json-patch+json", "application/json",
                                               ""):
            raise FhirError(ErrorKind.UNSUPPORTED_MEDIA, "PATCH needs application/json-patch+"
                            "json (FHIRPath Patch is not supported)")
        return parse_json(raw), False
    raise FhirError(ErrorKind.UNSUPPORTED_MEDIA, f"unsupported Content-Type {content_type!r}; "
                    "use application/fhir+json or application/fhir+xml")


def _check_type(path: str) -> None:
    """404 "not supported" for a path naming a resource type we do not serve."""
    first = path.strip("/").split("/", 1)[0]
    if first and first != "metadata" and not first.startswith(("_", "$")):
        require_supported(first)


def _public(method: str, path: str) -> bool:
    """The one request answered without a token: the CapabilityStatement (http.html)."""
    return method in ("GET", "HEAD") and path.strip("/") == "metadata"


class FhirCors(CORSMiddleware):
    """Starlette's CORS middleware; a refused preflight is an OperationOutcome (403), an
    accepted one a 204."""

    def preflight_response(self, request_headers: Headers) -> Response:
        answer = super().preflight_response(request_headers)
        headers = {k: v for k, v in answer.headers.items()
                   if k.lower() not in ("content-length", "content-type")}
        if answer.status_code < 400:
            return Response(status_code=204, headers=headers)
        refused = render_error(FhirError(
            ErrorKind.FORBIDDEN, f"{bytes(answer.body).decode()} (TELEIMG_CORS_ORIGINS)"))
        return Response(content=refused.body, status_code=refused.status, headers=headers,
                        media_type=refused.content_type)


def _respond(rendered: Rendered, request_id: str, head: bool = False) -> Response:
    headers = dict(rendered.headers)
    headers["X-Request-Id"] = request_id
    if rendered.file is not None:  # a Bulk Data export file, streamed from disk
        return FileResponse(rendered.file, status_code=rendered.status, headers=headers,
                            media_type=rendered.content_type)
    if not rendered.body:
        return Response(status_code=rendered.status, headers=headers)
    return Response(content=b"" if head else rendered.body, status_code=rendered.status,
                    headers=headers, media_type=rendered.content_type)


# what the composition root adds to the app (issue 28 item 1): e.g. the DICOMweb STOW-RS
# route of adapters.dicom, called with the app, the core and the settings, before the FHIR
# catch-all routes
Mount = Callable[[FastAPI, FhirServer, Settings], None]


def create_app(settings: Settings | None = None, *, server: FhirServer,
               mounts: Sequence[Mount] = ()) -> FastAPI:
    """The FastAPI app on the core ``server`` (built by the composition root), with the
    routes ``mounts`` add."""
    settings = settings or Settings.from_env()
    core = server

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if core.audit is not None:
            core.audit.close()
        core.store.close()

    app = FastAPI(title="Téléimagerie FHIR R4 server", version="0.1.0",
                  docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.fhir = core
    app.state.settings = settings
    publish_security(core, smart.security_of(settings))  # rest.security (issue 29)
    app.state.cors = bool(settings.cors_origins)
    if settings.cors_origins:
        app.add_middleware(FhirCors, allow_origins=settings.cors_origins,
                           allow_methods=list(METHODS), allow_headers=CORS_REQUEST_HEADERS,
                           expose_headers=CORS_EXPOSED_HEADERS, max_age=CORS_MAX_AGE)
    app.add_exception_handler(StarletteHTTPException, http_error)
    health.mount(app, settings, core.store)  # /health/live, /health/ready (issue 29)
    smart.install(app, settings)  # .well-known: SMART discovery, the dev issuer's JWKS
    openapi.install(app, core)  # /openapi.json from the capability tables, offline /docs
    for mount in mounts:  # e.g. /dicomweb/studies (STOW-RS, R-INT-2)
        mount(app, core, settings)
    # OPTIONS too: without CORS it is answered like any method a path does not take (405)
    app.add_api_route("/fhir", fhir_endpoint, methods=[*METHODS, "OPTIONS"],
                      include_in_schema=False)
    app.add_api_route("/fhir/{path:path}", fhir_endpoint, methods=[*METHODS, "OPTIONS"])
    return app


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals under /fhir: OperationOutcomes. A method no route
    takes (TRACE…) goes through the FHIR checks like any other: 401, 404, then 405."""
    assert isinstance(exc, StarletteHTTPException)
    path = request.url.path
    if path != "/fhir" and not path.startswith("/fhir/"):
        return await http_exception_handler(request, exc)
    if exc.status_code == 405:
        return await fhir_endpoint(request, path[len("/fhir/"):])
    kind = ErrorKind.NOT_FOUND if exc.status_code == 404 else ErrorKind.INVALID
    rendered = render_error(FhirError(kind, f"{request.method} {request.url.path}: "
                                      f"{exc.detail}", headers=dict(exc.headers or {})))
    rendered.status = exc.status_code
    return _respond(rendered, request.headers.get("x-request-id") or str(uuid.uuid4()))


async def fhir_endpoint(request: Request, path: str = "") -> Response:
    """Every FHIR interaction that :class:`ReadFastPath` does not take."""
    core: FhirServer = request.app.state.fhir
    settings: Settings = request.app.state.settings
    request_id = request.headers.get("x-request-id") or str(uuid.uuid4())
    base_url = settings.base_url or str(request.base_url).rstrip("/") + "/fhir"
    headers = {k.lower(): v for k, v in request.headers.items()}
    params = parse_qsl(request.url.query, keep_blank_values=True)
    context = _context(request_id, request.client, headers)
    try:
        if core.security is not None and not _public(request.method, path):
            try:  # authenticate before reading a body (the core checks again)
                context.principal = core.security.validator.principal(
                    headers.get("authorization"))
            except FhirError:
                return _respond(await run_in_threadpool(
                    _handle_and_render, core,
                    _unauthenticated(request.method, path, params, headers, base_url,
                                     context)), request_id)
        req = await _request(request, core, path, params, headers, base_url, context)
    except FhirError as exc:
        if exc.kind == ErrorKind.METHOD_NOT_ALLOWED:
            exc.headers.setdefault("Allow", allowed(path))
        return _respond(render_error(exc), request_id)
    if req.interaction == Interaction.READ:
        rendered = serve_inline(core, req)
    else:  # under the time budget, stopped if the client leaves (issue 27 item 7)
        # the time budget is a query's: a write (a final report waits for its CDA
        # checks, a transaction may be long) is never cut half-way by it — the
        # reads it makes inside its write unit included
        reading = req.interaction in READS or (
            req.interaction == Interaction.OPERATION and req.method in ("GET", "HEAD"))
        rendered = await run_watched(
            request.receive, Budget(core.limits.query_timeout if reading else None,
                            core.limits.max_includes),
            _handle_and_render, core, req)
    return _respond(rendered, request_id, head=request.method == "HEAD")


def _unauthenticated(method: str, path: str, params: list[tuple[str, str]],
                     headers: dict[str, str], base_url: str,
                     context: RequestContext) -> FhirRequest:
    """The request a refused token is answered (401) and audited for (R-SEC-1, R-SEC-3),
    also on a path the table does not take."""
    try:
        return route(method, path, params, headers=headers, base_url=base_url,
                     context=context)
    except FhirError:  # not routable: still 401 first, and audited
        return FhirRequest(Interaction.OPERATION, params=params, headers=headers,
                           base_url=base_url, context=context, method=method)


async def _request(request: Request, core: FhirServer, path: str,
                   params: list[tuple[str, str]], headers: dict[str, str], base_url: str,
                   context: RequestContext) -> FhirRequest:
    """The type check (404), the body (read under its limit) and the route."""
    _check_type(path)
    # the limit is enforced while the body arrives (issue 27 item 8)
    raw = b"" if request.method in ("GET", "HEAD") else \
        await read_body(request, core.limits.max_body_bytes)
    body, is_form = _parse_body(raw, headers.get("content-type", ""), request.method, path)
    del raw  # the parsed body only from here on
    if is_form:
        params = params + body
        body = None
    return route(request.method, path, params, body=body, headers=headers,
                 base_url=base_url, context=context)


def create_asgi(settings: Settings, *, server: FhirServer, mounts: Sequence[Mount] = ()
                ) -> Any:
    """The served ASGI application: the read fast path in front of the FastAPI app."""
    bound_malloc()  # large buffers go back to the system once freed (issue 27 item 9)
    app = create_app(settings, server=server, mounts=mounts)
    warm(app.state.fhir)  # the schematrons compile now, not on the first final report
    # HTTP metrics and the JSON access line (issue 29), outermost
    return metrics.wrap(ReadFastPath(app, app.state.fhir, settings.base_url),
                        settings.log_format)


# the interactions a query time budget applies to (TELEIMG_QUERY_TIMEOUT)
READS = frozenset({Interaction.READ, Interaction.VREAD, Interaction.SEARCH_TYPE,
                   Interaction.SEARCH_SYSTEM, Interaction.SEARCH_COMPARTMENT,
                   Interaction.HISTORY_INSTANCE, Interaction.HISTORY_TYPE,
                   Interaction.HISTORY_SYSTEM})


def _context(request_id: str, client: Any, headers: dict[str, str]) -> RequestContext:
    address = client[0] if client else None
    return metrics.attach(RequestContext(request_id=request_id, client_address=address,
                                         user_agent=headers.get("user-agent")))


def _base_from_scope(scope: Any, headers: dict[str, str]) -> str:
    host = headers.get("host") or "localhost"
    return f"{scope.get('scheme', 'http')}://{host}/fhir"


def smart_configuration_document(settings: Settings) -> dict[str, Any]:
    """SMART App Launch discovery (:mod:`fhir_server.http.smart`)."""
    return smart.smart_configuration_document(settings)


def _handle_and_render(core: FhirServer, req: FhirRequest) -> Rendered:
    resp = core.handle(req)
    req.body = None  # not needed to render: a large body is freed before its copy (item 8)
    return core.render(req, resp)


def serve_inline(core: FhirServer, req: FhirRequest) -> Rendered:
    """The one read path (ADR 0004): a read is a single indexed lookup of stored bytes,
    cheaper in the event loop than a thread hop; the same ``handle`` + ``render`` as
    every other interaction (authentication, authorisation, audit, formats)."""
    return core.render(req, core.handle(req))


class ReadFastPath:
    """ASGI entry for the queries: ``GET /fhir/...`` that the route table names a read,
    vread, search or history of a type we serve (ADR 0004; issue 32).

    A plain read is served in the event loop by :func:`serve_inline`; the others run in a
    worker thread under their time budget (:func:`run_watched`) — both minus FastAPI's
    routing, dependency solving and request objects, which cost more CPU than a
    one-result search. Anything else — a path or parameters the table refuses, whose
    401/404/405/400 order is the endpoint's — goes to the FastAPI app.
    """

    def __init__(self, app: Any, core: FhirServer, base_url: str | None) -> None:
        self.app = app
        self.core = core
        self.base_url = base_url
        # with CORS on, a browser's request (it sends Origin) goes through the middleware
        state = getattr(app, "state", None)
        self.cors = bool(getattr(state, "cors", False)) if state is not None else False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        req = self._query(scope)
        if req is None:
            await self.app(scope, receive, send)
            return
        if req.interaction == Interaction.READ:
            rendered = serve_inline(self.core, req)
        else:
            rendered = await run_watched(
                receive, Budget(self.core.limits.query_timeout, self.core.limits.max_includes),
                _handle_and_render, self.core, req)
        request_id = req.context.request_id or ""
        out = [(k.lower().encode("latin-1"), v.encode("latin-1"))
               for k, v in rendered.headers.items()]
        out.append((b"x-request-id", request_id.encode("latin-1")))
        if self.cors:
            out.append((b"vary", b"Origin"))
        if rendered.body:
            out.append((b"content-type", rendered.content_type.encode()))
        out.append((b"content-length", str(len(rendered.body)).encode()))
        await send({"type": "http.response.start", "status": rendered.status, "headers": out})
        await send({"type": "http.response.body", "body": rendered.body})

    def _query(self, scope: Any) -> FhirRequest | None:
        """The request, when this is a query the fast path takes."""
        if scope["type"] != "http" or scope["method"] != "GET" or \
                (self.cors and any(k == b"origin" for k, _ in scope["headers"])):
            return None
        path: str = scope["path"]
        if not path.startswith("/fhir/"):
            return None
        query: bytes = scope["query_string"]
        target = None if query else read_target(path[6:])
        first = path[6:].split("/", 1)[0]
        if target is None and not (first.startswith("_") or is_supported(first)):
            return None  # the endpoint's 404 (or its /metadata, $operations)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = headers.get("x-request-id") or str(uuid.uuid4())
        context = _context(request_id, scope.get("client"), headers)
        base_url = self.base_url or _base_from_scope(scope, headers)
        if target is not None:
            return FhirRequest(Interaction.READ, *target, headers=headers, base_url=base_url,
                               context=context)
        try:
            req = route("GET", path[6:], parse_qsl(query.decode("latin-1"),
                                                   keep_blank_values=True),
                        headers=headers, base_url=base_url, context=context)
        except FhirError:
            return None  # the endpoint answers, in its order
        return req if req.interaction in READS else None
