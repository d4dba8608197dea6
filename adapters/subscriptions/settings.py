"""Subscription settings from ``TELEIMG_SUBSCRIPTION_*`` variables (README,
"Subscriptions"; issue 31)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from adapters.settings import number


@dataclass(frozen=True)
class SubscriptionSettings:
    # hosts a rest-hook may name (exact names, or ``*.domain``); empty: any public host
    hosts: tuple[str, ...] = ()
    https_only: bool = True  # production: a rest-hook endpoint is https
    max_attempts: int = 5  # then the notification is a dead letter, the subscription error
    retry_base: float = 5.0  # backoff: base * 2^(attempt-1), capped at retry_max
    retry_max: float = 600.0
    timeout: float = 10.0
    token_lifetime: float = 300.0  # a websocket binding token (seconds)
    # active subscriptions per type whose criteria nothing indexes (``:contains``…):
    # each costs every write of the type ~9 µs (benchmarks/subscriptions.py), so 50 keep
    # matching within 5 % of a write (issue 31: at most 10 %)
    max_scanned: int = 50

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None,
                 production: bool | None = None) -> SubscriptionSettings:
        env = os.environ if env is None else env
        if production is None:
            production = env.get("TELEIMG_ENV", "development") == "production"
        hosts = tuple(h.strip().lower() for h in env.get("TELEIMG_SUBSCRIPTION_HOSTS",
                                                          "").split(",") if h.strip())
        return cls(hosts=hosts, https_only=production,
                   max_attempts=int(number(env, "TELEIMG_SUBSCRIPTION_MAX_ATTEMPTS", 5)),
                   retry_base=number(env, "TELEIMG_SUBSCRIPTION_RETRY_BASE", 5.0),
                   retry_max=number(env, "TELEIMG_SUBSCRIPTION_RETRY_MAX", 600.0),
                   timeout=number(env, "TELEIMG_SUBSCRIPTION_TIMEOUT", 10.0),
                   max_scanned=int(number(env, "TELEIMG_SUBSCRIPTION_MAX_SCANNED", 50)))

    def backoff(self, attempts: int) -> float:
        return float(min(self.retry_max, self.retry_base * 2 ** max(0, attempts - 1)))
