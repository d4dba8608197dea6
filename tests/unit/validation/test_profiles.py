"""The téléimagerie profiles: every valid example passes, every invalid one fails with
the expected issue (issue 4). Test names cite the requirement each rule comes from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fhir_server.core.errors import FhirError
from fhir_server.validation.registry import ProfileRegistry, parse_required
from fhir_server.validation.resource import validate_resource
from tests.conftest import REFERENCES

EXAMPLES = Path(__file__).resolve().parents[3] / "profiles" / "examples"
SD = "https://teleimagerie.fr/fhir/StructureDefinition/"

# invalid example -> (requirement, text the first error must contain, its expression)
INVALID: dict[str, tuple[str, str, str]] = {
    "tlm-patient--invalid-ins-sans-fiabilite": ("R-EXAM-1", "tlm-pat-1", "Patient"),
    "tlm-patient--invalid-sans-date-naissance": ("R-EXAM-1", "date de naissance",
                                                 "Patient.birthDate"),
    "tlm-patient--invalid-statut-identite-inconnu": ("R-EXAM-1", "ZZZZ", "Patient.extension("),
    "tlm-patient--invalid-ins-mal-forme": ("R-EXAM-1", "tlm-pat-2", "Patient"),
    "tlm-practitioner--invalid-sans-idnatps": ("R-ACT-2", "idNatPs",
                                               "Practitioner.identifier.where(system"),
    "tlm-practitioner--invalid-sans-nom": ("R-ACT-2", "nom d'exercice", "Practitioner.name"),
    "tlm-practitioner-role--invalid-sans-structure": ("R-ACT-3", "structure d'exercice",
                                                      "PractitionerRole.organization"),
    "tlm-organization--invalid-sans-finess": ("R-REQ-1", "FINESS",
                                              "Organization.identifier.where(system"),
    "tlm-service-request--invalid-irradiant-sans-statut-grossesse": (
        "R-REQ-3", "statut de grossesse pour un examen irradiant", "ServiceRequest"),
    "tlm-service-request--invalid-sans-demandeur": ("R-REQ-1", "médecin demandeur",
                                                    "ServiceRequest.requester"),
    "tlm-service-request--invalid-mammographie": ("R-SCOPE-2", "mammographie",
                                                  "ServiceRequest"),
    "tlm-service-request--invalid-sans-objectif": ("R-REQ-2", "objectif de l'examen",
                                                   "ServiceRequest.extension('"),
    "tlm-service-request--invalid-sans-numero-demande": (
        "R-REQ-1", "numéro de demande", "ServiceRequest.identifier.where(type"),
    "tlm-service-request--invalid-modalite-inconnue": ("R-REQ-2", "XX", "ServiceRequest."),
    "tlm-service-request--invalid-numero-demande-sans-oid": ("R-REQ-1", "tlm-sr-3",
                                                             "ServiceRequest"),
    "tlm-consent--invalid-sans-mode-recueil": ("R-CONS-2", "mode de recueil",
                                               "Consent.extension('"),
    "tlm-consent--invalid-categorie-hors-jeu": ("R-CONS-2", "59284-0", "Consent.category"),
    "tlm-consent--invalid-sans-decision": ("R-CONS-4", "refus", "Consent.provision"),
    "tlm-imaging-study--invalid-sans-study-uid": ("R-REP-7", "Study Instance UID",
                                                  "ImagingStudy.identifier.where(system"),
    "tlm-imaging-study--invalid-modalite-inconnue": ("R-REP-7", "ZZ", "ImagingStudy.modality"),
    "tlm-imaging-study--invalid-sans-demande": ("R-REP-7", "demande à rattacher",
                                                "ImagingStudy"),
    "tlm-dose-observation--invalid-unite-non-ucum": ("R-REP-3", "UCUM", "Observation"),
    "tlm-dose-observation--invalid-indicateur-inconnu": ("R-REP-3", "8480-6",
                                                         "Observation.code"),
    "tlm-diagnostic-report--invalid-final-sans-imageur": ("R-REP-3", "tlm-dr-1",
                                                          "DiagnosticReport"),
    "tlm-diagnostic-report--invalid-final-sans-conclusion": ("R-REP-1", "tlm-dr-3",
                                                             "DiagnosticReport"),
    "tlm-diagnostic-report--invalid-pas-en-francais": ("R-REP-1", "tlm-dr-4",
                                                       "DiagnosticReport"),
    "tlm-diagnostic-report--invalid-code-document": ("R-REP-1", "18748-4",
                                                     "DiagnosticReport.code"),
    "tlm-audit-event--invalid-deux-demandeurs": ("R-SEC-3", "tlm-ae-1", "AuditEvent"),
    "tlm-audit-event--invalid-type-non-rest": ("R-SEC-3", "rest", "AuditEvent.type"),
}


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EXAMPLES / f"{name}.json").read_text())
    return data


@pytest.fixture(scope="module")
def registry() -> ProfileRegistry:
    return ProfileRegistry()


def test_every_profile_has_a_valid_and_an_invalid_example(registry: ProfileRegistry) -> None:
    names = {p.stem for p in EXAMPLES.glob("*.json")}
    profiles = [sd["id"] for sd in registry.definitions.values() if sd["kind"] == "resource"]
    assert len(profiles) >= 10
    for pid in profiles:
        assert f"{pid}--valid" in names, pid
        assert any(n.startswith(f"{pid}--invalid-") for n in names), pid
    assert {n for n in names if "--invalid-" in n} == set(INVALID)


@pytest.mark.parametrize("name", sorted(p.stem for p in EXAMPLES.glob("*--valid.json")))
def test_valid_examples_meet_their_profile(registry: ProfileRegistry, name: str) -> None:
    resource = _load(name)
    validate_resource(resource)
    errors = [i for i in registry.validate(resource) if i.severity == "error"]
    assert errors == []


@pytest.mark.parametrize("name", sorted(INVALID), ids=lambda n: f"{INVALID[n][0]}-{n}")
def test_invalid_examples_are_refused_naming_the_element(registry: ProfileRegistry,
                                                         name: str) -> None:
    _, text, expression = INVALID[name]
    resource = _load(name)
    validate_resource(resource)  # structurally valid R4: only the profile refuses it
    with pytest.raises(FhirError) as caught:
        registry.check_write(resource)
    assert caught.value.status == 422
    issue = next(i for i in caught.value.issues if text in i.diagnostics)
    assert issue.expression and issue.expression[0].startswith(expression)


def test_the_policy_applies_mandatory_profiles_to_undeclared_resources_R_REQ_1() -> None:
    resource = _load("tlm-service-request--invalid-sans-demandeur")
    del resource["meta"]
    ProfileRegistry().check_write(resource)  # no policy, nothing declared: accepted
    policy = parse_required(f"ServiceRequest={SD}tlm-service-request")
    with pytest.raises(FhirError):
        ProfileRegistry(policy).check_write(resource)


def test_unknown_declared_profiles_are_warnings(registry: ProfileRegistry) -> None:
    resource = {"resourceType": "Patient", "meta": {"profile": ["http://example.org/x"]}}
    issues = registry.validate(resource)
    assert [i.severity for i in issues] == ["warning"]
    registry.check_write(resource)


@pytest.mark.parametrize("example,profile", [
    ("Patient-FRCorePatientExample.json", "tlm-patient"),
    ("Practitioner-FRCorePractitionerExample.json", "tlm-practitioner"),
    ("Organization-FRCoreOrganizationExample.json", "tlm-organization"),
])
def test_fr_core_examples_meet_our_aligned_profiles_R_EXAM_1(
        registry: ProfileRegistry, example: str, profile: str) -> None:
    path = REFERENCES / "fr-core" / "package" / example
    if not path.exists():
        pytest.skip(f"FR Core example absent: {path}")
    resource = json.loads(path.read_text())
    errors = [i for i in registry.validate(resource, [SD + profile])
              if i.severity == "error"]
    assert errors == []


def test_committed_snapshots_are_what_the_generator_produces() -> None:
    """profiles/definitions is regenerated from profiles/spec.py (tools/build_profiles.py)."""
    base_dir = REFERENCES / "fhir-r4" / "definitions"
    if not base_dir.is_dir():
        pytest.skip("FHIR R4 base definitions absent")
    from profiles.spec import PROFILES
    from tools.build_profiles import structure_definition

    for spec in PROFILES:
        base = json.loads((base_dir / f"StructureDefinition-{spec['type']}.json").read_text())
        committed = json.loads((EXAMPLES.parent / "definitions" /
                                f"StructureDefinition-{spec['id']}.json").read_text())
        assert structure_definition(spec, base) == committed, spec["id"]


def test_the_audit_events_we_write_meet_the_balp_profile_R_SEC_3(
        registry: ProfileRegistry) -> None:
    from fhir_server.audit.balp import build
    from fhir_server.core.model import FhirRequest, Interaction, RequestContext
    from fhir_server.security.principal import Principal

    principal = Principal(sub="u1", issuer="https://issuer", roles=("remote-imager",),
                          id_nat_ps="810000000042", acr="eidas3", name="Dr Test")
    for interaction, rid in ((Interaction.READ, "p1"), (Interaction.SEARCH_TYPE, None),
                             (Interaction.CREATE, None)):
        req = FhirRequest(interaction, "Patient", rid, context=RequestContext(
            request_id="r1", principal=principal))
        for event in build(req, 200, None, {"Patient/p1": {"p1"}}, "teleimagerie"):
            event["id"] = "e1"
            errors = [i for i in registry.validate(event, [SD + "tlm-audit-event"])
                      if i.severity == "error"]
            assert errors == [], (interaction, errors)
