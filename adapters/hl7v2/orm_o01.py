"""Flux 1 and 2 of the Volet Téléradiologie: ORM^O01 from the RIS (``st_flux1.md``,
``st_flux2.md``).

* ORC-1 ``NW`` — the imaging request: Patient (PID), the ordering provider ORC-12 at the
  ordering structure ORC-21 (a PractitionerRole: the requesting site's team), the remote
  imager ORC-11 when known, the ServiceRequest (placer number ORC-2, OBR-13
  justification, NTE finalité, OBX groups) — created in state *reçue* (awaiting
  validation) by the workflow.
* ORC-1 ``CA`` — cancellation with the ORC-16 reason (``$cancel``). A CA for an order we
  have not received yet is *held* (ACK AA, kept with status ``held``) and applied as
  soon as its NW arrives (ADR 0010): nothing is lost when messages overtake each other.

``REQUEST_OBX`` is the mapping table of the OBX groups of flux 1.
"""

from __future__ import annotations

from typing import Any

from adapters.hl7v2 import datatypes as dt
from adapters.hl7v2 import identity
from adapters.hl7v2.message import Message, MessageError, Segment
from adapters.hl7v2.obx import Obx, first, groups
from adapters.hl7v2.tx import Context, Transaction, token
from adapters.transaction import find
from fhir_server.core.model import Interaction
from fhir_server.workflow.machine import ACT_KIND_SYSTEM, EXT_ACT_KIND, EXT_MODALITY

SR_PROFILE = "https://teleimagerie.fr/fhir/StructureDefinition/tlm-service-request"
EXT_OBJECTIVE = "https://teleimagerie.fr/fhir/StructureDefinition/tlm-objective"
EXT_PREGNANCY = "https://teleimagerie.fr/fhir/StructureDefinition/tlm-pregnancy-status"
EXT_LATERALITY = "https://teleimagerie.fr/fhir/StructureDefinition/tlm-laterality"
OBJECTIVE_SYSTEM = "https://teleimagerie.fr/fhir/CodeSystem/teleimagerie-objective"
ROLE_SYSTEM = "https://teleimagerie.fr/fhir/NamingSystem/practitioner-role"
OBX_SYSTEM = "https://teleimagerie.fr/fhir/NamingSystem/hl7v2-observation"
SCT = "http://snomed.info/sct"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
V2_0203 = dt.V2_0203
# LOINC 82810-3 answer (HL7 expandedYes-NoIndicator) -> statut-grossesse (SNOMED CT)
PREGNANCY = {"Y": ("77386006", "Enceinte"), "N": ("60001007", "Non enceinte")}
PREGNANCY_UNKNOWN = ("261665006", "Inconnu")
# TQ1-9 / ORC-7.6 priority (HL7 table 0485) -> ServiceRequest.priority
PRIORITY = {"S": "stat", "A": "asap", "R": "routine", "P": "routine", "T": "urgent",
            "C": "urgent"}
# NTE FINALITE_EXAMEN free text -> tlm-objective (the IG sends text; default diagnostic)
OBJECTIVE_WORDS = (("suivi", "suivi"), ("surveillance", "suivi"), ("dépistage", "depistage"),
                   ("depistage", "depistage"), ("bilan d'extension", "bilan-extension"))

# OBX-3.1 (TLR_OBSERVATION / LOINC) -> what flux 1 makes of it
REQUEST_OBX = {
    "MODALITE_IMAGERIE": "ServiceRequest.extension:modality (DCM)",
    "REGION_ANATOMIQUE": "n.1 ServiceRequest.bodySite, n.2 extension:laterality (SCT)",
    "11322-5": "Observation antécédents (valueString, OBX-8 pertinence) -> supportingInfo",
    "8302-2": "Observation taille (UCUM) -> supportingInfo",
    "29463-7": "Observation poids (UCUM) -> supportingInfo",
    "82810-3": "ServiceRequest.extension:pregnancyStatus (SCT)",
}
UNITS = {"cm": "cm", "m": "m", "kg": "kg", "g": "g", "mL": "mL", "ml": "mL"}


def placer(orc: Segment, where: str = "ORC^1^2") -> dict[str, Any]:
    """ORC-2 (EI) -> the PLAC identifier: entity id and its authority OID (tlm-sr-3)."""
    f = orc.field(2)
    value, uid = f.component(1), f.component(3)
    if not value:
        raise MessageError("101", "ORC-2 : numéro de demande (placer order number) absent",
                           where)
    if not uid:
        raise MessageError("101", "ORC-2.3 : OID de l'autorité d'affectation du numéro de "
                           "demande absent", where)
    return {"type": {"coding": [{"system": V2_0203, "code": "PLAC"}]},
            "system": dt.authority_system(f.component(2), uid, f.component(4) or "ISO"),
            "value": value}


def find_request(ctx: Context, ident: dict[str, Any]) -> dict[str, Any] | None:
    found = find(ctx.server, "ServiceRequest",
                 [("identifier", token(ident["system"], ident["value"]))])
    return found[0] if found else None


def patient_entry(ctx: Context, tx: Transaction, msg: Message, feed: bool) -> str:
    """The patient of the message: matched (R-EXAM-1) and written in ``tx`` if new or
    changed; returns its reference."""
    incoming = identity.patient_from_pid(msg.require("PID"))
    match = identity.find_patient(ctx.server, incoming)
    out = identity.merged(match, update_traits=feed)
    if match.id is None:
        ins = [i for i in out["identifier"] if dt.is_ins(i)] or out["identifier"]
        return tx.create(out, "identifier=" + token(ins[0]["system"], ins[0]["value"]))
    ref = f"Patient/{match.id}"
    if _content(out) != _content(match.stored or {}):
        tx.update(ref, out)
    return ref


def _content(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k not in ("meta", "id")}


def practitioner(tx: Transaction, seg: Segment, n: int) -> str | None:
    found = dt.xcn(seg.field(n))
    if found is None:
        return None
    ident = found["identifier"][0]
    return tx.create(found, "identifier=" + token(ident["system"], ident["value"]))


def new_order(ctx: Context, msg: Message) -> tuple[list[str], str, str]:
    """Flux 1 (NW). Returns (references written, the patient, the placer key)."""
    orc = msg.require("ORC")
    obr = msg.require("OBR")
    ident = placer(orc)
    key = token(ident["system"], ident["value"])
    tx = Transaction()
    patient = patient_entry(ctx, tx, msg, feed=False)
    requester = practitioner(tx, orc, 12) or practitioner(tx, obr, 16)
    if requester is None:
        raise MessageError("101", "ORC-12 : professionnel responsable de la demande absent "
                           "(R-REQ-1)", "ORC^1^12")
    org = dt.xon(orc.field(21))
    if org is None:
        raise MessageError("101", "ORC-21 : structure émettrice (FINESS) absente (R-REQ-1)",
                           "ORC^1^21")
    kind = dt.ce(orc.field(17))
    if kind:
        org["type"] = [kind]
    org_ident = org["identifier"][0]
    organization = tx.create(org, "identifier=" + token(org_ident["system"],
                                                        org_ident["value"]))
    xcn = orc.field(12) if orc.field(12) else obr.field(16)
    role: dict[str, Any] = {
        "resourceType": "PractitionerRole",
        "meta": {"profile": ["https://teleimagerie.fr/fhir/StructureDefinition/"
                             "tlm-practitioner-role"]},
        "identifier": [{"system": ROLE_SYSTEM,
                        "value": f"{xcn.component(1)}@{org_ident['value']}"}],
        "active": True, "practitioner": {"reference": requester},
        "organization": {"reference": organization}}
    phones = [t for t in (dt.xtn(f) for f in orc.repetitions(14)) if t]
    if phones:
        role["telecom"] = phones
    role_ref = tx.create(role, "identifier=" + token(ROLE_SYSTEM,
                                                     role["identifier"][0]["value"]))
    verifier = practitioner(tx, orc, 11)
    obx = groups(msg)
    request = _service_request(msg, orc, obr, obx, ident, patient, role_ref, verifier)
    request["supportingInfo"] = [{"reference": tx.create(o, "identifier=" + token(
        OBX_SYSTEM, o["identifier"][0]["value"]))} for o in _observations(
            obx, patient, f"{ident['value']}@{ident['system']}")]
    if not request["supportingInfo"]:
        del request["supportingInfo"]
    sr = tx.create(request, "identifier=" + key)
    written = tx.run(ctx, "ORC^1^2")
    return sorted({*written.values(), written.get(sr, sr)}), written.get(patient, patient), key


def _service_request(msg: Message, orc: Segment, obr: Segment,
                     obx: dict[str, dict[str, dict[str, Obx]]], ident: dict[str, Any],
                     patient: str, requester: str, verifier: str | None) -> dict[str, Any]:
    extensions: list[dict[str, Any]] = [
        {"url": EXT_ACT_KIND, "valueCodeableConcept": {"coding": [{
            "system": ACT_KIND_SYSTEM, "code": "telediagnostic",
            "display": "Téléradiologie (télédiagnostic)"}]}}]
    finalite = [n.get(3) for n in msg.all("NTE") if n.get(4).upper() == "FINALITE_EXAMEN"]
    objective = next((code for text in finalite for word, code in OBJECTIVE_WORDS
                      if word in text.lower()), "diagnostic")
    concept: dict[str, Any] = {"coding": [{"system": OBJECTIVE_SYSTEM, "code": objective}]}
    if finalite:
        concept["text"] = " ".join(finalite)
    extensions.append({"url": EXT_OBJECTIVE, "valueCodeableConcept": concept})
    modality_obx = first(obx, "MODALITE_IMAGERIE")
    if modality_obx is None or not modality_obx.segment.get(5):
        raise MessageError("101", "OBX MODALITE_IMAGERIE obligatoire absent (flux 1)", "OBX")
    mod = dt.ce(modality_obx.segment.field(5)) or {}
    coding = (mod.get("coding") or [{}])[0]
    extensions.append({"url": EXT_MODALITY, "valueCoding": {
        "system": "http://dicom.nema.org/resources/ontology/DCM", "code": coding["code"],
        **({"display": coding["display"]} if coding.get("display") else {})}})
    laterality = first(obx, "REGION_ANATOMIQUE", "2")
    if laterality is not None:
        extensions.append({"url": EXT_LATERALITY, "valueCodeableConcept": dt.ce(
            laterality.segment.field(5))})
    pregnancy = first(obx, "82810-3")
    if pregnancy is not None:
        answer = pregnancy.segment.get(5).upper()
        code, display = PREGNANCY.get(answer, PREGNANCY_UNKNOWN)
        extensions.append({"url": EXT_PREGNANCY, "valueCodeableConcept": {
            "coding": [{"system": SCT, "code": code, "display": display}]}})
    region = first(obx, "REGION_ANATOMIQUE", "1")
    if region is None:
        raise MessageError("101", "OBX REGION_ANATOMIQUE (n.1) obligatoire absent (flux 1)",
                           "OBX")
    body_site = dt.ce(region.segment.field(5))
    request: dict[str, Any] = {
        "resourceType": "ServiceRequest", "meta": {"profile": [SR_PROFILE]},
        "extension": extensions, "identifier": [ident], "status": "active",
        "intent": "order", "priority": _priority(msg, orc, obr),
        "code": {"text": " — ".join(x for x in (coding.get("display") or coding["code"],
                                                _label(body_site)) if x)},
        "subject": {"reference": patient},
        "authoredOn": dt.ts(orc.get(9), "ORC^1^9") or dt.ts(msg.msh.get(7), "MSH^1^7"),
        "requester": {"reference": requester},
        "reasonCode": [{"text": obr.get(13) or "non précisée"}],
        "bodySite": [body_site],
    }
    if verifier:
        request["performer"] = [{"reference": verifier}]
    notes = [f"{_note_label(n.get(4))}{n.get(3)}" for n in msg.all("NTE") if n.get(3)]
    if notes:
        request["note"] = [{"text": t} for t in notes]
    return request


def _label(concept: dict[str, Any] | None) -> str:
    if not concept:
        return ""
    c = (concept.get("coding") or [{}])[0]
    return str(concept.get("text") or c.get("display") or c.get("code") or "")


def _note_label(kind: str) -> str:
    return {"FINALITE_EXAMEN": "Finalité : ", "MODALITE_IMAGERIE": "Modalité : "}.get(
        kind.upper(), "")


def _priority(msg: Message, orc: Segment, obr: Segment) -> str:
    tq1 = msg.segment("TQ1")
    code = (tq1.get(9) if tq1 else "") or orc.get(7, 6) or obr.get(27, 6)
    return PRIORITY.get(code.upper(), "routine")


def _observations(obx: dict[str, dict[str, dict[str, Obx]]], patient: str,
                  order: str) -> list[dict[str, Any]]:
    out = []
    for code, display, category in (("11322-5", "Antécédents", "social-history"),
                                    ("8302-2", "Taille", "vital-signs"),
                                    ("29463-7", "Poids", "vital-signs")):
        o = first(obx, code)
        if o is None or not o.segment.get(5):
            continue
        obs: dict[str, Any] = {
            "resourceType": "Observation", "status": "final",
            "identifier": [{"system": OBX_SYSTEM, "value": f"{order}/{code}"}],
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                      "observation-category", "code": category}]}],
            "code": {"coding": [{"system": LOINC, "code": code, "display": display}]},
            "subject": {"reference": patient}}
        if o.value_type == "NM":
            try:
                value = float(o.segment.get(5).replace(",", "."))
            except ValueError:
                raise MessageError("102", f"OBX-5 numérique attendu : {o.segment.get(5)!r}",
                                   o.location) from None
            unit = o.segment.get(6)
            obs["valueQuantity"] = {"value": int(value) if value.is_integer() else value,
                                    "unit": unit, "system": UCUM,
                                    "code": UNITS.get(unit, unit)}
        else:
            obs["valueString"] = o.segment.get(5)
            if o.segment.get(8):
                obs["interpretation"] = [{"text": o.segment.get(8)}]
        out.append(obs)
    return out


def cancel(ctx: Context, msg: Message) -> tuple[str | None, str]:
    """Flux 2 (CA). Returns (the cancelled request, placer key); the request is None when
    the order is unknown yet (the caller holds the message)."""
    orc = msg.require("ORC")
    ident = placer(orc)
    key = token(ident["system"], ident["value"])
    request = find_request(ctx, ident)
    if request is None:
        return None, key
    reason = orc.field(16)
    text = reason.component(2) or reason.component(1) or "annulation demandée par le RIS"
    parameters: list[dict[str, Any]] = [{"name": "text", "valueString": text}]
    if reason.component(1):
        parameters.append({"name": "reason", "valueCodeableConcept": dt.ce(reason)})
    apply_cancel(ctx, request, parameters)
    return f"ServiceRequest/{request['id']}", key


def apply_cancel(ctx: Context, request: dict[str, Any],
                 parameters: list[dict[str, Any]]) -> None:
    if request.get("status") == "revoked":
        return  # already cancelled: a resent CA is acknowledged, not an error
    req = ctx.request(Interaction.OPERATION, resource_type="ServiceRequest",
                      id=request["id"], operation="cancel", method="POST",
                      body={"resourceType": "Parameters", "parameter": parameters})
    ctx.handle(req, "ORC^1^1")
