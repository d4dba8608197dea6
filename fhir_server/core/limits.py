"""Request limits (configurable via TELEIMG_* variables, see README)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    default_count: int = 20
    max_count: int = 1000
    max_chain_depth: int = 4
    max_bundle_entries: int = 5000
    max_body_bytes: int = 16 * 1024 * 1024
