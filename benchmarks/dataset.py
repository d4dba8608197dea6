"""A reproducible téléimagerie data set (seeded): patients, practitioners, requests, studies,
reports. Loaded through the FHIR core in transaction Bundles, like any client would."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

INS_NIR = "urn:oid:1.2.250.1.213.1.4.8"
RPPS = "urn:oid:1.2.250.1.71.4.2.1"
MODALITIES = ["CT", "MR", "CR", "DX", "NM", "PT", "XA"]
FAMILIES = ["Martin", "Bernard", "Thomas", "Petit", "Robert", "Richard", "Durand", "Dubois",
            "Moreau", "Laurent", "Simon", "Michel", "Lefèvre", "Leroy", "Roux", "David"]
GIVEN = ["Anne", "Paul", "Élodie", "Jean", "Marie", "Luc", "Camille", "Hugo", "Léa", "Louis"]


def ins(i: int) -> str:
    return f"{1 + i % 2}{80 + i % 20:02d}{1 + i % 12:02d}75{i:08d}"


def generate(n: int, seed: int = 20261122) -> Iterator[dict[str, Any]]:
    """Yield ``n`` resources with client ids (update-as-create) so references are stable."""
    rnd = random.Random(seed)
    c = counts(n)
    patients, practitioners, requests = c["Patient"], c["Practitioner"], c["ServiceRequest"]
    studies, reports = c["ImagingStudy"], c["DiagnosticReport"]
    for i in range(practitioners):
        yield {"resourceType": "Practitioner", "id": f"pr{i}",
               "identifier": [{"system": RPPS, "value": f"8100{i:08d}"}],
               "name": [{"family": rnd.choice(FAMILIES), "given": [rnd.choice(GIVEN)]}]}
    for i in range(patients):
        yield {"resourceType": "Patient", "id": f"p{i}",
               "identifier": [{"system": INS_NIR, "value": ins(i)}],
               "name": [{"family": rnd.choice(FAMILIES), "given": [rnd.choice(GIVEN)]}],
               "gender": rnd.choice(["male", "female"]),
               "birthDate": f"{rnd.randint(1930, 2020)}-{rnd.randint(1, 12):02d}-"
                            f"{rnd.randint(1, 28):02d}"}
    for i in range(requests):
        yield {"resourceType": "ServiceRequest", "id": f"sr{i}", "status": "active",
               "intent": "order", "priority": rnd.choice(["routine", "urgent", "stat"]),
               "subject": {"reference": f"Patient/p{rnd.randrange(patients)}"},
               "requester": {"reference": f"Practitioner/pr{rnd.randrange(practitioners)}"},
               "code": {"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM",
                                    "code": rnd.choice(MODALITIES)}]},
               "authoredOn": f"2024-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}T"
                             f"{rnd.randint(0, 23):02d}:{rnd.randint(0, 59):02d}:00Z"}
    for i in range(studies):
        yield {"resourceType": "ImagingStudy", "id": f"st{i}", "status": "available",
               "subject": {"reference": f"Patient/p{rnd.randrange(patients)}"},
               "basedOn": [{"reference": f"ServiceRequest/sr{i % requests}"}],
               "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:1.2.250.{i}"}]}
    for i in range(reports):
        yield {"resourceType": "DiagnosticReport", "id": f"dr{i}", "status": "final",
               "code": {"coding": [{"system": "http://loinc.org", "code": "18748-4"}]},
               "subject": {"reference": f"Patient/p{rnd.randrange(patients)}"},
               "basedOn": [{"reference": f"ServiceRequest/sr{i % requests}"}],
               "performer": [{"reference": f"Practitioner/pr{rnd.randrange(practitioners)}"}],
               "effectiveDateTime": "2024-06-01T10:00:00Z"}


def counts(n: int) -> dict[str, int]:
    """How many of each type ``generate(n)`` yields (they sum to ``n``)."""
    patients = n // 5
    practitioners = max(n // 50, 1)
    requests = (n - patients - practitioners) * 2 // 5
    studies = (n - patients - practitioners - requests) // 2
    return {"Patient": patients, "Practitioner": practitioners, "ServiceRequest": requests,
            "ImagingStudy": studies,
            "DiagnosticReport": n - patients - practitioners - requests - studies}
