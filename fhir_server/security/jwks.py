"""Issuer signing keys from a JWKS file or URL, chosen by ``kid`` (RFC 7517).

Only asymmetric keys are kept: an ``oct`` (shared secret) key in a JWKS would let
anyone holding it mint tokens, so it is dropped with a warning. Unknown ``kid`` values
trigger a refresh, at most once per ``refresh_interval`` seconds (key rotation without
letting bogus tokens hammer the issuer). A ``kid`` that is not a string finds no key
(the token validator refuses it first, R-SEC-1); a JWKS document that is not a JSON
object with a ``keys`` array is ignored with a warning, the keys already loaded kept.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

log = logging.getLogger("teleimagerie.security")

ASYMMETRIC_KTY = {"RSA": ("RS256", "RS384", "RS512"), "EC": ("ES256", "ES384", "ES512")}


class KeySet:
    def __init__(self, location: str, refresh_interval: float = 60.0,
                 fetch_timeout: float = 5.0) -> None:
        self.location = location
        self.refresh_interval = refresh_interval
        self.fetch_timeout = fetch_timeout
        self._keys: dict[str, dict[str, Any]] = {}
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()

    def _fetch(self) -> dict[str, Any]:
        if self.location.startswith(("https://", "http://")):
            with urllib.request.urlopen(self.location, timeout=self.fetch_timeout) as resp:
                data: dict[str, Any] = json.load(resp)
                return data
        data = json.loads(Path(self.location).read_text(encoding="utf-8"))
        return data

    def refresh(self, force: bool = False) -> None:
        with self._lock:
            now = time.monotonic()
            if not force and now - self._loaded_at < self.refresh_interval:
                return
            self._loaded_at = now
            try:
                document = self._fetch()
            except (OSError, ValueError) as exc:
                log.warning("cannot load JWKS from %s: %s", self.location, exc)
                return
            found = document.get("keys") if isinstance(document, dict) else None
            if not isinstance(found, list):
                log.warning("JWKS %s: not a JSON object with a 'keys' array", self.location)
                return
            keys: dict[str, dict[str, Any]] = {}
            for jwk in found:
                if not isinstance(jwk, dict) or jwk.get("kty") not in ASYMMETRIC_KTY:
                    log.warning("JWKS %s: ignoring non-asymmetric key %s", self.location,
                                jwk.get("kid") if isinstance(jwk, dict) else jwk)
                    continue
                if jwk.get("use", "sig") != "sig":
                    continue
                kid = jwk.get("kid", "")
                keys[kid if isinstance(kid, str) else str(kid)] = jwk
            self._keys = keys

    def get(self, kid: object) -> dict[str, Any] | None:
        """The key for ``kid`` (or the only key when the token has no kid); None for a
        ``kid`` that is not a string."""
        if kid is not None and not isinstance(kid, str):
            return None
        if not self._keys:
            self.refresh()
        key = self._find(kid)
        if key is None:
            self.refresh()  # rotation: one rate-limited reload
            key = self._find(kid)
        return key

    def _find(self, kid: str | None) -> dict[str, Any] | None:
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)
