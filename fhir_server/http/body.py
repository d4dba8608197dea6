"""Request bodies read under their limit, and requests stopped when their client leaves.

Issue 27 item 8 (R-SEC-6): a body is never received whole before its size is checked.

- ``Content-Length`` over the limit: 413 at once, before a byte of the body is read (a
  client sending ``Expect: 100-continue`` is never told to continue);
- a chunked body (or one lying about its length) is counted as it arrives and refused
  413 as soon as it passes the limit; the 413 says ``Connection: close`` so the server
  drops the rest rather than reading it;
- a body costs its size once more at most: the chunks are joined once (no bytearray →
  bytes → str chain), and parsed from those bytes by orjson.

Issue 27 item 7: :func:`run_watched` runs the core in a worker thread under the request's
:class:`~fhir_server.store.budget.Budget` while the event loop watches the connection; a
client that disconnects cancels the budget, which interrupts the running query.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.types import Receive

from fhir_server.core.errors import ErrorKind, FhirError
from fhir_server.store import budget as budgets

T = TypeVar("T")


def too_large(size: int | str, limit: int, setting: str) -> FhirError:
    """413 naming the limit; the connection is closed after it (the rest is not read)."""
    return FhirError(ErrorKind.TOO_LARGE, f"request body of {size} bytes exceeds {limit} "
                     f"({setting})", headers={"Connection": "close"})


def declared_length(request: Request, limit: int, setting: str) -> int | None:
    """The ``Content-Length``, refused (413) when over ``limit`` — before reading."""
    text = request.headers.get("content-length")
    if text is None:
        return None
    if not text.isdigit() or len(text) > 18:
        raise FhirError(ErrorKind.INVALID, f"Content-Length {text[:40]!r} is not a length",
                        headers={"Connection": "close"})
    length = int(text)
    if length > limit:
        raise too_large(length, limit, setting)
    return length


async def read_body(request: Request, limit: int,
                    setting: str = "TELEIMG_MAX_BODY_BYTES") -> bytes:
    """The body, at most ``limit`` bytes: checked first by its declared length, then
    counted chunk by chunk as it arrives (413 as soon as it is over)."""
    declared_length(request, limit, setting)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(f"more than {limit}", limit, setting)
        if chunk:
            chunks.append(chunk)
    if len(chunks) == 1:
        return chunks[0]
    body = b"".join(chunks)
    chunks.clear()
    return body


def _budgeted(budget: budgets.Budget, fn: Callable[..., T], *args: Any) -> T:
    with budgets.applied(budget):
        return fn(*args)


# the worker threads of the interactions that do not run in the event loop: a plain
# executor (one future per request) where anyio's portal and task group cost more CPU
# than a one-result search itself (issue 32)
_WORKERS = ThreadPoolExecutor(max_workers=40, thread_name_prefix="fhir")


async def run_watched(receive: Receive, budget: budgets.Budget, fn: Callable[..., T],
                      *args: Any) -> T:
    """Run ``fn(*args)`` in a worker thread under ``budget``; a disconnect seen meanwhile
    (on the ASGI ``receive``, once the body is read) cancels the budget, so the query
    running in the thread is interrupted (item 7)."""

    async def watch() -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                budget.cancel()
                return

    loop = asyncio.get_running_loop()
    watcher = loop.create_task(watch())
    try:
        context = contextvars.copy_context()
        return await loop.run_in_executor(_WORKERS, context.run, _budgeted, budget, fn,
                                          *args)
    finally:
        watcher.cancel()


def bound_malloc() -> None:
    """Give large freed buffers back to the system (issue 27 items 8, 9).

    glibc raises its mmap threshold each time a large block is freed, after which
    bodies of a few MiB come from the heap and the process keeps the memory after the
    request ("not returned afterwards"). A fixed threshold (128 KiB) keeps every large
    buffer in its own mapping, returned when freed. No-op where glibc is absent."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD (fixed: no dynamic raise)
        libc.mallopt(-1, 1024 * 1024)  # M_TRIM_THRESHOLD: trim the heap past 1 MiB free
    except (OSError, AttributeError):
        return
