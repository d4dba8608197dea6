"""The console's settings (``TELEIMG_CONSOLE_*``, README "Console")."""

from __future__ import annotations

import os
from dataclasses import dataclass

from fhir_server.config import Settings


@dataclass(frozen=True)
class ConsoleSettings:
    """Sign-in and session. Production signs in over OpenID Connect (authorization code
    + PKCE) against the configured issuer (``TELEIMG_AUTH_AUTHORIZE_URL`` /
    ``TELEIMG_AUTH_TOKEN_URL``); development mode (the development issuer on) offers a
    page that picks a development identity."""

    enabled: bool = True
    # the key that encrypts the session cookie; empty: one kept in the data directory
    # (development) — production must set it, shared by every worker and host
    secret: str = ""
    client_id: str = "teleimagerie-console"
    client_secret: str = ""  # empty: a public client (PKCE only)
    scopes: str = "openid user/*.cruds"
    # the public URL of the console's callback; empty: derived from the request
    redirect_url: str = ""
    session_minutes: int = 480  # a working day; the token's own expiry ends it sooner
    poll_seconds: int = 15  # live worklist refresh (htmx polling)
    dev_signin: bool = True  # the development-identity page (the dev issuer on only)
    # the image viewer of a study (DRIMbox, IHE IID, OHIF…): a URL template with {uid}
    # (Study Instance UID) and {wado} (the study Endpoint's address); empty: the
    # Endpoint's WADO-RS study URL ({wado}/studies/{uid})
    viewer_url: str = ""

    @classmethod
    def from_env(cls, settings: Settings) -> ConsoleSettings:
        env = os.environ
        secret = env.get("TELEIMG_CONSOLE_SECRET", "")
        if settings.production and not secret:
            raise SystemExit("TELEIMG_ENV=production needs TELEIMG_CONSOLE_SECRET (the key "
                             "of the console's session cookie), or TELEIMG_CONSOLE=off")
        return cls(
            enabled=env.get("TELEIMG_CONSOLE", "on").lower() not in ("off", "0", "no"),
            secret=secret,
            client_id=env.get("TELEIMG_CONSOLE_CLIENT_ID", "teleimagerie-console"),
            client_secret=env.get("TELEIMG_CONSOLE_CLIENT_SECRET", ""),
            scopes=env.get("TELEIMG_CONSOLE_SCOPES", "openid user/*.cruds"),
            redirect_url=env.get("TELEIMG_CONSOLE_REDIRECT_URL", ""),
            session_minutes=int(env.get("TELEIMG_CONSOLE_SESSION_MINUTES", "480")),
            poll_seconds=int(env.get("TELEIMG_CONSOLE_POLL_SECONDS", "15")),
            dev_signin=settings.auth.dev_issuer,
            viewer_url=env.get("TELEIMG_CONSOLE_VIEWER_URL", ""))
