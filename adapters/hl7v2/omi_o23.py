"""Flux 4 of the Volet Téléradiologie: OMI^O23 ORC-1 ``SR``, the post-exam information
(``st_flux4.md``) -> ImagingStudy (accession IPC-1, Study Instance UID IPC-3, modality,
act code), the contrast product administered (MedicationAdministration with its lot in
a contained Medication), the device (Device), the DRIMbox viewer (Endpoint). The study
is ``available``: the workflow moves the request to *images disponibles*.

What flux 4 reads is the tables below (:mod:`adapters.hl7v2.mapping`, issue 28).
"""

from __future__ import annotations

from typing import Any

from adapters.hl7v2 import datatypes as dt
from adapters.hl7v2.mapping import Row, Source, Table, apply, each, per_occurrence, special
from adapters.hl7v2.message import Field, Message, MessageError
from adapters.hl7v2.obx import Obx
from adapters.hl7v2.orm_o01 import find_request, placer
from adapters.hl7v2.tx import Context, Transaction, token

STUDY_PROFILE = "https://teleimagerie.fr/fhir/StructureDefinition/tlm-imaging-study"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
DEVICE_SYSTEM = "https://teleimagerie.fr/fhir/NamingSystem/hl7v2-device"
ADMIN_SYSTEM = "https://teleimagerie.fr/fhir/NamingSystem/hl7v2-administration"
EXT_DEVICE = "https://teleimagerie.fr/fhir/StructureDefinition/tlm-device"

DOSE_UNITS = {"ml": "mL"}


# -- flux 4 special cases (named in the tables below) -------------------------------------
def study_uid(f: Field) -> dict[str, str] | None:
    return {"system": "urn:dicom:uid", "value": f"urn:oid:{f.value}"} if f.value else None


def accession(f: Field) -> dict[str, Any] | None:
    """IPC-1 (EI) -> the ACSN identifier, system from its authority (EI-2/3/4)."""
    if not f.component(1):
        return None
    return {"type": {"coding": [{"system": dt.V2_0203, "code": "ACSN"}]},
            "system": dt.authority_system(f.component(2), f.component(3),
                                          f.component(4) or "ISO"),
            "value": f.component(1)}


@special
def modalities(src: Source) -> list[dict[str, str]]:
    """Every OBX MODALITE_IMAGERIE (DCM); else the request's ``tlm-modality``."""
    found = []
    for occurrence in (src.obx.get("MODALITE_IMAGERIE") or {}).values():
        for o in occurrence.values():
            c = (dt.ce(o.segment.field(5)) or {}).get("coding") or []
            if c:
                found.append({"system": DCM, "code": c[0]["code"]})
    return found or [e["valueCoding"] for e in src.context["request"].get("extension") or []
                     if e.get("url", "").endswith("/tlm-modality")]


@special
def started(src: Source) -> str | None:
    """TQ1-7 (start of the exam), else OBR-7, else MSH-7."""
    tq1, obr, msh = src.segment("TQ1"), src.segment("OBR"), src.segment("MSH")
    return (dt.ts(tq1.get(7), "TQ1^1^7") if tq1 else None) or \
        (dt.ts(obr.get(7), "OBR^1^7") if obr else None) or \
        (dt.ts(msh.get(7), "MSH^1^7") if msh else None)


@special
def procedure(src: Source) -> list[dict[str, Any]] | None:
    """OBX CODE_ACTE_IMAGERIE (CCAM), else IPC-2 (LOINC / CCAM)."""
    act = src.first_obx("CODE_ACTE_IMAGERIE")
    ipc = src.field("IPC", 2)
    concept = dt.ce(act.segment.field(5)) if act else (dt.ce(ipc) if ipc else None)
    return [concept] if concept else None


def viewer(o: Obx) -> dict[str, Any] | None:
    """OBX-5 ED (Base64) -> the DRIMbox viewer as an ``ihe-iid`` Endpoint."""
    url = o.encapsulated()
    if not url:
        return None
    return {"resourceType": "Endpoint", "status": "active",
            "identifier": [{"system": "urn:ietf:rfc:3986", "value": url}],
            "connectionType": {"system": "http://terminology.hl7.org/CodeSystem/"
                               "endpoint-connection-type", "code": "ihe-iid"},
            "name": "Visionneuse DRIMbox", "payloadType": [{"text": "DICOM"}],
            "address": url}


def device_identifier(o: Obx) -> list[dict[str, str]] | None:
    return [{"system": DEVICE_SYSTEM, "value": o.text()}] if o.text() else None


@special
def active(src: Source) -> str:
    """A device the exam was made on is in use."""
    return "active"


def product(o: Obx) -> list[dict[str, Any]]:
    """OBX-5 (CE, ATC) -> the contained Medication ``#produit``."""
    return [{"resourceType": "Medication", "id": "produit", "code": dt.ce(o.segment.field(5))}]


def dose(o: Obx) -> dict[str, Any] | None:
    """OBX-5 (NM) and OBX-6 unit -> ``dosage.dose`` (mL in UCUM)."""
    if not o.text():
        return None
    try:
        value = float(o.text().replace(",", "."))
    except ValueError:
        raise MessageError("102", f"quantité administrée invalide {o.text()!r}",
                           o.location) from None
    unit = o.segment.get(6)
    return {"value": int(value) if value.is_integer() else value,
            **({"unit": unit, "system": "http://unitsofmeasure.org",
                "code": DOSE_UNITS.get(unit.lower(), unit)} if unit else {})}


# -- the tables of flux 4 (issue 28: adding a field is one row) ---------------------------
STUDY = Table("ImagingStudy", (
    Row("IPC-3", "identifier[]", study_uid, "R-INT-2", "`urn:dicom:uid` (Study Instance UID)",
        required="IPC-3 : Study Instance UID absent"),
    Row("IPC-1", "identifier[]", accession, "R-INT-2", "ACSN (accession number)",
        required="IPC-1 : numéro d'examen (accession number) absent"),
    Row("OBX MODALITE_IMAGERIE", "modality", modalities, "R-SCOPE-1",
        "every occurrence (DCM); else the request's `tlm-modality`"),
    Row("TQ1-7 / OBR-7 / MSH-7", "started", started, "R-REP-3"),
    Row("OBX CODE_ACTE_IMAGERIE / IPC-2", "procedureCode", procedure, "R-REP-3",
        "CCAM / LOINC"),
))
ENDPOINT = Table("Endpoint (→ ImagingStudy.endpoint)", (
    Row("OBX URL_PARTIELLE_VIEWER", ".", viewer, "R-INT-2",
        "ED Base64 decoded: `ihe-iid` DRIMbox viewer"),))
DEVICE = Table("Device (each APPAREIL_IMAGERIE n; → ImagingStudy `tlm-device`)", (
    Row("OBX APPAREIL_IMAGERIE n.1", "identifier", device_identifier, "R-EXAM-3",
        "none: no Device", key=True),
    Row("—", "status", active, "R-EXAM-3"),
    Row("OBX APPAREIL_IMAGERIE n.2", "modelNumber", Obx.text, "R-EXAM-3"),
))
ADMINISTRATION = Table("MedicationAdministration (each PRODUIT_ADMINISTRE n)", (
    Row("OBX PRODUIT_ADMINISTRE n.1", "contained", product, "R-REP-3",
        "contained Medication code (ATC)", key=True),
    Row("OBX PRODUIT_ADMINISTRE n.2", "contained.0.batch.lotNumber", Obx.text, "R-REP-3"),
    Row("OBX PRODUIT_ADMINISTRE n.3", "dosage.dose", dose, "R-REP-3", "NM, OBX-6 unit (UCUM)"),
))
TABLES = (STUDY, ENDPOINT, DEVICE, ADMINISTRATION)


def post_exam(ctx: Context, msg: Message) -> tuple[list[str], str | None, str]:
    """Flux 4 (SR): the tables above, in order, on the request of ORC-2. Returns
    (references written, the patient, the placer key)."""
    ident = placer(msg.require("ORC"))
    key = token(ident["system"], ident["value"])
    request = find_request(ctx, ident)
    if request is None:
        raise MessageError("204", f"demande {ident['value']} inconnue : le flux 4 complète "
                           "une demande transmise par le flux 1", "ORC^1^2")
    msg.require("IPC")
    patient = request["subject"]["reference"]
    based_on = {"reference": f"ServiceRequest/{request['id']}"}
    src = Source(msg, context={"request": request})
    study = apply(STUDY, src, {"resourceType": "ImagingStudy",
                               "meta": {"profile": [STUDY_PROFILE]}})
    assert study is not None
    study.setdefault("started", None)  # as ever: null without any time (refused)
    study.update({"status": "available", "subject": {"reference": patient},
                  "basedOn": [based_on]})
    uid = study["identifier"][0]["value"]
    tx = Transaction()
    endpoints = [_create(tx, e) for e in each(ENDPOINT, src)]
    if endpoints:
        study["endpoint"] = [{"reference": e} for e in endpoints]
    devices = [_create(tx, d) for _, d in per_occurrence(
        DEVICE, src, "APPAREIL_IMAGERIE", {"resourceType": "Device"})]
    if devices:
        study["extension"] = [{"url": EXT_DEVICE, "valueReference": {"reference": d}}
                              for d in devices]
    study_ref = tx.create(study, "identifier=" + token("urn:dicom:uid", uid))
    base = uid.removeprefix("urn:oid:")
    for n, admin in per_occurrence(ADMINISTRATION, src, "PRODUIT_ADMINISTRE"):
        admin.update({
            "resourceType": "MedicationAdministration", "status": "completed",
            "identifier": [{"system": ADMIN_SYSTEM, "value": f"{base}/{n}"}],
            "medicationReference": {"reference": "#produit"},
            "subject": {"reference": patient}, "effectiveDateTime": study["started"],
            "supportingInformation": [{"reference": study_ref}, based_on]})
        _create(tx, admin)
    written = tx.run(ctx, "IPC^1^3")
    return sorted(set(written.values())), patient, key


def _create(tx: Transaction, resource: dict[str, Any]) -> str:
    """Created unless one with its first identifier exists (conditional create)."""
    ident = resource["identifier"][0]
    return tx.create(resource, "identifier=" + token(ident["system"], ident["value"]))
