"""Workflow parameters that conventions and sites change (``TELEIMG_*``, README)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

_UNITS = {"min": 1, "h": 60, "d": 1440}


def parse_minutes(text: str, name: str) -> int:
    """``90min``, ``4h``, ``7d`` (or a bare number of minutes) -> minutes."""
    m = re.fullmatch(r"\s*(\d+)\s*(min|h|d)?\s*", text)
    if not m:
        raise SystemExit(f"{name}: {text!r} is not a delay like 90min, 4h or 7d")
    return int(m.group(1)) * _UNITS[m.group(2) or "min"]


def parse_delays(text: str, name: str = "TELEIMG_DELAYS") -> dict[str, int]:
    out = dict(DEFAULT_DELAYS)
    for item in (i for i in text.split(",") if i.strip()):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in DEFAULT_DELAYS:
            raise SystemExit(f"{name} entries are priority=delay with a priority among "
                             f"{', '.join(DEFAULT_DELAYS)}; got {item!r}")
        out[key] = parse_minutes(value, name)
    return out


# R-VAL-5: the delay within which a request of each FHIR priority is to be reported
DEFAULT_DELAYS = {"stat": 60, "asap": 4 * 60, "urgent": 24 * 60, "routine": 7 * 24 * 60}


@dataclass(frozen=True)
class WorkflowSettings:
    delays: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_DELAYS))
    information_delay: int = 72 * 60  # R-CONS-3: a-posteriori information due within
    teleexpertise_limit: int = 4  # R-TLE-2, per patient, expert and calendar year
    remote_share_warning: float = 0.20  # R-TLE-3
    adult_age: int = 18  # R-VAL-6: younger patients are flagged for ionising exams

    @classmethod
    def from_env(cls) -> WorkflowSettings:
        env = os.environ
        limit = env.get("TELEIMG_TELEEXPERTISE_LIMIT", "4")
        share = env.get("TELEIMG_REMOTE_SHARE_WARNING", "0.20")
        try:
            limit_n, share_f = int(limit), float(share)
        except ValueError:
            raise SystemExit("TELEIMG_TELEEXPERTISE_LIMIT must be an integer and "
                             "TELEIMG_REMOTE_SHARE_WARNING a fraction like 0.2") from None
        return cls(delays=parse_delays(env.get("TELEIMG_DELAYS", "")),
                   information_delay=parse_minutes(
                       env.get("TELEIMG_INFORMATION_DELAY", "72h"), "TELEIMG_INFORMATION_DELAY"),
                   teleexpertise_limit=limit_n, remote_share_warning=share_f)
