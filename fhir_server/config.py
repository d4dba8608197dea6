"""Configuration from ``TELEIMG_*`` environment variables (all documented in the README)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from fhir_server.core.limits import Limits


def _int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {value!r}") from None


@dataclass(frozen=True)
class Settings:
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    data_dir: Path = Path("data")
    store_url: str | None = None
    base_url: str | None = None  # public FHIR base when behind a proxy
    log_level: str = "info"
    limits: Limits = field(default_factory=Limits)

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        return cls(
            http_host=env.get("TELEIMG_HTTP_HOST", "127.0.0.1"),
            http_port=_int("TELEIMG_HTTP_PORT", 8080),
            data_dir=Path(env.get("TELEIMG_DATA_DIR", "data")),
            store_url=env.get("TELEIMG_STORE_URL") or None,
            base_url=(env.get("TELEIMG_BASE_URL") or "").rstrip("/") or None,
            log_level=env.get("TELEIMG_LOG_LEVEL", "info"),
            limits=Limits(
                default_count=_int("TELEIMG_DEFAULT_COUNT", 20),
                max_count=_int("TELEIMG_MAX_COUNT", 1000),
                max_chain_depth=_int("TELEIMG_MAX_CHAIN_DEPTH", 4),
                max_bundle_entries=_int("TELEIMG_MAX_BUNDLE_ENTRIES", 5000),
                max_body_bytes=_int("TELEIMG_MAX_BODY_BYTES", 16 * 1024 * 1024),
            ),
        )
