"""The resource types this server serves, and their fhir.resources R4B models (ADR 0002)."""

from __future__ import annotations

from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

from fhir_server.core.errors import ErrorKind, FhirError

SUPPORTED_TYPES: tuple[str, ...] = (
    "Patient", "Practitioner", "PractitionerRole", "Organization", "ServiceRequest", "Consent",
    "ImagingStudy", "DiagnosticReport", "Observation", "AuditEvent", "Endpoint", "Device",
    "DocumentReference", "Binary", "Task", "Provenance", "Communication",
    "MedicationAdministration", "Flag", "Basic", "Group", "Subscription",
)
# served read-only from the shipped implementation guide (profiles/, terminology/)
CONFORMANCE_TYPES: frozenset[str] = frozenset(
    {"StructureDefinition", "CodeSystem", "ValueSet", "ConceptMap"})

# What each served type holds — the one table the roles (security/roles.py), the patient
# compartment (security/compartment.py) and the guard agree with (R-SEC-2, issue 27 item
# 5; tests/security/test_type_classification.py fails on a served type missing here).
PATIENT_DATA = "patient-data"  # about one patient: guarded per patient
PATIENT_MESSAGES = "patient-messages"  # HL7 v2 message records: guarded per patient,
#                                       supervised by the interface administrator
DIRECTORY = "directory"  # professionals, structures, endpoints, devices
AUDIT = "audit"  # the trail (auditor only, append-only)
CONFORMANCE = "conformance"  # the shipped implementation guide (public)
SUBSCRIPTIONS = "subscriptions"  # each principal's own (issue 31): seen by its owner only
CLASSIFICATION: dict[str, str] = {
    **dict.fromkeys(("Patient", "ServiceRequest", "Consent", "ImagingStudy",
                     "DiagnosticReport", "Observation", "DocumentReference", "Binary",
                     "Task", "Provenance", "Communication", "MedicationAdministration",
                     "Flag", "Group"), PATIENT_DATA),
    "Basic": PATIENT_MESSAGES,
    **dict.fromkeys(("Practitioner", "PractitionerRole", "Organization", "Endpoint",
                     "Device"), DIRECTORY),
    "AuditEvent": AUDIT,
    "Subscription": SUBSCRIPTIONS,
    **dict.fromkeys(sorted(CONFORMANCE_TYPES), CONFORMANCE),
}


def classified(kind: str) -> tuple[str, ...]:
    """The served types of one class, in table order."""
    return tuple(t for t, k in CLASSIFICATION.items() if k == kind)

_SUPPORTED = frozenset(SUPPORTED_TYPES)
_ROUTED = _SUPPORTED | CONFORMANCE_TYPES


def is_supported(rtype: str) -> bool:
    return rtype in _SUPPORTED


def require_supported(rtype: str) -> str:
    """A type the REST API answers for: stored types and the conformance types."""
    if rtype not in _ROUTED:
        raise FhirError(ErrorKind.UNSUPPORTED_TYPE, f"resource type not supported: {rtype}")
    return rtype


@cache
def model_class(rtype: str) -> Any:
    return get_fhir_model_class(rtype)


@cache
def summary_elements(rtype: str) -> frozenset[str]:
    """Top-level JSON names flagged isSummary in the R4B model (search.html#summary)."""
    names: set[str] = {"resourceType", "id", "meta"}
    for name, info in model_class(rtype).model_fields.items():
        extra = info.json_schema_extra or {}
        if isinstance(extra, dict) and extra.get("summary_element_property"):
            names.add(info.alias or name)
    return frozenset(names)


@cache
def mandatory_elements(rtype: str) -> frozenset[str]:
    """Top-level elements with min cardinality >= 1 (kept by ``_elements`` and
    ``_summary=text``): required primitives (``status``), required complex elements
    (``Observation.code``), a required choice (``medication[x]``) by each JSON name."""
    names: set[str] = set()
    for name, info in model_class(rtype).model_fields.items():
        extra = info.json_schema_extra or {}
        if info.is_required() or (isinstance(extra, dict) and (
                extra.get("element_required") or extra.get("one_of_many_required"))):
            names.add(info.alias or name)
    return frozenset(names)


@cache
def choice_elements(rtype: str) -> dict[str, frozenset[str]]:
    """Top-level choice elements: base name -> JSON names (``value`` -> ``valueQuantity``,
    ``valueString``…), so ``_elements=value`` names them all (search.html#elements)."""
    choices: dict[str, set[str]] = {}
    for name, info in model_class(rtype).model_fields.items():
        extra = info.json_schema_extra or {}
        if isinstance(extra, dict) and isinstance(extra.get("one_of_many"), str):
            choices.setdefault(extra["one_of_many"], set()).add(info.alias or name)
    return {base: frozenset(names) for base, names in choices.items()}
