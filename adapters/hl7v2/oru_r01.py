"""Flux 3 of the Volet Téléradiologie: ORU^R01 to the RIS (``st_flux3.md``) — the remote
imager's decision on a request: ORC-1 ``OK`` (accepted, with the imaging protocol in an
OBX ED ``PROTOCOLE_IMAGERIE``) or ``OC`` (refused, reason in ORC-16).

Built with hl7apy (strict on write: its v2.5.1 structure for ORU_R01), values escaped by
us; PID is rebuilt from the stored Patient as the IG's sample shows.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any

from hl7apy.core import Message as Hl7apyMessage

from adapters.hl7v2.ack import timestamp
from adapters.hl7v2.datatypes import INS_OIDS, LOCAL_AUTHORITY, RPPS_OID, STRUCTURE_OID
from adapters.hl7v2.message import escape
from adapters.hl7v2.settings import Hl7Settings
from fhir_server.workflow.identity import status as identity_status
from fhir_server.workflow.machine import TASK_SYSTEM

GENDER = {"female": "F", "male": "M", "other": "O", "unknown": "U"}


def _hd(system: str) -> str:
    """Identifier.system -> HD subcomponents (namespace&universal id&type)."""
    if system.startswith("urn:oid:"):
        oid = system[8:]
        name = {"1.2.250.1.213.1.4.8": "ASIP-SANTE-INS-NIR",
                "1.2.250.1.213.1.4.9": "ASIP-SANTE-INS-NIA",
                "1.2.250.1.213.1.4.10": "ASIP-SANTE-INS-NIR",
                "1.2.250.1.213.1.4.11": "ASIP-SANTE-INS-NIR"}.get(oid, "")
        return f"{name}&{oid}&ISO"
    if system.startswith(LOCAL_AUTHORITY):
        from urllib.parse import unquote

        return f"{unquote(system[len(LOCAL_AUTHORITY):])}&&"
    return f"&{system}&URI"


def pid_fields(patient: dict[str, Any]) -> dict[str, str]:
    reps = []
    for i in patient.get("identifier") or []:
        oid = i.get("system", "").removeprefix("urn:oid:")
        kind = "INS" if oid in INS_OIDS else next(
            (c.get("code") for c in (i.get("type") or {}).get("coding") or []), "PI")
        reps.append(f"{escape(i.get('value', ''))}^^^{_hd(i.get('system', ''))}^{kind}")
    names = []
    for n in patient.get("name") or []:
        use = {"official": "L", "usual": "D"}.get(n.get("use", ""), "D")
        given = n.get("given") or []
        names.append("^".join([escape(n.get("family", "")), escape(given[0] if given else ""),
                               escape(" ".join(given)), "", "", "", use]))
    return {"pid_3": "~".join(reps), "pid_5": "~".join(names),
            "pid_7": (patient.get("birthDate") or "").replace("-", ""),
            "pid_8": GENDER.get(patient.get("gender", ""), "U"),
            "pid_32": identity_status(patient) or ""}


def xcn(practitioner: dict[str, Any] | None) -> str:
    if not practitioner:
        return ""
    ident = next((i for i in practitioner.get("identifier") or []
                  if i.get("system") == f"urn:oid:{RPPS_OID}"),
                 (practitioner.get("identifier") or [{}])[0])
    name = (practitioner.get("name") or [{}])[0]
    given = (name.get("given") or [""])[0]
    return (f"{escape(ident.get('value', ''))}^{escape(name.get('family', ''))}^"
            f"{escape(given)}^^^^^^ASIP-SANTE-PS&{RPPS_OID}&ISO^D^^^IDNPS")


def build(settings: Hl7Settings, receiver: tuple[str, str], patient: dict[str, Any],
          placer: dict[str, Any], decision: str, imager: dict[str, Any] | None,
          protocol: str | None, reason: dict[str, Any] | None) -> bytes:
    """The ORU^R01 of flux 3; ``decision`` is ``OK`` (accepted) or ``OC`` (refused)."""
    m = Hl7apyMessage("ORU_R01", version="2.5.1")
    m.msh.msh_3 = escape(settings.application)
    m.msh.msh_4 = escape(settings.facility)
    m.msh.msh_5 = escape(receiver[0])
    m.msh.msh_6 = escape(receiver[1])
    m.msh.msh_7 = timestamp()[:14]
    m.msh.msh_9 = "ORU^R01^ORU_R01"
    m.msh.msh_10 = uuid.uuid4().hex[:20]
    m.msh.msh_11 = "P"
    m.msh.msh_17 = "FRA"
    m.msh.msh_18 = "UNICODE UTF-8"
    m.msh.msh_21 = "1.0^CISIS_TLR_HL7_V2"
    result = m.add_group("ORU_R01_PATIENT_RESULT")
    pid = result.add_group("ORU_R01_PATIENT").add_segment("PID")
    for key, value in pid_fields(patient).items():
        if value:
            setattr(pid, key, value)
    order = result.add_group("ORU_R01_ORDER_OBSERVATION")
    oid = placer["system"].removeprefix("urn:oid:")
    placer_ei = f"{escape(placer['value'])}^^{escape(oid)}^ISO"
    imager_xcn = xcn(imager)
    orc = order.add_segment("ORC")
    orc.orc_1 = decision
    orc.orc_2 = placer_ei
    if imager_xcn:
        orc.orc_12 = imager_xcn
    if decision == "OC" and reason:
        coding = (reason.get("coding") or [{}])[0]
        orc.orc_16 = (f"{escape(coding.get('code', ''))}^{escape(reason.get('text') or '')}"
                      f"^{'TLR_MOTIF_REFUS' if coding.get('code') else ''}")
    orc.orc_17 = "PLATEFORME_TLR^^TLR_TYPE_ORGANISATION"
    if settings.platform_id:
        orc.orc_21 = (f"{escape(settings.platform_name)}^^^^^ASIP-SANTE-ST&{STRUCTURE_OID}"
                      f"&ISO^FINEG^^^{escape(settings.platform_id)}")
    obr = order.add_segment("OBR")
    obr.obr_2 = placer_ei
    obr.obr_4 = "REPONSE_DEMANDE^Réponse à une demande d’examen d'imagerie^TLR_OBR_PROCEDURE"
    if imager_xcn:
        obr.obr_16 = imager_xcn
    if decision == "OK" and protocol:
        obx = order.add_group("ORU_R01_OBSERVATION").add_segment("OBX")
        obx.obx_1 = "1"
        obx.obx_2 = "ED"
        obx.obx_3 = "PROTOCOLE_IMAGERIE^Protocole d'imagerie médicale^TLR_OBSERVATION"
        obx.obx_5 = "^TEXT^^Base64^" + base64.b64encode(protocol.encode()).decode()
        obx.obx_11 = "F"
    return m.to_er7().encode("utf-8") + b"\r"


def protocol_of(task: dict[str, Any]) -> str | None:
    for i in task.get("input") or []:
        codes = {c.get("code") for c in (i.get("type") or {}).get("coding") or []
                 if c.get("system") == TASK_SYSTEM}
        if "protocole-imagerie" in codes:
            value = i.get("valueString")
            return value if isinstance(value, str) else None
    return None
