"""Which patients a resource is about: the R4 Patient compartment (compartmentdefinition-patient).

Read from the stored JSON with plain paths (no FHIRPath) because it runs on every
resource served. Paths follow the compartment's parameters for our types; Task (not in
the R4 compartment) uses ``for``; Binary inherits the patient of its securityContext.
"""

from __future__ import annotations

from typing import Any

# type -> JSON paths of Reference elements that may point at the patient
PATIENT_PATHS: dict[str, tuple[tuple[str, ...], ...]] = {
    "Patient": (("link", "other"),),
    "AuditEvent": (("agent", "who"), ("entity", "what")),
    "Communication": (("subject",), ("sender",), ("recipient",)),
    "Consent": (("patient",),),
    "DiagnosticReport": (("subject",),),
    "DocumentReference": (("subject",), ("author",)),
    "ImagingStudy": (("subject",),),
    "Observation": (("subject",), ("performer",)),
    "Provenance": (("target",),),
    "ServiceRequest": (("subject",), ("performer",)),
    "Task": (("for",),),
    "Binary": (("securityContext",),),
    "MedicationAdministration": (("subject",), ("performer", "actor")),
    "Flag": (("subject",),),
    "Basic": (("subject",),),  # the HL7 v2 message store (adapters.hl7v2.records)
    "Group": (("member", "entity"),),  # a cohort (Group/[id]/$export): each member's
}
# the search parameter that narrows a search to a set of patients (R-SEC-2)
NARROWING_PARAM: dict[str, str] = {
    "Patient": "_id", "AuditEvent": "patient", "Communication": "subject",
    "Consent": "patient", "DiagnosticReport": "subject", "DocumentReference": "subject",
    "ImagingStudy": "patient", "Observation": "subject", "Provenance": "patient",
    "ServiceRequest": "subject", "Task": "patient", "MedicationAdministration": "patient",
    "Flag": "patient", "Basic": "patient", "Group": "member",
}


def in_compartment(rtype: str) -> bool:
    return rtype in PATIENT_PATHS


def walk(node: Any, path: tuple[str, ...]) -> list[Any]:
    """The values at a JSON path, lists flattened at every step."""
    nodes = [node]
    for step in path:
        nxt: list[Any] = []
        for n in nodes:
            value = n.get(step) if isinstance(n, dict) else None
            if isinstance(value, list):
                nxt.extend(value)
            elif value is not None:
                nxt.append(value)
        nodes = nxt
    return nodes


def references(resource: dict[str, Any], rtype: str) -> list[str]:
    """Every relative reference found at the type's compartment paths."""
    out = []
    for path in PATIENT_PATHS.get(rtype, ()):
        for ref in walk(resource, path):
            value = ref.get("reference") if isinstance(ref, dict) else None
            if isinstance(value, str):
                out.append(value)
    return out


def patients_of(resource: dict[str, Any]) -> set[str]:
    """Patient ids this resource belongs to (a Patient belongs to itself)."""
    rtype = resource.get("resourceType", "")
    out = {resource["id"]} if rtype == "Patient" and isinstance(resource.get("id"), str) \
        else set()
    for ref in references(resource, rtype):
        kind, _, rest = ref.partition("/")
        if kind == "Patient" and rest:
            out.add(rest.split("/")[0])
    return out
