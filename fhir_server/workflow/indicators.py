"""Activity indicators (R-EVAL-1, R-TLE-3) — placeholder replaced below."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fhir_server.core.server import Handler

OPERATIONS: dict[tuple[str | None, str], Handler] = {}
