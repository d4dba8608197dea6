"""Bearer token validation (R-SEC-1): signature, issuer, audience, lifetime, claims.

python-jose checks signatures and registered claims, but accepts tokens without
``exp``/``aud`` unless told to require them, and would verify an HS256 token against
an RSA public key if the algorithm list allowed it. So the algorithm comes from our
allow-list (asymmetric only), the key type must match it, and every claim we rely on
is required explicitly. Validated tokens are cached until they expire, so a client
re-using its token pays the signature check once.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from jose import jwt
from jose.exceptions import ExpiredSignatureError, JOSEError, JWTClaimsError

from fhir_server.core.errors import ErrorKind, FhirError
from fhir_server.security.jwks import ASYMMETRIC_KTY, KeySet
from fhir_server.security.principal import Principal
from fhir_server.security.scopes import parse_scopes

ALLOWED_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512")


@dataclass(frozen=True)
class Issuer:
    issuer: str
    keys: KeySet
    audience: str | None  # None: the issuer sends no aud; check azp/client_id instead
    clients: tuple[str, ...] = ()  # allowed azp/client_id when there is no audience


@dataclass(frozen=True)
class AuthSettings:
    issuers: tuple[Issuer, ...]
    strong_acr: frozenset[str] = frozenset({"eidas2", "eidas3"})
    leeway: int = 30
    max_token_bytes: int = 16 * 1024
    role_claim: str = "roles"
    cache_size: int = 4096


def unauthorized(message: str, error: str = "invalid_token") -> FhirError:
    challenge = f'Bearer realm="teleimagerie", error="{error}", ' \
                f'error_description="{message.replace(chr(34), chr(39))}"'
    if error == "":
        challenge = 'Bearer realm="teleimagerie"'
    return FhirError(ErrorKind.UNAUTHORIZED, message, headers={"WWW-Authenticate": challenge})


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(value.split()) if " " in value else (value,)
    if isinstance(value, list):
        return tuple(str(v) for v in value if isinstance(v, str | int))
    return ()


class TokenValidator:
    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self._issuers = {i.issuer: i for i in settings.issuers}
        self._cache: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        self._lock = threading.Lock()

    def principal(self, authorization: str | None) -> Principal:
        if not authorization:
            raise unauthorized("an Authorization: Bearer token is required", error="")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise unauthorized("the Authorization header must be 'Bearer <token>'",
                               "invalid_request")
        now = time.time()
        with self._lock:
            hit = self._cache.get(token)
        if hit is not None and hit[1] > now:
            return hit[0]
        principal, expires = self._validate(token)
        with self._lock:
            self._cache[token] = (principal, expires)
            while len(self._cache) > self.settings.cache_size:
                self._cache.popitem(last=False)
        return principal

    def _validate(self, token: str) -> tuple[Principal, float]:
        if len(token) > self.settings.max_token_bytes:
            raise unauthorized(f"token larger than {self.settings.max_token_bytes} bytes")
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.get_unverified_claims(token)
        except JOSEError:
            raise unauthorized("malformed token") from None
        alg = header.get("alg")
        if alg not in ALLOWED_ALGORITHMS:
            raise unauthorized(f"token algorithm {alg!r} is not accepted "
                               f"(allowed: {', '.join(ALLOWED_ALGORITHMS)})")
        iss = claims.get("iss") if isinstance(claims, dict) else None
        issuer = self._issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise unauthorized("token issuer is not trusted")
        key = issuer.keys.get(header.get("kid"))
        if key is None:
            raise unauthorized("token signing key (kid) is unknown to the issuer's JWKS")
        if alg not in ASYMMETRIC_KTY.get(key.get("kty", ""), ()) or \
                key.get("alg", alg) != alg:
            raise unauthorized(f"token algorithm {alg} does not match the issuer key")
        options = {"require_exp": True, "require_iat": True, "require_sub": True,
                   "require_iss": True, "require_aud": issuer.audience is not None,
                   "verify_aud": issuer.audience is not None, "leeway": self.settings.leeway}
        try:
            claims = jwt.decode(token, key, algorithms=[alg], issuer=issuer.issuer,
                                audience=issuer.audience, options=options)
        except ExpiredSignatureError:
            raise unauthorized("token has expired") from None
        except JWTClaimsError as exc:
            raise unauthorized(f"token claims rejected: {exc}") from None
        except JOSEError:
            raise unauthorized("token signature is invalid") from None
        if claims.get("iat", 0) > time.time() + self.settings.leeway:
            raise unauthorized("token issued in the future")
        if issuer.audience is None:
            client = claims.get("azp") or claims.get("client_id")
            if client not in issuer.clients:
                raise unauthorized("token was issued to a client that is not allowed")
        return self._principal(claims, issuer.issuer), float(claims["exp"]) + \
            self.settings.leeway

    def _principal(self, claims: dict[str, Any], issuer: str) -> Principal:
        acr = claims.get("acr") if isinstance(claims.get("acr"), str) else None
        auth_mode = claims.get("authMode") if isinstance(claims.get("authMode"), str) else None
        strong = (acr in self.settings.strong_acr) or (auth_mode in self.settings.strong_acr)
        name_parts = [claims.get("given_name"), claims.get("family_name")]
        name = " ".join(p for p in name_parts if isinstance(p, str)) or \
            (claims.get("name") if isinstance(claims.get("name"), str) else None)
        id_nat = claims.get("SubjectNameID") or claims.get("preferred_username")
        patient = claims.get("patient")
        return Principal(
            sub=str(claims["sub"]), issuer=issuer,
            roles=_strings(claims.get(self.settings.role_claim)),
            scopes=parse_scopes(claims.get("scope") or claims.get("scp")),
            id_nat_ps=str(id_nat) if isinstance(id_nat, str | int) else None,
            name=name, acr=acr, auth_mode=auth_mode, strong=strong,
            patient=patient if isinstance(patient, str) and patient else None,
            client_id=claims.get("azp") or claims.get("client_id"),
            organizations=_strings(claims.get("finess")),
            professions=_strings(claims.get("SubjectRole")))
