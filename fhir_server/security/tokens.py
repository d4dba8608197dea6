"""Bearer token validation (R-SEC-1): signature, issuer, audience, lifetime, claims.

python-jose checks signatures and registered claims, but accepts tokens without
``exp``/``aud`` unless told to require them, and would verify an HS256 token against
an RSA public key if the algorithm list allowed it. So the algorithm comes from our
allow-list (asymmetric only), the key type must match it, and every claim we rely on
is required explicitly. Validated tokens are cached until they expire, so a client
re-using its token pays the signature check once.

Every header parameter and claim is type-checked before anything uses it (issue 27):
a ``kid`` list, an ``exp`` string or ``1e300``, a ``scope`` number are refusals (401),
never a server error. Then the identity must be coherent (R-SEC-1): a token's roles
are all human or all system (:data:`roles.SYSTEM_ROLES`) and a human role never carries a
``system/`` scope; where an issuer registers its system clients, only those present
system roles (403).
"""

from __future__ import annotations

import math
import re
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
from fhir_server.security.roles import ROLES
from fhir_server.security.scopes import parse_scopes

ALLOWED_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512")
# explicit typing (RFC 8725 §3.11, RFC 9068): an access token, not another kind of JWT
ACCEPTED_TYP = ("jwt", "at+jwt", "application/at+jwt")
# NumericDate (RFC 7519 §2) as we accept it: a finite JSON number up to 9999-12-31
MAX_NUMERIC_DATE = 253402300799
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
SCOPE_CONTEXT = re.compile(r"^(patient|user|system)/")
UNSAFE_IN_HEADER = re.compile(r'[^\x20\x21\x23-\x5b\x5d-\x7e]')  # error_description chars
SHOWN_ALG = re.compile(r"[A-Za-z0-9+-]{1,20}")
# optional claims we read, by expected JSON type ("strings": a string or an array of them)
STRING_CLAIMS = ("jti", "azp", "client_id", "acr", "authMode", "SubjectNameID",
                 "preferred_username", "given_name", "family_name", "name", "patient", "scope")
STRINGS_CLAIMS = ("scp", "finess", "SubjectRole")


@dataclass(frozen=True)
class Issuer:
    issuer: str
    keys: KeySet
    audience: str | None  # None: the issuer sends no aud; check azp/client_id instead
    clients: tuple[str, ...] = ()  # allowed azp/client_id when there is no audience
    # the issuer's registered backend clients (azp/client_id); None: not configured.
    # When set, system roles come only from these and human roles never do (R-SEC-1)
    system_clients: frozenset[str] | None = None


@dataclass(frozen=True)
class AuthSettings:
    issuers: tuple[Issuer, ...]
    strong_acr: frozenset[str] = frozenset({"eidas2", "eidas3"})
    leeway: int = 30
    max_token_bytes: int = 16 * 1024
    role_claim: str = "roles"
    cache_size: int = 4096


def unauthorized(message: str, error: str = "invalid_token") -> FhirError:
    """401 with a Bearer challenge (RFC 6750 §3). The description goes into a header: it
    is printable ASCII only (RFC 6750 §3: %x20-21 / %x23-5B / %x5D-7E), whatever a token
    made the message say — a CR/LF would split the response (issue 27)."""
    description = UNSAFE_IN_HEADER.sub("?", message)
    challenge = f'Bearer realm="teleimagerie", error="{error}", ' \
                f'error_description="{description}"'
    if error == "":
        challenge = 'Bearer realm="teleimagerie"'
    return FhirError(ErrorKind.UNAUTHORIZED, message, headers={"WWW-Authenticate": challenge})


def refused(message: str) -> FhirError:
    """An authentic token whose identity may not act as it asks (403, R-SEC-1)."""
    return FhirError(ErrorKind.FORBIDDEN, message)


def _is_string(value: Any) -> bool:
    return type(value) is str and CONTROL.search(value) is None


def _is_strings(value: Any) -> bool:
    return _is_string(value) or (type(value) is list and all(_is_string(v) for v in value))


def _is_numeric_date(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value) and \
        0 <= value <= MAX_NUMERIC_DATE


def _strings(value: Any) -> tuple[str, ...]:
    """A checked string-or-array claim as a tuple (a string may list values by spaces)."""
    if isinstance(value, str):
        return tuple(value.split())
    if isinstance(value, list):
        return tuple(value)
    return ()


def check_header(header: dict[str, Any]) -> str:
    """The header's ``alg``, once every parameter we act on is of the right type and
    value (RFC 7515 §4.1); 401 otherwise."""
    alg = header.get("alg")
    if type(alg) is not str or alg not in ALLOWED_ALGORITHMS:
        shown = alg if type(alg) is str and SHOWN_ALG.fullmatch(alg) else type(alg).__name__
        raise unauthorized(f"token algorithm {shown!r} is not accepted "
                           f"(allowed: {', '.join(ALLOWED_ALGORITHMS)})")
    if "kid" in header and not _is_string(header["kid"]):
        raise unauthorized("token header 'kid' must be a string")
    typ = header.get("typ")
    if typ is not None and (type(typ) is not str or typ.lower() not in ACCEPTED_TYP):
        raise unauthorized("token header 'typ' must be JWT or at+jwt (an access token)")
    if "crit" in header:  # RFC 7515 §4.1.11: we understand no extension
        raise unauthorized("token header 'crit' names extensions this server does not "
                           "support")
    if "cty" in header:  # a nested JWT (RFC 7519 §5.2) is not an access token
        raise unauthorized("nested tokens (header 'cty') are not accepted")
    return alg


def check_claims(claims: dict[str, Any], role_claim: str) -> None:
    """401 unless every claim we use has its JSON type (RFC 7519 §4.1) and range."""
    for name in ("iss", "sub"):
        if not _is_string(claims.get(name)) or not claims[name]:
            raise unauthorized(f"token claim '{name}' must be a non-empty string")
    for name in ("exp", "iat", "nbf"):
        if name not in claims and name == "nbf":
            continue
        if name not in claims:
            raise unauthorized(f"token claim '{name}' is required")
        if not _is_numeric_date(claims[name]):
            raise unauthorized(f"token claim '{name}' must be a number of seconds since "
                               f"1970 (0..{MAX_NUMERIC_DATE})")
    if "aud" in claims and not _is_strings(claims["aud"]):
        raise unauthorized("token claim 'aud' must be a string or an array of strings")
    for name in STRING_CLAIMS:
        if name in claims and not _is_string(claims[name]):
            raise unauthorized(f"token claim '{name}' must be a string")
    for name in (*STRINGS_CLAIMS, role_claim):
        if name in claims and not _is_strings(claims[name]):
            raise unauthorized(f"token claim '{name}' must be a string or an array of "
                               "strings")


def check_identity(claims: dict[str, Any], roles: tuple[str, ...], issuer: Issuer) -> None:
    """Human or system is the role's, never the scope's (R-SEC-1): 403 for a token mixing
    both kinds of role, a person's token asking for ``system/`` scopes, or — when the
    issuer registers its backend clients — a role of the wrong kind for its client.

    A connector's ``user/`` or ``patient/`` scopes are accepted: rights are role ∩ scope,
    so they only narrow (``patient/`` to the token's ``patient``) and never make it a
    person who would need ``acr``."""
    known = [ROLES[r] for r in roles if r in ROLES]
    human = sorted(r.code for r in known if not r.system)
    system = sorted(r.code for r in known if r.system)
    if human and system:
        raise refused(f"the token mixes human roles ({', '.join(human)}) and system roles "
                      f"({', '.join(system)}); a person and a connector need separate tokens "
                      "(R-SEC-1)")
    contexts = {m.group(1) for s in _strings(claims.get("scope")) + _strings(claims.get("scp"))
                if (m := SCOPE_CONTEXT.match(s))}
    if human and "system" in contexts:
        raise refused(f"system/ scopes are for connectors: role(s) {', '.join(human)} are "
                      "people and must ask for user/ or patient/ scopes (R-SEC-1)")
    if issuer.system_clients is not None and known:
        client = claims.get("azp") or claims.get("client_id")
        registered = client in issuer.system_clients
        if system and not registered:
            raise refused("system roles are accepted only from the issuer's registered "
                          "system clients (R-SEC-1)")
        if human and registered:
            raise refused("a system client cannot present a person's roles (R-SEC-1)")


def _unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and claims as written, before any check (401 when unreadable)."""
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.get_unverified_claims(token)
    except (JOSEError, ValueError, TypeError, RecursionError):
        raise unauthorized("malformed token") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise unauthorized("malformed token")
    return header, claims


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
        header, claims = _unverified(token)
        alg = check_header(header)
        check_claims(claims, self.settings.role_claim)
        issuer, key = self._signer(header, claims, alg)
        claims = self._verified(token, key, alg, issuer)
        check_claims(claims, self.settings.role_claim)  # what was signed, not a re-parse
        if claims["iat"] > time.time() + self.settings.leeway:
            raise unauthorized("token issued in the future")
        if issuer.audience is None:
            client = claims.get("azp") or claims.get("client_id")
            if client not in issuer.clients:
                raise unauthorized("token was issued to a client that is not allowed")
        roles = _strings(claims.get(self.settings.role_claim))
        check_identity(claims, roles, issuer)
        return self._principal(claims, issuer.issuer, roles), float(claims["exp"]) + \
            self.settings.leeway

    def _signer(self, header: dict[str, Any], claims: dict[str, Any], alg: str
                ) -> tuple[Issuer, dict[str, Any]]:
        """The trusted issuer the token names and its key for the token's ``kid``, of a
        type that matches the token's algorithm."""
        issuer = self._issuers.get(claims["iss"])
        if issuer is None:
            raise unauthorized("token issuer is not trusted")
        key = issuer.keys.get(header.get("kid"))
        if key is None:
            raise unauthorized("token signing key (kid) is unknown to the issuer's JWKS")
        if alg not in ASYMMETRIC_KTY.get(str(key.get("kty", "")), ()) or \
                key.get("alg", alg) != alg:
            raise unauthorized(f"token algorithm {alg} does not match the issuer key")
        return issuer, key

    def _verified(self, token: str, key: dict[str, Any], alg: str, issuer: Issuer
                  ) -> dict[str, Any]:
        """The claims once the signature, issuer, audience and times are checked."""
        options = {"require_exp": True, "require_iat": True, "require_sub": True,
                   "require_iss": True, "require_aud": issuer.audience is not None,
                   "verify_aud": issuer.audience is not None, "leeway": self.settings.leeway}
        try:
            claims: dict[str, Any] = jwt.decode(token, key, algorithms=[alg],
                                                issuer=issuer.issuer,
                                                audience=issuer.audience, options=options)
        except ExpiredSignatureError:
            raise unauthorized("token has expired") from None
        except JWTClaimsError as exc:
            raise unauthorized(f"token claims rejected: {exc}") from None
        except (JOSEError, ValueError, TypeError, OverflowError):
            raise unauthorized("token signature is invalid") from None
        return claims

    def _principal(self, claims: dict[str, Any], issuer: str,
                   roles: tuple[str, ...]) -> Principal:
        """The identity, from claims already type-checked (:func:`check_claims`)."""
        acr = claims.get("acr")
        auth_mode = claims.get("authMode")
        strong = (acr in self.settings.strong_acr) or (auth_mode in self.settings.strong_acr)
        name = " ".join(p for p in (claims.get("given_name"), claims.get("family_name"))
                        if p) or claims.get("name")
        patient = claims.get("patient")
        return Principal(
            sub=claims["sub"], issuer=issuer, roles=roles,
            scopes=parse_scopes(claims.get("scope") or claims.get("scp")),
            id_nat_ps=claims.get("SubjectNameID") or claims.get("preferred_username"),
            name=name or None, acr=acr, auth_mode=auth_mode, strong=strong,
            patient=patient or None,
            client_id=claims.get("azp") or claims.get("client_id"),
            organizations=_strings(claims.get("finess")),
            professions=_strings(claims.get("SubjectRole")))
