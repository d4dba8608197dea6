"""Configuration from ``TELEIMG_*`` environment variables (all documented in the README)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from fhir_server.core.limits import Limits
from fhir_server.validation.registry import DEFAULT_REQUIRED, parse_required
from fhir_server.workflow.settings import WorkflowSettings


def _int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {value!r}") from None


def _float(name: str, default: float) -> float:
    """A non-negative number of seconds (0: no bound)."""
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except ValueError:
        raise SystemExit(f"{name} must be a number of seconds, got {value!r}") from None
    if not 0 <= number < 1e9:  # nan and inf fail too
        raise SystemExit(f"{name} must be a number of seconds >= 0, got {value!r}")
    return number


def _positive(name: str, default: int) -> int:
    number = _int(name, default)
    if number < 1:
        raise SystemExit(f"{name} must be a positive integer, got {number}")
    return number


def _port(name: str, default: int) -> int:
    port = _int(name, default)
    if not 0 <= port <= 65535:
        raise SystemExit(f"{name} must be a TCP port (0-65535), got {port}")
    return port


LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def _log_level(name: str) -> str:
    value = (os.environ.get(name) or "info").lower()
    if value not in LOG_LEVELS:
        raise SystemExit(f"{name} must be one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return value


def _log_format(name: str) -> str:
    value = (os.environ.get(name) or "text").lower()
    if value not in ("text", "json"):
        raise SystemExit(f"{name} must be one of text, json, got {value!r}")
    return value


def _list(name: str, default: str = "") -> tuple[str, ...]:
    return tuple(v.strip() for v in os.environ.get(name, default).split(",") if v.strip())


def _origins(name: str) -> tuple[str, ...]:
    """Browser origins allowed by CORS: ``*`` or ``scheme://host[:port]`` values."""
    origins = _list(name)
    for origin in origins:
        scheme, sep, rest = origin.partition("://")
        if origin != "*" and (scheme not in ("http", "https") or not sep or not rest or
                              "/" in rest):
            raise SystemExit(f"{name}: {origin!r} is not an origin (scheme://host[:port], "
                             "no path nor trailing slash) nor *")
    return origins


@dataclass(frozen=True)
class AuthConfig:
    """Token validation (README "Security"). Issuers are ``issuer|jwks`` pairs."""

    issuers: tuple[tuple[str, str], ...] = ()
    audience: str = "teleimagerie-fhir"
    clients: tuple[str, ...] = ()  # azp allow-list for issuers that send no aud (PSC)
    # the issuers' registered backend clients (azp/client_id): only they carry system
    # roles, and they never carry a person's (R-SEC-1); empty: not checked
    system_clients: tuple[str, ...] = ()
    strong_acr: tuple[str, ...] = ("eidas2", "eidas3")
    leeway: int = 30
    max_token_bytes: int = 16 * 1024
    role_claim: str = "roles"
    dev_issuer: bool = True
    authorize_url: str | None = None
    token_url: str | None = None


@dataclass(frozen=True)
class Settings:
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    data_dir: Path = Path("data")
    store_url: str | None = None
    base_url: str | None = None  # public FHIR base when behind a proxy
    log_level: str = "info"
    log_format: str = "text"  # TELEIMG_LOG_FORMAT: text | json (one object a line)
    limits: Limits = field(default_factory=Limits)
    environment: str = "development"  # development | production
    auth: AuthConfig = field(default_factory=AuthConfig)
    audit: bool = True
    audit_interval: float = 0.2
    audit_index_lag: int = 50_000  # unindexed AuditEvents tolerated under load (ADR 0007)
    # resource type -> profiles every write of that type must meet (issue 4)
    required_profiles: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: dict(DEFAULT_REQUIRED))
    workflow: WorkflowSettings = field(default_factory=WorkflowSettings)
    # browser origins allowed to call the API (CORS); empty: no CORS headers at all
    cors_origins: tuple[str, ...] = ()

    @property
    def production(self) -> bool:
        return self.environment == "production"

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        environment = env.get("TELEIMG_ENV", "development")
        if environment not in ("development", "production"):
            raise SystemExit(f"TELEIMG_ENV must be development or production, not {environment!r}")
        production = environment == "production"
        issuers = []
        for item in _list("TELEIMG_AUTH_ISSUERS"):
            issuer, sep, jwks = item.partition("|")
            if not sep or not jwks:
                raise SystemExit("TELEIMG_AUTH_ISSUERS entries are 'issuer|jwks-file-or-url', "
                                 f"got {item!r}")
            issuers.append((issuer, jwks))
        if production and not issuers:
            raise SystemExit("TELEIMG_ENV=production needs TELEIMG_AUTH_ISSUERS (the "
                             "development issuer is disabled in production)")
        audit = env.get("TELEIMG_AUDIT", "on") != "off"
        if production and not audit:
            raise SystemExit("TELEIMG_AUDIT=off is refused in production (R-SEC-3)")
        return cls(
            environment=environment,
            auth=AuthConfig(
                issuers=tuple(issuers),
                audience=env.get("TELEIMG_AUTH_AUDIENCE", "teleimagerie-fhir"),
                clients=_list("TELEIMG_AUTH_CLIENTS"),
                system_clients=_list("TELEIMG_AUTH_SYSTEM_CLIENTS"),
                strong_acr=_list("TELEIMG_AUTH_STRONG_ACR", "eidas2,eidas3"),
                leeway=_int("TELEIMG_AUTH_LEEWAY", 30),
                max_token_bytes=_int("TELEIMG_AUTH_MAX_TOKEN_BYTES", 16 * 1024),
                role_claim=env.get("TELEIMG_AUTH_ROLE_CLAIM", "roles"),
                dev_issuer=not production,
                authorize_url=env.get("TELEIMG_AUTH_AUTHORIZE_URL") or None,
                token_url=env.get("TELEIMG_AUTH_TOKEN_URL") or None),
            audit=audit,
            workflow=WorkflowSettings.from_env(),
            audit_index_lag=_int("TELEIMG_AUDIT_INDEX_LAG", 50_000),
            required_profiles=parse_required(env["TELEIMG_REQUIRED_PROFILES"])
            if "TELEIMG_REQUIRED_PROFILES" in env else dict(DEFAULT_REQUIRED),
            http_host=env.get("TELEIMG_HTTP_HOST", "127.0.0.1"),
            http_port=_port("TELEIMG_HTTP_PORT", 8080),
            data_dir=Path(env.get("TELEIMG_DATA_DIR", "data")),
            store_url=env.get("TELEIMG_STORE_URL") or None,
            base_url=(env.get("TELEIMG_BASE_URL") or "").rstrip("/") or None,
            cors_origins=_origins("TELEIMG_CORS_ORIGINS"),
            log_level=_log_level("TELEIMG_LOG_LEVEL"),
            log_format=_log_format("TELEIMG_LOG_FORMAT"),
            limits=Limits(
                default_count=_int("TELEIMG_DEFAULT_COUNT", 20),
                max_count=_int("TELEIMG_MAX_COUNT", 1000),
                max_chain_depth=_int("TELEIMG_MAX_CHAIN_DEPTH", 4),
                max_bundle_entries=_int("TELEIMG_MAX_BUNDLE_ENTRIES", 5000),
                max_body_bytes=_positive("TELEIMG_MAX_BODY_BYTES", 16 * 1024 * 1024),
                max_or_values=_int("TELEIMG_MAX_OR_VALUES", 200),
                max_sort_keys=_int("TELEIMG_MAX_SORT_KEYS", 8),
                max_search_terms=_int("TELEIMG_MAX_SEARCH_TERMS", 64),
                query_timeout=_float("TELEIMG_QUERY_TIMEOUT", 10.0),
                max_includes=_positive("TELEIMG_MAX_INCLUDES", 1000),
                max_include_depth=_positive("TELEIMG_MAX_INCLUDE_DEPTH", 4),
                break_glass_minutes=_int("TELEIMG_BREAK_GLASS_MINUTES", 60),
            ),
        )
