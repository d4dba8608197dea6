"""The modality's objects: a CT series and its Radiation Dose SR (TID 10011), built by the
same generators as the DICOM tests, for a named patient."""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from tests.behaviour import dicom_world


def ct_images(study_uid: str, count: int, name: str, born: str, sex: str, **kw: Any
              ) -> list[Dataset]:
    return [_part10(_patient(ds, name, born, sex))
            for ds in dicom_world.ct_images(study_uid, count, **kw)]


def ct_rdsr(study_uid: str, acquisitions: list[tuple[float, float]], dlp_total: float,
            name: str, born: str, sex: str, **kw: Any) -> Dataset:
    ds = dicom_world.ct_rdsr(study_uid, acquisitions, dlp_total, **kw)
    return _part10(_patient(ds, name, born, sex))


def _patient(ds: Dataset, name: str, born: str, sex: str) -> Dataset:
    """The Patient module as the modality's worklist filled it (PS3.3 C.7.1.1)."""
    ds.PatientName, ds.PatientBirthDate, ds.PatientSex = name, born, sex
    return ds


def _part10(ds: Dataset) -> Dataset:
    """The file meta a C-STORE SCU needs to choose its presentation context."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds
