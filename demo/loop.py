"""The RIS loop driven from outside, as the hospital's systems drive it (issue 24):
orders over MLLP (or a request over FHIR), images by DICOM C-STORE, the remote imager's
decision and report over FHIR, the report back to the RIS, the DMP and MSSanté, and an
EHR pulling it over IHE MHD.

Only public interfaces of a running ``teleimagerie serve`` are used: HTTP under
``/fhir``, MLLP, DICOM, and the ``teleimagerie`` command line. ``make demo`` narrates it
(:mod:`demo.__main__`); the end-to-end tests (``tests/e2e/test_ris_loop.py``) assert on
what the peers received.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
MESSAGES = Path(__file__).resolve().parent / "messages"
RPPS = "urn:oid:1.2.250.1.71.4.2.1"
FINESS = "urn:oid:1.2.250.1.71.4.2.2"
INS_TEST = "urn:oid:1.2.250.1.213.1.4.10"
PLACER = "urn:oid:1.2.250.1.999.1"
IPP_ISSUER = "1.2.250.1.999.2"
BASE = "https://teleimagerie.fr/fhir"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
DELIVERY = f"{BASE}/CodeSystem/teleimagerie-delivery|diffusion-cr"
TASK = f"{BASE}/CodeSystem/teleimagerie-task"
N3_FORMAT = "urn:ihe:rad:CDA:ImagingReportStructuredHeadings:2013"
SITE_FINESS = "750000001"
IMAGER, REQUESTER = "810000000101", "810000000103"
REQUESTER_MAIL = "paul.demandeur@ch-proximite.mssante.fr"


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``teleimagerie …`` as an operator types it."""
    return subprocess.run([sys.executable, "-m", "teleimagerie.cli", *args], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def listening(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def wait(condition: Callable[[], Any], seconds: float = 30, step: float = 0.2) -> Any:
    """Poll ``condition`` until it is truthy (returned) or the time is up (None)."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


@dataclass
class Loop:
    """A running server and the ways in: ``say`` narrates each step."""

    base: str  # http://host:port
    mllp_port: int
    dicom_port: int
    data: Path
    env: dict[str, str]
    dicom_ae: str = "TELEIMAGERIE"
    calling_ae: str = "MODALITE1"
    say: Callable[[str], None] = lambda text: None
    clients: dict[str, httpx.Client] = field(default_factory=dict)

    # -- who acts ------------------------------------------------------------------------
    def client(self, role: str, rpps: str | None = None) -> httpx.Client:
        """A user of ``role`` with a token from ``teleimagerie token`` (the dev issuer of
        the server's data dir)."""
        key = f"{role}:{rpps}"
        if key not in self.clients:
            args = ["token", "--role", role]
            if rpps:
                args += ["--rpps", rpps, "--acr", "eidas3"]
            if role == "dmp-connector":
                args += ["--scope", "system/DocumentReference.rs", "--scope",
                         "system/Binary.r", "--scope", "system/Patient.rs"]
            done = cli(*args, env=self.env)
            if done.returncode != 0:
                raise RuntimeError(f"teleimagerie token: {done.stderr.strip()}")
            self.clients[key] = httpx.Client(base_url=f"{self.base}/fhir", timeout=60,
                                             headers={"Authorization":
                                                      f"Bearer {done.stdout.strip()}"})
        return self.clients[key]

    @property
    def ris(self) -> httpx.Client:
        return self.client("ris")

    @property
    def imager(self) -> httpx.Client:
        return self.client("remote-imager", IMAGER)

    def create(self, resource: dict[str, Any]) -> str:
        r = self.ris.post(f"/{resource['resourceType']}", json=resource)
        if r.status_code != 201:
            raise RuntimeError(f"POST {resource['resourceType']}: {r.status_code} {r.text}")
        return f"{resource['resourceType']}/{r.json()['id']}"

    # -- the directory -------------------------------------------------------------------
    def directory(self) -> dict[str, str]:
        """The requesting site, its requesting physician (with an MSSanté address) and a
        remote radiologist qualified for CT (RPPS + TRE_R38 SM44)."""
        r38 = ("https://mos.esante.gouv.fr/NOS/TRE_R38-SpecialiteOrdinale/FHIR/"
               "TRE-R38-SpecialiteOrdinale")
        refs = {"site": self.create({
            "resourceType": "Organization", "name": "CH de proximité",
            "identifier": [{"system": FINESS, "value": SITE_FINESS}]})}
        refs["imager"] = self.create({
            "resourceType": "Practitioner", "name": [{"family": "IMAGEUR", "given": ["Anne"]}],
            "identifier": [{"system": RPPS, "value": IMAGER}],
            "qualification": [{"code": {"coding": [{"system": r38, "code": "SM44"}]}}]})
        refs["requester"] = self.create({
            "resourceType": "Practitioner", "name": [{"family": "DEMANDEUR",
                                                      "given": ["Paul"]}],
            "identifier": [{"system": RPPS, "value": REQUESTER}],
            "telecom": [{"system": "email", "value": REQUESTER_MAIL}]})
        refs["role"] = self.create({
            "resourceType": "PractitionerRole", "active": True,
            "practitioner": {"reference": refs["requester"]},
            "organization": {"reference": refs["site"]}})
        self.say(f"annuaire : {refs['site']} (FINESS {SITE_FINESS}), imageur "
                 f"{refs['imager']} (RPPS {IMAGER}, SM44), demandeur {refs['requester']}")
        return refs

    # -- ways in -------------------------------------------------------------------------
    def send_hl7(self, name: str) -> list[str]:
        """Send a sample message file over MLLP (``teleimagerie hl7 send``); its ACK codes."""
        done = cli("hl7", "send", str(MESSAGES / name), "--port", str(self.mllp_port),
                   env=self.env)
        codes = [line.split("|")[1] for line in done.stdout.splitlines()
                 if line.startswith("MSA|")]
        self.say(f"RIS → MLLP {name} : ACK {', '.join(codes) or done.stderr.strip()}")
        return codes

    def request_of(self, placer: str) -> dict[str, Any] | None:
        found = self.ris.get("/ServiceRequest", params={"identifier": f"{PLACER}|{placer}"})
        entries = found.json().get("entry") or []
        return dict(entries[0]["resource"]) if entries else None

    def request_over_fhir(self, placer: str, refs: dict[str, str], family: str,
                          ins: str) -> dict[str, Any]:
        """An EHR posts the patient and the request (requester: a PractitionerRole)."""
        patient = self.create({
            "resourceType": "Patient", "name": [{"family": family, "given": ["Zoé"],
                                                 "use": "official"}],
            "gender": "female", "birthDate": "1991-07-04",
            "telecom": [{"system": "phone", "value": "+33238000002"}],
            "identifier": [{"system": INS_TEST, "value": ins, "type": {"coding": [{
                "system": "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203",
                "code": "INS-NIR"}]}}],
            "extension": [{"url": "https://hl7.fr/ig/fhir/core/StructureDefinition/"
                                  "fr-core-identity-reliability",
                           "extension": [{"url": "identityStatus", "valueCoding": {
                               "system": "https://hl7.fr/ig/fhir/core/CodeSystem/"
                                         "fr-core-cs-v2-0445", "code": "VALI"}}]},
                          # an INS identity has its birth place (COG), an INS trait the
                          # DMP's CDA rules require (issue 26)
                          {"url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace",
                           "valueAddress": {"city": "ORLÉANS", "extension": [{
                               "url": "https://hl7.fr/ig/fhir/core/StructureDefinition/"
                                      "fr-core-address-insee-code",
                               "valueCoding": {"system": "https://mos.esante.gouv.fr/NOS/"
                                               "TRE_R13-CommuneOM/FHIR/TRE-R13-CommuneOM",
                                               "code": "45234"}}]}}]})
        ext = f"{BASE}/StructureDefinition"
        sr = {
            "resourceType": "ServiceRequest",
            "meta": {"profile": [f"{ext}/tlm-service-request"]},
            "extension": [
                {"url": f"{ext}/tlm-act-kind", "valueCodeableConcept": {"coding": [{
                    "system": f"{BASE}/CodeSystem/teleimagerie-act-kind",
                    "code": "telediagnostic"}]}},
                {"url": f"{ext}/tlm-objective", "valueCodeableConcept": {"coding": [{
                    "system": f"{BASE}/CodeSystem/teleimagerie-objective",
                    "code": "diagnostic"}]}},
                {"url": f"{ext}/tlm-modality", "valueCoding": {"system": DCM, "code": "CT"}},
                {"url": f"{ext}/tlm-pregnancy-status", "valueCodeableConcept": {"coding": [{
                    "system": "http://snomed.info/sct", "code": "60001007"}]}}],
            "identifier": [{"type": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "PLAC"}]},
                "system": PLACER, "value": placer}],
            "status": "active", "intent": "order", "priority": "urgent",
            "code": {"coding": [{"system": "https://smt.esante.gouv.fr/terminologie-ccam",
                                 "code": "ZBQK002"}]},
            "subject": {"reference": patient},
            "authoredOn": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
            "requester": {"reference": refs["role"]},
            "performer": [{"reference": refs["imager"]}],
            "reasonCode": [{"text": "Dyspnée aiguë"}],
            "bodySite": [{"coding": [{"system": "http://snomed.info/sct",
                                      "code": "51185008"}]}]}
        ref = self.create(sr)
        self.say(f"DPI → POST {ref} (demandeur {refs['role']})")
        return dict(self.ris.get(f"/{ref}").json())

    def images(self, placer: str, patient_id: str, name: str, born: str, sex: str = "F",
               study_uid: str | None = None) -> str:
        """A modality sends a CT series and its dose report (RDSR) by C-STORE."""
        from pydicom.uid import generate_uid
        from pynetdicom import AE
        from pynetdicom.sop_class import (  # type: ignore[attr-defined]
            CTImageStorage,
            XRayRadiationDoseSRStorage,
        )

        from demo.dicom import ct_images, ct_rdsr

        uid = study_uid or generate_uid()
        who = {"name": name, "born": born, "sex": sex, "placer": placer,
               "patient_id": patient_id, "issuer": IPP_ISSUER}
        datasets = [*ct_images(uid, 3, **who), ct_rdsr(uid, [(9.5, 380.0)], 380.0, **who)]
        ae = AE(ae_title=self.calling_ae)
        for context in (CTImageStorage, XRayRadiationDoseSRStorage):
            ae.add_requested_context(context)
        assoc = ae.associate("127.0.0.1", self.dicom_port, ae_title=self.dicom_ae)
        if not assoc.is_established:
            raise RuntimeError("DICOM association refused")
        statuses = [assoc.send_c_store(ds).Status for ds in datasets]
        assoc.release()
        self.say(f"modalité → C-STORE {len(datasets)} instances (étude {uid}) : statuts "
                 f"{', '.join(f'{s:#06x}' for s in statuses)}")
        return uid

    def study(self, uid: str) -> dict[str, Any] | None:
        found = self.ris.get("/ImagingStudy",
                             params={"identifier": f"urn:dicom:uid|urn:oid:{uid}"}).json()
        return dict(found["entry"][0]["resource"]) if found.get("entry") else None

    # -- the workflow --------------------------------------------------------------------
    def op(self, client: httpx.Client, sr: str, name: str, **values: str) -> None:
        params = [{"name": k, "valueString" if k != "occurrence" else "valueDateTime": v}
                  for k, v in values.items()]
        r = client.post(f"/ServiceRequest/{sr}/${name}",
                        json={"resourceType": "Parameters", "parameter": params})
        if r.status_code != 200:
            raise RuntimeError(f"${name}: {r.status_code} {r.text}")
        self.say(f"${name} sur ServiceRequest/{sr} : {self.state(sr)}")

    def state(self, sr: str) -> str:
        found = self.ris.get("/Task", params={"focus": f"ServiceRequest/{sr}",
                                              "code": f"{TASK}|realisation-interpretation"})
        entries = found.json().get("entry") or []
        return str(entries[0]["resource"]["businessStatus"]["coding"][0]["code"]) \
            if entries else "?"

    def consent(self, patient: str) -> None:
        self.create({
            "resourceType": "Consent", "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                  "consentscope", "code": "treatment"}]},
            "category": [{"coding": [{"system": f"{BASE}/CodeSystem/teleimagerie-consent-"
                                      "category", "code": c}]} for c in ("acte",
                                                                         "teleimagerie")],
            "patient": {"reference": patient}, "performer": [{"reference": patient}],
            "dateTime": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
            "extension": [{"url": f"{BASE}/StructureDefinition/tlm-consent-method",
                           "valueCodeableConcept": {"coding": [{
                               "system": f"{BASE}/CodeSystem/teleimagerie-consent-method",
                               "code": "oral"}]}}],
            "provision": {"type": "permit"}})
        self.say(f"consentement recueilli pour {patient}")

    def validate(self, sr: dict[str, Any]) -> None:
        """Consent, the imager accepts (flux 3 leaves for an HL7 order), the site
        schedules and starts the exam (unless its images came first)."""
        self.consent(sr["subject"]["reference"])
        self.op(self.imager, sr["id"], "accept",
                protocol="Scanner thoracique injecté, coupes de 1 mm")
        if self.state(sr["id"]) != "validee":
            return  # the images came first: they are there already
        self.op(self.ris, sr["id"], "schedule",
                occurrence=time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()))
        self.op(self.ris, sr["id"], "start")

    def report(self, sr: dict[str, Any], study: dict[str, Any]) -> str:
        """The imager signs the final report (with the dose the RDSR gave)."""
        dose = wait(lambda: self.ris.get("/Observation", params={
            "part-of": f"ImagingStudy/{study['id']}", "code": f"{DCM}|113813"}
        ).json().get("entry"), 20)
        report = {
            "resourceType": "DiagnosticReport",
            "meta": {"profile": [f"{BASE}/StructureDefinition/tlm-diagnostic-report"]},
            "status": "final", "language": "fr-FR",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                      "v2-0074", "code": "RAD"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "18748-4"}]},
            "subject": sr["subject"], "basedOn": [{"reference": f"ServiceRequest/{sr['id']}"}],
            "effectiveDateTime": study.get("started") or
            time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
            "issued": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
            "performer": [{"reference": f"Practitioner/{self.imager_id()}"}],
            "imagingStudy": [{"reference": f"ImagingStudy/{study['id']}"}],
            "conclusion": "Absence d'embolie pulmonaire. Pas d'anomalie parenchymateuse."}
        if dose:
            report["result"] = [{"reference": f"Observation/{dose[0]['resource']['id']}"}]
        r = self.imager.post("/DiagnosticReport", json=report)
        if r.status_code != 201:
            raise RuntimeError(f"DiagnosticReport: {r.status_code} {r.text}")
        self.say(f"imageur → compte rendu définitif DiagnosticReport/{r.json()['id']} : "
                 f"{self.state(sr['id'])}")
        return str(r.json()["id"])

    def imager_id(self) -> str:
        found = self.ris.get("/Practitioner", params={"identifier": f"{RPPS}|{IMAGER}"})
        return str(found.json()["entry"][0]["resource"]["id"])

    # -- what came out -------------------------------------------------------------------
    def deliveries(self, sr: str) -> dict[str, str]:
        """channel (and recipient) -> state of the report's deliveries."""
        found = self.ris.get("/Task", params={"code": DELIVERY,
                                              "based-on": f"ServiceRequest/{sr}",
                                              "_count": "50"}).json()
        out = {}
        for e in found.get("entry") or []:
            task = e["resource"]
            channel = next(i["valueCode"] for i in task["input"]
                           if i["type"]["coding"][0]["code"] == "canal")
            who = (task.get("owner") or {}).get("reference", "")
            out[f"{channel} {who}".strip()] = task["businessStatus"]["coding"][0]["code"]
        return out

    def settled(self, sr: str, expected: int) -> dict[str, str]:
        """Wait until ``expected`` deliveries are planned and none is still to be sent."""
        waiting = ("a-envoyer", "nouvel-essai")

        def done() -> dict[str, str] | None:
            states = self.deliveries(sr)
            return states if len(states) >= expected and not any(
                s in waiting for s in states.values()) else None

        states = wait(done, 60, 0.5) or self.deliveries(sr)
        for who, state in sorted(states.items()):
            self.say(f"diffusion {who} : {state}")
        return states

    def pull(self, ins: str) -> list[bytes]:
        """An EHR's DMP connector: ITI-67 (find the N3 documents by INS) then ITI-68."""
        connector = self.client("dmp-connector")
        found = connector.get("/DocumentReference", params={
            "patient.identifier": f"{INS_TEST}|{ins}", "format": N3_FORMAT,
            "status": "current"}).json()
        documents = []
        for e in found.get("entry") or []:
            url = e["resource"]["content"][0]["attachment"]["url"]
            r = connector.get(f"{self.base}/fhir/{url}" if not url.startswith("http")
                              else url, headers={"Accept": "application/fhir+json"})
            documents.append(base64.b64decode(r.json()["data"]))
        self.say(f"DPI → MHD ITI-67/68 : {len(documents)} document(s) N3 récupéré(s)")
        return documents


def send_mllp(port: int, message: bytes) -> bytes:
    """One message over MLLP, its ACK (for tests that need the raw answer)."""
    from adapters.hl7v2.mllp import MllpClient

    async def go() -> bytes:
        async with MllpClient("127.0.0.1", port, timeout=30) as client:
            return await client.send(message)

    return asyncio.run(go())


def environment(data: Path, http: int, mllp: int, dicom: int, ris: int, xds_url: str,
                smtp: int, cert: str, key: str, **extra: str) -> dict[str, str]:
    """The server's settings toward the stand-in peers."""
    return {**os.environ, "TELEIMG_DATA_DIR": str(data), "TELEIMG_HTTP_PORT": str(http),
            "TELEIMG_MLLP_PORT": str(mllp), "TELEIMG_DICOM_PORT": str(dicom),
            "TELEIMG_DICOM_ALLOWED_AES": "MODALITE1",
            "TELEIMG_HL7_ROUTES": f"{SITE_FINESS}=127.0.0.1:{ris};CH-PROX=127.0.0.1:{ris}",
            "TELEIMG_HL7_RETRY_BASE": "0.5", "TELEIMG_HL7_RETRY_MAX": "2",
            "TELEIMG_DMP_XDS_URL": xds_url, "TELEIMG_DMP_SIGN_CERT": cert,
            "TELEIMG_DMP_SIGN_KEY": key, "TELEIMG_DMP_SOURCE_ID": "1.2.250.1.999.1",
            "TELEIMG_DMP_STRUCTURE_ID": f"1{SITE_FINESS}",
            "TELEIMG_MSS_SMTP": f"127.0.0.1:{smtp}",
            "TELEIMG_MSS_FROM": "teleimagerie@plateforme.mssante.fr",
            "TELEIMG_DELIVERY_RETRY_BASE": "0.5", "TELEIMG_DELIVERY_RECHECK": "1",
            **extra}
