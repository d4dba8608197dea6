"""Integers a client writes in a URL, checked once where the URL is read (issue 27).

``str.isdigit()`` accepts ``"²"`` and ``"٣"``, which ``int()`` refuses or reads, and
``int()`` reads any length, which SQLite and BSON cannot store: a vid of twenty digits
was a 500 (OverflowError). So an integer parameter is ASCII digits in a stated range, or
a 400 OperationOutcome naming it (R-SEC-3: client input never makes a server error).
Paging cursors come back from clients too: their sort keys are checked the same way.
"""

from __future__ import annotations

import base64
import math
import re
from functools import lru_cache
from urllib.parse import quote_plus

import orjson

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
    0..2147483647 (handlers then cap them to the server's limits), and for a ``_cursor``
    whose sort keys are not what the server puts there (:func:`check_cursor`)."""
    for key, value in params:
        name = key.split(":", 1)[0]
        if name in INTEGER_PARAMS and bounded_int(value) is None:
            raise invalid(f"{name} must be a non-negative integer (0..{INT32_MAX})", name)
        if name == "_cursor":
            check_cursor(value)


def version_number(text: str) -> int | None:
    """A version id from a URL (``…/_history/[vid]``): 1..2^63-1, else None (no such
    version can exist: 404, as for a vid that is not a number)."""
    return bounded_int(text, 1, VERSION_MAX)


CURSOR_KEYS_MAX = 16
CURSOR_STRING_MAX = 65536


def _cursor_scalar(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return len(value) <= CURSOR_STRING_MAX
    return _int64(value) or (type(value) is float and math.isfinite(value))


def _search_cursor(data: object, least: int = 1) -> bool:
    """``{"d": "after"|"before", "k": [sort key values..., pk]}`` as the stores page."""
    if not isinstance(data, dict) or data.get("d") not in ("after", "before"):
        return False
    keys = data.get("k")
    return type(keys) is list and least <= len(keys) <= CURSOR_KEYS_MAX and \
        all(_cursor_scalar(k) for k in keys)


def _int64(value: object, low: int = -VERSION_MAX - 1) -> bool:
    return type(value) is int and low <= value <= VERSION_MAX


def check_cursor(text: str) -> None:
    """400 unless ``_cursor`` has the shape the server gives its page links: a type
    search or history cursor; a system search one (``t`` the type, ``p`` its row, ``k``
    the sort keys, maybe none); a ``$everything`` one (``t`` the index of the type
    reached, ``k`` null or that type's search cursor). The cursor comes back from the
    client: a ``k`` null, empty or of nested arrays, a negative ``t``, reached the
    stores (TypeError, ProgrammingError, IndexError: 500, issue 27)."""
    try:
        data = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except ValueError:
        raise invalid("invalid paging cursor", "_cursor") from None
    step = data.get("t") if isinstance(data, dict) else None
    if isinstance(step, str):  # system search
        good = _search_cursor(data, least=0) and _int64(data.get("p"))
    elif step is not None:  # $everything
        good = _int64(step, 0) and step <= 10_000 and \
            data.get("d") in ("after", "before") and \
            (data.get("k") is None or _search_cursor(data.get("k")))
    else:
        good = _search_cursor(data)
    if not good:
        raise invalid("invalid paging cursor", "_cursor")


@lru_cache(maxsize=8192)
def _quoted(text: str) -> str:
    return quote_plus(text)


def query_string(items: list[tuple[str, str]]) -> str:
    """``urlencode(items)`` (RFC 3986 form encoding, ``quote_plus``), each name and value
    quoted once per process: a search's self, first and next links and its AuditEvent
    repeat the same parameters (quoting was a quarter of a one-result search's CPU;
    issue 32)."""
    return "&".join(f"{_quoted(k)}={_quoted(v)}" for k, v in items)
