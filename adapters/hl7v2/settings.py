"""HL7 v2 / MLLP settings from ``TELEIMG_*`` variables (README, "HL7 v2 adapter")."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from adapters.settings import number


def _routes(text: str) -> dict[str, tuple[str, int]]:
    """``FINESS=host:port;*=host:port`` -> FINESS (``*`` the default) -> peer."""
    out: dict[str, tuple[str, int]] = {}
    for part in filter(None, (p.strip() for p in text.replace(",", ";").split(";"))):
        key, _, peer = part.partition("=")
        host, _, port = peer.strip().rpartition(":")
        if not key or not host or not port.isdigit():
            raise SystemExit(f"TELEIMG_HL7_ROUTES: cannot read {part!r} (FINESS=host:port)")
        out[key.strip()] = (host, int(port))
    return out


@dataclass(frozen=True)
class Hl7Settings:
    host: str = "127.0.0.1"
    port: int = 2575  # 0: no listener
    max_message_bytes: int = 8 * 1024 * 1024
    idle_timeout: float = 300.0
    application: str = "TLRapp"  # MSH-3 of what we send (MSH-5 expected of what we get)
    facility: str = "TLRfacility"
    platform_name: str = "Plateforme de téléradiologie"
    platform_id: str = ""  # our FINESS / idNatSt (ORC-21.10 of flux 3)
    processing_ids: frozenset[str] = frozenset({"P", "T", "D"})
    versions: frozenset[str] = frozenset({"2.5", "2.5.1"})
    routes: dict[str, tuple[str, int]] = field(default_factory=dict)
    retry_base: float = 5.0  # outbox backoff: base * 2^attempt, capped
    retry_max: float = 600.0
    send_timeout: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Hl7Settings:
        env = os.environ if env is None else env

        def num(name: str, default: float) -> float:
            return number(env, name, default)

        return cls(
            host=env.get("TELEIMG_MLLP_HOST", "127.0.0.1"),
            port=int(num("TELEIMG_MLLP_PORT", 2575)),
            max_message_bytes=int(num("TELEIMG_MLLP_MAX_BYTES", 8 * 1024 * 1024)),
            idle_timeout=num("TELEIMG_MLLP_IDLE_TIMEOUT", 300.0),
            application=env.get("TELEIMG_HL7_APPLICATION", "TLRapp"),
            facility=env.get("TELEIMG_HL7_FACILITY", "TLRfacility"),
            platform_name=env.get("TELEIMG_HL7_PLATFORM_NAME",
                                  "Plateforme de téléradiologie"),
            platform_id=env.get("TELEIMG_HL7_PLATFORM_ID", ""),
            processing_ids=frozenset(p.strip() for p in env.get(
                "TELEIMG_HL7_PROCESSING_IDS", "P,T,D").split(",") if p.strip()),
            routes=_routes(env.get("TELEIMG_HL7_ROUTES", "")),
            retry_base=num("TELEIMG_HL7_RETRY_BASE", 5.0),
            retry_max=num("TELEIMG_HL7_RETRY_MAX", 600.0),
            send_timeout=num("TELEIMG_HL7_SEND_TIMEOUT", 30.0),
        )

    def route(self, finess: str | None) -> tuple[str, int] | None:
        return self.routes.get(finess or "") or self.routes.get("*")
