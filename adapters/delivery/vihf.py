"""The VIHF (*Vecteur d'Identification et d'Habilitation Formelles*): the SAML 2.0
assertion a DMP feed carries in its WS-Security header, in the indirect-authentication
mode of an application acting for a health structure (ANS *mapping.md*, "Mapping VIHF
pour le DMP"), signed XML-DSig with the structure's seal certificate (enveloped,
exclusive C14N, RSA-SHA256).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from lxml import etree

SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
DS = "http://www.w3.org/2000/09/xmldsig#"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
V3 = "urn:hl7-org:v3"
X509_SUBJECT = "urn:oasis:names:tc:SAML:1.1:nameid-format:X509SubjectName"
PURPOSE_SYSTEM = "1.2.250.1.213.1.1.4.248"  # TRE_R249 (purpose of use, DMP)


@dataclass(frozen=True)
class Signer:
    """The seal certificate and its private key (PEM files)."""

    cert_pem: bytes
    key_pem: bytes

    @classmethod
    def load(cls, cert: str, key: str) -> Signer:
        return cls(Path(cert).read_bytes(), Path(key).read_bytes())

    @property
    def subject(self) -> str:
        return x509.load_pem_x509_certificate(self.cert_pem).subject.rfc4514_string()


@dataclass(frozen=True)
class Context:
    """Who feeds the DMP, for which patient (the attributes the DMP reads)."""

    subject_id: str  # RPPS of the imager, or the person responsible for the feed
    subject_name: str
    role: tuple[str, str, str]  # (code, codeSystem, displayName): profession (TRE_G15)
    specialty: tuple[str, str, str] | None  # savoir-faire (TRE_R38), for physicians
    structure_id: str  # Identifiant_Structure
    facility_type: str  # Secteur_Activite: code^codeSystem (JDV_J61)
    patient_id: str  # INS^^^&1.2.250.1.213.1.4.8&ISO^NH
    lps_name: str
    lps_version: str
    homologation: str = ""
    version: str = "3.0"
    authn_context: str = "urn:oasis:names:tc:SAML:2.0:ac:classes:TLSClient"


def _attribute(parent: etree._Element, name: str, value: str | etree._Element) -> None:
    attr = etree.SubElement(parent, f"{{{SAML}}}Attribute", Name=name)
    holder = etree.SubElement(attr, f"{{{SAML}}}AttributeValue")
    if isinstance(value, str):
        holder.text = value
    else:
        holder.append(value)


def _ce(tag: str, code: tuple[str, str, str]) -> etree._Element:
    node = etree.Element(f"{{{V3}}}{tag}", nsmap={None: V3, "xsi": XSI})
    node.set(f"{{{XSI}}}type", "CE")
    node.set("code", code[0])
    node.set("codeSystem", code[1])
    node.set("displayName", code[2])
    return node


def assertion(ctx: Context, signer: Signer, now: datetime | None = None,
              lifetime: timedelta = timedelta(minutes=10)) -> etree._Element:
    """A signed VIHF assertion for one submission."""
    from signxml.signer import XMLSigner  # imported here: only the DMP channel needs it

    moment = (now or datetime.now(UTC)).astimezone(UTC)
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    ident = f"_{uuid.uuid4()}"
    root = etree.Element(f"{{{SAML}}}Assertion", nsmap={"saml2": SAML, "ds": DS},
                         ID=ident, IssueInstant=stamp, Version="2.0")
    etree.SubElement(root, f"{{{SAML}}}Issuer", Format=X509_SUBJECT).text = signer.subject
    etree.SubElement(root, f"{{{DS}}}Signature", Id="placeholder")
    subject = etree.SubElement(root, f"{{{SAML}}}Subject")
    etree.SubElement(subject, f"{{{SAML}}}NameID", Format=(
        "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified")).text = ctx.subject_id
    etree.SubElement(root, f"{{{SAML}}}Conditions", NotBefore=stamp, NotOnOrAfter=(
        moment + lifetime).strftime("%Y-%m-%dT%H:%M:%SZ"))
    authn = etree.SubElement(root, f"{{{SAML}}}AuthnStatement", AuthnInstant=stamp)
    etree.SubElement(etree.SubElement(authn, f"{{{SAML}}}AuthnContext"),
                     f"{{{SAML}}}AuthnContextClassRef").text = ctx.authn_context
    attrs = etree.SubElement(root, f"{{{SAML}}}AttributeStatement")
    _attribute(attrs, "VIHF_Version", ctx.version)
    _attribute(attrs, "Identifiant_Structure", ctx.structure_id)
    _attribute(attrs, "Secteur_Activite", ctx.facility_type)
    _attribute(attrs, "urn:oasis:names:tc:xspa:1.0:subject:subject-id", ctx.subject_name)
    _attribute(attrs, "urn:oasis:names:tc:xacml:2.0:subject:role", _ce("Role", ctx.role))
    if ctx.specialty is not None:
        _attribute(attrs, "urn:oasis:names:tc:xacml:2.0:subject:role",
                   _ce("Role", ctx.specialty))
    _attribute(attrs, "Authentification_Mode", "INDIRECTE")
    _attribute(attrs, "urn:oasis:names:tc:xacml:2.0:resource:resource-id", ctx.patient_id)
    _attribute(attrs, "Ressource_URN", "urn:dmp")
    _attribute(attrs, "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse",
               _ce("PurposeOfUse", ("normal", PURPOSE_SYSTEM, "Accès normal")))
    _attribute(attrs, "LPS_Nom", ctx.lps_name)
    _attribute(attrs, "LPS_Version", ctx.lps_version)
    if ctx.homologation:
        _attribute(attrs, "LPS_ID_HOMOLOGATION_DMP", ctx.homologation)
    signed: etree._Element = XMLSigner(
        c14n_algorithm="http://www.w3.org/2001/10/xml-exc-c14n#",
        signature_algorithm="rsa-sha256", digest_algorithm="sha256",
    ).sign(root, key=signer.key_pem, cert=signer.cert_pem.decode(),
           reference_uri=f"#{ident}")
    return signed
