"""HL7 v2 / MLLP settings from ``TELEIMG_*`` variables (README, "HL7 v2 adapter").

Every value is checked when read: one that cannot be used stops the command with one
line naming the variable and what it takes (:class:`SettingError`; ``teleimagerie
serve`` and ``hl7 …`` exit 2), never a traceback from deep inside (issue 24).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field


class SettingError(SystemExit):
    """A ``TELEIMG_*`` value that cannot be used; ``str()`` is the one line to print.
    A SystemExit, so that uncaught it still ends the process with that line only."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


def _number(env: Mapping[str, str], name: str, default: float, low: float,
            high: float = float("inf"), integer: bool = False) -> float:
    """``env[name]`` (``default`` when unset or empty) within [low, high]."""
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        value = None
    if value is None or value != value or not low <= value <= high:  # NaN too
        kind = "an integer" if integer else "a number"
        bound = f"from {low:g} to {high:g}" if high != float("inf") else f"≥ {low:g}"
        raise SettingError(f"{name} must be {kind} {bound}, got {text[:40]!r}")
    return value


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    """A TCP port; ``0`` or ``off`` disables the listener."""
    if env.get(name, "").strip().lower() == "off":
        return 0
    return int(_number(env, name, default, 0, 65535, integer=True))


def _routes(text: str) -> dict[str, tuple[str, int]]:
    """``FINESS=host:port;*=host:port`` -> FINESS (``*`` the default) -> peer."""
    out: dict[str, tuple[str, int]] = {}
    for part in filter(None, (p.strip() for p in text.replace(",", ";").split(";"))):
        key, _, peer = part.partition("=")
        host, _, port = peer.strip().rpartition(":")
        if not key or not host or not port.isdigit() or not 0 < int(port) <= 65535:
            raise SettingError(f"TELEIMG_HL7_ROUTES: cannot read {part[:60]!r} "
                               "(FINESS=host:port, port 1-65535)")
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
    # attempts of an outbound message before it is a dead letter (status ``dead``)
    max_attempts: int = 20
    send_timeout: float = 30.0
    # messages committed but not processed, recovered at start this many at a time
    # (oldest first, every one of them: a batch is a page, never a cap)
    recovery_batch: int = 200

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Hl7Settings:
        env = os.environ if env is None else env

        def num(name: str, default: float, low: float = 0.0,
                high: float = float("inf")) -> float:
            return _number(env, name, default, low, high)

        def integer(name: str, default: int, low: int, high: int) -> int:
            return int(_number(env, name, default, low, high, integer=True))

        return cls(
            host=env.get("TELEIMG_MLLP_HOST", "127.0.0.1"),
            port=_port(env, "TELEIMG_MLLP_PORT", 2575),
            max_message_bytes=integer("TELEIMG_MLLP_MAX_BYTES", 8 * 1024 * 1024, 1024,
                                      1 << 30),
            idle_timeout=num("TELEIMG_MLLP_IDLE_TIMEOUT", 300.0, 0.1),
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
            max_attempts=integer("TELEIMG_HL7_MAX_ATTEMPTS", 20, 1, 1_000_000),
            send_timeout=num("TELEIMG_HL7_SEND_TIMEOUT", 30.0, 0.1),
            # at most a search page (Limits.max_count)
            recovery_batch=integer("TELEIMG_HL7_RECOVERY_BATCH", 200, 1, 1000),
        )

    def route(self, finess: str | None) -> tuple[str, int] | None:
        return self.routes.get(finess or "") or self.routes.get("*")
