"""The OpenAPI document and the offline API documentation (issue 29 item 4).

``/openapi.json`` describes the real FHIR API: a path per resource type and interaction
and per operation, built from the tables the CapabilityStatement is built from
(:func:`~fhir_server.interactions.capabilities.resource_interactions`,
:func:`~fhir_server.interactions.capabilities.operations`, the search parameter registry),
so the two cannot disagree. The routes FastAPI knows outside ``/fhir`` (STOW-RS, health…)
are added as FastAPI describes them. Every operation id is unique; the bearer scheme is
the default security, ``GET /fhir/metadata`` and the discovery documents need none.

``/docs`` is Swagger UI from the ``swagger-ui-bundle`` package (a dependency): its
assets are served from the installed package at ``/docs/assets/…``, nothing from a CDN.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, HTMLResponse, Response

from fhir_server import FHIR_VERSION, __version__
from fhir_server.interactions.capabilities import (
    Operation,
    operations,
    resource_interactions,
    workflow_operations,
)
from fhir_server.search.compartments import compartments
from fhir_server.search.registry import params_for
from fhir_server.server.dispatch import FhirServer

DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/assets"
FHIR_JSON = "application/fhir+json"
# search result parameters every type takes (search.html#return)
RESULT_PARAMS = ["_count", "_sort", "_include", "_revinclude", "_summary", "_elements",
                 "_total"]
# the operations answered on GET too: they change nothing and need no resource body
READ_ONLY_OPERATIONS = {"everything", "expand", "lookup", "validate-code", "translate",
                        "indicators"}
INTERACTION_SUMMARY = {
    "read": "Read the current version", "vread": "Read a version",
    "update": "Update (or create with a client id)", "patch": "Patch (JSON Patch)",
    "delete": "Delete", "history-instance": "History of one resource",
    "history-type": "History of the type", "create": "Create",
    "search-type": "Search",
}

_RESOURCE = {"type": "object", "required": ["resourceType"],
             "properties": {"resourceType": {"type": "string"}},
             "additionalProperties": True}
_REF = {"$ref": "#/components/schemas/Resource"}
_OUTCOME = {"$ref": "#/components/responses/Error"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {FHIR_JSON: {"schema": schema}}}


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string", "pattern": "^[A-Za-z0-9\\-\\.]{1,64}$"}}


def _query(rtype: str | None) -> list[dict[str, Any]]:
    """The query parameters of a search on ``rtype`` (its search parameters and the
    result parameters), or of a system search (``None``: ``_type`` and the result
    parameters)."""
    names = sorted(params_for(rtype)) if rtype else ["_type"]
    out = [{"name": n, "in": "query", "required": False, "schema": {"type": "string"}}
           for n in names]
    out.extend({"name": n, "in": "query", "required": False, "schema": {"type": "string"}}
               for n in RESULT_PARAMS if n not in names)
    return out


def _op(operation_id: str, summary: str, tag: str, responses: dict[str, Any],
        parameters: list[dict[str, Any]] | None = None, body: dict[str, Any] | None = None,
        interaction: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"operationId": operation_id, "summary": summary, "tags": [tag],
                             "responses": {**responses, "default": _OUTCOME}}
    if parameters:
        entry["parameters"] = parameters
    if body is not None:
        entry["requestBody"] = body
    if interaction:
        entry["x-fhir-interaction"] = interaction
    return entry


def _resource_body(required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {FHIR_JSON: {"schema": _REF},
                                              "application/fhir+xml": {"schema": {
                                                  "type": "string"}}}}


def _add(paths: dict[str, Any], path: str, method: str, entry: dict[str, Any]) -> None:
    paths.setdefault(path, {})[method] = entry


def _type_paths(paths: dict[str, Any], rtype: str, interactions: list[str]) -> None:
    base, one = f"/fhir/{rtype}", f"/fhir/{rtype}/{{id}}"
    rid = [_path_param("id", f"the {rtype} id")]
    ok = {"200": _json(_REF, "the resource or a Bundle")}
    for code in interactions:
        summary = f"{INTERACTION_SUMMARY[code]} ({rtype})"
        oid = f"{code}-{rtype}"
        if code == "read":
            _add(paths, one, "get", _op(oid, summary, rtype, ok, rid, interaction=code))
        elif code == "vread":
            _add(paths, f"{one}/_history/{{vid}}", "get", _op(
                oid, summary, rtype, ok, [*rid, _path_param("vid", "the version id")],
                interaction=code))
        elif code == "update":
            _add(paths, one, "put", _op(oid, summary, rtype, {
                "200": _json(_REF, "updated"), "201": _json(_REF, "created")}, rid,
                _resource_body(), interaction=code))
        elif code == "patch":
            _add(paths, one, "patch", _op(oid, summary, rtype, ok, rid, {
                "required": True, "content": {"application/json-patch+json": {
                    "schema": {"type": "array", "items": {"type": "object"}}}}},
                interaction=code))
        elif code == "delete":
            _add(paths, one, "delete", _op(oid, summary, rtype, {
                "204": {"description": "deleted"}, "200": _json(_REF, "deleted")}, rid,
                interaction=code))
        elif code == "history-instance":
            _add(paths, f"{one}/_history", "get", _op(oid, summary, rtype, ok, rid,
                                                      interaction=code))
        elif code == "history-type":
            _add(paths, f"{base}/_history", "get", _op(oid, summary, rtype, ok,
                                                       interaction=code))
        elif code == "create":
            _add(paths, base, "post", _op(oid, summary, rtype, {
                "201": _json(_REF, "created"), "200": _json(_REF, "already there "
                                                            "(conditional create)")},
                body=_resource_body(), interaction=code))
        elif code == "search-type":
            _add(paths, base, "get", _op(oid, summary, rtype, ok, _query(rtype),
                                         interaction=code))
            _add(paths, f"{base}/_search", "post", _op(
                f"{oid}-post", f"{summary} by POST (form)", rtype, ok, body={
                    "required": False, "content": {"application/x-www-form-urlencoded": {
                        "schema": {"type": "object", "additionalProperties": {
                            "type": "string"}}}}}, interaction=code))
        else:  # a code added to the tables without its path: fail loudly, not silently
            raise ValueError(f"no OpenAPI path for the interaction {code!r}")


def _operation_paths(paths: dict[str, Any], op: Operation, changes: bool) -> None:
    tag = op.rtype or "system"
    body = {"required": op.name == "validate" or changes, "content": {
        FHIR_JSON: {"schema": _REF}}}
    for level in op.levels:
        params: list[dict[str, Any]] = []
        if level == "system":
            path = f"/fhir/${op.name}"
        elif level == "type":
            path = f"/fhir/{op.rtype}/${op.name}"
        else:
            path = f"/fhir/{op.rtype}/{{id}}/${op.name}"
            params = [_path_param("id", f"the {op.rtype} id")]
        oid = f"{op.name}-{level}" + (f"-{op.rtype}" if op.rtype else "")
        summary = f"${op.name} ({op.definition})"
        ok = {"200": _json(_REF, "Parameters, a Bundle or the resource")}
        entry = _op(oid, summary, tag, ok, params, body)
        entry["x-fhir-operation"] = op.definition
        _add(paths, path, "post", entry)
        if op.name in READ_ONLY_OPERATIONS:
            query = [*params, {"name": "parameters", "in": "query", "required": False,
                               "style": "form", "explode": True, "schema": {
                                   "type": "object", "additionalProperties": {
                                       "type": "string"}}}]
            _add(paths, path, "get", {**_op(f"{oid}-get", summary, tag, ok, query),
                                      "x-fhir-operation": op.definition})


def fhir_paths(core: FhirServer) -> dict[str, Any]:
    """The ``/fhir`` paths: from the CapabilityStatement's tables."""
    paths: dict[str, Any] = {}
    ok = {"200": _json(_REF, "a Bundle")}
    _add(paths, "/fhir/metadata", "get", {
        **_op("capabilities", "The CapabilityStatement", "system", {
            "200": _json(_REF, "the CapabilityStatement")}, interaction="capabilities"),
        "security": []})
    _add(paths, "/fhir", "post", _op("transaction", "Transaction or batch Bundle", "system",
                                     ok, body=_resource_body(),
                                     interaction="transaction batch"))
    _add(paths, "/fhir", "get", _op("search-system", "Search across types", "system", ok,
                                    _query(None), interaction="search-system"))
    _add(paths, "/fhir/_search", "post", _op("search-system-post", "Search across types by "
                                             "POST (form)", "system", ok,
                                             interaction="search-system"))
    _add(paths, "/fhir/_history", "get", _op("history-system", "History of every type",
                                             "system", ok, interaction="history-system"))
    for rtype, codes in resource_interactions().items():
        _type_paths(paths, rtype, codes)
    # GET [base]/Patient/[id]/[type]?… for each compartment the statement lists
    for comp in compartments().values():
        members = {"type": "string", "enum": [*sorted(comp.members), "*"]}
        _add(paths, f"/fhir/{comp.code}/{{id}}/{{type}}", "get", {
            **_op(f"search-compartment-{comp.code}", f"Search in a {comp.code}'s compartment "
                  f"({comp.url})", comp.code, ok, [
                      _path_param("id", f"the {comp.code} id"),
                      {"name": "type", "in": "path", "required": True, "schema": members,
                       "description": "a type of the compartment, or * for all"}],
                  interaction="search-compartment"), "x-fhir-compartment": comp.url})
    extra = workflow_operations(core)
    changing = {(t, n) for t, n in extra if t}  # the workflow's transitions
    for op in operations(extra):
        _operation_paths(paths, op, (op.rtype or "", op.name) in changing)
    return paths


def document(app: FastAPI, core: FhirServer) -> dict[str, Any]:
    """The whole OpenAPI document: FastAPI's description of the routes outside ``/fhir``
    and the FHIR paths from the capability tables."""
    others = [r for r in app.routes if not getattr(r, "path", "/fhir").startswith("/fhir")]
    doc = get_openapi(title=app.title, version=__version__, routes=others,
                      description=f"FHIR {FHIR_VERSION} server for French teleradiology. "
                      "The FHIR paths are generated from the CapabilityStatement's tables "
                      "(GET /fhir/metadata); SMART discovery at "
                      "/fhir/.well-known/smart-configuration.")
    doc["paths"] = {**doc.get("paths", {}), **fhir_paths(core)}
    components = doc.setdefault("components", {})
    components.setdefault("schemas", {})["Resource"] = _RESOURCE
    components["responses"] = {"Error": _json(_REF, "an OperationOutcome")}
    components["securitySchemes"] = {"bearer": {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": "an OAuth 2.0 access token of a configured issuer (SMART scopes)"}}
    doc["security"] = [{"bearer": []}]
    return doc


def assets_dir() -> Path:
    """The Swagger UI files of the installed ``swagger-ui-bundle`` package."""
    import swagger_ui_bundle

    return Path(swagger_ui_bundle.swagger_ui_path)


def docs_page(title: str, openapi_url: str) -> str:
    """Swagger UI, every asset local (``/docs/assets/…``)."""
    return f"""<!DOCTYPE html>
<html lang="fr"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<link rel="stylesheet" href="{ASSETS_PATH}/swagger-ui.css">
<link rel="icon" type="image/png" href="{ASSETS_PATH}/favicon-32x32.png"></head>
<body><div id="swagger-ui"></div>
<script src="{ASSETS_PATH}/swagger-ui-bundle.js"></script>
<script src="{ASSETS_PATH}/swagger-ui-standalone-preset.js"></script>
<script src="{ASSETS_PATH}/docs-init.js"></script>
</body></html>
"""


INIT_JS = """window.onload = function () {
  window.ui = SwaggerUIBundle({url: "%s", dom_id: "#swagger-ui", deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "StandaloneLayout", validatorUrl: null});
};
"""


def install(app: FastAPI, core: FhirServer, openapi_url: str = "/openapi.json") -> None:
    """Serve the document at ``openapi_url`` (FastAPI's route, our generator) and
    Swagger UI at ``/docs`` with its assets."""
    cached: dict[str, dict[str, Any]] = {}

    def openapi() -> dict[str, Any]:
        if "doc" not in cached:
            cached["doc"] = document(app, core)
        return cached["doc"]

    app.openapi = openapi  # type: ignore[method-assign]
    files = {p.name: p for p in assets_dir().iterdir() if p.is_file()}

    async def docs() -> HTMLResponse:
        return HTMLResponse(docs_page(f"{app.title} — API", openapi_url))

    async def asset(name: str) -> Response:
        if name == "docs-init.js":
            return Response(INIT_JS % openapi_url, media_type="text/javascript")
        found = files.get(name)
        if found is None:
            return Response(status_code=404)
        return FileResponse(found, headers={"Cache-Control": "public, max-age=86400"})

    app.add_api_route(DOCS_PATH, docs, methods=["GET"], include_in_schema=False)
    app.add_api_route(ASSETS_PATH + "/{name}", asset, methods=["GET"],
                      include_in_schema=False)
