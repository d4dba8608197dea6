"""UCUM conversion, DICOM date/time and the RDSR walk's refusals (issue 7, R-REP-3)."""

from __future__ import annotations

import pytest
from pydicom.uid import generate_uid

from adapters.dicom import dose
from adapters.dicom.study import when
from adapters.dicom.units import UnitError, convert
from tests.behaviour.dicom_world import ct_rdsr, num


@pytest.mark.parametrize(("value", "source", "target", "expected"), [
    (1.0, "Gy.m2", "Gy.cm2", 10000.0),
    (2.5, "dGy.cm2", "Gy.cm2", 0.25),
    (0.5, "Gy.cm", "mGy.cm", 500.0),
    (1.5, "min", "s", 90.0),
    (3.0, "mCi", "MBq", 111.0),
    (4.2, "mGy", "mGy", 4.2),
])
def test_ucum_conversion(value: float, source: str, target: str, expected: float) -> None:
    assert convert(value, source, target) == expected


@pytest.mark.parametrize(("source", "target"), [("mGy", "mGy.cm"), ("s", "Bq"),
                                                ("furlong", "m")])
def test_incompatible_or_unknown_units_refused(source: str, target: str) -> None:
    with pytest.raises(UnitError):
        convert(1.0, source, target)


@pytest.mark.parametrize(("date", "time", "offset", "expected"), [
    ("20261122", "101500", "+0100", "2026-11-22T10:15:00+01:00"),
    ("20040119", "072730.000", "-0500", "2004-01-19T07:27:30-05:00"),
    ("20260715", "0930", "", "2026-07-15T09:30:00+02:00"),  # Paris summer time
    ("20261122", "", "", "2026-11-22"),
    ("2026", "101500", "", None),
])
def test_dicom_date_time_to_fhir(date: str, time: str, offset: str,
                                 expected: str | None) -> None:
    assert when(date, time, offset, "Europe/Paris") == expected


def test_rdsr_value_in_an_unknown_unit_is_an_error_not_a_guess() -> None:
    report = ct_rdsr(generate_uid(), [], 100.0)
    report.ContentSequence[1].ContentSequence[1] = num(
        ("113813", "CT Dose Length Product Total"), 100.0, "mR")
    with pytest.raises(dose.DoseError, match="113813"):
        dose.from_rdsr(report)


def test_rdsr_without_units_is_refused() -> None:
    report = ct_rdsr(generate_uid(), [], 100.0)
    del report.ContentSequence[1].ContentSequence[1].MeasuredValueSequence[0] \
        .MeasurementUnitsCodeSequence
    with pytest.raises(dose.DoseError, match="unité absente"):
        dose.from_rdsr(report)


def test_items_found_by_concept_code_not_position() -> None:
    report = ct_rdsr(generate_uid(), [(5.0, 100.0)], 100.0)
    report.ContentSequence = list(reversed(report.ContentSequence))
    codes = sorted(d.code for d in dose.from_rdsr(report))
    assert codes == ["113813", "113830"]
