"""Study, Series and SOP Common modules (PS3.3 C.7.2.1, C.7.3.1, C.12.1) -> ImagingStudy
(FHIR R4 imagingstudy.html, our ``tlm-imaging-study`` profile; R-REP-7).

``merge`` adds instances to a study: known series and instances are kept, new ones
appended, counts recomputed — re-importing the same instances changes nothing.
``BODY_PART`` is PS3.16 Annex L (Body Part Examined -> SNOMED CT), ``LATERALITY``
PS3.3 C.7.3.1 (L, R, B -> SNOMED CT laterality qualifiers).
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from pydicom.dataset import Dataset

from adapters.hl7v2.datatypes import V2_0203, authority_system

DCM = "http://dicom.nema.org/resources/ontology/DCM"
SCT = "http://snomed.info/sct"
DICOM_UID = "urn:dicom:uid"
PROFILE = "https://teleimagerie.fr/fhir/StructureDefinition/tlm-imaging-study"
NON_IMAGE = frozenset({"SR", "KO", "PR", "DOC"})  # series that are not acquisitions

BODY_PART: dict[str, tuple[str, str]] = {
    "ABDOMEN": ("818981001", "Abdomen"), "ABDOMENPELVIS": ("818982008", "Abdomen and Pelvis"),
    "ANKLE": ("70258002", "Ankle joint"), "BRAIN": ("12738006", "Brain"),
    "BREAST": ("76752008", "Breast"), "CHEST": ("43799004", "Chest"),
    "CHESTABDOMEN": ("416550000", "Chest and abdomen"), "CSPINE": ("122494005",
                                                                    "Cervical spine"),
    "ELBOW": ("16953009", "Elbow joint"), "EXTREMITY": ("66019005", "Limb"),
    "FOOT": ("56459004", "Foot"), "HAND": ("85562004", "Hand"), "HEAD": ("69536005", "Head"),
    "HEART": ("80891009", "Heart"), "HIP": ("24136001", "Hip joint"),
    "KIDNEY": ("64033007", "Kidney"), "KNEE": ("72696002", "Knee"),
    "LIVER": ("10200004", "Liver"), "LSPINE": ("122496007", "Lumbar spine"),
    "NECK": ("45048000", "Neck"), "PELVIS": ("12921003", "Pelvis"),
    "SHOULDER": ("16982005", "Shoulder"), "SKULL": ("89546000", "Skull"),
    "SPINE": ("421060004", "Spine"), "TSPINE": ("122495006", "Thoracic spine"),
    "WHOLEBODY": ("38266002", "Entire body"), "WRIST": ("74670003", "Wrist joint"),
}
LATERALITY: dict[str, tuple[str, str]] = {
    "L": ("7771000", "Left"), "R": ("24028007", "Right"), "B": ("51440002", "Bilateral"),
}


def text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return str(value).strip() if value is not None and str(value).strip() else ""


def when(date: str, time: str, offset: str, zone: str) -> str | None:
    """DA + TM (+ TimezoneOffsetFromUTC) -> FHIR dateTime; a time needs a zone, so a
    time without offset is read in the site's zone (``TELEIMG_DICOM_TIMEZONE``)."""
    date = date.strip()
    if len(date) != 8 or not date.isdigit():
        return None
    day = f"{date[:4]}-{date[4:6]}-{date[6:]}"
    time = time.strip().split(".")[0]
    if len(time) < 4 or not time[:4].isdigit():
        return day
    time = (time + "00")[:6] if len(time) in (4, 5) else time[:6]
    try:
        naive = datetime.strptime(f"{date}{time}", "%Y%m%d%H%M%S")
    except ValueError:
        return day
    offset = offset.strip()
    if len(offset) == 5 and offset[0] in "+-" and offset[1:].isdigit():
        return naive.strftime("%Y-%m-%dT%H:%M:%S") + f"{offset[:3]}:{offset[3:]}"
    return naive.replace(tzinfo=ZoneInfo(zone)).isoformat()


def accession(ds: Dataset) -> dict[str, Any] | None:
    """(0008,0050) with its issuer (0008,0051: local namespace, universal id + type)."""
    value = text(ds, "AccessionNumber")
    if not value:
        return None
    out: dict[str, Any] = {"type": {"coding": [{"system": V2_0203, "code": "ACSN"}]},
                           "value": value}
    issuer = ds.get("IssuerOfAccessionNumberSequence")
    if issuer:
        item = issuer[0]
        try:
            out["system"] = authority_system(text(item, "LocalNamespaceEntityID"),
                                             text(item, "UniversalEntityID"),
                                             text(item, "UniversalEntityIDType") or "ISO")
        except Exception:  # an empty issuer item: the number stands alone
            pass
    return out


def _coding(table: dict[str, tuple[str, str]], key: str, system: str) -> dict[str, Any] | None:
    found = table.get(key.upper().replace(" ", "")) if key else None
    return {"system": system, "code": found[0], "display": found[1]} if found else None


def series_of(ds: Dataset, zone: str) -> dict[str, Any]:
    modality = text(ds, "Modality") or "OT"
    out: dict[str, Any] = {"uid": text(ds, "SeriesInstanceUID"),
                           "modality": {"system": DCM, "code": modality}}
    number = text(ds, "SeriesNumber")
    if number.lstrip("-").isdigit() and int(number) >= 0:
        out["number"] = int(number)
    if text(ds, "SeriesDescription"):
        out["description"] = text(ds, "SeriesDescription")
    body = _coding(BODY_PART, text(ds, "BodyPartExamined"), SCT)
    if body:
        out["bodySite"] = body
    side = _coding(LATERALITY, text(ds, "Laterality") or text(ds, "ImageLaterality"), SCT)
    if side:
        out["laterality"] = side
    started = when(text(ds, "SeriesDate"), text(ds, "SeriesTime"),
                   text(ds, "TimezoneOffsetFromUTC"), zone)
    if started:
        out["started"] = started
    out["instance"] = []
    return out


def instance_of(ds: Dataset) -> dict[str, Any]:
    out: dict[str, Any] = {"uid": text(ds, "SOPInstanceUID"),
                           "sopClass": {"system": "urn:ietf:rfc:3986",
                                        "code": f"urn:oid:{text(ds, 'SOPClassUID')}"}}
    number = text(ds, "InstanceNumber")
    if number.lstrip("-").isdigit() and int(number) >= 0:
        out["number"] = int(number)
    concept = ds.get("ConceptNameCodeSequence")
    if concept:  # a structured report's title, e.g. "X-Ray Radiation Dose Report"
        out["title"] = text(concept[0], "CodeMeaning")[:200]
    return out


def merge(existing: dict[str, Any] | None, datasets: list[Dataset], zone: str
          ) -> dict[str, Any]:
    """The study with ``datasets`` added (all of one Study Instance UID)."""
    study: dict[str, Any] = copy.deepcopy(existing) if existing else {
        "resourceType": "ImagingStudy", "status": "available"}
    study.setdefault("meta", {}).setdefault("profile", [PROFILE])
    _identify(study, datasets)
    _describe_study(study, datasets[0], zone)
    study["series"] = _merged_series(study, datasets, zone)
    modalities: list[dict[str, Any]] = list(study.get("modality") or [])
    for s in study["series"]:
        code = s["modality"]["code"]
        if code not in NON_IMAGE and not any(m.get("code") == code for m in modalities):
            modalities.append({"system": DCM, "code": code})
    if modalities:
        study["modality"] = modalities
    study["numberOfSeries"] = len(study["series"])
    study["numberOfInstances"] = sum(s["numberOfInstances"] for s in study["series"])
    return study


def _identify(study: dict[str, Any], datasets: list[Dataset]) -> None:
    """The Study Instance UID first, then the first accession number the datasets give;
    identifiers already there are kept."""
    uid = text(datasets[0], "StudyInstanceUID")
    identifiers = study.setdefault("identifier", [])
    if not any(i.get("system") == DICOM_UID for i in identifiers):
        identifiers.insert(0, {"system": DICOM_UID, "value": f"urn:oid:{uid}"})
    acsn = next((a for a in map(accession, datasets) if a), None)
    if acsn and not any(c.get("code") == "ACSN" for i in identifiers
                        for c in (i.get("type") or {}).get("coding") or []):
        identifiers.append(acsn)


def _describe_study(study: dict[str, Any], first: Dataset, zone: str) -> None:
    """When it started and its description, unless the study already says."""
    if "started" not in study:
        started = when(text(first, "StudyDate"), text(first, "StudyTime"),
                       text(first, "TimezoneOffsetFromUTC"), zone)
        if started:
            study["started"] = started
    if text(first, "StudyDescription") and "description" not in study:
        study["description"] = text(first, "StudyDescription")


def _merged_series(study: dict[str, Any], datasets: list[Dataset], zone: str
                   ) -> list[dict[str, Any]]:
    """The study's series with each new instance added, in number then UID order."""
    series: dict[str, dict[str, Any]] = {s["uid"]: s for s in study.get("series") or []}
    for ds in datasets:
        s = series.get(text(ds, "SeriesInstanceUID"))
        if s is None:
            s = series[text(ds, "SeriesInstanceUID")] = series_of(ds, zone)
        known = {i["uid"] for i in s.setdefault("instance", [])}
        if text(ds, "SOPInstanceUID") not in known:
            s["instance"].append(instance_of(ds))
    for s in series.values():
        s["instance"].sort(key=lambda i: (i.get("number", 0), i["uid"]))
        s["numberOfInstances"] = len(s["instance"])
    return sorted(series.values(), key=lambda s: (s.get("number", 0), s["uid"]))
