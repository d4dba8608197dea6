"""A téléimagerie site for the workflow tests: professionals, a patient, users' tokens.

Resources start from the profile examples (``profiles/examples``), so every write also
passes our profiles; users are dev-issuer tokens with the application roles.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from fhir_server.server.dispatch import FhirServer
from fhir_server.workflow.engine import Workflow
from fhir_server.workflow.settings import WorkflowSettings
from tests.conftest import mint, serve

EXAMPLES = Path(__file__).resolve().parents[2] / "profiles" / "examples"
RPPS = "urn:oid:1.2.250.1.71.4.2.1"
FINESS = "urn:oid:1.2.250.1.71.4.2.2"
R38 = "https://mos.esante.gouv.fr/NOS/TRE_R38-SpecialiteOrdinale/FHIR/TRE-R38-SpecialiteOrdinale"
BASE = "https://teleimagerie.fr/fhir"
TASK = f"{BASE}/CodeSystem/teleimagerie-task"
STATE = f"{BASE}/CodeSystem/teleimagerie-request-state"
CONSENT_CAT = f"{BASE}/CodeSystem/teleimagerie-consent-category"
REFUSAL = f"{BASE}/CodeSystem/teleimagerie-refusal-reason"
ALT_SYSTEM = f"{BASE}/CodeSystem/teleimagerie-alternative-path"
EXT = f"{BASE}/StructureDefinition"

# idNatPs of the users (``8`` + RPPS for RPPS professionals)
IMAGER, NUCLEAR, REQUESTER, GP, UNQUALIFIED = (
    "810000000101", "810000000102", "810000000103", "810000000104", "810000000105")


def example(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EXAMPLES / f"{name}--valid.json").read_text())
    data.pop("id", None)
    return data


def param(name: str, value: Any) -> dict[str, Any]:
    key = {bool: "valueBoolean", str: "valueString"}.get(type(value))
    if key is None:
        key = "valueReference" if "reference" in value else (
            "valueCoding" if "code" in value else "valueCodeableConcept")
    return {"name": name, key: value}


def parameters(**values: Any) -> dict[str, Any]:
    return {"resourceType": "Parameters",
            "parameter": [param(k.replace("_", "-"), v) for k, v in values.items()]}


class World:
    def __init__(self, core: FhirServer, data_dir: Path,
                 settings: WorkflowSettings | None = None) -> None:
        core.workflow = Workflow(settings)
        self.core = core
        self.dir = data_dir
        self.ris = self.user(["ris"], scopes=["system/*.cruds"])
        self.refs: dict[str, str] = {}
        self.refs["site"] = self._create({"resourceType": "Organization", "identifier": [
            {"system": FINESS, "value": "750000001"}], "name": "CH de proximité"})
        for key, nat, specialty in (("imager", IMAGER, "SM44"), ("nuclear", NUCLEAR, "SM28"),
                                    ("requester", REQUESTER, "SM54"), ("gp", GP, "SM54"),
                                    ("unqualified", UNQUALIFIED, "SM54")):
            self.refs[key] = self._create({
                "resourceType": "Practitioner", "identifier": [{"system": RPPS, "value": nat}],
                "name": [{"family": key.upper()}],
                "qualification": [{"code": {"coding": [{"system": R38, "code": specialty}]}}]})
        self.refs["patient"] = self.patient("1980-05-17", "female")

    def _create(self, resource: dict[str, Any]) -> str:
        r = self.ris.post(f"/fhir/{resource['resourceType']}", json=resource)
        assert r.status_code == 201, r.text
        return f"{resource['resourceType']}/{r.json()['id']}"

    def patient(self, born: str, gender: str) -> str:
        return self._create({"resourceType": "Patient",
                             "name": [{"use": "official", "family": "MARTIN",
                                       "given": ["Claire"]}],
                             "gender": gender, "birthDate": born,
                             "telecom": [{"system": "phone", "value": "+33238000001"}],
                             "generalPractitioner": [{"reference": self.refs["gp"]}]})

    def user(self, roles: list[str], nat: str | None = None,
             scopes: list[str] | None = None, finess: list[str] | None = None) -> TestClient:
        token = mint(self.dir, roles, scopes or ["user/*.cruds"], id_nat_ps=nat,
                     sub=f"test:{roles[0]}:{nat}", finess=finess)
        return serve(self.core, self.dir, token)

    @property
    def radiographer(self) -> TestClient:
        """A MERM of the requesting site (the site performs the exam)."""
        return self.user(["radiographer"], "810000000199", finess=["750000001"])

    @property
    def imager(self) -> TestClient:
        return self.user(["remote-imager"], IMAGER)

    def request(self, modality: str = "CT", kind: str = "telediagnostic",
                patient: str | None = None, emergency: bool = False,
                priority: str = "urgent", **changes: Any) -> str:
        sr = example("tlm-service-request")
        for e in sr["extension"]:
            if e["url"].endswith("tlm-modality"):
                e["valueCoding"]["code"] = modality
            if e["url"].endswith("tlm-act-kind"):
                e["valueCodeableConcept"]["coding"][0]["code"] = kind
        if emergency:
            sr["extension"].append({"url": f"{EXT}/tlm-emergency", "valueBoolean": True})
        sr.update(subject={"reference": patient or self.refs["patient"]},
                  requester={"reference": self.refs["requester"]},
                  performer=[{"reference": self.refs["site"]},
                             {"reference": self.refs["imager"]},
                             {"reference": self.refs["nuclear"]}],
                  priority=priority, authoredOn=_now())
        sr.update(changes)  # may name another requester or performers
        return self._create(sr).split("/")[1]

    def consent(self, *categories: str, decision: str = "permit",
                patient: str | None = None, data: str | None = None,
                actors: list[str] | None = None, client: TestClient | None = None) -> str:
        c = example("tlm-consent")
        c["patient"] = {"reference": patient or self.refs["patient"]}
        c["performer"] = [{"reference": patient or self.refs["patient"]}]
        c["category"] = [{"coding": [{"system": CONSENT_CAT, "code": code}]}
                         for code in categories]
        c["provision"] = {"type": decision}
        if data:
            c["provision"]["data"] = [{"meaning": "related",
                                       "reference": {"reference": data}}]
        if actors:
            c["provision"]["actor"] = [{"role": {"text": "destinataire"},
                                        "reference": {"reference": a}} for a in actors]
        r = (client or self.ris).post("/fhir/Consent", json=c)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def op(self, client: TestClient, sr: str, name: str, **values: Any) -> Any:
        return client.post(f"/fhir/ServiceRequest/{sr}/${name}", json=parameters(**values))

    def task(self, sr: str) -> dict[str, Any]:
        r = self.ris.get(f"/fhir/Task?focus=ServiceRequest/{sr}&code={TASK}|"
                         "realisation-interpretation,teleexpertise")
        entries = r.json().get("entry", [])
        assert len(entries) == 1, r.text
        return copy.deepcopy(entries[0]["resource"])

    def state(self, sr: str) -> str:
        return str(self.task(sr)["businessStatus"]["coding"][0]["code"])

    def study(self, sr: str, modality: str = "CT", client: TestClient | None = None,
              **changes: Any) -> str:
        s = example("tlm-imaging-study")
        s.update(subject={"reference": self.refs["patient"]},
                 basedOn=[{"reference": f"ServiceRequest/{sr}"}], status="available",
                 modality=[{"system": "http://dicom.nema.org/resources/ontology/DCM",
                            "code": modality}], **changes)
        s.pop("series", None)
        r = (client or self.ris).post("/fhir/ImagingStudy", json=s)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def dose(self, study: str) -> str:
        o = example("tlm-dose-observation")
        o.update(subject={"reference": self.refs["patient"]},
                 partOf=[{"reference": f"ImagingStudy/{study}"}])
        return self._create(o)

    def report(self, sr: str, study: str, status: str = "final", **changes: Any
               ) -> dict[str, Any]:
        d = example("tlm-diagnostic-report")
        d.pop("result", None)
        d.update(subject={"reference": self.refs["patient"]},
                 basedOn=[{"reference": f"ServiceRequest/{sr}"}],
                 imagingStudy=[{"reference": f"ImagingStudy/{study}"}], status=status,
                 performer=[{"reference": self.refs["imager"]}], language="fr-FR")
        d.update(changes)
        return {k: v for k, v in d.items() if v is not None}

    def ready(self, modality: str = "CT", **kw: Any) -> str:
        """A request validated and scheduled, consents given."""
        sr = self.request(modality, **kw)
        self.consent("acte", "teleimagerie", patient=kw.get("patient"))
        r = self.op(self.imager, sr, "accept")
        assert r.status_code == 200, r.text
        r = self.op(self.ris, sr, "schedule", occurrence=_now(timedelta(days=1)))
        assert r.status_code == 200, r.text
        return sr


def _now(offset: timedelta = timedelta()) -> str:
    """The wall clock, so due dates derived from ``authoredOn`` are never in the past
    when a test runs (fixed example dates turned every request late once passed)."""
    return (datetime.now(UTC) + offset).isoformat(timespec="seconds")
