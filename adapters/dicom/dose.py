"""Radiation dose -> values for our dose Observations (``tlm-dose-observation``, R-REP-3).

From a Radiation Dose SR (PS3.16): the content tree is walked by concept codes (DCM),
never by position —
- TID 10011 CT Radiation Dose: 113811 CT Accumulated Dose Data / 113813 DLP total; each
  113819 CT Acquisition / 113829 CT Dose: 113830 Mean CTDIvol, 113838 DLP, 113835 CTDIw
  Phantom Type;
- TID 10001/10002 Projection X-Ray: 113722 DAP total, 113725 Dose (RP) total, 113726 /
  113728 fluoro DAP / dose, 113727 / 113729 acquisition DAP / dose, 113730 fluoro time;
- TID 10021 Radiopharmaceutical: each 113502 administration's 113507 activity.
Units come from each NUM's MeasurementUnitsCodeSequence (UCUM) and are converted to the
unit ``CANONICAL`` gives the indicator. Without an RDSR, image headers give CTDIvol
(0018,9345) per series and the Image and Fluoroscopy Area Dose Product (0018,115E) —
marked with their source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset

from adapters.dicom.units import UnitError, convert

RDSR_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.88.67",  # X-Ray Radiation Dose SR
    "1.2.840.10008.5.1.4.1.1.88.68",  # Radiopharmaceutical Radiation Dose SR
})
SR_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.88.22", "1.2.840.10008.5.1.4.1.1.88.33",
                        "1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.88.35"})
ROOTS = {"113701": "X-Ray Radiation Dose Report", "113500": "Radiopharmaceutical "
         "Radiation Dose Report"}
# indicator -> (display, the unit we store)
CANONICAL: dict[str, tuple[str, str]] = {
    "113813": ("CT Dose Length Product Total", "mGy.cm"),
    "113830": ("Mean CTDIvol", "mGy"),
    "113838": ("DLP", "mGy.cm"),
    "113722": ("Dose Area Product Total", "Gy.cm2"),
    "113725": ("Dose (RP) Total", "mGy"),
    "113726": ("Fluoro Dose Area Product Total", "Gy.cm2"),
    "113727": ("Acquisition Dose Area Product Total", "Gy.cm2"),
    "113728": ("Fluoro Dose (RP) Total", "mGy"),
    "113729": ("Acquisition Dose (RP) Total", "mGy"),
    "113730": ("Total Fluoro Time", "s"),
    "113507": ("Administered activity", "MBq"),
}
STUDY_TOTALS = ("113813", "113722", "113725", "113726", "113727", "113728", "113729",
                "113730")
PHANTOMS = {"113690": "IEC Head Dosimetry Phantom", "113691": "IEC Body Dosimetry Phantom"}


class DoseError(ValueError):
    pass


@dataclass
class Dose:
    """One indicator value, in its canonical unit."""

    code: str
    value: float
    unit: str
    source: str  # "rdsr" | "image-header"
    key: str  # stable within the study: the object it comes from and its position
    when: str = ""  # DA+TM of the report (or empty)
    components: list[tuple[str, Any]] = field(default_factory=list)  # (code, value)

    @property
    def display(self) -> str:
        return CANONICAL[self.code][0]


def _concept(item: Dataset) -> str:
    seq = item.get("ConceptNameCodeSequence")
    return str(seq[0].CodeValue) if seq and "CodeValue" in seq[0] else ""


def _children(item: Dataset) -> list[Dataset]:
    return list(item.get("ContentSequence") or [])


def _walk(item: Dataset) -> list[Dataset]:
    out = []
    for child in _children(item):
        out.append(child)
        out += _walk(child)
    return out


def _find(item: Dataset, code: str) -> list[Dataset]:
    return [c for c in _walk(item) if _concept(c) == code]


def _num(item: Dataset, label: str) -> tuple[float, str]:
    """A NUM content item's value and UCUM unit (PS3.3 C.18.1)."""
    measured = item.get("MeasuredValueSequence")
    if not measured:
        raise DoseError(f"{label} : valeur absente (MeasuredValueSequence)")
    m = measured[0]
    try:
        value = float(m.NumericValue)
    except (AttributeError, TypeError, ValueError):
        raise DoseError(f"{label} : valeur numérique illisible") from None
    units = m.get("MeasurementUnitsCodeSequence")
    unit = str(units[0].CodeValue) if units and "CodeValue" in units[0] else ""
    if not unit:
        raise DoseError(f"{label} : unité absente (MeasurementUnitsCodeSequence)")
    return value, unit


def _canonical(code: str, value: float, unit: str) -> float:
    try:
        return convert(value, unit, CANONICAL[code][1])
    except UnitError as exc:
        raise DoseError(f"{code} {CANONICAL[code][0]} : {exc}") from None


def is_dose_report(ds: Dataset) -> bool:
    sop = str(ds.get("SOPClassUID", ""))
    return sop in RDSR_CLASSES or (sop in SR_CLASSES and _concept(ds) in ROOTS)


def from_rdsr(ds: Dataset) -> list[Dose]:
    """The indicators a Radiation Dose SR reports (raises DoseError when malformed)."""
    uid = str(ds.SOPInstanceUID)
    when = f"{ds.get('ContentDate', '')}{ds.get('ContentTime', '')}"
    out: list[Dose] = []

    def dose(code: str, item: Dataset, key: str, components: list[tuple[str, Any]] | None
             = None) -> Dose:
        value, unit = _num(item, f"{code} {CANONICAL[code][0]}")
        return Dose(code, _canonical(code, value, unit), CANONICAL[code][1], "rdsr",
                    f"{uid}/{key}", when, components or [])

    for code in STUDY_TOTALS:
        found = [i for i in _find(ds, code) if i.get("ValueType") == "NUM"]
        if found:  # the accumulated value, reported once per report
            out.append(dose(code, found[0], code))
    for n, acquisition in enumerate(_find(ds, "113819"), start=1):  # CT Acquisition
        ctdi = [i for i in _find(acquisition, "113830") if i.get("ValueType") == "NUM"]
        if not ctdi:
            continue
        components: list[tuple[str, Any]] = []
        dlp = [i for i in _find(acquisition, "113838") if i.get("ValueType") == "NUM"]
        if dlp:
            value, unit = _num(dlp[0], "113838 DLP")
            components.append(("113838", _canonical("113838", value, unit)))
        phantom = _find(acquisition, "113835")
        if phantom and phantom[0].get("ConceptCodeSequence"):
            concept = phantom[0].ConceptCodeSequence[0]
            components.append(("113835", (str(concept.CodeValue),
                                          str(concept.get("CodeMeaning", "")))))
        out.append(dose("113830", ctdi[0], f"113819/{n}", components))
    for n, administration in enumerate(_find(ds, "113502"), start=1):
        activity = [i for i in _find(administration, "113507") if i.get("ValueType") == "NUM"]
        if activity:
            out.append(dose("113507", activity[0], f"113502/{n}"))
    if not out and _concept(ds) == "113500":  # TID 10021 without a 113502 container
        for n, item in enumerate(_find(ds, "113507"), start=1):
            out.append(dose("113507", item, f"113507/{n}"))
    return out


def from_headers(datasets: list[Dataset]) -> list[Dose]:
    """Fallback without an RDSR: per series, the mean CTDIvol (0018,9345, mGy) of its
    images, and the sum of (0018,115E) area dose products (dGy.cm2)."""
    ctdi: dict[str, list[float]] = {}
    dap: dict[str, list[float]] = {}
    for ds in datasets:
        series = str(ds.get("SeriesInstanceUID", ""))
        for keyword, bucket in (("CTDIvol", ctdi), ("ImageAndFluoroscopyAreaDoseProduct",
                                                     dap)):
            value = ds.get(keyword)
            if value not in (None, ""):
                try:
                    bucket.setdefault(series, []).append(float(value))
                except (TypeError, ValueError):
                    continue
    out = [Dose("113830", round(sum(v) / len(v), 4), "mGy", "image-header",
                f"{series}/header/113830") for series, v in sorted(ctdi.items())]
    out += [Dose("113722", _canonical("113722", sum(v), "dGy.cm2"), "Gy.cm2", "image-header",
                 f"{series}/header/113722") for series, v in sorted(dap.items())]
    return out
