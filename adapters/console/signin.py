"""Signing in and out of the console (issue 30; R-SEC-1, R-SEC-3).

Production: OpenID Connect authorization code flow with PKCE (RFC 7636, S256) against the
configured issuer, Pro Santé Connect style (``authlib`` makes the verifier, state, nonce
and S256 challenge): they wait in an encrypted pending cookie, the code is exchanged at
the token endpoint (one form POST), and the access token is validated by the core's own
validator (issuer, audience, signature, lifetime, roles) before a session starts.
Development (the development issuer on, never with ``TELEIMG_ENV=production``): a page
picks a development identity (role, RPPS, structure) and the development issuer mints
its token. Each sign-in, refused
sign-in and sign-out is a BALP AuditEvent (DICOM 110114 User Authentication, 110122
Login / 110123 Logout) appended to the audit chain at once."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
from authlib.common.security import generate_token
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from jose import jwt
from starlette.concurrency import run_in_threadpool

from adapters.console import session as cookies
from adapters.console.web import PREFIX, Console, Posted, SignedIn, User, console, signed_in
from fhir_server.audit import balp
from fhir_server.core.errors import FhirError
from fhir_server.core.model import FhirRequest, Interaction, RequestContext
from fhir_server.security.devissuer import DevIssuer
from fhir_server.security.principal import Principal
from fhir_server.security.roles import ROLES

router = APIRouter()
DCM = "http://dicom.nema.org/resources/ontology/DCM"
USER_AUTHENTICATION = {"system": DCM, "code": "110114", "display": "User Authentication"}
LOGIN = {"system": DCM, "code": "110122", "display": "Login"}
LOGOUT = {"system": DCM, "code": "110123", "display": "Logout"}
# the roles a person signs in with (a connector never does: R-SEC-1)
HUMAN_ROLES = tuple(code for code, role in ROLES.items() if not role.system)


@dataclass(frozen=True)
class Identity:
    """A development identity offered on the sign-in page (the demo directory's people,
    ``demo/loop.py``: the same RPPS and FINESS, so their care relationships hold)."""

    label: str
    role: str
    rpps: str = ""  # idNatPs ("8" + RPPS)
    name: str = ""
    finess: str = ""


IDENTITIES = (
    Identity("Dr Anne IMAGEUR — téléradiologue", "remote-imager", "810000000101",
             "Anne IMAGEUR"),
    Identity("Dr Paul DEMANDEUR — médecin demandeur", "requesting-physician", "810000000103",
             "Paul DEMANDEUR"),
    Identity("Sophie MERM — manipulatrice, CH de proximité", "radiographer", "810000000199",
             "Sophie MERM", "750000001"),
    Identity("Lucie SECRÉTAIRE — secrétariat, CH de proximité", "secretary", "",
             "Lucie SECRÉTAIRE", "750000001"),
    Identity("Marc INTERFACES — administrateur PACS / interfaces", "admin", "",
             "Marc INTERFACES"),
    Identity("Claire AUDIT — auditrice (DPO)", "auditor", "", "Claire AUDIT"),
)


def _local(target: str | None) -> str | None:
    """Only a path of the console is a place to go back to (no open redirect)."""
    if target and target.startswith(PREFIX) and not target.startswith("//") and \
            "\\" not in target:
        return target
    return None


def _oidc(here: Console) -> bool:
    auth = here.settings.auth
    return bool(auth.authorize_url and auth.token_url)


@router.get("/connexion", name="console-sign-in")
def sign_in_page(request: Request, suite: str = "", erreur: str = "") -> Response:
    here = console(request)
    pending = here.cookies.pending(request)
    csrf = str(pending.get("csrf") or cookies.new_csrf())
    answer = here.render(request, "signin.html", None, csrf=csrf, suite=_local(suite) or "",
                         oidc=_oidc(here), identities=IDENTITIES, human_roles=HUMAN_ROLES,
                         error=erreur, title="Connexion")
    here.cookies.keep_pending(answer, request, {**pending, "csrf": csrf})
    return answer


@router.post("/connexion/dev", name="console-sign-in-dev")
async def sign_in_dev(request: Request, form: Posted) -> Response:
    """Development identity -> a token of the development issuer -> a session."""
    here = console(request)
    if not here.config.dev_signin:
        return _back(request, "La connexion de développement est désactivée (production).")
    role = str(form.get("role") or "")
    if role not in HUMAN_ROLES:  # a connector's role, or none: a refused sign-in
        await run_in_threadpool(audit, here, request, None, LOGIN, 403,
                                "development sign-in: not a person's role")
        return _back(request, "Choisissez le rôle d'une personne (un connecteur ne se "
                              "connecte pas à la console).")
    rpps = str(form.get("rpps") or "").strip() or None
    finess = [f for f in str(form.get("finess") or "").split() if f]
    name = str(form.get("name") or "").strip() or None
    issuer = DevIssuer(here.settings.data_dir, here.settings.auth.audience)
    token = issuer.mint(sub=f"rpps:{rpps}" if rpps else f"console:{role}:{uuid.uuid4().hex[:8]}",
                        roles=[role], scopes=["openid", "user/*.cruds"], id_nat_ps=rpps,
                        name=name, finess=finess or None, acr="eidas2",
                        lifetime=here.config.session_minutes * 60,
                        extra={"azp": "teleimagerie-console"})
    return await _start(request, token, "", str(form.get("suite") or ""))


@router.get("/connexion/oidc", name="console-sign-in-oidc")
def sign_in_oidc(request: Request, suite: str = "") -> Response:
    """To the issuer's authorization endpoint (code flow + PKCE S256, state, nonce)."""
    here = console(request)
    if not _oidc(here):
        return _back(request, "Aucun fournisseur d'identité n'est configuré "
                              "(TELEIMG_AUTH_AUTHORIZE_URL, TELEIMG_AUTH_TOKEN_URL).")
    verifier, state, nonce = generate_token(64), generate_token(32), generate_token(32)
    query = {"response_type": "code", "client_id": here.config.client_id,
             "redirect_uri": _redirect_uri(here, request), "scope": here.config.scopes,
             "state": state, "nonce": nonce, "code_challenge_method": "S256",
             "code_challenge": create_s256_code_challenge(verifier),
             "acr_values": " ".join(here.settings.auth.strong_acr)}
    authorize = str(here.settings.auth.authorize_url)
    answer = RedirectResponse(f"{authorize}{'&' if '?' in authorize else '?'}"
                              f"{urlencode(query)}", status_code=303)
    pending = here.cookies.pending(request)
    here.cookies.keep_pending(answer, request, {
        **pending, "csrf": pending.get("csrf") or cookies.new_csrf(), "state": state,
        "nonce": nonce, "verifier": verifier, "suite": _local(suite) or ""})
    return answer


@router.get("/connexion/retour", name="console-sign-in-callback")
async def sign_in_callback(request: Request, code: str = "", state: str = "",
                           error: str = "", error_description: str = "") -> Response:
    """The issuer's redirect: the state checked, the code exchanged (with the verifier)."""
    here = console(request)
    pending = here.cookies.pending(request)
    if error:
        await run_in_threadpool(audit, here, request, None, LOGIN, 401,
                                f"identity provider: {error}")
        return _back(request, f"Le fournisseur d'identité a refusé la connexion ({error}"
                              f"{' : ' + error_description if error_description else ''}).")
    if not state or not cookies.same(str(pending.get("state") or ""), state) or not code:
        return _back(request, "La connexion a expiré ou ne correspond à aucune demande "
                              "(state) : recommencez.")
    form = {"grant_type": "authorization_code", "code": code,
            "redirect_uri": _redirect_uri(here, request), "client_id": here.config.client_id,
            "code_verifier": str(pending.get("verifier") or "")}
    if here.config.client_secret:  # a confidential client (client_secret_post)
        form["client_secret"] = here.config.client_secret
    try:
        async with httpx.AsyncClient(timeout=15) as client:
            answer = await client.post(str(here.settings.auth.token_url), data=form,
                                       headers={"Accept": "application/json"})
        answer.raise_for_status()
        tokens: dict[str, Any] = answer.json()
    except (httpx.HTTPError, ValueError) as exc:  # said and audited, no detail logged
        await run_in_threadpool(audit, here, request, None, LOGIN, 401,
                                f"token endpoint: {type(exc).__name__}")
        return _back(request, "Le fournisseur d'identité n'a pas délivré de jeton.")
    token = str(tokens.get("access_token") or "")
    id_token = str(tokens.get("id_token") or "")
    if id_token and not _nonce_matches(id_token, str(pending.get("nonce") or "")):
        await run_in_threadpool(audit, here, request, None, LOGIN, 401, "nonce mismatch")
        return _back(request, "La réponse du fournisseur d'identité ne correspond pas à la "
                              "demande (nonce) : recommencez.")
    return await _start(request, token, id_token, str(pending.get("suite") or ""))


def _nonce_matches(id_token: str, nonce: str) -> bool:
    """The ID token's nonce (its signature is the provider's; the session rests on the
    access token, which the core validates)."""
    try:
        return bool(nonce) and jwt.get_unverified_claims(id_token).get("nonce") == nonce
    except Exception:
        return False


async def _start(request: Request, token: str, id_token: str, suite: str) -> Response:
    """The token validated by the core, the session started, the sign-in audited."""
    here = console(request)
    assert here.core.security is not None
    try:
        principal = here.core.security.validator.principal(f"Bearer {token}")
    except FhirError as exc:
        message = exc.issues[0].diagnostics if exc.issues else "jeton refusé"
        await run_in_threadpool(audit, here, request, None, LOGIN, exc.status, message)
        return _back(request, f"Jeton refusé : {message}")
    if principal.is_system:
        await run_in_threadpool(audit, here, request, principal, LOGIN, 403,
                                "a system identity cannot sign in to the console")
        return _back(request, "Un connecteur (rôle système) ne se connecte pas à la console.")
    expiry = jwt.get_unverified_claims(token).get("exp")
    await run_in_threadpool(audit, here, request, principal, LOGIN, 200, None)
    session = cookies.Session(token, "", 0)
    user = User(principal, session, here.fhir(request, principal, token))
    answer = RedirectResponse(_local(suite) or here.home(user), status_code=303)
    here.cookies.start(answer, request, token, int(expiry) if isinstance(expiry, int | float)
                       else 0, id_token)
    return answer


@router.post("/deconnexion", name="console-sign-out")
async def sign_out(request: Request, form: Posted) -> Response:
    here = console(request)
    answer = RedirectResponse(f"{PREFIX}/connexion", status_code=303)
    try:
        user = signed_in(request)
    except Exception:
        here.cookies.end(answer)
        return answer
    await run_in_threadpool(audit, here, request, user.principal, LOGOUT, 200, None)
    here.cookies.end(answer)
    return answer


@router.get("/profil", name="console-profile")
def profile(request: Request, user: SignedIn) -> Response:
    """Who the console takes the user for (every role, even one without pages)."""
    here = console(request)
    return here.render(request, "profile.html", user, title="Mon profil",
                       expires=user.session.expires)


def _back(request: Request, message: str) -> Response:
    return RedirectResponse(f"{PREFIX}/connexion?{urlencode({'erreur': message})}",
                            status_code=303)


def _redirect_uri(here: Console, request: Request) -> str:
    return here.config.redirect_url or str(request.url_for("console-sign-in-callback"))


def audit(here: Console, request: Request, principal: Principal | None,
          subtype: dict[str, str], status: int, diagnostics: str | None) -> None:
    """A BALP user-authentication AuditEvent (login / logout, its outcome), appended at
    once (R-SEC-3): the agents and source as for any interaction of this user."""
    if here.core.audit is None:
        return
    context = RequestContext(request_id=request.headers.get("x-request-id") or
                             str(uuid.uuid4()), principal=principal, source="console",
                             client_address=request.client[0] if request.client else None,
                             user_agent=request.headers.get("user-agent"))
    req = FhirRequest(Interaction.OPERATION, base_url=here.base_url(request),
                      context=context, method="POST")
    events = balp.build(req, status, diagnostics, None, here.core.name)
    for event in events:
        event["type"] = USER_AUTHENTICATION
        event["subtype"] = [subtype]
    here.core.audit.record(events, durable=True)
