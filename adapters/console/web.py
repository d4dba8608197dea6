"""The console on the HTTP app (a :data:`fhir_server.http.app.Mount`, issue 30): static
assets under ``/console/static``, sign-in (:mod:`adapters.console.signin`) and the pages
of :mod:`adapters.console.pages`, each module of that package adding its routes
(``router``) and its navigation entries (``NAV``).

A page is a FastAPI route taking ``user: SignedIn`` (or
``Annotated[User, Depends(requires(...roles))]``); it reads and writes only through
``user.fhir`` (:class:`adapters.console.fhir.Fhir`, the core's ``handle``) and answers
``console(request).render(request, "page.html", user, ...)``. A POST takes
``form: Posted``, which checks the CSRF token."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import jinja2
from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData

from adapters.console import session as cookies
from adapters.console.fhir import Fhir
from adapters.console.settings import ConsoleSettings
from fhir_server.config import Settings
from fhir_server.core.errors import FhirError
from fhir_server.security.principal import Principal
from fhir_server.security.roles import ROLES
from fhir_server.server.dispatch import FhirServer

HERE = Path(__file__).resolve().parent
PREFIX = "/console"
STATIC = f"{PREFIX}/static"
PARIS = ZoneInfo("Europe/Paris")
# the answers' security headers: only our own scripts and styles (no CDN, no inline
# script), never framed, never cached (patient data)
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "style-src 'self'; script-src 'self'; frame-ancestors 'none'; "
                               "form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store", "X-Frame-Options": "DENY"}


@dataclass(frozen=True)
class Nav:
    """A navigation entry: shown to a user holding one of ``roles``."""

    label: str
    href: str
    roles: frozenset[str]
    order: int = 50


@dataclass
class User:
    """The signed-in user of one request: their validated principal, their session and
    their client of the core."""

    principal: Principal
    session: cookies.Session
    fhir: Fhir

    @property
    def roles(self) -> tuple[str, ...]:
        return self.principal.roles

    @property
    def csrf(self) -> str:
        return self.session.csrf

    @property
    def display(self) -> str:
        return self.principal.display

    def has(self, *roles: str) -> bool:
        return any(r in self.principal.roles for r in roles)

    @property
    def role_titles(self) -> str:
        return ", ".join(ROLES[r].title for r in self.roles if r in ROLES)


class SignInRequired(Exception):
    """No valid session: to the sign-in page, then back to ``then``."""

    def __init__(self, then: str) -> None:
        super().__init__(then)
        self.then = then


class Refused(Exception):
    """A page the user's roles do not open (403, said in French)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Console:
    """What every page needs: the core, the settings, the templates, the cookies and the
    navigation collected from the page modules."""

    def __init__(self, core: FhirServer, settings: Settings, config: ConsoleSettings) -> None:
        self.core = core
        self.settings = settings
        self.config = config
        self._cookies: cookies.Cookies | None = None
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                                 autoescape=True, undefined=jinja2.StrictUndefined,
                                 trim_blocks=True, lstrip_blocks=True)
        env.filters.update(when=when, day=day, ago=ago)
        env.globals.update(static=static, prefix=PREFIX, roles=ROLES)
        self.templates = Jinja2Templates(env=env)
        self.nav: list[Nav] = []

    @property
    def cookies(self) -> cookies.Cookies:
        """The cookie sealer, its key read (or made) at the first request, not at mount."""
        if self._cookies is None:
            self._cookies = cookies.Cookies(
                cookies.key_from(self.config.secret, self.settings.data_dir),
                self.config.session_minutes)
        return self._cookies

    def base_url(self, request: Request) -> str:
        return self.settings.base_url or str(request.base_url).rstrip("/") + "/fhir"

    def fhir(self, request: Request, principal: Any, token: str) -> Fhir:
        return Fhir(self.core, principal, token, self.base_url(request),
                    request.client[0] if request.client else None,
                    request.headers.get("user-agent"))

    def nav_for(self, user: User | None) -> list[Nav]:
        if user is None:
            return []
        return sorted((n for n in self.nav if user.has(*n.roles)),
                      key=lambda n: (n.order, n.label))

    def home(self, user: User) -> str:
        """The first page of the user's navigation (the role's home)."""
        entries = self.nav_for(user)
        return entries[0].href if entries else f"{PREFIX}/profil"

    def render(self, request: Request, name: str, user: User | None, status: int = 200,
               headers: dict[str, str] | None = None, **context: Any) -> HTMLResponse:
        """``templates/name`` with the layout's context: ``user``, ``nav``, ``csrf``,
        ``path``, ``config``, ``dev`` (development sign-in on)."""
        answer = self.templates.TemplateResponse(request, name, {
            "user": user, "nav": self.nav_for(user), "csrf": user.csrf if user else
            context.pop("csrf", ""), "path": request.url.path, "config": self.config,
            "dev": self.config.dev_signin, "now": datetime.now(UTC), **context},
            status_code=status, headers={**HEADERS, **(headers or {})})
        return answer


def console(request: Request) -> Console:
    """The console of the app (a FastAPI dependency)."""
    found: Console = request.app.state.console
    return found


def signed_in(request: Request) -> User:
    """The signed-in user (a FastAPI dependency): the session cookie's token, validated
    again by the core's validator (its expiry, issuer, signature); otherwise to the
    sign-in page."""
    here = console(request)
    session = here.cookies.session(request)
    then = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if session is None or here.core.security is None:
        raise SignInRequired(then)
    try:
        principal = here.core.security.validator.principal(f"Bearer {session.token}")
    except FhirError:
        raise SignInRequired(then) from None
    return User(principal, session, here.fhir(request, principal, session.token))


def requires(*roles: str) -> Callable[[Request], User]:
    """A dependency: the signed-in user, who must hold one of ``roles`` (403 otherwise).
    The page still reads only through the core, which has the last word."""

    def dependency(request: Request) -> User:
        user = signed_in(request)
        if not user.has(*roles):
            raise Refused("Cette page n'est pas ouverte à votre rôle ("
                          f"{user.role_titles or ', '.join(user.roles)}).")
        return user

    return dependency


async def posted(request: Request) -> FormData:
    """A POST's form, once its CSRF token (field ``csrf`` or header ``X-CSRF-Token``)
    matches the session's (or, before sign-in, the pending cookie's)."""
    form = await request.form()
    here = console(request)
    session = here.cookies.session(request)
    expected = session.csrf if session else str(here.cookies.pending(request).get("csrf", ""))
    given = request.headers.get(cookies.CSRF_HEADER) or form.get(cookies.CSRF_FIELD)
    if not cookies.same(expected, given if isinstance(given, str) else None):
        raise Refused("Le formulaire a expiré ou ne vient pas de la console (jeton CSRF "
                      "absent ou invalide) : rechargez la page et recommencez.")
    return form


# the page parameters: ``user: SignedIn`` (to the sign-in page otherwise) and a POST's
# ``form: Posted`` (its CSRF token checked); ``Annotated[User, Depends(requires(...))]``
# for a page limited to some roles
SignedIn = Annotated[User, Depends(signed_in)]
Posted = Annotated[FormData, Depends(posted)]


def static(path: str) -> str:
    return f"{STATIC}/{path}"


def when(value: str | None, fmt: str = "%d/%m/%Y %H:%M") -> str:
    """A FHIR instant or dateTime in Paris time, French style ('' when absent)."""
    moment = _parse(value)
    if moment is None:
        return value or ""
    if moment.tzinfo is None:
        return moment.strftime(fmt)
    return moment.astimezone(PARIS).strftime(fmt)


def day(value: str | None) -> str:
    return when(value, "%d/%m/%Y")


def ago(value: str | None) -> str:
    """How far ``value`` is from now, in French ('dans 2 h', 'il y a 15 min')."""
    moment = _parse(value)
    if moment is None or moment.tzinfo is None:
        return ""
    seconds = int(moment.timestamp() - time.time())
    minutes = abs(seconds) // 60
    text = f"{minutes} min" if minutes < 120 else (
        f"{minutes // 60} h" if minutes < 2880 else f"{minutes // 1440} j")
    return f"dans {text}" if seconds >= 0 else f"il y a {text}"


def _parse(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def mount(app: FastAPI, core: FhirServer, settings: Settings) -> None:
    """Adds the console to ``app`` (a :data:`fhir_server.http.app.Mount`)."""
    from adapters.console import pages, signin

    config = ConsoleSettings.from_env(settings)
    if not config.enabled:
        return
    here = Console(core, settings, config)
    app.state.console = here
    app.mount(STATIC, StaticFiles(directory=HERE / "static"), name="console-static")
    # pages for people, not API: kept out of the OpenAPI document
    app.include_router(signin.router, prefix=PREFIX, include_in_schema=False)
    for module in pages.modules():
        here.nav.extend(getattr(module, "NAV", ()))
        app.include_router(module.router, prefix=PREFIX, include_in_schema=False)
    app.add_exception_handler(SignInRequired, _to_sign_in)
    app.add_exception_handler(Refused, _refused)


def _to_sign_in(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignInRequired)
    target = f"{PREFIX}/connexion?suite={quote(exc.then, safe='')}"
    if request.headers.get("hx-request"):  # an htmx fragment: the whole page goes
        return Response(status_code=204, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refused)
    here = console(request)
    try:
        user: User | None = signed_in(request)
    except SignInRequired:
        user = None
    return here.render(request, "error.html", user, status=403, title="Accès refusé",
                       message=exc.message)

