"""Date precision ranges, number precision, string normalisation (search.html)."""

import pytest

from fhir_server.search.values import date_range, format_instant, normalize_string, number_range


@pytest.mark.parametrize("text,low,high", [
    ("2024", "2024-01-01T00:00:00.000Z", "2025-01-01T00:00:00.000Z"),
    ("2024-02", "2024-02-01T00:00:00.000Z", "2024-03-01T00:00:00.000Z"),
    ("2024-12", "2024-12-01T00:00:00.000Z", "2025-01-01T00:00:00.000Z"),
    ("2024-02-29", "2024-02-29T00:00:00.000Z", "2024-03-01T00:00:00.000Z"),
    ("2024-03-15T10:30", "2024-03-15T10:30:00.000Z", "2024-03-15T10:31:00.000Z"),
    ("2024-03-15T10:30:00+01:00", "2024-03-15T09:30:00.000Z", "2024-03-15T09:30:01.000Z"),
    ("2024-03-15T10:30:00.5Z", "2024-03-15T10:30:00.500Z", "2024-03-15T10:30:00.600Z"),
])
def test_date_range(text: str, low: str, high: str) -> None:
    rng = date_range(text)
    assert rng is not None
    assert (format_instant(rng[0]), format_instant(rng[1])) == (low, high)


@pytest.mark.parametrize("text", ["2024-13", "2024-02-30", "yesterday", "24-01-01", ""])
def test_bad_dates(text: str) -> None:
    assert date_range(text) is None


def test_number_precision() -> None:
    assert number_range("100") == (100.0, 99.5, 100.5)
    assert number_range("1.50") == (1.5, 1.495, 1.505)
    assert number_range("abc") is None


def test_normalize_string_folds_case_and_accents() -> None:
    assert normalize_string("  Élodie   LEFÈVRE ") == "elodie lefevre"
