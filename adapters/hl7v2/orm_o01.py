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

What flux 1 reads is the tables below (:mod:`adapters.hl7v2.mapping`, issue 28): one per
resource, special cases as the named functions the rows point to.
"""

from __future__ import annotations

from typing import Any

from adapters.hl7v2 import datatypes as dt
from adapters.hl7v2 import identity
from adapters.hl7v2.mapping import Row, Source, Table, apply, each, special
from adapters.hl7v2.message import Field, Message, MessageError, Segment
from adapters.hl7v2.obx import Obx
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

UNITS = {"cm": "cm", "m": "m", "kg": "kg", "g": "g", "mL": "mL", "ml": "mL"}
ACT_KIND = {"url": EXT_ACT_KIND, "valueCodeableConcept": {"coding": [{
    "system": ACT_KIND_SYSTEM, "code": "telediagnostic",
    "display": "Téléradiologie (télédiagnostic)"}]}}
NOTE_LABELS = {"FINALITE_EXAMEN": "Finalité : ", "MODALITE_IMAGERIE": "Modalité : "}


def placer_identifier(f: Field, where: str = "ORC^1^2") -> dict[str, Any]:
    """ORC-2 (EI) -> the PLAC identifier: entity id and its authority OID (tlm-sr-3)."""
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


def placer(orc: Segment, where: str = "ORC^1^2") -> dict[str, Any]:
    """ORC-2 of ``orc`` as :func:`placer_identifier` reads it (flux 2 and 4)."""
    return placer_identifier(orc.field(2), where)


# -- flux 1 special cases (named in the tables below) -------------------------------------
@special
def ordering_provider(src: Source) -> dict[str, Any] | None:
    """ORC-12, else OBR-16 (XCN) -> Practitioner."""
    for name, n in (("ORC", 12), ("OBR", 16)):
        f = src.field(name, n)
        found = dt.xcn(f) if f is not None else None
        if found is not None:
            return found
    return None


@special
def act_kind(src: Source) -> dict[str, Any]:
    """``tlm-act-kind`` is ``telediagnostic``: the IG's flow is teleradiology."""
    return ACT_KIND


@special
def objective(src: Source) -> dict[str, Any]:
    """NTE-3 of the NTE-4 ``FINALITE_EXAMEN`` notes -> ``tlm-objective``: a code named in
    the text (suivi, dépistage, bilan d'extension), else diagnostic; the text kept."""
    assert src.message is not None
    finalite = [n.get(3) for n in src.message.all("NTE")
                if n.get(4).upper() == "FINALITE_EXAMEN"]
    code = next((code for text in finalite for word, code in OBJECTIVE_WORDS
                 if word in text.lower()), "diagnostic")
    concept: dict[str, Any] = {"coding": [{"system": OBJECTIVE_SYSTEM, "code": code}]}
    if finalite:
        concept["text"] = " ".join(finalite)
    return {"url": EXT_OBJECTIVE, "valueCodeableConcept": concept}


def modality(o: Obx) -> dict[str, Any] | None:
    """OBX-5 (CE, DCM) -> ``tlm-modality``."""
    if not o.segment.get(5):
        return None
    coding = ((dt.ce(o.segment.field(5)) or {}).get("coding") or [{}])[0]
    return {"url": EXT_MODALITY, "valueCoding": {
        "system": "http://dicom.nema.org/resources/ontology/DCM", "code": coding["code"],
        **({"display": coding["display"]} if coding.get("display") else {})}}


def laterality(o: Obx) -> dict[str, Any]:
    return {"url": EXT_LATERALITY, "valueCodeableConcept": dt.ce(o.segment.field(5))}


def pregnancy_status(o: Obx) -> dict[str, Any]:
    """LOINC 82810-3 answer (expandedYes-NoIndicator) -> statut-grossesse (SNOMED CT)."""
    code, display = PREGNANCY.get(o.segment.get(5).upper(), PREGNANCY_UNKNOWN)
    return {"url": EXT_PREGNANCY, "valueCodeableConcept": {
        "coding": [{"system": SCT, "code": code, "display": display}]}}


def body_site(o: Obx) -> list[dict[str, Any] | None]:
    return [dt.ce(o.segment.field(5))]


@special
def code_text(src: Source) -> dict[str, Any]:
    """``code`` is text — modality — region — until flux 4 gives the act."""
    coding = next(e["valueCoding"] for e in src.resource["extension"]
                  if e["url"] == EXT_MODALITY)
    return {"text": " — ".join(x for x in (coding.get("display") or coding["code"],
                                           _label(src.resource["bodySite"][0])) if x)}


@special
def priority(src: Source) -> str:
    """TQ1-9, else ORC-7.6, else OBR-27.6 (HL7 table 0485); routine by default."""
    tq1, orc, obr = src.segment("TQ1"), src.segment("ORC"), src.segment("OBR")
    code = (tq1.get(9) if tq1 else "") or (orc.get(7, 6) if orc else "") or \
        (obr.get(27, 6) if obr else "")
    return PRIORITY.get(code.upper(), "routine")


@special
def authored_on(src: Source) -> str | None:
    """ORC-9, else MSH-7 (the message's time)."""
    orc, msh = src.segment("ORC"), src.segment("MSH")
    return (dt.ts(orc.get(9), "ORC^1^9") if orc else None) or \
        (dt.ts(msh.get(7), "MSH^1^7") if msh else None)


def justification(f: Field) -> list[dict[str, str]]:
    return [{"text": f.value or "non précisée"}]


@special
def notes(src: Source) -> list[dict[str, str]]:
    """NTE-3 of every NTE, prefixed by what NTE-4 says it is."""
    assert src.message is not None
    return [{"text": f"{NOTE_LABELS.get(n.get(4).upper(), '')}{n.get(3)}"}
            for n in src.message.all("NTE") if n.get(3)]


def _observation(o: Obx, src: Source, display: str, category: str) -> dict[str, Any] | None:
    """An OBX of flux 1 -> Observation (NM: valueQuantity in UCUM; else valueString and
    OBX-8 as interpretation), identified by the order and the LOINC code."""
    if not o.segment.get(5):
        return None
    obs: dict[str, Any] = {
        "resourceType": "Observation", "status": "final",
        "identifier": [{"system": OBX_SYSTEM, "value": f"{src.context['order']}/{o.code}"}],
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                  "observation-category", "code": category}]}],
        "code": {"coding": [{"system": LOINC, "code": o.code, "display": display}]},
        "subject": {"reference": src.context["patient"]}}
    if o.value_type == "NM":
        obs["valueQuantity"] = quantity(o)
    else:
        obs["valueString"] = o.segment.get(5)
        if o.segment.get(8):
            obs["interpretation"] = [{"text": o.segment.get(8)}]
    return obs


def quantity(o: Obx) -> dict[str, Any]:
    """OBX-5 (NM, decimal comma allowed) and OBX-6 unit -> Quantity (UCUM)."""
    try:
        value = float(o.segment.get(5).replace(",", "."))
    except ValueError:
        raise MessageError("102", f"OBX-5 numérique attendu : {o.segment.get(5)!r}",
                           o.location) from None
    unit = o.segment.get(6)
    return {"value": int(value) if value.is_integer() else value, "unit": unit,
            "system": UCUM, "code": UNITS.get(unit, unit)}


@special
def history(src: Source) -> dict[str, Any] | None:
    o = src.first_obx("11322-5")
    return _observation(o, src, "Antécédents", "social-history") if o else None


@special
def height(src: Source) -> dict[str, Any] | None:
    o = src.first_obx("8302-2")
    return _observation(o, src, "Taille", "vital-signs") if o else None


@special
def weight(src: Source) -> dict[str, Any] | None:
    o = src.first_obx("29463-7")
    return _observation(o, src, "Poids", "vital-signs") if o else None


# -- the tables of flux 1 (issue 28: adding a field is one row) ---------------------------
PLACER = Table("ServiceRequest", (
    Row("ORC-2", "identifier[]", placer_identifier, "R-REQ-1",
        "PLAC, system `urn:oid:<ORC-2.3>`", required="ORC-2 : numéro de demande (placer "
        "order number) absent"),))
REQUESTER = Table("Practitioner (ordering provider)", (
    Row("ORC-12 / OBR-16", ".", ordering_provider, "R-REQ-1",
        "XCN by idNatPs; with ORC-21 a PractitionerRole = `ServiceRequest.requester`",
        required="ORC-12 : professionnel responsable de la demande absent (R-REQ-1)",
        where="ORC^1^12"),))
ORGANIZATION = Table("Organization", (
    Row("ORC-21", ".", dt.xon, "R-REQ-1",
        "XON-10 identifier (FINESS / idNatSt), XON-6 authority, XON-7 type",
        required="ORC-21 : structure émettrice (FINESS) absente (R-REQ-1)"),
    Row("ORC-17", "type", dt.ce_list, "R-REQ-1", "TLR_TYPE_ORGANISATION"),
))
ROLE = Table("PractitionerRole", (
    Row("ORC-14*", "telecom", dt.xtn, "R-REQ-1", "call-back number (XTN)"),))
PERFORMER = Table("Practitioner (remote imager)", (
    Row("ORC-11", ".", dt.xcn, "R-ACT-4", "XCN by idNatPs → `ServiceRequest.performer`"),))
SERVICE_REQUEST = Table("ServiceRequest", (
    Row("—", "extension[]", act_kind, "R-SCOPE-3",
        "`tlm-act-kind` `telediagnostic`: the IG is the teleradiology flow"),
    Row("NTE FINALITE_EXAMEN", "extension[]", objective, "R-REQ-2",
        "`tlm-objective`: text; code suivi/dépistage/bilan d'extension when named, else "
        "diagnostic"),
    Row("OBX MODALITE_IMAGERIE", "extension[]", modality, "R-SCOPE-1", "`tlm-modality` (DCM)",
        required="OBX MODALITE_IMAGERIE obligatoire absent (flux 1)"),
    Row("OBX REGION_ANATOMIQUE n.2", "extension[]", laterality, "R-REQ-2",
        "`tlm-laterality` (SCT)"),
    Row("OBX 82810-3", "extension[]", pregnancy_status, "R-VAL-6",
        "`tlm-pregnancy-status` (Y 77386006, N 60001007, else 261665006)"),
    Row("OBX REGION_ANATOMIQUE n.1", "bodySite", body_site, "R-REQ-2", "SCT",
        required="OBX REGION_ANATOMIQUE (n.1) obligatoire absent (flux 1)"),
    Row("OBX MODALITE_IMAGERIE + REGION_ANATOMIQUE n.1", "code", code_text, "R-REQ-2",
        "text « modality — region » until flux 4 gives the act"),
    Row("TQ1-9 / ORC-7.6 / OBR-27.6", "priority", priority, "R-VAL-5",
        "S stat, A asap, R/P routine, T/C urgent; default routine"),
    Row("ORC-9 / MSH-7", "authoredOn", authored_on, "R-REQ-1"),
    Row("OBR-13", "reasonCode", justification, "R-REQ-3",
        "text (justification); « non précisée » when empty"),
    Row("NTE-3 (every NTE)", "note", notes, "R-REQ-4",
        "prefixed « Finalité : » / « Modalité : » after NTE-4"),
))
OBSERVATIONS = Table("Observation (→ ServiceRequest.supportingInfo)", (
    Row("OBX 11322-5", ".", history, "R-REQ-2",
        "antécédents: valueString (FT), OBX-8 → interpretation"),
    Row("OBX 8302-2", ".", height, "R-REQ-2", "height: valueQuantity (NM, OBX-6 UCUM)"),
    Row("OBX 29463-7", ".", weight, "R-REQ-2", "weight: valueQuantity (NM, OBX-6 UCUM)"),
))
TABLES = (PLACER, REQUESTER, ORGANIZATION, ROLE, PERFORMER, SERVICE_REQUEST, OBSERVATIONS)


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


def _create(tx: Transaction, resource: dict[str, Any]) -> str:
    """Created unless one with its first identifier exists (conditional create)."""
    ident = resource["identifier"][0]
    return tx.create(resource, "identifier=" + token(ident["system"], ident["value"]))


def _made(table: Table, src: Source, resource: dict[str, Any] | None = None
          ) -> dict[str, Any]:
    out = apply(table, src, resource)
    assert out is not None  # the flux 1 tables have no key row
    return out


def new_order(ctx: Context, msg: Message) -> tuple[list[str], str, str]:
    """Flux 1 (NW): the tables above, in order. Returns (references written, the
    patient, the placer key)."""
    orc = msg.require("ORC")
    obr = msg.require("OBR")
    src = Source(msg)
    request = _made(PLACER, src, {"resourceType": "ServiceRequest",
                                  "meta": {"profile": [SR_PROFILE]}})
    ident = request["identifier"][0]
    key = token(ident["system"], ident["value"])
    tx = Transaction()
    patient = patient_entry(ctx, tx, msg, feed=False)
    requester = _create(tx, _made(REQUESTER, src))
    org = _made(ORGANIZATION, src)
    organization = _create(tx, org)
    xcn = orc.field(12) if orc.field(12) else obr.field(16)
    role = _made(ROLE, src, {
        "resourceType": "PractitionerRole",
        "meta": {"profile": ["https://teleimagerie.fr/fhir/StructureDefinition/"
                             "tlm-practitioner-role"]},
        "identifier": [{"system": ROLE_SYSTEM,
                        "value": f"{xcn.component(1)}@{org['identifier'][0]['value']}"}],
        "active": True, "practitioner": {"reference": requester},
        "organization": {"reference": organization}})
    role_ref = _create(tx, role)
    performer = _made(PERFORMER, src)
    _made(SERVICE_REQUEST, src, request)
    request.setdefault("authoredOn", None)  # as ever: null without ORC-9 or MSH-7 (refused)
    request.update({"status": "active", "intent": "order", "subject": {"reference": patient},
                    "requester": {"reference": role_ref}})
    if performer:
        request["performer"] = [{"reference": _create(tx, performer)}]
    src.context.update(patient=patient, order=f"{ident['value']}@{ident['system']}")
    observations = [_create(tx, o) for o in each(OBSERVATIONS, src)]
    if observations:
        request["supportingInfo"] = [{"reference": r} for r in observations]
    sr = tx.create(request, "identifier=" + key)
    written = tx.run(ctx, "ORC^1^2")
    return sorted({*written.values(), written.get(sr, sr)}), written.get(patient, patient), key


def _label(concept: dict[str, Any] | None) -> str:
    if not concept:
        return ""
    c = (concept.get("coding") or [{}])[0]
    return str(concept.get("text") or c.get("display") or c.get("code") or "")


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
