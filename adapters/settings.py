"""Reading ``TELEIMG_*`` variables the same way in every adapter."""

from __future__ import annotations

from collections.abc import Mapping


def number(env: Mapping[str, str], name: str, default: float) -> float:
    """``env[name]`` as a number, ``default`` when unset; a clear exit when unreadable."""
    value = env.get(name, "")
    try:
        return float(value) if value else default
    except ValueError:
        raise SystemExit(f"{name} must be a number, got {value!r}") from None
