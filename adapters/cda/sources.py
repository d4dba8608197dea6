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
    requests = _loaded(server, report.get("basedOn"), ("ServiceRequest",))
    out.request = requests[0] if requests else None
    out.history = _loaded(server, (out.request or {}).get("supportingInfo"),
                          ("Condition", "Procedure", "Observation"))
    out.studies = _loaded(server, report.get("imagingStudy"))
    out.doses = _loaded(server, report.get("result"), ("Observation",))
    out.author, out.author_org = _author(server, report)
    if out.author is None:
        raise MissingSource(f"DiagnosticReport/{report.get('id')} : l'imageur (performer "
                            "Practitioner) est requis pour signer le document (R-ACT-4)")
    _, out.site, _ = origin(server, out.request)  # who asked (one notion, issue 24)
    out.endpoint = _endpoint(server, out.studies)
    return out


def _loaded(server: FhirServer, refs: list[Any] | None,
            types: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """The resources ``refs`` point to that exist (and are of one of ``types``)."""
    found = (load(server, ref_of(ref)) for ref in refs or [])
    return [r for r in found if r is not None and
            (types is None or r.get("resourceType") in types)]


def _author(server: FhirServer, report: dict[str, Any]
            ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The imager (first Practitioner or PractitionerRole performer) and the
    Organization they act for."""
    for performer in report.get("performer") or []:
        ref = ref_of(performer) or ""
        if ref.startswith("Practitioner/"):
            roles = find(server, "PractitionerRole", [("practitioner", ref)])
            orgs = (load(server, ref_of(role.get("organization"))) for role in roles)
            return load(server, ref), next((o for o in orgs if o is not None), None)
        if ref.startswith("PractitionerRole/"):
            role = load(server, ref) or {}
            return (load(server, ref_of(role.get("practitioner"))),
                    load(server, ref_of(role.get("organization"))))
    return None, None


def _endpoint(server: FhirServer, studies: list[dict[str, Any]]) -> str:
    """The WADO-RS base: each study's first endpoint with an address, the last study's
    winning."""
    address = ""
    for study in studies:
        for ref in study.get("endpoint") or []:
            endpoint = load(server, ref_of(ref))
            if endpoint and endpoint.get("address"):
                address = str(endpoint["address"])
                break
    return address
