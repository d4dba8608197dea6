"""Report delivery on both stores, against test peers the tests start (issue 8; R-REP-5,
R-REP-6, R-CONS-5, R-SEC-5, R-INT-1, R-INT-2): the DMP over XDS.b ITI-41 (MTOM, ebRIM,
signed VIHF), the RIS over MLLP (MDM^T02 / T10) and MSSanté over SMTP (PDF + IHE XDM).
The outbox keeps one delivery per (version, channel, recipient), retries with backoff,
dead-letters, holds visibly (opposition, identity), and audits every attempt."""

from __future__ import annotations

import asyncio
import base64
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from adapters.cda.publish import Publisher
from adapters.delivery.engine import Planner, Sender
from adapters.delivery.outbox import CODE, SYSTEM
from adapters.delivery.settings import DeliverySettings
from adapters.hl7v2.settings import Hl7Settings
from fhir_server.security import masking
from fhir_server.server.dispatch import FhirServer
from fhir_server.workflow.identity import reliability
from tests import peers
from tests.behaviour.workflow_world import World

RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
NS = {"rim": RIM, "lcm": "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0",
      "soap": peers.SOAP, "wsa": "http://www.w3.org/2005/08/addressing",
      "saml2": "urn:oasis:names:tc:SAML:2.0:assertion",
      "xdsb": "urn:ihe:iti:xds-b:2007", "xop": "http://www.w3.org/2004/08/xop/include",
      "v3": "urn:hl7-org:v3"}
INS = "279035121518989"
GP_MAIL = "gp.martin@medecin.mssante.fr"


def qualify(w: World) -> None:
    """The patient's identity becomes qualified (INS + VALI) and the GP gets an MSSanté
    address besides a personal one."""
    patient = w.ris.get(f"/fhir/{w.refs['patient']}").json()
    patient["identifier"] = [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": INS,
                              "type": {"coding": [{
                                  "system": "https://hl7.fr/ig/fhir/core/CodeSystem/"
                                            "fr-core-cs-v2-0203", "code": "INS-NIR"}]}}]
    # a qualified identity carries its INS traits: the birth place (COG) among them, which
    # the DMP's CDA rules require (issue 26)
    patient["extension"] = [reliability("VALI"), {
        "url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace",
        "valueAddress": {"city": "ORLÉANS", "extension": [{
            "url": "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-address-insee-code",
            "valueCoding": {"system": "https://mos.esante.gouv.fr/NOS/TRE_R13-CommuneOM/"
                                      "FHIR/TRE-R13-CommuneOM", "code": "45234"}}]}}]
    r = w.ris.put(f"/fhir/{w.refs['patient']}", json=patient)
    assert r.status_code == 200, r.text
    gp = w.ris.get(f"/fhir/{w.refs['gp']}").json()
    gp["telecom"] = [{"system": "email", "value": "gp.perso@gmail.com"},
                     {"system": "email", "value": GP_MAIL}]
    r = w.ris.put(f"/fhir/{w.refs['gp']}", json=gp)
    assert r.status_code == 200, r.text


def visibility(*codes: str) -> list[dict[str, Any]]:
    """The imager's masking choice on a report (tlm-document-visibility, TRE_A07)."""
    return [{"url": masking.EXTENSION, "valueCoding": {"system": masking.SYSTEM, "code": c}}
            for c in codes]


def final(w: World, *masked: str) -> dict[str, Any]:
    """A CT request carried through to its final report (with a dose), masked from whom
    ``masked`` says."""
    sr = w.ready("CT")
    w.op(w.ris, sr, "start")
    study = w.study(sr, "CT")
    report = w.report(sr, study, result=[{"reference": w.dose(study)}])
    if masked:
        report["extension"] = [*report.get("extension", []), *visibility(*masked)]
    r = w.imager.post("/fhir/DiagnosticReport", json=report)
    assert r.status_code == 201, r.text
    return dict(r.json())


def amend(w: World, report: dict[str, Any]) -> None:
    """The imager amends a final report (a new document version replaces the last)."""
    r = w.imager.put(f"/fhir/DiagnosticReport/{report['id']}", json={
        **report, "status": "amended",
        "conclusion": report["conclusion"] + " Addendum : contrôle à 3 mois."})
    assert r.status_code == 200, r.text


class Rig:
    """The world, its peers and a sender configured toward them."""

    def __init__(self, core: FhirServer, tmp: Path) -> None:
        self.world = World(core, tmp)
        self.core = core
        self.xds = peers.XdsPeer()
        self.ris = peers.MllpPeer(lambda m: peers.ack(m, self.ris_answers.pop(0)
                                                      if self.ris_answers else "AA"))
        self.ris_answers: list[str] = []
        self.smtp = peers.SmtpPeer()
        cert, key = peers.certificate(tmp)
        self.settings = DeliverySettings(
            retry_base=0.0, max_attempts=3, recheck=0.0, timeout=10.0,
            xds_url=self.xds.url, sign_cert=cert, sign_key=key,
            source_id="1.2.250.1.999.1", structure_id="1750000001",
            smtp_host="127.0.0.1", smtp_port=self.smtp.port,
            mss_from="teleimagerie@ch-proximite.mssante.fr")
        self.hl7 = Hl7Settings(routes={"750000001": ("127.0.0.1", self.ris.port)})
        assert core.workflow is not None
        Publisher().subscribe(core.workflow.events)
        Planner(self.settings, self.hl7).subscribe(core.workflow.events)
        self.sender = Sender(core, self.settings, self.hl7)

    def close(self) -> None:
        self.xds.close()
        self.ris.close()
        self.smtp.close()

    def qualify(self) -> None:
        qualify(self.world)

    def final(self, *masked: str) -> dict[str, Any]:
        return final(self.world, *masked)

    def amend(self, report: dict[str, Any]) -> None:
        amend(self.world, report)

    def run(self, passes: int = 1) -> None:
        for _ in range(passes):
            asyncio.run(self.sender.run_once())

    def deliveries(self, **params: str) -> dict[tuple[str, str], dict[str, Any]]:
        """(channel, recipient or address) -> the delivery Task, read over FHIR."""
        query = "&".join(f"{k.replace('_', '-')}={v}" for k, v in params.items())
        r = self.world.ris.get(f"/fhir/Task?code={SYSTEM}|{CODE}&_count=100&{query}")
        assert r.status_code == 200, r.text
        out = {}
        for e in r.json().get("entry", []):
            task = e["resource"]
            inputs = {i["type"]["coding"][0]["code"]: i for i in task["input"]}
            key = (inputs["canal"]["valueCode"], (task.get("owner") or {}).get(
                "reference") or inputs.get("adresse", {}).get("valueString", ""))
            out[key] = task
        return out


@pytest.fixture
def rig(secured: FhirServer, tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(secured, tmp_path)
    yield rig
    rig.close()


def state(task: dict[str, Any]) -> str:
    return str(task["businessStatus"]["coding"][0]["code"])


def test_final_report_plans_one_delivery_per_channel_and_recipient(rig: Rig) -> None:
    """R-REP-5/6: the DMP, the requesting site's RIS, and each professional on the
    distribution list (médecin traitant, requester) by MSSanté; nothing is sent before
    the sender runs, and an unqualified identity holds the DMP visibly."""
    rig.final()
    w = rig.world
    found = rig.deliveries()
    assert set(found) == {("dmp", "DMP"), ("ris", w.refs["site"]),
                          ("mssante", w.refs["gp"]), ("mssante", w.refs["requester"])}
    assert all(t["status"] == "requested" for t in found.values())
    rig.run()
    found = rig.deliveries()
    assert state(found[("dmp", "DMP")]) == "identite-non-qualifiee"
    assert found[("dmp", "DMP")]["status"] == "on-hold"
    assert "pas d'INS" in found[("dmp", "DMP")]["businessStatus"]["text"]
    # R-SEC-5: no MSSanté address, no mail (a personal address is never used)
    assert state(found[("mssante", w.refs["gp"])]) == "adresse-absente"
    assert state(found[("ris", w.refs["site"])]) == "envoye"
    assert rig.xds.requests == [] and rig.smtp.mails == []


def test_dmp_receives_an_iti41_submission_with_signed_vihf(rig: Rig) -> None:
    """R-REP-6, R-INT-1: MTOM SOAP 1.2, WS-Addressing, a VIHF signed with the seal
    certificate, ebRIM metadata from the CDA header; the peer first fails then succeeds:
    retried, delivered once, every attempt audited."""
    from signxml import XMLVerifier

    rig.qualify()
    rig.xds.script = [(200, peers.registry_response(peers.FAILURE, "XDSRepositoryBusy"))]
    report = rig.final()
    rig.run(2)
    dmp = rig.deliveries()[("dmp", "DMP")]
    assert state(dmp) == "envoye" and dmp["status"] == "completed"
    assert [e["valueInteger"] for e in dmp["extension"] if e["url"].endswith("attempts")] \
        == [2]
    assert len(rig.xds.requests) == 2
    request = rig.xds.requests[-1]
    assert 'type="application/xop+xml"' in request["content_type"]
    assert 'type="application/soap+xml"' in request["root_type"]
    root = request["root"]
    assert root.findtext(".//wsa:Action", namespaces=NS) == \
        "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"
    assertion = root.find(".//saml2:Assertion", NS)
    cert = Path(rig.settings.sign_cert).read_text()
    XMLVerifier().verify(etree.tostring(assertion), x509_cert=cert)  # raises if tampered
    attrs = {a.get("Name"): a for a in assertion.iterfind(".//saml2:Attribute", NS)}
    assert attrs["urn:oasis:names:tc:xacml:2.0:resource:resource-id"].findtext(
        "saml2:AttributeValue", namespaces=NS) == f"{INS}^^^&1.2.250.1.213.1.4.8&ISO^NH"
    assert attrs["Authentification_Mode"].findtext("saml2:AttributeValue",
                                                   namespaces=NS) == "INDIRECTE"
    assert attrs["Identifiant_Structure"].findtext("saml2:AttributeValue",
                                                   namespaces=NS) == "1750000001"
    include = root.find(".//xdsb:Document/xop:Include", NS)
    document = request["parts"][include.get("href")[4:]]
    cda = etree.fromstring(document)
    entry = root.find(".//rim:ExtrinsicObject", NS)
    slots = {s.get("name"): [v.text for v in s.iterfind(".//rim:Value", NS)]
             for s in entry.iterfind("rim:Slot", NS)}
    import hashlib

    assert slots["hash"] == [hashlib.sha1(document).hexdigest()]
    assert slots["size"] == [str(len(document))]
    assert slots["languageCode"] == ["fr-FR"]
    externals = {x.find("rim:Name/rim:LocalizedString", NS).get("value"): x.get("value")
                 for x in entry.iterfind("rim:ExternalIdentifier", NS)}
    assert externals["XDSDocumentEntry.uniqueId"] == cda.find("v3:id", NS).get("root")
    assert externals["XDSDocumentEntry.patientId"] == f"{INS}^^^&1.2.250.1.213.1.4.8&ISO^NH"
    classes = {c.get("classificationScheme"): c.get("nodeRepresentation")
               for c in entry.iterfind("rim:Classification", NS)}
    assert classes["urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d"] == \
        "urn:ihe:rad:CDA:ImagingReportStructuredHeadings:2013"
    assert classes["urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a"] == "10"
    assert classes["urn:uuid:f0306f51-975f-434e-a61c-c59651d33983"] == "18748-4"
    assert any(v.endswith("urn:ihe:iti:xds:2016:studyInstanceUID")
               for v in slots["urn:ihe:iti:xds:2013:referenceIdList"])
    # R-INT-2: one AuditEvent per attempt (ITI-41), the failed one with its reason
    events = rig.world.user(["auditor"], scopes=["user/AuditEvent.rs"]).get(
        f"/fhir/AuditEvent?patient={rig.world.refs['patient']}&_count=200").json()
    iti41 = [e["resource"] for e in events.get("entry", [])
             if any(s.get("code") == "ITI-41" for s in e["resource"].get("subtype", []))]
    assert sorted(e["outcome"] for e in iti41) == ["0", "4"]
    # an amendment replaces v1 in the DMP (RPLC to v1's entry)
    rig.amend(report)
    rig.run()
    assert len(rig.xds.requests) == 3
    v2 = rig.xds.requests[-1]["root"]
    [rplc] = v2.xpath(".//rim:Association[@associationType="
                      "'urn:ihe:iti:2007:AssociationType:RPLC']", namespaces=NS)
    assert rplc.get("targetObject") == entry.get("id")


def test_opposition_blocks_the_dmp_visibly_and_sends_nothing(rig: Rig) -> None:
    """R-CONS-5: the patient opposed the DMP: the delivery is "blocked: opposition",
    not dropped; the peer receives nothing."""
    rig.qualify()
    rig.world.consent("partage-dmp", decision="deny")
    rig.final()
    rig.run(2)
    dmp = rig.deliveries()[("dmp", "DMP")]
    assert state(dmp) == "bloque-opposition" and dmp["status"] == "on-hold"
    assert rig.xds.requests == []


def test_masking_codes_reach_the_dmp_the_ris_and_hold_mssante(rig: Rig) -> None:
    """R-CONS-5, R-INT-1 (DMP masking codes): the imager masks the report from other
    professionals and from the patient (until the announcement): the XDS entry carries
    N (the CDA's) plus MASQUE_PS and INVISIBLE_PATIENT (TRE_A07, 1.2.250.1.213.1.1.4.13),
    the MDM's MetaDMPMSS OBX say Y to both, the DocumentReferences are labelled, and
    MSSanté, which may not carry a document masked from professionals, holds visibly."""
    rig.qualify()
    rig.final(masking.MASQUE_PS, masking.INVISIBLE_PATIENT)
    rig.run(2)
    deliveries = rig.deliveries()
    assert state(deliveries[("dmp", "DMP")]) == "envoye"
    assert state(deliveries[("ris", rig.world.refs["site"])]) == "envoye"
    gp = deliveries[("mssante", rig.world.refs["gp"])]
    assert state(gp) == "bloque-masquage" and gp["status"] == "on-hold"
    assert rig.smtp.mails == []
    entry = rig.xds.requests[-1]["root"].find(".//rim:ExtrinsicObject", NS)
    confidentiality = sorted(
        (c.get("nodeRepresentation"), c.findtext("rim:Slot/rim:ValueList/rim:Value",
                                                 namespaces=NS))
        for c in entry.iterfind("rim:Classification", NS)
        if c.get("classificationScheme") == "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f")
    assert confidentiality == [("INVISIBLE_PATIENT", masking.OID), ("MASQUE_PS", masking.OID),
                               ("N", "2.16.840.1.113883.5.25")]
    obx = [s.split(b"|") for s in rig.ris.messages[-1].split(b"\r") if s.startswith(b"OBX")]
    meta = {o[3].split(b"^")[0]: o[5].split(b"^")[0] for o in obx[1:]}
    assert meta[b"MASQUE_PS"] == b"Y" and meta[b"INVISIBLE_PATIENT"] == b"Y"
    assert meta[b"INVISIBLE_REP_LEGAUX"] == b"N" and meta[b"DESTMSSANTEPS"] == b"N"
    refs = rig.world.ris.get(f"/fhir/DocumentReference?subject={rig.world.refs['patient']}"
                             ).json()["entry"]
    assert len(refs) == 2
    for e in refs:
        labels = {(c["system"], c["code"]) for lab in e["resource"]["securityLabel"]
                  for c in lab["coding"]}
        assert labels == {(masking.SYSTEM, "MASQUE_PS"), (masking.SYSTEM, "INVISIBLE_PATIENT"),
                          ("http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "N")}


def test_dmp_dead_letter_after_max_attempts_keeps_the_last_error(rig: Rig) -> None:
    rig.qualify()
    rig.xds.script = [(503, b"<html>indisponible</html>")] * 5
    rig.final()
    rig.run(4)
    dmp = rig.deliveries()[("dmp", "DMP")]
    assert state(dmp) == "lettre-morte" and dmp["status"] == "failed"
    assert "3 essais" in dmp["businessStatus"]["text"]
    assert len(rig.xds.requests) == 3
    # an operator sends it again once the repository is back
    rig.xds.script = []
    assert rig.sender.outbox.retry(dmp["id"]) is not None
    rig.run()
    assert state(rig.deliveries()[("dmp", "DMP")]) == "envoye"


def test_ris_receives_mdm_t02_then_t10_with_the_cda(rig: Rig) -> None:
    """The RIS gets MDM^T02 (ORC NW, OBX-11 F) with the N1 CDA in Base64 and the
    MetaDMPMSS OBX; an AR is retried; the amendment goes as T10 naming v1 in TXA-13."""
    rig.ris_answers = ["AR"]
    report = rig.final()
    rig.run(2)
    assert state(rig.deliveries()[("ris", rig.world.refs["site"])]) == "envoye"
    assert len(rig.ris.messages) == 2
    first = {s.split(b"|")[0]: s.split(b"|") for s in rig.ris.messages[-1].split(b"\r") if s}
    msh = rig.ris.messages[-1].split(b"\r")[0].split(b"|")
    assert msh[8] == b"MDM^T02^MDM_T02" and msh[11] == b"2.6"
    # the same MSH-10 on the retry: the RIS can recognise the duplicate
    assert rig.ris.messages[0].split(b"\r")[0].split(b"|")[9] == msh[9]
    assert first[b"ORC"][1] == b"NW"
    obx = [s.split(b"|") for s in rig.ris.messages[-1].split(b"\r") if s.startswith(b"OBX")]
    cda = base64.b64decode(obx[0][5].split(b"^")[4])
    assert etree.fromstring(cda).find("v3:component/v3:nonXMLBody", NS) is not None
    assert obx[0][11] == b"F"
    meta = {o[3].split(b"^")[0]: o[5].split(b"^")[0] for o in obx[1:]}
    # we feed the DMP ourselves: the RIS must not publish it a second time
    assert meta[b"DESTDMP"] == b"N" and meta[b"MASQUE_PS"] == b"N"
    uid = first[b"TXA"][12]
    rig.amend(report)
    rig.run()
    t10 = {s.split(b"|")[0]: s.split(b"|") for s in rig.ris.messages[-1].split(b"\r") if s}
    assert t10[b"MSH"][8] == b"MDM^T10^MDM_T02" and t10[b"ORC"][1] == b"RO"
    assert t10[b"TXA"][13] == uid
    assert next(s for s in rig.ris.messages[-1].split(b"\r") if s.startswith(b"OBX|1|")) \
        .split(b"|")[11] == b"C"


def test_mssante_mail_carries_the_pdf_and_an_xdm_archive(rig: Rig) -> None:
    """R-SEC-5: mailed to the GP's MSSanté address (not the personal one) with the PDF
    and IHE_XDM.ZIP (INDEX.HTM, README.TXT, METADATA.XML, the CDA); a relay that defers
    (451) is retried and the mail arrives once."""
    rig.qualify()
    rig.smtp.refuse = ["451 4.3.0 réessayez plus tard"]
    rig.final()
    rig.run(2)
    gp = rig.deliveries()[("mssante", rig.world.refs["gp"])]
    assert state(gp) == "envoye"
    [mail] = rig.smtp.mails
    assert mail["To"] == GP_MAIL and mail["X-MSS-CODECDA"].startswith("18748-4")
    assert mail["X-MSS-INS"] == f"{INS}^^^&1.2.250.1.213.1.4.8&ISO^NH"
    files = {p.get_filename(): p.get_content() for p in mail.iter_attachments()}
    assert files["compte-rendu.pdf"].startswith(b"%PDF")
    archive = zipfile.ZipFile(io.BytesIO(files["IHE_XDM.ZIP"]))
    names = set(archive.namelist())
    assert {"INDEX.HTM", "README.TXT", "IHE_XDM/SUBSET01/METADATA.XML",
            "IHE_XDM/SUBSET01/DOC00001.XML"} <= names
    metadata = etree.fromstring(archive.read("IHE_XDM/SUBSET01/METADATA.XML"))
    uri = metadata.xpath(".//rim:ExtrinsicObject/rim:Slot[@name='URI']/rim:ValueList/"
                         "rim:Value/text()", namespaces=NS)
    assert uri == ["DOC00001.XML"]
    cda = etree.fromstring(archive.read("IHE_XDM/SUBSET01/DOC00001.XML"))
    assert cda.find("v3:code", NS).get("code") == "18748-4"
    # the requester has no MSSanté address: held, visibly
    assert state(rig.deliveries()[("mssante", rig.world.refs["requester"])]) == \
        "adresse-absente"


def test_replayed_trigger_and_restart_never_send_twice(rig: Rig) -> None:
    """Idempotent: replaying the report's transition plans nothing new, a new sender
    (a restart) sends nothing already sent."""
    rig.qualify()
    report = rig.final()
    rig.run()
    before = rig.deliveries()
    assert all(state(t) in ("envoye", "adresse-absente") for t in before.values())
    from fhir_server.workflow.engine import _case  # the case of the report's request

    sr = report["basedOn"][0]["reference"]
    case = _case(rig.core, rig.world.ris.get(f"/fhir/{sr}").json())
    assert case is not None
    from fhir_server.workflow.events import ReportIssued, publish

    publish(rig.core, ReportIssued(None, case, amended=False))  # the final report's event
    restarted = Sender(rig.core, rig.settings, rig.hl7)
    asyncio.run(restarted.run_once())
    assert rig.deliveries().keys() == before.keys()
    assert len(rig.xds.requests) == 1 and len(rig.smtp.mails) == 1
    assert len(rig.ris.messages) == 1


def test_report_entered_in_error_is_withdrawn_everywhere_it_went(rig: Rig) -> None:
    """Issue 8 deletion flow (R-REP-6, R-INT-1): a final report set to entered-in-error
    is withdrawn — the DMP entry is deprecated (ITI-57 UpdateAvailabilityStatus), the RIS
    gets MDM^T04 (ORC CA, OBX-11 D) with the last version, each MSSanté recipient a
    withdrawal notice (XDM action D); our DocumentReferences become entered-in-error;
    what had not left yet is cancelled and nothing is withdrawn from who never got it."""
    rig.qualify()
    rig.ris_answers = ["AA"]
    report = rig.final()
    rig.run()
    sent = rig.deliveries()
    assert state(sent[("dmp", "DMP")]) == "envoye"
    [first_request] = rig.xds.requests
    entry_id = first_request["root"].find(".//rim:ExtrinsicObject", NS).get("id")
    r = rig.world.imager.put(f"/fhir/DiagnosticReport/{report['id']}",
                             json={**report, "status": "entered-in-error"})
    assert r.status_code == 200, r.text
    withdrawals = {k: t for k, t in rig.deliveries().items()
                   if any(i.get("valueCode") == "suppression" for i in t["input"])}
    # the three who got the document, not the requester who has no MSSanté address
    assert set(withdrawals) == {("dmp", "DMP"), ("ris", rig.world.refs["site"]),
                                ("mssante", rig.world.refs["gp"])}
    rig.run()
    assert all(state(rig.deliveries()[k]) == "envoye" for k in withdrawals)
    # DMP: ITI-57, plain SOAP, the entry sent goes Approved -> Deprecated
    assert len(rig.xds.requests) == 2
    update = rig.xds.requests[-1]
    assert update["content_type"].startswith("application/soap+xml")
    root = update["root"]
    assert root.findtext(".//wsa:Action", namespaces=NS) == \
        "urn:ihe:iti:2010:UpdateDocumentSet"
    assert root.find("soap:Body/lcm:SubmitObjectsRequest", NS) is not None
    [change] = root.xpath(".//rim:Association[@associationType='urn:ihe:iti:2010:"
                          "AssociationType:UpdateAvailabilityStatus']", namespaces=NS)
    assert change.get("targetObject") == entry_id
    slots = {s.get("name"): s.findtext(".//rim:Value", namespaces=NS)
             for s in change.iterfind("rim:Slot", NS)}
    assert slots == {"OriginalStatus": "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved",
                     "NewStatus": "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated"}
    # RIS: MDM^T04 carrying the document, to be deleted
    t04 = {s.split(b"|")[0]: s.split(b"|") for s in rig.ris.messages[-1].split(b"\r") if s}
    assert t04[b"MSH"][8] == b"MDM^T04^MDM_T02" and t04[b"ORC"][1] == b"CA"
    assert next(s for s in rig.ris.messages[-1].split(b"\r") if s.startswith(b"OBX|1|")) \
        .split(b"|")[11] == b"D"
    # MSSanté: a withdrawal notice, no PDF, the XDM entry flagged D
    notice = rig.smtp.mails[-1]
    assert notice["Subject"].startswith("Retrait")
    files = {p.get_filename(): p.get_content() for p in notice.iter_attachments()}
    assert "compte-rendu.pdf" not in files
    metadata = etree.fromstring(zipfile.ZipFile(io.BytesIO(files["IHE_XDM.ZIP"])).read(
        "IHE_XDM/SUBSET01/METADATA.XML"))
    assert metadata.xpath(".//rim:ExtrinsicObject/rim:Slot[@name='action']/rim:ValueList/"
                          "rim:Value/text()", namespaces=NS) == ["D"]
    # our own copies: entered-in-error (an MHD consumer sees the withdrawal)
    docs = rig.world.ris.get(f"/fhir/DocumentReference?patient={rig.world.refs['patient']}"
                             "&_count=50").json()
    assert {e["resource"]["status"] for e in docs["entry"]} == {"entered-in-error"}
    # the held delivery (no MSSanté address) was cancelled, not withdrawn
    assert state(rig.deliveries()[("mssante", rig.world.refs["requester"])]) == "annule"
    # audited: the ITI-57 export
    events = rig.world.user(["auditor"], scopes=["user/AuditEvent.rs"]).get(
        f"/fhir/AuditEvent?patient={rig.world.refs['patient']}&_count=200").json()
    assert any(s.get("code") == "ITI-57" for e in events.get("entry", [])
               for s in e["resource"].get("subtype", []))
    # a replay of the trigger plans nothing more
    before = rig.deliveries().keys()
    rig.run()
    assert rig.deliveries().keys() == before and len(rig.xds.requests) == 2


def test_withdrawal_before_sending_cancels_and_sends_nothing(rig: Rig) -> None:
    """A report withdrawn before any delivery left: every delivery is cancelled, no
    withdrawal is sent to anyone."""
    rig.qualify()
    report = rig.final()
    r = rig.world.imager.put(f"/fhir/DiagnosticReport/{report['id']}",
                             json={**report, "status": "entered-in-error"})
    assert r.status_code == 200, r.text
    rig.run()
    assert {state(t) for t in rig.deliveries().values()} == {"annule"}
    assert not rig.xds.requests and not rig.ris.messages and not rig.smtp.mails
