"""Every code the delivery outbox writes is defined in our CodeSystem (terminology/)."""

from __future__ import annotations

import json
from pathlib import Path

from adapters.delivery.outbox import CODE, STATES, SYSTEM
from adapters.delivery.settings import CHANNELS

RESOURCES = Path(__file__).resolve().parents[4] / "terminology" / "resources"


def test_delivery_code_system_defines_every_state_and_channel() -> None:
    cs = json.loads((RESOURCES / "CodeSystem-teleimagerie-delivery.json").read_text())
    assert cs["url"] == SYSTEM
    defined = {c["code"] for c in cs["concept"]}
    assert {CODE, *STATES, *CHANNELS} <= defined
