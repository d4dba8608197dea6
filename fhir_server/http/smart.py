"""SMART App Launch / OAuth discovery (issue 29 item 5).

``GET [base]/.well-known/smart-configuration`` (and the same at the server root) is
always complete: the issuer whose tokens the server takes, where its signing keys are
(``jwks_uri``), the authorize and token endpoints when they are configured
(``TELEIMG_AUTH_AUTHORIZE_URL`` / ``TELEIMG_AUTH_TOKEN_URL``), the scopes, capabilities
and PKCE methods. With configured issuers (``TELEIMG_AUTH_ISSUERS``) the first one is
named with its JWKS URL; in development mode without one, the local development issuer,
whose public JWKS the server serves itself at ``[base]/.well-known/jwks.json``.
The CapabilityStatement's ``rest.security`` says the same (:func:`security_of`).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from fhir_server.config import Settings
from fhir_server.core.formats import dumps
from fhir_server.interactions.capabilities import rest_security
from fhir_server.security.devissuer import DEV_ISSUER, DevIssuer

SMART_PATH = "/.well-known/smart-configuration"
JWKS_PATH = "/.well-known/jwks.json"
SCOPES = ["openid", "fhirUser", "launch/patient", "patient/*.rs", "user/*.cruds",
          "system/*.cruds"]
CAPABILITIES = ["launch-standalone", "client-public", "client-confidential-asymmetric",
                "context-standalone-patient", "permission-patient", "permission-user",
                "permission-v1", "permission-v2"]


def fhir_base(settings: Settings, request: Request | None) -> str:
    """The public FHIR base: ``TELEIMG_BASE_URL``, else the request's host + ``/fhir``."""
    if settings.base_url:
        return settings.base_url
    root = str(request.base_url).rstrip("/") if request is not None else ""
    return f"{root}/fhir"


def smart_configuration_document(settings: Settings, base: str = "/fhir") -> dict[str, Any]:
    """The discovery document; ``base``: the public FHIR base (for the dev ``jwks_uri``)."""
    auth = settings.auth
    if auth.issuers:
        issuer, jwks_uri = auth.issuers[0]
    elif auth.dev_issuer:
        issuer, jwks_uri = DEV_ISSUER, f"{base}{JWKS_PATH}"
    else:  # production without an issuer: no token can be accepted; say so plainly
        issuer, jwks_uri = "", ""
    doc: dict[str, Any] = {
        "issuer": issuer,
        "jwks_uri": jwks_uri,
        "grant_types_supported": ["authorization_code", "client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "scopes_supported": SCOPES,
        "response_types_supported": ["code"],
        "capabilities": CAPABILITIES,
        "code_challenge_methods_supported": ["S256"],
    }
    if auth.authorize_url:
        doc["authorization_endpoint"] = auth.authorize_url
    if auth.token_url:
        doc["token_endpoint"] = auth.token_url
    return doc


def security_of(settings: Settings) -> dict[str, Any]:
    """The CapabilityStatement ``rest.security`` of a server run with ``settings``."""
    return rest_security(settings.auth.dev_issuer, settings.auth.authorize_url,
                         settings.auth.token_url, bool(settings.cors_origins))


def dev_jwks(settings: Settings) -> dict[str, Any] | None:
    """The development issuer's public keys (no private member), or None outside
    development mode or before the issuer exists."""
    if not settings.auth.dev_issuer:
        return None
    path = DevIssuer(settings.data_dir).jwks_path
    if not path.exists():
        return None
    keys = json.loads(path.read_text(encoding="utf-8")).get("keys", [])
    private = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
    return {"keys": [{k: v for k, v in key.items() if k not in private} for key in keys]}


def install(app: FastAPI, settings: Settings) -> None:
    """Add the discovery routes (public, JSON) at the root and under ``/fhir`` — before
    the ``/fhir/{path}`` catch-all route is added."""

    async def smart_configuration(request: Request) -> Response:
        doc = smart_configuration_document(settings, fhir_base(settings, request))
        return Response(content=dumps(doc), media_type="application/json",
                        headers={"Cache-Control": "no-cache"})

    async def jwks() -> Response:
        keys = dev_jwks(settings)
        if keys is None:
            return Response(content=dumps({"error": "no development issuer: the issuers' "
                                           "keys are at their own jwks_uri"}),
                            status_code=404, media_type="application/json")
        return Response(content=dumps(keys), media_type="application/jwk-set+json")

    for prefix in ("", "/fhir"):
        app.add_api_route(prefix + SMART_PATH, smart_configuration, methods=["GET"],
                          include_in_schema=False)
        app.add_api_route(prefix + JWKS_PATH, jwks, methods=["GET"], include_in_schema=False)
