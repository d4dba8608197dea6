"""Instances -> FHIR: one transaction per study and import batch (issue 7; R-REP-3,
R-REP-7, R-EXAM-1).

For each Study Instance UID of the batch: the study we already have (flux 4 of the HL7
adapter or an earlier import) or the request it fulfils (accession number, placer order
number — in the header, its Request Attributes or an SR's Referenced Request) gives the
patient and ``basedOn``. The patient's identifiers in the header must not designate
another patient (else the study is refused and the patient flagged, never merged).

A study for no known request is kept, tagged *demande à rattacher*: its subject is the
one patient its header's identifiers designate, else a provisional Patient built from the
header (identity ``PROV``) with a Flag *identité à vérifier*. The workflow attaches it
when its request is written (``fhir_server.workflow.studies``). The merged
ImagingStudy (one new version per batch, none when nothing is new), the archive's
Endpoint and the dose Observations are written in one transaction through the core, as
the acting principal — profiles, security, workflow (images available) and audit apply.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset

from adapters.dicom import dose as dosimetry
from adapters.dicom import patient as demographics
from adapters.dicom.audit import refusal_event, transfer_event
from adapters.dicom.reader import BadUid, Directory, Instance, NotReadable, expand, read
from adapters.dicom.settings import DicomSettings
from adapters.dicom.study import DCM, DICOM_UID, merge, text, when
from adapters.hl7v2.datatypes import V2_0203
from adapters.transaction import (
    Context,
    Refused,
    Transaction,
    find,
    flag_identity,
    literal,
    token,
)
from fhir_server.core.canonical import url
from fhir_server.security.principal import Principal
from fhir_server.security.scopes import parse_scopes
from fhir_server.workflow.machine import FLAG_SYSTEM
from fhir_server.workflow.records import coding, load
from fhir_server.workflow.studies import WAITING, identity_flag

if TYPE_CHECKING:
    from fhir_server.server.dispatch import FhirServer

DOSE_PROFILE = "https://teleimagerie.fr/fhir/StructureDefinition/tlm-dose-observation"
DOSE_SYSTEM = "https://teleimagerie.fr/fhir/NamingSystem/dicom-dose"
SOURCE_SYSTEM = url("CodeSystem", "teleimagerie-dose-source")
SOURCES = {"rdsr": "Rapport de dose structuré DICOM (RDSR)",
           "image-header": "Attribut de dose d'un en-tête d'image DICOM (sans RDSR)"}
UCUM = "http://unitsofmeasure.org"
WADO = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"


class StudyError(Exception):
    """The study cannot be imported as it is (no request, identity conflict, refused)."""


def system_principal(calling: str = "import") -> Principal:
    """The DICOM sources' principal: a PACS connector (role ``pacs``)."""
    return Principal(sub=f"dicom:{calling}", issuer="urn:teleimagerie:dicom",
                     roles=("pacs",), scopes=parse_scopes("system/*.cruds"),
                     name=f"DICOM {calling}", client_id=calling or None)


@dataclass
class StudyResult:
    uid: str
    instances: int  # instances in this batch
    new_instances: int = 0
    reference: str = ""  # ImagingStudy/id
    patient: str = ""  # Patient/id
    waiting: bool = False  # no request known yet: tagged "demande à rattacher"
    doses: int = 0
    error: str = ""


@dataclass
class Summary:
    files: int = 0
    skipped: list[str] = field(default_factory=list)  # DICOMDIRs met as files
    failed: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)
    studies: list[StudyResult] = field(default_factory=list)

    @property
    def imported(self) -> int:
        return sum(s.instances for s in self.studies if not s.error)

    def as_dict(self) -> dict[str, Any]:
        return {"files": self.files, "imported": self.imported,
                "skipped": self.skipped,
                "failed": [{"source": s, "reason": r} for s, r in self.failed],
                "studies": [vars(s) for s in self.studies]}


class Importer:
    def __init__(self, server: FhirServer, settings: DicomSettings | None = None,
                 principal: Principal | None = None, peer: str = "",
                 channel: str = "import") -> None:
        self.server = server
        self.channel = channel  # scp, stow, import: named in the exchange's AuditEvent
        self.settings = settings or DicomSettings()
        self.principal = principal or system_principal()
        self.peer = peer

    # -- entry points ------------------------------------------------------------------
    def import_paths(self, paths: Iterable[str | Path],
                     progress: Callable[[str], None] | None = None) -> Summary:
        """Files, folder trees, DICOMDIRs (CLI)."""
        summary = Summary()
        instances: list[Instance] = []
        for path in expand(paths):
            summary.files += 1
            try:
                instances.append(read(path))
            except Directory:
                summary.skipped.append(str(path))
            except NotReadable as exc:
                summary.failed.append((str(path), str(exc)))
                if isinstance(exc, BadUid):
                    self.refused([str(exc)])
            if progress is not None:
                progress(str(path))
        self.import_instances(instances, summary)
        return summary

    def refused(self, reasons: list[str]) -> None:
        """Audit instances refused before the pipeline, one event each (R-SEC-3,
        R-INT-2): a sender's bad UIDs are on the trail with the studies it sent."""
        if reasons and self.server.audit is not None:
            sender = self.principal.client_id or self.principal.sub
            self.server.audit.record([refusal_event(r, sender, self.channel, self.peer,
                                                    self.server.name) for r in reasons],
                                     durable=True)

    def import_instances(self, instances: list[Instance], summary: Summary | None = None
                         ) -> Summary:
        summary = summary or Summary(files=len(instances))
        by_study: dict[str, list[Instance]] = {}
        for instance in instances:
            by_study.setdefault(instance.study_uid, []).append(instance)
        events = []
        for uid, group in by_study.items():
            result = StudyResult(uid, len(group))
            try:
                self._study(uid, [i.dataset for i in group], result)
            except StudyError as exc:
                result.error = str(exc)
                summary.failed += [(i.source, str(exc)) for i in group]
            summary.studies.append(result)
            events.append(transfer_event(result, self.principal.client_id or
                                         self.principal.sub, self.channel, self.peer,
                                         self.server.name))
        if events and self.server.audit is not None:
            self.server.audit.record(events, durable=True)
        return summary

    # -- one study ---------------------------------------------------------------------
    def _study(self, uid: str, datasets: list[Dataset], result: StudyResult) -> None:
        server = self.server
        found = find(server, "ImagingStudy", [("identifier",
                                               token(DICOM_UID, f"urn:oid:{uid}"))])
        existing = found[0] if found else None
        waiting = existing is not None and not existing.get("basedOn")
        request = None if waiting else self._request(existing, datasets)
        tx = Transaction()
        patient = self._patient(tx, request, existing, datasets, uid)
        study = merge(existing, datasets, self.settings.timezone)
        study["subject"] = {"reference": patient}
        if request is not None:
            study.setdefault("basedOn", [{"reference": f"ServiceRequest/{request['id']}"}])
        else:
            _mark_waiting(study, datasets)
            result.waiting = True
        if not study.get("modality"):  # only SR/KO/PR so far: the requested modality
            study["modality"] = _requested_modality(request, uid)
        before = sum(len(s.get("instance") or []) for s in (existing or {}).get("series")
                     or [])
        result.new_instances = study["numberOfInstances"] - before
        if self.settings.wado_url and not study.get("endpoint"):
            study["endpoint"] = [{"reference": self._endpoint(tx, self.settings.wado_url)}]
        study_ref = _write_study(tx, study, existing, uid)
        doses = self._doses(datasets, existing)
        if existing is not None and any(d.source == "rdsr" for d in doses):
            # the RDSR supersedes what image headers gave (the history keeps them)
            for obs in self._doses_of(existing, "image-header"):
                tx.delete(f"Observation/{obs['id']}")
        for value in doses:
            tx.create(self._observation(value, patient, study_ref, request, study),
                      "identifier=" + token(DOSE_SYSTEM, value.key))
        ctx = Context(server, self.principal, self.peer, uuid.uuid4().hex, self.settings,
                      source="dicom")
        try:
            written = tx.run(ctx, f"ImagingStudy {uid}")
        except Refused as exc:
            raise StudyError(f"étude {uid} refusée ({exc.status}) : {exc.text}") from None
        result.reference = written.get(study_ref, study_ref)
        result.patient = written.get(patient, patient)
        result.doses = len(doses)

    def _patient(self, tx: Transaction, request: dict[str, Any] | None,
                 existing: dict[str, Any] | None, datasets: list[Dataset], uid: str) -> str:
        """The study's subject: its request's patient (the header must agree, R-EXAM-1),
        else the subject it waits with, else one found or created from the header."""
        if request is not None:
            patient = (request.get("subject") or {}).get("reference")
            if not patient:
                raise StudyError(f"étude {uid} : la demande {request['id']} n'a pas de "
                                 "patient")
            self._check_identity(patient, datasets[0], uid)
            return str(patient)
        if existing is not None:  # still waiting for its request: same subject
            return str((existing.get("subject") or {}).get("reference") or "")
        return self._subject(tx, datasets, uid)

    @staticmethod
    def _endpoint(tx: Transaction, wado_url: str) -> str:
        """The archive the study is read from (R-REP-7), created once."""
        endpoint = {"resourceType": "Endpoint", "status": "active",
                    "identifier": [{"system": "urn:ietf:rfc:3986", "value": wado_url}],
                    "connectionType": {"system": WADO, "code": "dicom-wado-rs"},
                    "name": "Archive d'images (WADO-RS)",
                    "payloadType": [{"text": "DICOM"}],
                    "payloadMimeType": ["application/dicom"],
                    "address": wado_url}
        return tx.create(endpoint, "identifier=" + token("urn:ietf:rfc:3986", wado_url))

    def _request(self, existing: dict[str, Any] | None, datasets: list[Dataset]
                 ) -> dict[str, Any] | None:
        accessions, placers = _order_numbers(datasets)
        # the study we have (flux 4, an earlier import), else one of the same accession
        studies = [existing] if existing else []
        for number in accessions:
            studies += find(self.server, "ImagingStudy", [("identifier", _value(number))])
        for study in studies:
            for based in study.get("basedOn") or []:
                ref = based.get("reference", "")
                request = load(self.server, ref) if ref.startswith("ServiceRequest/") \
                    else None
                if request is not None:
                    return request
        for number in [*accessions, *placers]:
            hit = find(self.server, "ServiceRequest", [("identifier", _value(number))])
            if len(hit) == 1:
                return hit[0]
            if len(hit) > 1:
                raise StudyError(f"numéro {number} : {len(hit)} demandes correspondent, "
                                 "rattachement impossible sans ambiguïté")
        return None

    def _subject(self, tx: Transaction, datasets: list[Dataset], uid: str) -> str:
        """A study without request: the one patient its identifiers designate, else a
        provisional Patient and its identity Flag, written with the study (R-EXAM-1)."""
        ds = datasets[0]
        known: set[str] = set()
        for system, value in demographics.identifiers(ds):
            known |= {f"Patient/{p['id']}" for p in
                      find(self.server, "Patient", [("identifier", token(system, value))])}
        if len(known) > 1:
            raise StudyError(f"étude {uid} : les identifiants patient DICOM désignent "
                             f"{len(known)} patients ({', '.join(sorted(known))})")
        if known:
            return known.pop()
        accessions, placers = _order_numbers(datasets)
        told = ", ".join(f"numéro d'examen {a}" for a in accessions) or \
            "pas de numéro d'examen (0008,0050)"
        if placers:
            told += ", " + ", ".join(f"demande {p}" for p in placers)
        ref = tx.create(demographics.provisional(ds))
        tx.create(identity_flag(ref, f"Identité provisoire créée depuis l'en-tête DICOM de "
                                     f"l'étude {uid} reçue sans demande connue ({told})"))
        return ref

    def _check_identity(self, patient: str, ds: Dataset, uid: str) -> None:
        """The header's patient identifiers must not designate another patient."""
        for system, value in demographics.identifiers(ds):
            for other in find(self.server, "Patient", [("identifier", token(system, value))]):
                if f"Patient/{other['id']}" != patient:
                    # the value itself stays out: this text reaches logs (R-SEC-6)
                    why = (f"étude {uid} : un identifiant patient DICOM ({system}) désigne "
                           f"Patient/{other['id']}, la demande concerne {patient}")
                    flag_identity(self.server, patient, why)
                    raise StudyError(why + " (identité à vérifier, R-EXAM-1)")

    def _doses(self, datasets: list[Dataset], existing: dict[str, Any] | None
               ) -> list[dosimetry.Dose]:
        reports = [ds for ds in datasets if dosimetry.is_dose_report(ds)]
        out: list[dosimetry.Dose] = []
        for ds in reports:
            try:
                out += dosimetry.from_rdsr(ds)
            except dosimetry.DoseError as exc:
                raise StudyError(f"rapport de dose {text(ds, 'SOPInstanceUID')} : {exc}"
                                 ) from None
        if reports or (existing and self._has_rdsr_doses(existing)):
            return out
        return dosimetry.from_headers(datasets)

    def _has_rdsr_doses(self, study: dict[str, Any]) -> bool:
        return bool(self._doses_of(study, "rdsr"))

    def _doses_of(self, study: dict[str, Any], source: str) -> list[dict[str, Any]]:
        return find(self.server, "Observation", [("part-of", f"ImagingStudy/{study['id']}"),
                                                  ("method", f"{SOURCE_SYSTEM}|{source}")])

    def _observation(self, value: dosimetry.Dose, patient: str, study_ref: str,
                     request: dict[str, Any] | None, study: dict[str, Any]
                     ) -> dict[str, Any]:
        def quantity(v: float, unit: str) -> dict[str, Any]:
            return {"value": int(v) if float(v).is_integer() else v, "unit": unit,
                    "system": UCUM, "code": unit}

        obs: dict[str, Any] = {
            "resourceType": "Observation", "meta": {"profile": [DOSE_PROFILE]},
            "identifier": [{"system": DOSE_SYSTEM, "value": value.key}],
            "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                      "observation-category", "code": "imaging"}]}],
            "code": {"coding": [{"system": DCM, "code": value.code,
                                 "display": value.display}]},
            "subject": {"reference": patient},
            "partOf": [{"reference": study_ref}],
            "valueQuantity": quantity(value.value, value.unit),
            "method": {"coding": [{"system": SOURCE_SYSTEM, "code": value.source,
                                   "display": SOURCES[value.source]}]},
        }
        if request is not None:
            obs["basedOn"] = [{"reference": f"ServiceRequest/{request['id']}"}]
        effective = when(value.when[:8], value.when[8:], "", self.settings.timezone) \
            if value.when else study.get("started")
        if effective:
            obs["effectiveDateTime"] = effective
        components = []
        for code, v in value.components:
            if code == "113835":
                components.append({"code": {"coding": [{"system": DCM, "code": code,
                                                        "display": "CTDIw Phantom Type"}]},
                                   "valueCodeableConcept": {"coding": [{
                                       "system": DCM, "code": v[0], "display": v[1]}]}})
            else:
                display, unit = dosimetry.CANONICAL[code]
                components.append({"code": {"coding": [{"system": DCM, "code": code,
                                                        "display": display}]},
                                   "valueQuantity": quantity(v, unit)})
        if components:
            obs["component"] = components
        return obs


def _mark_waiting(study: dict[str, Any], datasets: list[Dataset]) -> None:
    """A study without its request is tagged waiting and keeps the header's placer
    numbers: they are what attaches it when its order arrives
    (workflow.studies.attach_waiting; issue 24)."""
    meta = study.setdefault("meta", {})
    if not any(t.get("code") == WAITING for t in meta.get("tag") or []):
        meta["tag"] = [*(meta.get("tag") or []), coding(
            FLAG_SYSTEM, WAITING, "Étude en attente de rattachement à sa demande")]
    for number in _order_numbers(datasets)[1]:
        if not any(i.get("value") == number for i in study["identifier"]):
            study["identifier"].append({"type": {"coding": [{
                "system": V2_0203, "code": "PLAC"}]}, "value": number})


def _requested_modality(request: dict[str, Any] | None, uid: str) -> list[dict[str, Any]]:
    """The modality the request asks for (a study of only SR/KO/PR has no image one)."""
    modalities = [e["valueCoding"] for e in (request or {}).get("extension") or []
                  if e.get("url", "").endswith("/tlm-modality") and "valueCoding" in e]
    if not modalities:
        raise StudyError(f"étude {uid} : ni image ni demande connue, la modalité "
                         "de l'examen est inconnue")
    return modalities


def _write_study(tx: Transaction, study: dict[str, Any], existing: dict[str, Any] | None,
                 uid: str) -> str:
    """Create it, update it if it changed, else leave it: its reference in ``tx``."""
    if existing is None:
        return tx.create(study, "identifier=" + token(DICOM_UID, f"urn:oid:{uid}"))
    if study != existing:
        return tx.update(f"ImagingStudy/{existing['id']}", study)
    return f"ImagingStudy/{existing['id']}"


def _value(number: str) -> str:
    """A token search on the identifier value alone (any system)."""
    return literal(number)


def _order_numbers(datasets: list[Dataset]) -> tuple[list[str], list[str]]:
    """Accession and placer order numbers from the headers, their Request Attributes
    (0040,0275) and an SR's Referenced Request (0040,A370), in order, once each."""
    accessions: list[str] = []
    placers: list[str] = []
    for ds in datasets:
        items = [ds, *(ds.get("RequestAttributesSequence") or []),
                 *(ds.get("ReferencedRequestSequence") or [])]
        for item in items:
            for keyword, bucket in (("AccessionNumber", accessions),
                                    ("PlacerOrderNumberImagingServiceRequest", placers)):
                value = text(item, keyword)
                if value and value not in bucket:
                    bucket.append(value)
    return accessions, placers

