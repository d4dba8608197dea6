"""The loop every outbox sender runs: one pass, then sleep until woken or ``interval``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable


async def repeat(work: Callable[[], Awaitable[object]], wake: asyncio.Event,
                 interval: float, log: logging.Logger) -> None:
    """Run ``work`` forever; a failing pass is logged and the next one still runs."""
    while True:
        try:
            await work()
        except Exception:
            log.exception("pass failed")
        try:
            await asyncio.wait_for(wake.wait(), interval)
        except TimeoutError:
            pass
        wake.clear()
