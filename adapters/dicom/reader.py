"""DICOM Part 10 headers (PS3.10 §7): read without pixel data — we are not a PACS — from
files, folder trees and DICOMDIRs (PS3.10 §8, Basic Directory IOD), or from bytes
received over the network. Lenient on read: any readable Part 10 file is taken; what the
pipeline needs (Study, Series, SOP Instance UIDs, SOP Class) is checked here, and those
UIDs must follow their grammar (PS3.5 §9.1): the SOP Instance UID names the SCP's spool
file, and none of them may carry a path or anything else into what we write (issue 27
item 1; R-SEC-2, R-INT-2)."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.fileset import FileSet

from fhir_server.core.safepath import UnsafeIdentifier, check_uid, within

log = logging.getLogger("teleimagerie.dicom")
MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage (DICOMDIR)
REQUIRED = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")


class NotReadable(Exception):
    """A file that is not a usable DICOM instance (the import reports it and goes on)."""


class BadUid(NotReadable):
    """An instance whose Study, Series, SOP Instance or SOP Class UID breaks the UI
    grammar: refused with Storage status A900 (see :data:`NOT_MATCHING_SOP_CLASS`)."""

    def __init__(self, text: str, dataset: Dataset | None = None) -> None:
        super().__init__(text)
        self.dataset = dataset


# PS3.4 B.2.3 (Table B.2-1), C-STORE status "Error: Data Set does not match SOP Class"
# (A900-A9FF): these UIDs are Type 1 attributes of the SOP Common, General Study and
# General Series modules every storage IOD includes, and a value outside VR UI does not
# meet the IOD. Not C000 "Cannot understand": the data set was parsed. PS3.18 (STOW-RS
# FailureReason) uses the same code.
NOT_MATCHING_SOP_CLASS = 0xA900


class Directory(NotReadable):
    """A DICOMDIR met as a file: not an instance; its files are imported as such."""


@dataclass
class Instance:
    """One instance's header and where it came from (a path, an upload part, a peer)."""

    source: str
    dataset: Dataset

    @property
    def study_uid(self) -> str:
        return str(self.dataset.StudyInstanceUID)


def read(source: str | Path | bytes | BinaryIO, name: str | None = None) -> Instance:
    """The header of one Part 10 object (``stop_before_pixels``)."""
    label = name or (str(source) if isinstance(source, str | Path) else "<données>")
    fp = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        ds = dcmread(fp, stop_before_pixels=True)
    except InvalidDicomError as exc:
        raise NotReadable(f"{label} : pas un fichier DICOM Part 10 ({exc})") from None
    except Exception as exc:  # truncated, bad VR length, … — lenient reader, clear error
        raise NotReadable(f"{label} : DICOM illisible ({type(exc).__name__}: {exc})") from None
    return checked(ds, label)


def checked(ds: Dataset, label: str) -> Instance:
    meta = getattr(ds, "file_meta", None)
    if "SOPClassUID" not in ds and meta is not None and "MediaStorageSOPClassUID" in meta:
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
    if "SOPInstanceUID" not in ds and meta is not None and \
            "MediaStorageSOPInstanceUID" in meta:
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    if str(ds.get("SOPClassUID", "")) == MEDIA_DIRECTORY:
        raise Directory(f"{label} : DICOMDIR (répertoire), pas une instance")
    missing = [k for k in REQUIRED if not str(ds.get(k, "") or "").strip()]
    if missing:
        raise NotReadable(f"{label} : attribut(s) obligatoire(s) absent(s) : "
                          f"{', '.join(missing)}")
    for keyword in REQUIRED:
        try:
            check_uid(ds[keyword].value, keyword)
        except UnsafeIdentifier as exc:
            raise BadUid(f"{label} : {exc}", ds) from None
    return Instance(label, ds)


def expand(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Every file to read: files as given, folder trees walked (sorted), a DICOMDIR
    replaced by the files it references; each file once."""
    seen: set[Path] = set()

    def once(path: Path) -> Iterator[Path]:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            yield path

    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    candidate = Path(root) / name
                    if name.upper() == "DICOMDIR":
                        yield from _directory(candidate, once)
                    else:
                        yield from once(candidate)
        elif path.name.upper() == "DICOMDIR":
            yield from _directory(path, once)
        else:
            yield from once(path)


def _directory(path: Path, once: Callable[[Path], Iterator[Path]]) -> Iterator[Path]:
    seen_dir = {path.resolve()}
    try:
        fileset = FileSet(dcmread(path))
    except Exception:  # unreadable DICOMDIR: the folder walk still finds the files
        return
    for instance in fileset:
        referenced = Path(instance.path)
        try:  # a DICOMDIR (a patient's CD) names files under its own folder only
            within(path.parent, referenced)
        except UnsafeIdentifier:  # the file ID itself stays out of the log (R-SEC-6)
            log.warning("DICOMDIR %s : un fichier référencé sort de son dossier, ignoré",
                        path)
            continue
        if referenced.resolve() not in seen_dir:
            yield from once(referenced)
