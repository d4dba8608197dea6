"""Integers a client writes in a URL, checked once where the URL is read (issue 27).

``str.isdigit()`` accepts ``"²"`` and ``"٣"``, which ``int()`` refuses or reads, and
``int()`` reads any length, which SQLite and BSON cannot store: a vid of twenty digits
was a 500 (OverflowError). So an integer parameter is ASCII digits in a stated range, or
a 400 OperationOutcome naming it (R-SEC-3: client input never makes a server error).
"""

from __future__ import annotations

import re

from fhir_server.core.errors import invalid

DIGITS = re.compile(r"[0-9]{1,19}")  # ASCII only; 19 digits hold any 64-bit value
INT32_MAX = 2_147_483_647
VERSION_MAX = 2**63 - 1  # a version id is a signed 64-bit integer in both stores
# result parameters taking a non-negative integer (search.html#count, http.html#history)
INTEGER_PARAMS = ("_count", "_offset")


def bounded_int(value: str, low: int = 0, high: int = INT32_MAX) -> int | None:
    """``value`` as an integer when it is ASCII digits within ``low..high``, else None."""
    if not DIGITS.fullmatch(value):
        return None
    number = int(value)
    return number if low <= number <= high else None


def check_integer_params(params: list[tuple[str, str]]) -> None:
    """400 for ``_count``/``_offset`` (modifiers included) that are not ASCII digits in
    0..2147483647; handlers then cap them to the server's limits."""
    for key, value in params:
        name = key.split(":", 1)[0]
        if name in INTEGER_PARAMS and bounded_int(value) is None:
            raise invalid(f"{name} must be a non-negative integer (0..{INT32_MAX})", name)


def version_number(text: str) -> int | None:
    """A version id from a URL (``…/_history/[vid]``): 1..2^63-1, else None (no such
    version can exist: 404, as for a vid that is not a number)."""
    return bounded_int(text, 1, VERSION_MAX)
