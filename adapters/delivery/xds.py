"""IHE XDS.b ITI-41 *Provide and Register Document Set-b* toward the DMP (IHE ITI TF-2
§3.41; DMP: ANS *mapping.md*): a SOAP 1.2 envelope with WS-Addressing and the VIHF in
WS-Security, sent as MTOM/XOP (the documents are binary MIME parts the body points to
with ``xop:Include``); the answer is an ``rs:RegistryResponse``. A withdrawn document is
deprecated with ITI-57 *Update Document Set* (same envelope, plain SOAP).
"""

from __future__ import annotations

import email.parser
import email.policy
import uuid
from dataclasses import dataclass

from lxml import etree

from adapters.delivery.ebrim import RS, RegistryResponse

SOAP = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://www.w3.org/2005/08/addressing"
WSSE = ("http://docs.oasis-open.org/wss/2004/01/"
        "oasis-200401-wss-wssecurity-secext-1.0.xsd")
XDSB = "urn:ihe:iti:xds-b:2007"
XOP = "http://www.w3.org/2004/08/xop/include"
ACTION = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"
ANSWER_ACTION = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-bResponse"
UPDATE_ACTION = "urn:ihe:iti:2010:UpdateDocumentSet"  # ITI-57 (XDS Metadata Update)
# RegistryResponse errors worth a retry (transient), and the answer to a resend of what
# the registry already holds (our ids are stable: the earlier attempt went through)
TRANSIENT = frozenset({"XDSRegistryBusy", "XDSRepositoryBusy", "XDSRegistryOutOfResources",
                       "XDSRepositoryOutOfResources", "XDSRegistryError",
                       "XDSRepositoryError"})
ALREADY_THERE = "XDSDuplicateUniqueIdInRegistry"


@dataclass
class Request:
    body: bytes
    content_type: str
    message_id: str


def envelope(submit: etree._Element, documents: list[tuple[str, str]] | None, to: str,
             security: etree._Element | None) -> tuple[etree._Element, str]:
    """The SOAP envelope: ``documents`` are (document id, MIME Content-ID) pairs (ITI-41);
    ``None`` for ITI-57, whose body is the SubmitObjectsRequest itself."""
    message_id = f"urn:uuid:{uuid.uuid4()}"
    env = etree.Element(f"{{{SOAP}}}Envelope", nsmap={
        "soap": SOAP, "wsa": WSA, "xdsb": XDSB, "xop": XOP})
    header = etree.SubElement(env, f"{{{SOAP}}}Header")
    action = etree.SubElement(header, f"{{{WSA}}}Action")
    action.set(f"{{{SOAP}}}mustUnderstand", "true")
    action.text = ACTION if documents is not None else UPDATE_ACTION
    etree.SubElement(header, f"{{{WSA}}}MessageID").text = message_id
    reply = etree.SubElement(header, f"{{{WSA}}}ReplyTo")
    etree.SubElement(reply, f"{{{WSA}}}Address").text = (
        "http://www.w3.org/2005/08/addressing/anonymous")
    target = etree.SubElement(header, f"{{{WSA}}}To")
    target.set(f"{{{SOAP}}}mustUnderstand", "true")
    target.text = to
    if security is not None:
        wsse = etree.SubElement(header, f"{{{WSSE}}}Security", nsmap={"wsse": WSSE})
        wsse.set(f"{{{SOAP}}}mustUnderstand", "true")
        wsse.append(security)
    soap_body = etree.SubElement(env, f"{{{SOAP}}}Body")
    if documents is None:
        soap_body.append(submit)
        return env, message_id
    request = etree.SubElement(soap_body, f"{{{XDSB}}}ProvideAndRegisterDocumentSetRequest")
    request.append(submit)
    for doc_id, cid in documents:
        doc = etree.SubElement(request, f"{{{XDSB}}}Document", id=doc_id)
        etree.SubElement(doc, f"{{{XOP}}}Include", href=f"cid:{cid}")
    return env, message_id


def mtom(env: etree._Element, parts: list[tuple[str, bytes]], message_id: str) -> Request:
    """The multipart/related (XOP) HTTP body: the envelope, then each document part."""
    boundary = f"MIMEBoundary_{uuid.uuid4().hex}"
    root_cid = "root.message@teleimagerie"
    out = [f"--{boundary}\r\n"
           f"Content-Type: application/xop+xml; charset=UTF-8; "
           f"type=\"application/soap+xml\"; action=\"{ACTION}\"\r\n"
           f"Content-Transfer-Encoding: binary\r\n"
           f"Content-ID: <{root_cid}>\r\n\r\n".encode(),
           etree.tostring(env, xml_declaration=True, encoding="UTF-8"), b"\r\n"]
    for cid, data in parts:
        out += [f"--{boundary}\r\nContent-Type: text/xml\r\n"
                f"Content-Transfer-Encoding: binary\r\nContent-ID: <{cid}>\r\n\r\n".encode(),
                data, b"\r\n"]
    out.append(f"--{boundary}--\r\n".encode())
    content_type = (f'multipart/related; boundary="{boundary}"; type="application/xop+xml"; '
                    f'start="<{root_cid}>"; start-info="application/soap+xml"; '
                    f'action="{ACTION}"')
    return Request(b"".join(out), content_type, message_id)


def plain(env: etree._Element, message_id: str) -> Request:
    """A SOAP 1.2 message without attachments (ITI-57)."""
    return Request(etree.tostring(env, xml_declaration=True, encoding="UTF-8"),
                   f'application/soap+xml; charset=UTF-8; action="{UPDATE_ACTION}"',
                   message_id)


def split_mtom(content_type: str, body: bytes) -> tuple[bytes, dict[str, bytes]]:
    """An MTOM message -> (root XML, {Content-ID: bytes}); a plain SOAP body passes."""
    if "multipart/related" not in content_type.lower():
        return body, {}
    parsed = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    parts: dict[str, bytes] = {}
    root = b""
    for index, part in enumerate(parsed.iter_parts()):
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        cid = str(part.get("Content-ID", "")).strip("<> ")
        if index == 0:
            root = data
        parts[cid] = data
    return root, parts


class SoapFault(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


def registry_response(content_type: str, body: bytes) -> RegistryResponse:
    """Read the answer: a RegistryResponse, or a SOAP Fault raised as :class:`SoapFault`."""
    root, _ = split_mtom(content_type, body)
    try:
        doc = etree.fromstring(root)
    except etree.XMLSyntaxError as exc:
        raise SoapFault("soap:Receiver", f"réponse illisible : {exc}") from None
    fault = doc.find(f".//{{{SOAP}}}Fault")
    if fault is not None:
        code = fault.findtext(f"{{{SOAP}}}Code/{{{SOAP}}}Value", "soap:Receiver")
        reason = fault.findtext(f"{{{SOAP}}}Reason/{{{SOAP}}}Text", "")
        raise SoapFault(code.strip(), reason.strip())
    response = doc if doc.tag == f"{{{RS}}}RegistryResponse" else \
        doc.find(f".//{{{RS}}}RegistryResponse")
    if response is None:
        raise SoapFault("soap:Receiver", "pas de RegistryResponse dans la réponse")
    return RegistryResponse.parse(response)
