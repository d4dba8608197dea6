"""Flux 4 of the Volet Téléradiologie: OMI^O23 ORC-1 ``SR``, the post-exam information
(``st_flux4.md``) -> ImagingStudy (accession IPC-1, Study Instance UID IPC-3, modality,
act code), the contrast product administered (MedicationAdministration with its lot in
a contained Medication), the device (Device), the DRIMbox viewer (Endpoint). The study
is ``available``: the workflow moves the request to *images disponibles*.

``POST_EXAM_OBX`` is the mapping table of the OBX groups of flux 4.
"""

from __future__ import annotations

from typing import Any

from adapters.hl7v2 import datatypes as dt
from adapters.hl7v2.message import Message, MessageError
from adapters.hl7v2.obx import first, groups
from adapters.hl7v2.orm_o01 import find_request, placer
from adapters.hl7v2.tx import Context, Transaction, token

STUDY_PROFILE = "https://teleimagerie.fr/fhir/StructureDefinition/tlm-imaging-study"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
DEVICE_SYSTEM = "https://teleimagerie.fr/fhir/NamingSystem/hl7v2-device"
ADMIN_SYSTEM = "https://teleimagerie.fr/fhir/NamingSystem/hl7v2-administration"
EXT_DEVICE = "https://teleimagerie.fr/fhir/StructureDefinition/tlm-device"

POST_EXAM_OBX = {
    "URL_PARTIELLE_VIEWER": "Endpoint (ihe-iid, DRIMbox) -> ImagingStudy.endpoint",
    "CODE_ACTE_IMAGERIE": "ImagingStudy.procedureCode (LOINC / CCAM)",
    "REGION_ANATOMIQUE": "ImagingStudy.reasonCode-free: n.1/n.2 kept on the request",
    "MODALITE_IMAGERIE": "ImagingStudy.modality (DCM)",
    "PRODUIT_ADMINISTRE": "n.1 product (ATC) n.2 lot n.3 quantity -> MedicationAdministration",
    "APPAREIL_IMAGERIE": "n.1 identifier n.2 model -> Device (ImagingStudy extension "
                         "tlm-device)",
}


def post_exam(ctx: Context, msg: Message) -> tuple[list[str], str | None, str]:
    orc = msg.require("ORC")
    ident = placer(orc)
    key = token(ident["system"], ident["value"])
    request = find_request(ctx, ident)
    if request is None:
        raise MessageError("204", f"demande {ident['value']} inconnue : le flux 4 complète "
                           "une demande transmise par le flux 1", "ORC^1^2")
    ipc = msg.require("IPC")
    study_uid = ipc.get(3)
    if not study_uid:
        raise MessageError("101", "IPC-3 : Study Instance UID absent", "IPC^1^3")
    accession = ipc.field(1)
    if not accession.component(1):
        raise MessageError("101", "IPC-1 : numéro d'examen (accession number) absent",
                           "IPC^1^1")
    obx = groups(msg)
    patient = request["subject"]["reference"]
    tx = Transaction()
    modalities = []
    for occurrence in (obx.get("MODALITE_IMAGERIE") or {}).values():
        for o in occurrence.values():
            c = (dt.ce(o.segment.field(5)) or {}).get("coding") or []
            if c:
                modalities.append({"system": DCM, "code": c[0]["code"]})
    if not modalities:
        modalities = [e["valueCoding"] for e in request.get("extension") or []
                      if e.get("url", "").endswith("/tlm-modality")]
    tq1 = msg.segment("TQ1")
    obr = msg.segment("OBR")
    started = (dt.ts(tq1.get(7), "TQ1^1^7") if tq1 else None) or \
        (dt.ts(obr.get(7), "OBR^1^7") if obr else None) or dt.ts(msg.msh.get(7), "MSH^1^7")
    study: dict[str, Any] = {
        "resourceType": "ImagingStudy", "meta": {"profile": [STUDY_PROFILE]},
        "identifier": [
            {"system": "urn:dicom:uid", "value": f"urn:oid:{study_uid}"},
            {"type": {"coding": [{"system": dt.V2_0203, "code": "ACSN"}]},
             "system": dt.authority_system(accession.component(2), accession.component(3),
                                           accession.component(4) or "ISO"),
             "value": accession.component(1)}],
        "status": "available", "modality": modalities, "subject": {"reference": patient},
        "started": started, "basedOn": [{"reference": f"ServiceRequest/{request['id']}"}],
    }
    act = first(obx, "CODE_ACTE_IMAGERIE")
    procedure = dt.ce(act.segment.field(5)) if act else dt.ce(ipc.field(2))
    if procedure:
        study["procedureCode"] = [procedure]
    viewer = first(obx, "URL_PARTIELLE_VIEWER")
    if viewer is not None and viewer.encapsulated():
        endpoint = {"resourceType": "Endpoint", "status": "active",
                    "identifier": [{"system": "urn:ietf:rfc:3986",
                                    "value": viewer.encapsulated()}],
                    "connectionType": {"system": "http://terminology.hl7.org/CodeSystem/"
                                       "endpoint-connection-type", "code": "ihe-iid"},
                    "name": "Visionneuse DRIMbox", "payloadType": [{"text": "DICOM"}],
                    "address": viewer.encapsulated()}
        study["endpoint"] = [{"reference": tx.create(endpoint, "identifier=" + token(
            "urn:ietf:rfc:3986", viewer.encapsulated()))}]
    devices = []
    for _, parts in sorted((obx.get("APPAREIL_IMAGERIE") or {}).items()):
        ident_obx, model = parts.get("1"), parts.get("2")
        if ident_obx is None or not ident_obx.text():
            continue
        device: dict[str, Any] = {"resourceType": "Device", "identifier": [
            {"system": DEVICE_SYSTEM, "value": ident_obx.text()}], "status": "active"}
        if model is not None and model.text():
            device["modelNumber"] = model.text()
        devices.append(tx.create(device, "identifier=" + token(DEVICE_SYSTEM,
                                                               ident_obx.text())))
    if devices:
        study["extension"] = [{"url": EXT_DEVICE, "valueReference": {"reference": d}}
                              for d in devices]
    study_ref = tx.create(study, "identifier=" + token("urn:dicom:uid",
                                                       f"urn:oid:{study_uid}"))
    for n, parts in sorted((obx.get("PRODUIT_ADMINISTRE") or {}).items()):
        product = parts.get("1")
        if product is None:
            continue
        medication: dict[str, Any] = {"resourceType": "Medication", "id": "produit",
                                      "code": dt.ce(product.segment.field(5))}
        lot = parts.get("2")
        if lot is not None and lot.text():
            medication["batch"] = {"lotNumber": lot.text()}
        admin: dict[str, Any] = {
            "resourceType": "MedicationAdministration", "status": "completed",
            "identifier": [{"system": ADMIN_SYSTEM, "value": f"{study_uid}/{n}"}],
            "contained": [medication], "medicationReference": {"reference": "#produit"},
            "subject": {"reference": patient}, "effectiveDateTime": started,
            "supportingInformation": [{"reference": study_ref},
                                      {"reference": f"ServiceRequest/{request['id']}"}]}
        quantity = parts.get("3")
        if quantity is not None and quantity.text():
            try:
                value = float(quantity.text().replace(",", "."))
            except ValueError:
                raise MessageError("102", f"quantité administrée invalide "
                                   f"{quantity.text()!r}", quantity.location) from None
            unit = quantity.segment.get(6)
            admin["dosage"] = {"dose": {
                "value": int(value) if value.is_integer() else value,
                **({"unit": unit, "system": "http://unitsofmeasure.org",
                    "code": "mL" if unit.lower() == "ml" else unit} if unit else {})}}
        tx.create(admin, "identifier=" + token(ADMIN_SYSTEM, f"{study_uid}/{n}"))
    written = tx.run(ctx, "IPC^1^3")
    return sorted(set(written.values())), patient, key
