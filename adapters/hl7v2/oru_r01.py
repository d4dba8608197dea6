"""Flux 3 of the Volet Téléradiologie: ORU^R01 to the RIS (``st_flux3.md``) — the remote
imager's decision on a request: ORC-1 ``OK`` (accepted, with the imaging protocol in an
OBX ED ``PROTOCOLE_IMAGERIE``) or ``OC`` (refused, reason in ORC-16).

Written with the structured ER7 writer (:mod:`adapters.hl7v2.er7`: delimiters between
the parts, data escaped); PID is rebuilt from the stored Patient as the IG's sample
shows.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any
from urllib.parse import unquote

from adapters.hl7v2 import er7
from adapters.hl7v2.ack import timestamp
from adapters.hl7v2.datatypes import INS_OIDS, LOCAL_AUTHORITY, RPPS_OID, STRUCTURE_OID
from adapters.hl7v2.er7 import Comp, Field, Segment, comp, rep, sub
from adapters.hl7v2.settings import Hl7Settings
from fhir_server.workflow.identity import status as identity_status
from fhir_server.workflow.machine import TASK_SYSTEM

GENDER = {"female": "F", "male": "M", "other": "O", "unknown": "U"}
INS_AUTHORITIES = {"1.2.250.1.213.1.4.8": "ASIP-SANTE-INS-NIR",
                   "1.2.250.1.213.1.4.9": "ASIP-SANTE-INS-NIA",
                   "1.2.250.1.213.1.4.10": "ASIP-SANTE-INS-NIR",
                   "1.2.250.1.213.1.4.11": "ASIP-SANTE-INS-NIR"}
PS_AUTHORITY = sub("ASIP-SANTE-PS", RPPS_OID, "ISO")
REPONSE_DEMANDE = comp("REPONSE_DEMANDE", "Réponse à une demande d’examen d'imagerie",
                       "TLR_OBR_PROCEDURE")
PROTOCOLE = comp("PROTOCOLE_IMAGERIE", "Protocole d'imagerie médicale", "TLR_OBSERVATION")


def _hd(system: str) -> er7.Sub:
    """Identifier.system -> HD subcomponents (namespace&universal id&type)."""
    if system.startswith("urn:oid:"):
        oid = system[8:]
        return sub(INS_AUTHORITIES.get(oid, ""), oid, "ISO")
    if system.startswith(LOCAL_AUTHORITY):
        return sub(unquote(system[len(LOCAL_AUTHORITY):]))
    return sub("", system, "URI")


def pid_fields(patient: dict[str, Any]) -> dict[str, Field]:
    """PID-3 (CX, one repetition per identifier), PID-5 (XPN), PID-7, PID-8, PID-32 of
    the stored Patient, as :mod:`~adapters.hl7v2.er7` fields."""
    ids = []
    for i in patient.get("identifier") or []:
        oid = i.get("system", "").removeprefix("urn:oid:")
        kind = "INS" if oid in INS_OIDS else next(
            (c.get("code") for c in (i.get("type") or {}).get("coding") or []), "PI")
        ids.append(comp(i.get("value", ""), "", "", _hd(i.get("system", "")), kind or "PI"))
    names = []
    for n in patient.get("name") or []:
        use = {"official": "L", "usual": "D"}.get(n.get("use", ""), "D")
        given = n.get("given") or []
        names.append(comp(n.get("family", ""), given[0] if given else "", " ".join(given),
                          "", "", "", use))
    return {"pid_3": rep(*ids), "pid_5": rep(*names),
            "pid_7": (patient.get("birthDate") or "").replace("-", ""),
            "pid_8": GENDER.get(patient.get("gender", ""), "U"),
            "pid_32": identity_status(patient) or ""}


def pid_segment(patient: dict[str, Any]) -> Segment:
    return Segment("PID", {int(k[4:]): v for k, v in pid_fields(patient).items()})


def xcn_field(practitioner: dict[str, Any] | None) -> Comp | None:
    """The practitioner as an XCN (idNatPs ``id^family^given^^^^^^ASIP-SANTE-PS&…&ISO^D
    ^^^IDNPS``)."""
    if not practitioner:
        return None
    ident = next((i for i in practitioner.get("identifier") or []
                  if i.get("system") == f"urn:oid:{RPPS_OID}"),
                 (practitioner.get("identifier") or [{}])[0])
    name = (practitioner.get("name") or [{}])[0]
    given = (name.get("given") or [""])[0]
    return comp(ident.get("value", ""), name.get("family", ""), given, "", "", "", "", "",
                PS_AUTHORITY, "D", "", "", "IDNPS")


def xcn(practitioner: dict[str, Any] | None) -> str:
    """:func:`xcn_field` encoded (standard delimiters), "" without a practitioner."""
    return er7.field(xcn_field(practitioner))


def build(settings: Hl7Settings, receiver: tuple[str, str], patient: dict[str, Any],
          placer: dict[str, Any], decision: str, imager: dict[str, Any] | None,
          protocol: str | None, reason: dict[str, Any] | None) -> bytes:
    """The ORU^R01 of flux 3; ``decision`` is ``OK`` (accepted) or ``OC`` (refused)."""
    placer_ei = comp(placer["value"], "", placer["system"].removeprefix("urn:oid:"), "ISO")
    imager_xcn = xcn_field(imager)
    refusal: Field = None
    if decision == "OC" and reason:
        code = (reason.get("coding") or [{}])[0].get("code") or ""
        refusal = comp(code, reason.get("text") or "", "TLR_MOTIF_REFUS" if code else "")
    platform: Field = None
    if settings.platform_id:
        platform = comp(settings.platform_name, "", "", "", "",
                        sub("ASIP-SANTE-ST", STRUCTURE_OID, "ISO"), "FINEG", "", "",
                        settings.platform_id)
    segments = [
        Segment("MSH", {3: settings.application, 4: settings.facility, 5: receiver[0],
                        6: receiver[1], 7: timestamp()[:14], 9: comp("ORU", "R01", "ORU_R01"),
                        10: uuid.uuid4().hex[:20], 11: "P", 12: "2.5.1", 17: "FRA",
                        18: "UNICODE UTF-8", 21: comp("1.0", "CISIS_TLR_HL7_V2")}),
        pid_segment(patient),
        Segment("ORC", {1: decision, 2: placer_ei, 12: imager_xcn, 16: refusal,
                        17: comp("PLATEFORME_TLR", "", "TLR_TYPE_ORGANISATION"),
                        21: platform}),
        Segment("OBR", {2: placer_ei, 4: REPONSE_DEMANDE, 16: imager_xcn}),
    ]
    if decision == "OK" and protocol:
        segments.append(Segment("OBX", {
            1: "1", 2: "ED", 3: PROTOCOLE,
            5: comp("", "TEXT", "", "Base64", base64.b64encode(protocol.encode()).decode()),
            11: "F"}))
    return er7.message(segments).encode("utf-8")


def protocol_of(task: dict[str, Any]) -> str | None:
    for i in task.get("input") or []:
        codes = {c.get("code") for c in (i.get("type") or {}).get("coding") or []
                 if c.get("system") == TASK_SYSTEM}
        if "protocole-imagerie" in codes:
            value = i.get("valueString")
            return value if isinstance(value, str) else None
    return None
