"""Value semantics of FHIR R4 search (search.html#date, #number, #string).

Dates become half-open ranges ``[low, high)`` in integer microseconds since the epoch,
so precision ("2024", "2024-03", an instant) maps to the right interval. Values without
a time zone are read as UTC (documented in the README).
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import lru_cache

MIN_US = -62135596800 * 1_000_000  # 0001-01-01T00:00:00Z
MAX_US = 253402300800 * 1_000_000  # 10000-01-01T00:00:00Z (exclusive)

_DATE_RE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2})(?::(?P<M>\d{2})(?::(?P<S>\d{2})(?P<f>\.\d+)?)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def _epoch_us(dt: datetime) -> int:
    return (dt - _EPOCH) // _US


@lru_cache(maxsize=8192)  # index extraction meets the same instants again and again
def date_range(text: str) -> tuple[int, int] | None:
    """The half-open interval a FHIR date/dateTime/instant denotes, or None if malformed."""
    m = _DATE_RE.match(text.strip())
    if not m:
        return None
    try:
        y = int(m["y"])
        if m["m"] is None:
            low = datetime(y, 1, 1, tzinfo=UTC)
            high = datetime(y + 1, 1, 1, tzinfo=UTC) if y < 9999 else None
        elif m["d"] is None:
            mo = int(m["m"])
            low = datetime(y, mo, 1, tzinfo=UTC)
            high = (datetime(y + (mo == 12), mo % 12 + 1, 1, tzinfo=UTC)
                    if (y, mo) != (9999, 12) else None)
        elif m["H"] is None:
            low = datetime(y, int(m["m"]), int(m["d"]), tzinfo=UTC)
            high = low + timedelta(days=1)
        else:
            second = int(m["S"] or 0)
            frac = m["f"] or ""
            micro = int((frac[1:] + "000000")[:6]) if frac else 0
            low = datetime(y, int(m["m"]), int(m["d"]), int(m["H"]), int(m["M"] or 0),
                           min(second, 59), micro, tzinfo=UTC)
            tz = m["tz"]
            if tz and tz != "Z":
                sign = 1 if tz[0] == "+" else -1
                low -= sign * timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6]))
            if m["M"] is None:
                step = timedelta(hours=1)
            elif m["S"] is None:
                step = timedelta(minutes=1)
            elif not frac:
                step = timedelta(seconds=1)
            else:
                step = timedelta(microseconds=10 ** max(0, 6 - (len(frac) - 1)))
            try:
                high = low + step
            except OverflowError:  # the last instant of year 9999
                high = None
    except (ValueError, OverflowError):
        return None
    return _epoch_us(low), (_epoch_us(high) if high else MAX_US)


def format_instant(us: int) -> str:
    dt = _EPOCH + timedelta(microseconds=us)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_us() -> int:
    return _epoch_us(datetime.now(UTC))


def normalize_string(text: str) -> str:
    """Case- and accent-insensitive form used by string search (search.html#string)."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(stripped.casefold().split())


def number_range(text: str) -> tuple[float, float, float] | None:
    """Value and the implicit precision range of a search number (search.html#number)."""
    try:
        dec = Decimal(text)
    except InvalidOperation:
        return None
    if not dec.is_finite():
        return None
    exponent = dec.as_tuple().exponent
    assert isinstance(exponent, int)
    half = Decimal(5) * Decimal(10) ** (exponent - 1)
    return float(dec), float(dec - half), float(dec + half)
