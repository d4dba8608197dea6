"""The three delivery channels: each sends one delivery and says what came of it
(:class:`~adapters.delivery.engine.Outcome`: sent, retry, or rejected for good)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import httpx

from adapters.cda import metadata
from adapters.delivery import ebrim, mss, vihf, xdm, xds
from adapters.delivery.outbox import Delivery
from adapters.hl7v2.mdm_t02 import Routing
from fhir_server.security import masking
from fhir_server.workflow.records import load

if TYPE_CHECKING:
    from adapters.delivery.engine import Channel, Outcome, Sender

# VIHF subject role of the signing imager: TRE_G15 profession, TRE_R38 savoir-faire
G15, R38 = "1.2.250.1.71.1.2.7", "1.2.250.1.71.1.2.8"


def make(sender: Sender) -> dict[str, Channel]:
    async def dmp(d: Delivery) -> Outcome:
        return await _dmp(sender, d)

    async def ris(d: Delivery) -> Outcome:
        return await _ris(sender, d)

    async def mssante(d: Delivery) -> Outcome:
        return await _mss(sender, d)

    return {"dmp": dmp, "ris": ris, "mssante": mssante}


def _person(xcn: str) -> tuple[str, str]:
    """XCN -> (identifier, "family given")."""
    parts = ([*xcn.split("^"), "", "", ""])[:3]
    return parts[0], " ".join(p for p in parts[1:3] if p)


def _role(meta: metadata.Metadata) -> tuple[tuple[str, str, str], tuple[str, str, str] | None]:
    """The author's CDA code (``G15_10/SM44``) -> VIHF profession and savoir-faire roles."""
    specialty = meta.authors[0][2] if meta.authors else None
    code = specialty.code if specialty else "G15_10"
    profession, _, skill = code.partition("/")
    role = (profession.removeprefix("G15_") or "10", G15, "Médecin")
    return role, ((skill, R38, specialty.display if specialty else skill) if skill else None)


async def _dmp(sender: Sender, d: Delivery) -> Outcome:
    from adapters.delivery.engine import Outcome

    s = sender.settings
    xml, meta = await sender.call(sender.read, d.document)
    person, institution, _ = meta.authors[0] if meta.authors else ("", "", None)
    withdraw = d.action == "suppression"
    submission = ebrim.Submission(
        documents=[(meta, "Document01")], source_id=s.source_id,
        content_type=s.content_type, author_person=person, author_institution=institution,
        purpose="deprecate" if withdraw else "set")
    subject_id, subject_name = _person(person)
    role, specialty = _role(meta)
    signer = vihf.Signer.load(s.sign_cert, s.sign_key)
    token = vihf.assertion(vihf.Context(
        subject_id=subject_id, subject_name=subject_name, role=role, specialty=specialty,
        structure_id=s.structure_id, facility_type=s.facility_type,
        patient_id=meta.patient_id, lps_name=s.product, lps_version=s.product_version,
        homologation=s.homologation), signer)
    if withdraw:  # ITI-57: the entry goes Deprecated
        target, transaction = s.xds_update_url or s.xds_url, "ITI-57"
        env, message_id = xds.envelope(ebrim.deprecate_request(submission), None, target,
                                       token)
        request = xds.plain(env, message_id)
    else:
        target, transaction = s.xds_url, "ITI-41"
        cid = f"{uuid.uuid4().hex}@teleimagerie"
        env, message_id = xds.envelope(ebrim.submit_objects_request(submission),
                                       [("Document01", cid)], target, token)
        request = xds.mtom(env, [(cid, xml)], message_id)
    peer = httpx.URL(target).host or target
    try:
        async with httpx.AsyncClient(timeout=s.timeout) as client:
            answer = await client.post(target, content=request.body,
                                       headers={"Content-Type": request.content_type})
    except httpx.HTTPError as exc:
        return Outcome("retry", f"{target} injoignable : {exc!r}", peer)
    try:
        response = xds.registry_response(answer.headers.get("content-type", ""),
                                         answer.content)
    except xds.SoapFault as exc:
        # a fault of the sender (our request) will not get better by itself
        result = "rejected" if exc.code.endswith("Sender") else "retry"
        return Outcome(result, f"HTTP {answer.status_code} SOAP {exc}", peer)
    summary = f"{transaction} {response.describe()} ({message_id})"
    if response.success:
        return Outcome("sent", summary, peer, response.status)
    codes = {code for code, _, _ in response.errors}
    if codes and codes <= {xds.ALREADY_THERE}:  # an earlier, uncertain attempt went through
        return Outcome("sent", summary + " — déjà enregistré", peer, response.status)
    if codes & xds.TRANSIENT:
        return Outcome("retry", summary, peer, response.status)
    return Outcome("rejected", summary, peer, response.status)


async def _ris(sender: Sender, d: Delivery) -> Outcome:
    from adapters.delivery.engine import Outcome
    from adapters.hl7v2 import mdm_t02
    from adapters.hl7v2.message import Message, MessageError, escape
    from adapters.hl7v2.mllp import MllpClient

    route = sender.hl7.route(d.address)
    assert route is not None, "held by Sender.hold when no route"
    peer = f"{route[0]}:{route[1]}"
    xml, meta = await sender.call(sender.read, d.document)
    patient = await sender.call(load, sender.server, d.patient) or {}
    request = await sender.call(load, sender.server, d.request) or {}
    placer = next((i for i in request.get("identifier") or []
                   if any(c.get("code") == "PLAC" for c in
                          (i.get("type") or {}).get("coding") or [])), None)
    placer_ei = (f"{escape(placer['value'])}^^"
                 f"{escape(placer['system'].removeprefix('urn:oid:'))}^ISO" if placer else "")
    routing = await sender.call(_routing, sender, d, patient, meta)
    author_xcn, author_xon, _ = meta.authors[0] if meta.authors else ("", "", None)
    event = "T04" if d.action == "suppression" else "T10" if meta.replaces else "T02"
    raw = mdm_t02.build(
        sender.hl7, ("RIS", d.address), event, d.id, patient,
        xml, meta.unique_id, meta.replaces, meta.creation_time, author_xcn, author_xon,
        placer_ei, routing)
    try:
        async with MllpClient(*route, timeout=sender.settings.timeout) as client:
            answer = await client.send(raw)
    except (OSError, TimeoutError, ConnectionError) as exc:
        return Outcome("retry", f"{peer} injoignable : {exc!r}", peer)
    try:
        code = Message(answer).require("MSA").get(1).upper()
    except MessageError as exc:
        return Outcome("retry", f"acquittement illisible : {exc.text}", peer)
    detail = f"MDM^{event} MSH-10 {mdm_t02.control_id(d.id)}: {code}"
    if code in ("AA", "CA"):
        return Outcome("sent", detail, peer, code)
    if code in ("AE", "CE"):
        return Outcome("rejected", detail, peer, code)
    return Outcome("retry", detail, peer, code)


def _routing(sender: Sender, d: Delivery, patient: dict[str, Any], meta: metadata.Metadata
             ) -> Routing:
    """What the RIS should do with the document we hand it: publish it to the DMP or mail
    it only for the channels we do not serve ourselves, never against an opposition nor
    to professionals it is masked from; with the masking codes it carries."""
    from adapters.cda.sources import gather
    from adapters.delivery.engine import mss_address, recipients
    from adapters.hl7v2.oru_r01 import xcn

    s = sender.settings
    masked = meta.masking
    routing = Routing(flags={"DESTDMP": "dmp" not in s.channels and
                             not sender.opposed(d, "dmp") and not sender.qualified(patient),
                             "MASQUE_PS": masking.MASQUE_PS in masked,
                             "INVISIBLE_PATIENT": masking.INVISIBLE_PATIENT in masked,
                             "INVISIBLE_REP_LEGAUX": masking.INVISIBLE_REP_LEGAUX in masked})
    report = load(sender.server, d.report) if "mssante" not in s.channels and \
        masking.MASQUE_PS not in masked else None
    if report is not None:
        src = gather(sender.server, report, d.version)
        author = f"Practitioner/{src.author['id']}" if src.author else None
        for ref in recipients(sender.server, d.patient, src.request or {}, author):
            address = mss_address(sender.server, ref, s)
            if address and not sender.opposed(d, ref):
                routing.recipients.append((xcn(load(sender.server, ref)), address))
    routing.flags["DESTMSSANTEPS"] = bool(routing.recipients)
    return routing


async def _mss(sender: Sender, d: Delivery) -> Outcome:
    from adapters.delivery.engine import Outcome

    s = sender.settings
    withdraw = d.action == "suppression"
    xml, meta = await sender.call(sender.read, d.document)
    n1 = await sender.call(sender.sibling, d, "N1")
    submission = ebrim.Submission(documents=[(meta, "")], source_id=s.source_id or
                                  "2.25.0", content_type=s.content_type,
                                  author_person=meta.authors[0][0] if meta.authors else "",
                                  author_institution=meta.authors[0][1] if meta.authors
                                  else "",
                                  extra={"action": "D"} if withdraw else {})
    archive = xdm.archive(submission, [xml], s.mss_from, s.product)
    if withdraw:
        text = (f"Bonjour,\n\nLe compte rendu d'imagerie de {meta.patient_name} "
                f"(version {meta.version}) qui vous a été adressé a été retiré par son "
                "auteur : il a été émis par erreur et ne doit plus être utilisé. "
                "Veuillez le supprimer de vos dossiers ; un compte rendu corrigé vous "
                "sera adressé le cas échéant. L'archive IHE_XDM.ZIP jointe identifie le "
                "document retiré (action D).\n\n"
                "Message envoyé par messagerie sécurisée de santé (MSSanté).\n")
    else:
        text = (f"Bonjour,\n\nVous trouverez ci-joint le compte rendu d'imagerie de "
                f"{meta.patient_name} (version {meta.version}"
                f"{', qui remplace la précédente' if meta.replaces else ''}) : le PDF et "
                "l'archive IHE_XDM.ZIP contenant le document CDA.\n\n"
                "Message envoyé par messagerie sécurisée de santé (MSSanté).\n")
    mail = mss.compose(s, d.id, d.address, meta, None if withdraw else sender.pdf_of(n1),
                       archive, text, withdrawn=withdraw)
    peer = f"{s.smtp_host}:{s.smtp_port}"
    try:
        answer = await sender.call(mss.send, s, mail)
    except mss.Rejected as exc:
        return Outcome("rejected", f"SMTP refus définitif : {exc}", peer)
    except (OSError, TimeoutError) as exc:
        return Outcome("retry", f"{peer} : {exc!r}", peer)
    except Exception as exc:  # smtplib.SMTPException: temporary (4xx) or session errors
        return Outcome("retry", f"{peer} : {exc!r}", peer)
    return Outcome("sent", answer, peer, answer)
