"""The console's session: an encrypted, authenticated cookie (Fernet: AES-CBC + HMAC),
HttpOnly, SameSite=Lax, Secure over https; the CSRF token it carries is required on every
POST (a hidden form field or htmx's ``X-CSRF-Token`` header), OWASP's synchronizer
pattern. The cookie holds the user's access token: the page calls the core with it
(:mod:`adapters.console.fhir`), so the session never grants more than the token does and
ends when it expires. Nothing is kept server side: every worker reads the same cookie."""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from fastapi import Request
from fastapi.responses import Response

SESSION = "teleimg_console"
PENDING = "teleimg_console_pending"  # before sign-in: CSRF of the sign-in form, OIDC state
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
PENDING_SECONDS = 600


def key_from(secret: str, data_dir: Path) -> bytes:
    """The Fernet key: from ``TELEIMG_CONSOLE_SECRET``, else one generated once into the
    data directory (development; a file lock: several workers start at once)."""
    if secret:
        return base64.urlsafe_b64encode(hashlib.sha256(secret.encode()).digest())
    path = data_dir / "console" / "session.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.parent / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not path.exists():
                tmp = path.with_suffix(".tmp")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(Fernet.generate_key())
                tmp.replace(path)
    return path.read_bytes().strip()


@dataclass
class Session:
    """A signed-in user's session: the access token, the CSRF token, when it ends."""

    token: str
    csrf: str
    expires: int  # epoch seconds: the token's expiry or the session length, the sooner
    id_token: str = ""  # for the issuer's end-session endpoint

    def as_dict(self) -> dict[str, Any]:
        return {"t": self.token, "c": self.csrf, "e": self.expires, "i": self.id_token}


class Cookies:
    """Encrypts and reads the console's cookies."""

    def __init__(self, key: bytes, session_minutes: int) -> None:
        self.fernet = Fernet(key)
        self.session_seconds = session_minutes * 60

    def _seal(self, data: dict[str, Any]) -> str:
        return self.fernet.encrypt(json.dumps(data, separators=(",", ":")).encode()).decode()

    def _open(self, value: str | None, ttl: int) -> dict[str, Any] | None:
        if not value:
            return None
        try:
            data = json.loads(self.fernet.decrypt(value.encode(), ttl=ttl))
        except (InvalidToken, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def session(self, request: Request) -> Session | None:
        data = self._open(request.cookies.get(SESSION), self.session_seconds)
        if data is None or not isinstance(data.get("t"), str) or \
                not isinstance(data.get("c"), str) or not isinstance(data.get("e"), int):
            return None
        if data["e"] <= time.time():
            return None
        return Session(data["t"], data["c"], data["e"], str(data.get("i") or ""))

    def start(self, response: Response, request: Request, token: str, token_expiry: int,
              id_token: str = "") -> Session:
        """A new session (a new CSRF token too: no fixation across a sign-in)."""
        expires = min(token_expiry, int(time.time()) + self.session_seconds)
        session = Session(token, secrets.token_urlsafe(24), expires, id_token)
        response.set_cookie(SESSION, self._seal(session.as_dict()),
                            max_age=max(expires - int(time.time()), 0), path="/console",
                            httponly=True, secure=secure(request), samesite="lax")
        response.delete_cookie(PENDING, path="/console")
        return session

    def end(self, response: Response) -> None:
        response.delete_cookie(SESSION, path="/console")

    def pending(self, request: Request) -> dict[str, Any]:
        """The pre-sign-in state (its CSRF token, an OIDC flow's state and verifier)."""
        return self._open(request.cookies.get(PENDING), PENDING_SECONDS) or {}

    def keep_pending(self, response: Response, request: Request,
                     data: dict[str, Any]) -> None:
        response.set_cookie(PENDING, self._seal(data), max_age=PENDING_SECONDS,
                            path="/console", httponly=True, secure=secure(request),
                            samesite="lax")


def secure(request: Request) -> bool:
    """Secure cookies when the browser speaks https (directly or behind a proxy that
    says so with X-Forwarded-Proto)."""
    return request.url.scheme == "https" or \
        request.headers.get("x-forwarded-proto", "").lower() == "https"


def new_csrf() -> str:
    return secrets.token_urlsafe(24)


def same(expected: str, given: str | None) -> bool:
    """Constant-time comparison of CSRF tokens."""
    return bool(expected) and given is not None and \
        hmac.compare_digest(expected.encode(), given.encode())
