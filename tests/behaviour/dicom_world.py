"""DICOM test objects: CT images derived from pydicom's ``CT_small.dcm`` header, and
Radiation Dose SRs built item by item after the PS3.16 templates (TID 10011 CT, TID
10001 projection X-ray, TID 10021 radiopharmaceutical), written as Part 10 files."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

XRAY_DOSE_SR = "1.2.840.10008.5.1.4.1.1.88.67"
RADIOPHARMA_DOSE_SR = "1.2.840.10008.5.1.4.1.1.88.68"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
PLACER_SYSTEM = "urn:oid:1.2.250.1.999.1"


def code(value: str, meaning: str, scheme: str = "DCM") -> Dataset:
    c = Dataset()
    c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = value, scheme, meaning
    return c


def _item(value_type: str, concept: tuple[str, str], relationship: str = "CONTAINS"
          ) -> Dataset:
    item = Dataset()
    item.RelationshipType = relationship
    item.ValueType = value_type
    item.ConceptNameCodeSequence = Sequence([code(*concept)])
    return item


def container(concept: tuple[str, str], *children: Dataset, template: str = "") -> Dataset:
    item = _item("CONTAINER", concept)
    item.ContinuityOfContent = "SEPARATE"
    if template:
        tpl = Dataset()
        tpl.MappingResource, tpl.TemplateIdentifier = "DCMR", template
        item.ContentTemplateSequence = Sequence([tpl])
    item.ContentSequence = Sequence(list(children))
    return item


def num(concept: tuple[str, str], value: float, unit: str, unit_meaning: str = "") -> Dataset:
    item = _item("NUM", concept)
    measured = Dataset()
    measured.NumericValue = str(value)
    measured.MeasurementUnitsCodeSequence = Sequence([code(unit, unit_meaning or unit,
                                                           "UCUM")])
    item.MeasuredValueSequence = Sequence([measured])
    return item


def coded(concept: tuple[str, str], value: tuple[str, str], scheme: str = "DCM",
          relationship: str = "CONTAINS") -> Dataset:
    item = _item("CODE", concept, relationship)
    item.ConceptCodeSequence = Sequence([code(*value, scheme)])
    return item


def textual(concept: tuple[str, str], value: str) -> Dataset:
    item = _item("TEXT", concept)
    item.TextValue = value
    return item


def header(study_uid: str, sop_class: str, modality: str, accession: str = "",
           placer: str = "", patient_id: str = "IPP001", issuer: str = "",
           series_uid: str | None = None, number: int = 1) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, 99, number
    ds.StudyDate, ds.StudyTime, ds.TimezoneOffsetFromUTC = "20261122", "101500", "+0100"
    ds.ContentDate, ds.ContentTime = "20261122", "103000"
    ds.AccessionNumber = accession
    ds.PatientName, ds.PatientID = "DUPONT^Claire", patient_id
    if issuer:
        q = Dataset()
        q.UniversalEntityID, q.UniversalEntityIDType = issuer, "ISO"
        ds.IssuerOfPatientIDQualifiersSequence = Sequence([q])
    if placer:
        ds.PlacerOrderNumberImagingServiceRequest = placer
    return ds


def ct_rdsr(study_uid: str, acquisitions: list[tuple[float, float]], dlp_total: float,
            **kw: Any) -> Dataset:
    """TID 10011: CT Radiation Dose report with (CTDIvol mGy, DLP mGy.cm) acquisitions."""
    ds = header(study_uid, XRAY_DOSE_SR, "SR", **kw)
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = Sequence([code("113701", "X-Ray Radiation Dose Report")])
    ds.ContinuityOfContent = "SEPARATE"
    tpl = Dataset()
    tpl.MappingResource, tpl.TemplateIdentifier = "DCMR", "10011"
    ds.ContentTemplateSequence = Sequence([tpl])
    items = [coded(("121058", "Procedure reported"), ("77477000", "Computed Tomography X-Ray"),
                   "SCT", "HAS CONCEPT MOD"),
             container(("113811", "CT Accumulated Dose Data"),
                       num(("113812", "Total Number of Irradiation Events"),
                           len(acquisitions), "{events}"),
                       num(("113813", "CT Dose Length Product Total"), dlp_total, "mGy.cm"))]
    for i, (ctdi, dlp) in enumerate(acquisitions, start=1):
        items.append(container(
            ("113819", "CT Acquisition"),
            textual(("125203", "Acquisition Protocol"), f"Thorax {i}"),
            coded(("123014", "Target Region"), ("43799004", "Chest"), "SCT"),
            coded(("113820", "CT Acquisition Type"), ("113804", "Sequenced Acquisition")),
            container(("113829", "CT Dose"),
                      num(("113830", "Mean CTDIvol"), ctdi, "mGy"),
                      coded(("113835", "CTDIw Phantom Type"),
                            ("113691", "IEC Body Dosimetry Phantom")),
                      num(("113838", "DLP"), dlp, "mGy.cm")),
            template="10013"))
    ds.ContentSequence = Sequence(items)
    return ds


def projection_rdsr(study_uid: str, dap_gy_m2: float, dose_rp_gy: float,
                    fluoro_minutes: float, **kw: Any) -> Dataset:
    """TID 10001/10002/10004: accumulated projection X-ray dose (units as modalities send
    them: Gy.m2, Gy, min)."""
    ds = header(study_uid, XRAY_DOSE_SR, "SR", **kw)
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = Sequence([code("113701", "X-Ray Radiation Dose Report")])
    ds.ContentSequence = Sequence([
        coded(("121058", "Procedure reported"), ("113704", "Projection X-Ray"),
              relationship="HAS CONCEPT MOD"),
        container(("113702", "Accumulated X-Ray Dose Data"),
                  num(("113722", "Dose Area Product Total"), dap_gy_m2, "Gy.m2"),
                  num(("113725", "Dose (RP) Total"), dose_rp_gy, "Gy"),
                  num(("113726", "Fluoro Dose Area Product Total"), dap_gy_m2 / 2, "Gy.m2"),
                  num(("113730", "Total Fluoro Time"), fluoro_minutes, "min"),
                  template="10002")])
    return ds


def nm_rdsr(study_uid: str, activity_mbq: float, **kw: Any) -> Dataset:
    """TID 10021: one radiopharmaceutical administration."""
    ds = header(study_uid, RADIOPHARMA_DOSE_SR, "SR", **kw)
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = Sequence([code("113500", "Radiopharmaceutical Radiation "
                                                          "Dose Report")])
    ds.ContentSequence = Sequence([
        container(("113502", "Radiopharmaceutical Administration"),
                  coded(("349358000", "Radiopharmaceutical agent"),
                        ("35321007", "Fluorodeoxyglucose F^18^"), "SCT"),
                  num(("113507", "Administered activity"), activity_mbq, "MBq"))])
    return ds


def ct_images(study_uid: str, count: int, series_uid: str | None = None,
              ctdi: float | None = None, **kw: Any) -> list[Dataset]:
    """``count`` CT images of one series, from the CT_small header (pixels dropped)."""
    base = dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
    series_uid = series_uid or generate_uid()
    out = []
    for n in range(1, count + 1):
        ds = copy.deepcopy(base)
        fresh = header(study_uid, CT_IMAGE, "CT", series_uid=series_uid, number=n, **kw)
        for element in fresh:
            ds[element.tag] = element
        ds.SeriesNumber = 2
        ds.BodyPartExamined = "CHEST"
        ds.SeriesDescription = "Thorax sans injection"
        if ctdi is not None:
            ds.CTDIvol = ctdi
        out.append(ds)
    return out


def write(ds: Dataset, folder: Path) -> Path:
    """``ds`` as a Part 10 file (explicit VR little endian) in ``folder``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path
