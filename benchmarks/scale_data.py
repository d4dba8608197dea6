"""The scale benchmark's data set (issue 32): a seeded, endless stream of a téléimagerie
site's records, built on our French profiles' valid examples (``profiles/examples``) so
every resource passes the server's validation (base R4, the profiles it declares, the
mandatory ones).

The stream is *prefix-stable*: the first ``n`` resources are the same whatever size is
asked for, and have the same proportions at every ``n``. A data set grows from 10 k to
100 k to 1 M by loading what follows, and a load resumes from a count. Its clock
advances with the exams (``EXAMS_PER_DAY``): a bigger data set is a longer history, not
a busier day, so a one-day date search answers the same number of requests at every
size.

Per exam: 1 ServiceRequest, 1 Task, 1 ImagingStudy, 2 dose Observations (DLP, CTDIvol),
1 DiagnosticReport, 4 AuditEvents (imported access records), and a new Patient for 70 %
of the exams (the others are a known patient's follow-up): ~10.7 resources per exam,
after a fixed header of practitioners and organisations.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from benchmarks.dataset import FAMILIES, GIVEN, INS_NIR, ins

SEED = 20261203
PRACTITIONERS = 40
ORGANIZATIONS = 10
HEADER = PRACTITIONERS + ORGANIZATIONS
EXAMS_PER_DAY = 50
NEW_PATIENT = 0.7  # share of exams that bring a patient not seen before
START = datetime(2020, 1, 1, 7, 0, tzinfo=UTC)

TLM = "https://teleimagerie.fr/fhir"
SD = f"{TLM}/StructureDefinition"
RPPS = "urn:oid:1.2.250.1.71.4.2.1"
FINESS = "urn:oid:1.2.250.1.71.4.2.2"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
UCUM = "http://unitsofmeasure.org"
SNOMED = "http://snomed.info/sct"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
# modalities of the téléimagerie profile (mammography is out of scope: R-SCOPE-2)
MODALITIES = ["CT", "CT", "CT", "MR", "MR", "CR", "DX", "NM", "PT"]
CCAM = {"CT": "ACQK001", "MR": "ACQN001", "CR": "LAQK002", "DX": "LAQK002",
        "NM": "ACQL001", "PT": "ZZQL016"}
PRIORITIES = ["routine", "routine", "urgent", "stat"]
BODY_SITES = ["774007", "51185008", "818983003", "39352004"]  # head+neck, thorax, abdomen, joint


def _profile(name: str) -> dict[str, list[str]]:
    return {"profile": [f"{SD}/{name}"]}


def _stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def exam_time(exam: int) -> datetime:
    """When exam ``exam`` was requested: the site's clock (``EXAMS_PER_DAY``)."""
    return START + timedelta(days=exam // EXAMS_PER_DAY,
                             minutes=(exam % EXAMS_PER_DAY) * 600 // EXAMS_PER_DAY)


def header() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    rnd = random.Random(SEED)
    for i in range(PRACTITIONERS):
        out.append({"resourceType": "Practitioner", "id": f"pr{i}", "meta": _profile(
            "tlm-practitioner"), "identifier": [{"system": RPPS, "value": f"8100{i:08d}"}],
            "name": [{"family": rnd.choice(FAMILIES).upper(), "given": [rnd.choice(GIVEN)],
                      "prefix": ["DR"]}],
            "qualification": [{"code": {"text": "Radiodiagnostic et imagerie médicale"}}]})
    for i in range(ORGANIZATIONS):
        out.append({"resourceType": "Organization", "id": f"org{i}", "meta": _profile(
            "tlm-organization"), "identifier": [{"system": FINESS, "value": f"45{i:07d}"}],
            "name": f"Centre hospitalier {i}", "type": [{"coding": [{
                "system": f"{TLM}/CodeSystem/tlr-type-organisation",
                "code": "STRUCTURE_IMAGERIE"}]}]})
    return out


def patient(k: int, rnd: random.Random) -> dict[str, Any]:
    gender = rnd.choice(["male", "female"])
    return {"resourceType": "Patient", "id": f"p{k}", "meta": _profile("tlm-patient"),
            "extension": [{"url": "https://hl7.fr/ig/fhir/core/StructureDefinition/"
                                  "fr-core-identity-reliability",
                           "extension": [{"url": "identityStatus", "valueCoding": {
                               "system": "https://hl7.fr/ig/fhir/core/CodeSystem/"
                                         "fr-core-cs-v2-0445", "code": "VALI"}}]}],
            "identifier": [{"system": INS_NIR, "value": ins(k)}],
            "name": [{"use": "official", "family": rnd.choice(FAMILIES).upper(),
                      "given": [rnd.choice(GIVEN)]}],
            "gender": gender,
            "birthDate": f"{rnd.randint(1930, 2020)}-{rnd.randint(1, 12):02d}-"
                         f"{rnd.randint(1, 28):02d}"}


def exam(e: int, pid: str, rnd: random.Random) -> list[dict[str, Any]]:
    """The records of exam ``e`` of patient ``pid``, referenced ones first."""
    mod = rnd.choice(MODALITIES)
    t = exam_time(e)
    subject = {"reference": f"Patient/{pid}"}
    requester = {"reference": f"Practitioner/pr{rnd.randrange(PRACTITIONERS)}"}
    imager = {"reference": f"Practitioner/pr{rnd.randrange(PRACTITIONERS)}"}
    site = f"Organization/org{rnd.randrange(ORGANIZATIONS)}"
    sr = {"resourceType": "ServiceRequest", "id": f"sr{e}",
          "meta": _profile("tlm-service-request"),
          "extension": [
              {"url": f"{SD}/tlm-act-kind", "valueCodeableConcept": {"coding": [{
                  "system": f"{TLM}/CodeSystem/teleimagerie-act-kind",
                  "code": "telediagnostic"}]}},
              {"url": f"{SD}/tlm-objective", "valueCodeableConcept": {"coding": [{
                  "system": f"{TLM}/CodeSystem/teleimagerie-objective",
                  "code": "diagnostic"}]}},
              {"url": f"{SD}/tlm-modality", "valueCoding": {"system": DCM, "code": mod}},
              {"url": f"{SD}/tlm-pregnancy-status", "valueCodeableConcept": {"coding": [{
                  "system": SNOMED, "code": "60001007"}]}},
              {"url": f"{SD}/tlm-desired-delay", "valueQuantity": {
                  "value": rnd.choice([4, 24, 48]), "unit": "h", "system": UCUM,
                  "code": "h"}}],
          "identifier": [{"type": {"coding": [{"system": V2_0203, "code": "PLAC"}]},
                          "system": "urn:oid:1.2.250.1.748.12345678.12",
                          "value": f"OPN{e}"}],
          "status": "active", "intent": "order", "priority": rnd.choice(PRIORITIES),
          "code": {"coding": [{"system": "https://smt.esante.gouv.fr/terminologie-ccam",
                               "code": CCAM[mod]}]},
          "subject": subject, "authoredOn": _stamp(t), "requester": requester,
          "performer": [{"reference": site}],
          "reasonCode": [{"text": "Bilan d'imagerie"}],
          "bodySite": [{"coding": [{"system": SNOMED, "code": rnd.choice(BODY_SITES)}]}]}
    task = {"resourceType": "Task", "id": f"t{e}", "status": "completed", "intent": "order",
            "code": {"coding": [{"system": f"{TLM}/CodeSystem/teleimagerie-task",
                                 "code": "realisation-interpretation"}]},
            "focus": {"reference": f"ServiceRequest/sr{e}"}, "for": subject,
            "authoredOn": _stamp(t), "lastModified": _stamp(t + timedelta(hours=2)),
            "requester": requester, "owner": imager}
    started = t + timedelta(minutes=30)
    uid = f"1.2.250.1.59.3.1.1.42.{e}"
    study = {"resourceType": "ImagingStudy", "id": f"st{e}",
             "meta": _profile("tlm-imaging-study"),
             "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"},
                            {"type": {"coding": [{"system": V2_0203, "code": "ACSN"}]},
                             "system": "urn:oid:1.2.250.1.748.12345678.13",
                             "value": f"ACC{e}"}],
             "status": "available", "modality": [{"system": DCM, "code": mod}],
             "subject": subject, "started": _stamp(started),
             "basedOn": [{"reference": f"ServiceRequest/sr{e}"}], "numberOfSeries": 1,
             "numberOfInstances": (n := rnd.randint(20, 400)),
             "series": [{"uid": f"{uid}.1", "modality": {"system": DCM, "code": mod},
                         "numberOfInstances": n}]}
    doses = [{"resourceType": "Observation", "id": f"o{e}{suffix}",
              "meta": _profile("tlm-dose-observation"), "status": "final",
              "code": {"coding": [{"system": DCM, "code": code, "display": display}]},
              "subject": subject, "partOf": [{"reference": f"ImagingStudy/st{e}"}],
              "effectiveDateTime": _stamp(started),
              "valueQuantity": {"value": round(rnd.uniform(lo, hi), 1), "unit": unit,
                                "system": UCUM, "code": unit}}
             for suffix, code, display, unit, lo, hi in (
                 ("a", "113813", "CT Dose Length Product Total", "mGy.cm", 100, 1500),
                 ("b", "113830", "Mean CTDIvol", "mGy", 2, 60))]
    report = {"resourceType": "DiagnosticReport", "id": f"dr{e}",
              "meta": _profile("tlm-diagnostic-report"), "language": "fr-FR",
              "basedOn": [{"reference": f"ServiceRequest/sr{e}"}], "status": "final",
              "code": {"coding": [{"system": "http://loinc.org", "code": "18748-4",
                                   "display": "Diagnostic imaging study"}]},
              "subject": subject, "effectiveDateTime": _stamp(started),
              "issued": _stamp(started + timedelta(hours=1)), "performer": [imager],
              "result": [{"reference": f"Observation/o{e}a"},
                         {"reference": f"Observation/o{e}b"}],
              "imagingStudy": [{"reference": f"ImagingStudy/st{e}"}],
              "conclusion": "Examen sans anomalie décelable."}
    audits = [{"resourceType": "AuditEvent", "id": f"ae{e}{suffix}",
               "meta": _profile("tlm-audit-event"),
               "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
                        "code": "rest", "display": "Restful Operation"},
               "subtype": [{"system": "http://hl7.org/fhir/restful-interaction",
                            "code": verb}],
               "action": action, "recorded": _stamp(t + timedelta(minutes=minutes)),
               "outcome": "0",
               "agent": [{"who": {"identifier": {"system": RPPS, "value": "810000000042"}},
                          "requestor": True},
                         {"who": {"display": "teleimagerie FHIR server"},
                          "requestor": False}],
               "source": {"observer": {"display": "teleimagerie"}},
               "entity": [{"what": {"reference": what}}]}
              for suffix, verb, action, minutes, what in (
                  ("a", "create", "C", 0, f"ServiceRequest/sr{e}"),
                  ("b", "read", "R", 40, f"Patient/{pid}"),
                  ("c", "read", "R", 45, f"ImagingStudy/st{e}"),
                  ("d", "create", "C", 90, f"DiagnosticReport/dr{e}"))]
    return [sr, task, study, *doses, report, *audits]


def stream(seed: int = SEED) -> Iterator[dict[str, Any]]:
    """The endless data set: the header, then exam after exam."""
    yield from header()
    rnd = random.Random(seed)
    patients = 0
    e = 0
    while True:
        if patients == 0 or rnd.random() < NEW_PATIENT:
            pid = f"p{patients}"
            yield patient(patients, rnd)
            patients += 1
        else:
            pid = f"p{rnd.randrange(patients)}"
        yield from exam(e, pid, rnd)
        e += 1


@cache
def describe(n: int, seed: int = SEED) -> dict[str, Any]:
    """What the first ``n`` resources hold: counts per type, patients, exams, last day."""
    per: dict[str, int] = {}
    for i, r in enumerate(stream(seed)):
        if i == n:
            break
        per[r["resourceType"]] = per.get(r["resourceType"], 0) + 1
    exams = per.get("ServiceRequest", 0)
    return {"types": per, "patients": per.get("Patient", 0), "exams": exams,
            "days": (exams + EXAMS_PER_DAY - 1) // EXAMS_PER_DAY}
