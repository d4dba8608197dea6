"""HL7 v2 messages for the adapter tests, written for the tests (the IG samples are read
from ``../shared/references`` where present), and a receiver on a secured core."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from adapters.hl7v2.mllp import Frame
from adapters.hl7v2.outbox import Outbox
from adapters.hl7v2.receiver import Receiver
from adapters.hl7v2.records import register_all
from adapters.hl7v2.settings import Hl7Settings
from fhir_server.server.dispatch import FhirServer
from tests.behaviour.workflow_world import World
from tests.conftest import REFERENCES

IG = REFERENCES / "ans-ig-hl7v2-teleradiologie" / "exemples.md"
PAM = REFERENCES / "ans-hl7v2-exemples"
INS_TEST = "urn:oid:1.2.250.1.213.1.4.10"
PLACER_OID = "1.2.250.1.999.1"
IMAGER_XCN = ("810000000101^IMAGEUR^Anne^^^DR^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^D^^^"
              "IDNPS")
REQUESTER_XCN = ("810000000103^DEMANDEUR^Paul^^^DR^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^D"
                 "^^^IDNPS")
SITE_XON = "CH de proximité^^^^^ASIP-SANTE-ST&1.2.250.1.71.4.2.2&ISO^FINEG^^^750000001"


def ig_samples() -> list[bytes]:
    """The four messages of the IG's ``exemples.md`` (flux 1, 2, 3, 4), CR-separated."""
    text = IG.read_text(encoding="utf-8")
    blocks = re.findall(r"```\n(MSH.*?)```", text, re.S)
    return [("\r".join(x for x in b.strip().split("\n") if x.strip()) + "\r").encode()
            for b in blocks]


def pid(ins: str = "283052312345678", ipp: str = "IPP001", family: str = "DUPONT",
        given: str = "Claire", born: str = "19830522", sex: str = "F",
        status: str = "VALI") -> str:
    ids = [f"{ipp}^^^CH-PROX&1.2.250.1.999.2&ISO^PI"] if ipp else []
    if ins:
        ids.append(f"{ins}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.10&ISO^INS")
    fields = ["PID", "", "", "~".join(ids), "", f"{family}^{given}^{given} Marie^^^^L", "",
              born, sex, "", "", "12 rue des Lilas^^ORLÉANS^^45000^FRA^H~^^^^^^BDL^^45234"]
    fields += [""] * (32 - len(fields) + 1)
    fields[32] = status
    return "|".join(fields)


def msh(kind: str, control: str, version: str = "2.5.1", processing: str = "P",
        charset: str = "UNICODE UTF-8", sender: str = "RIS-PROX",
        ack_types: tuple[str, str] = ("", "")) -> str:
    """MSH; ``ack_types`` (MSH-15, MSH-16) valued asks for enhanced mode."""
    accept, application = ack_types
    return (f"MSH|^~\\&|{sender}|CH-PROX|TLRapp|TLRfacility|20261122093000||{kind}|{control}|"
            f"{processing}|{version}|||{accept}|{application}|FRA|{charset}|||"
            "1.0^CISIS_TLR_HL7_V2")


def orm(control: str = "1", placer: str = "DEM-1", order_control: str = "NW",
        patient: str | None = None, modality: str = "CT", obx: list[str] | None = None,
        reason: str = "", verifier: str = IMAGER_XCN, **kw: Any) -> bytes:
    segments = [msh("ORM^O01^ORM_O01", control, **kw), patient or pid(),
                f"ORC|{order_control}|{placer}^^{PLACER_OID}^ISO|||||||20261122092500||"
                f"{verifier}|{REQUESTER_XCN}||^PRN^CP^^^^^^^^^+33600000000||{reason}|"
                f"STRUCTURE_IMAGERIE^^TLR_TYPE_ORGANISATION||||{SITE_XON}",
                f"OBR||{placer}^^{PLACER_OID}^ISO||TRANSMISSION_DEMANDE^Transmission^"
                f"TLR_OBR_PROCEDURE|||||||||Céphalées brutales|||{REQUESTER_XCN}"]
    if order_control == "NW":
        segments += obx if obx is not None else [
            "NTE|||Suivi d'un anévrisme|FINALITE_EXAMEN^^HL70364",
            f"OBX|1|CE|MODALITE_IMAGERIE^Modalité^TLR_OBSERVATION||{modality}^Scanner^DCM"
            "||||||O",
            "OBX|2|CE|REGION_ANATOMIQUE^Région^TLR_OBSERVATION|1.1|774007^tête et/ou cou^SCT"
            "||||||O",
            "OBX|3|CE|REGION_ANATOMIQUE^Région^TLR_OBSERVATION|1.2|7771000^côté gauche^SCT"
            "||||||O",
            "OBX|4|FT|11322-5^History^LN||Hypertension artérielle|||PERTINENT|||O",
            "OBX|5|NM|8302-2^Body height^LN||165|cm|||||O",
            "OBX|6|NM|29463-7^Body weight^LN||58,5|kg|||||O",
            "OBX|7|CE|82810-3^Pregnancy status^LN||N^^expandedYes-NoIndicator||||||O"]
    return ("\r".join(segments) + "\r").encode()


def omi(control: str = "3", placer: str = "DEM-1", study_uid: str = "1.2.250.1.999.3.1",
        **kw: Any) -> bytes:
    segments = [
        msh("OMI^O23^OMI_O23", control, **kw), pid(),
        f"ORC|SR|{placer}^^{PLACER_OID}^ISO|",
        "TQ1||||||30^minutes|20261122101500",
        f"OBR||{placer}^^{PLACER_OID}^ISO||COMPLEMENT_POST_ACTE^Complément^TLR_OBR_PROCEDURE|",
        "OBX|1|ED|URL_PARTIELLE_VIEWER^Visionneuse^TLR_OBSERVATION||^TEXT^^Base64^"
        "aHR0cHM6Ly9kcmltYm94LmNoLXByb3guZnIvdmlld2VyP3N0dWR5PTE=||||||F",
        "OBX|2|CE|CODE_ACTE_IMAGERIE^Acte^TLR_OBSERVATION||ACQK001^Scanner du crâne^CCAM"
        "||||||F",
        "OBX|3|CE|MODALITE_IMAGERIE^Modalité^TLR_OBSERVATION||CT^Scanner^DCM||||||F",
        "OBX|4|CE|PRODUIT_ADMINISTRE^Produit^TLR_OBSERVATION|1.1|V08AB02^Iohexol^ATC||||||F",
        "OBX|5|TX|PRODUIT_ADMINISTRE^Produit^TLR_OBSERVATION|1.2|LOT-42||||||F",
        "OBX|6|NM|PRODUIT_ADMINISTRE^Produit^TLR_OBSERVATION|1.3|80|mL|||||F",
        "OBX|7|TX|APPAREIL_IMAGERIE^Appareil^TLR_OBSERVATION|1.1|SN-CT-0007||||||F",
        "OBX|8|TX|APPAREIL_IMAGERIE^Appareil^TLR_OBSERVATION|1.2|Scanner 64 barrettes"
        "||||||F",
        f"IPC|ACC-1^^1.2.250.1.999.4^ISO|ACQK001^^1.2.250.1.213.2.5^ISO|{study_uid}|SPS-1|CT"]
    return ("\r".join(segments) + "\r").encode()


def adt(event: str, control: str, patient: str | None = None,
        mrg: str | None = None) -> bytes:
    segments = [msh(f"ADT^{event}^ADT_{event}", control, version="2.5^FRA^2.11"),
                "EVN||20261122090000", patient or pid()]
    if mrg:
        segments.append(f"MRG|{mrg}")
    segments.append("PV1|1|O")
    return ("\r".join(segments) + "\r").encode()


def split(ack: bytes) -> dict[str, Any]:
    """An ACK as its segments (by name) split into fields, plus ``raw``."""
    segments = [s.split("|") for s in ack.decode("utf-8").split("\r") if s]
    return {s[0]: s for s in segments} | {"raw": ack}


class Hl7World(World):
    """The workflow world plus a receiver fed like the MLLP listener feeds it."""

    def __init__(self, core: FhirServer, data_dir: Path,
                 settings: Hl7Settings | None = None) -> None:
        super().__init__(core, data_dir)
        register_all()
        self.settings = settings or Hl7Settings()
        assert core.workflow is not None
        Outbox(self.settings).subscribe(core.workflow.events)
        self.receiver = Receiver(core, self.settings)
        self.admin = self.user(["admin"], "810000000999")  # interfaces administrator
        self.auditor = self.user(["auditor"], "810000000998")

    def client_for(self, query: str) -> Any:
        if query.startswith("AuditEvent"):
            return self.auditor
        # the message records are the interfaces administrator's; their raw bytes are
        # patient data (issue 27: admin reads no clinical Binary), read as the RIS
        return self.admin if query.startswith("Basic") else self.ris

    def read(self, ref: str) -> dict[str, Any]:
        r = self.client_for(ref).get(f"/fhir/{ref}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    def send(self, message: bytes, peer: str = "10.0.0.5:40000") -> dict[str, Any]:
        """Feed one message; returns the ACK split into segments and fields (empty when
        the message asked for none)."""
        ack = self.receiver.receive(Frame(message), peer)
        if ack is None:
            return {}
        return split(ack)

    def search(self, query: str) -> list[dict[str, Any]]:
        r = self.client_for(query).get(f"/fhir/{query}")
        assert r.status_code == 200, r.text
        return [e["resource"] for e in r.json().get("entry", [])
                if e.get("search", {}).get("mode") == "match"]

    def one(self, query: str) -> dict[str, Any]:
        found = self.search(query)
        assert len(found) == 1, (query, found)
        return found[0]
