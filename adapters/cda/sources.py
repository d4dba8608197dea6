"""What an imaging report document is made of, read from the store (R-REP-1..6): the
DiagnosticReport and its request, study, dose Observations, patient, imager (and the
organisation they act for) and the requesting site."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from adapters.transaction import find
from fhir_server.workflow.origin import origin
from fhir_server.workflow.records import load, ref_of

if TYPE_CHECKING:
    from fhir_server.server.dispatch import FhirServer


@dataclass
class Sources:
    report: dict[str, Any]
    version: int  # 1 for the first final report, +1 per amendment
    patient: dict[str, Any]
    request: dict[str, Any] | None = None
    studies: list[dict[str, Any]] = field(default_factory=list)
    doses: list[dict[str, Any]] = field(default_factory=list)
    author: dict[str, Any] | None = None  # Practitioner
    author_org: dict[str, Any] | None = None  # their Organization (PractitionerRole)
    site: dict[str, Any] | None = None  # the requesting structure (workflow.origin)
    endpoint: str = ""  # WADO-RS base of the archive
    # the request's supporting information: history (Condition, Procedure…)
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def report_id(self) -> str:
        return str(self.report["id"])


class MissingSource(Exception):
    """A document cannot be built: a required resource is missing."""


def gather(server: FhirServer, report: dict[str, Any], version: int) -> Sources:
    patient = load(server, ref_of(report.get("subject")))
    if patient is None:
        raise MissingSource(f"DiagnosticReport/{report.get('id')} : patient introuvable")
    out = Sources(report=report, version=version, patient=patient)
    for based in report.get("basedOn") or []:
        request = load(server, ref_of(based))
        if request is not None and request.get("resourceType") == "ServiceRequest":
            out.request = request
            break
    for ref in (out.request or {}).get("supportingInfo") or []:
        found = load(server, ref_of(ref))
        if found is not None and found.get("resourceType") in ("Condition", "Procedure",
                                                                "Observation"):
            out.history.append(found)
    for ref in report.get("imagingStudy") or []:
        study = load(server, ref_of(ref))
        if study is not None:
            out.studies.append(study)
    for ref in report.get("result") or []:
        obs = load(server, ref_of(ref))
        if obs is not None and obs.get("resourceType") == "Observation":
            out.doses.append(obs)
    for performer in report.get("performer") or []:
        ref = ref_of(performer) or ""
        if ref.startswith("Practitioner/"):
            out.author = load(server, ref)
            roles = find(server, "PractitionerRole", [("practitioner", ref)])
            for role in roles:
                org = load(server, ref_of(role.get("organization")))
                if org is not None:
                    out.author_org = org
                    break
            break
        if ref.startswith("PractitionerRole/"):
            role = load(server, ref) or {}
            out.author = load(server, ref_of(role.get("practitioner")))
            out.author_org = load(server, ref_of(role.get("organization")))
            break
    if out.author is None:
        raise MissingSource(f"DiagnosticReport/{report.get('id')} : l'imageur (performer "
                            "Practitioner) est requis pour signer le document (R-ACT-4)")
    _, out.site, _ = origin(server, out.request)  # who asked (one notion, issue 24)
    for study in out.studies:
        for ref in study.get("endpoint") or []:
            endpoint = load(server, ref_of(ref))
            if endpoint and endpoint.get("address"):
                out.endpoint = str(endpoint["address"])
                break
    return out
