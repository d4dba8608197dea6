"""Derive ``fhir_server/search/search_parameters.json`` from the R4 SearchParameter Bundle.

Run once when the reference material changes::

    python tools/derive_search_parameters.py \
        ../shared/references/fhir-r4/definitions/search-parameters-teleimagerie.json

The output is the project's own table (FHIR R4 search.html): one row per (resource type,
parameter) with the FHIRPath expression restricted to that type. ``X.where(resolve() is T)``
is rewritten into the path ``X`` plus a target-type filter, because references are resolved
by the indexer (fhirpathpy does not implement ``resolve()``).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

SUPPORTED_TYPES = [
    "Patient", "Practitioner", "PractitionerRole", "Organization", "ServiceRequest", "Consent",
    "ImagingStudy", "DiagnosticReport", "Observation", "AuditEvent", "Endpoint", "Device",
    "DocumentReference", "Binary", "Task", "Provenance", "Communication",
    "MedicationAdministration", "Flag", "Basic", "Group", "Subscription",
]
KINDS = {"string", "token", "reference", "date", "quantity", "uri", "number"}
RESOLVE_IS = re.compile(r"\.where\(resolve\(\) is (\w+)\)")

# Parameters every resource type has (FHIR R4 resource.html#search), as table rows.
COMMON = [
    ("_id", "token", "Resource.id"),
    ("_lastUpdated", "date", "Resource.meta.lastUpdated"),
    ("_tag", "token", "Resource.meta.tag"),
    ("_profile", "uri", "Resource.meta.profile"),
    ("_security", "token", "Resource.meta.security"),
    ("_source", "uri", "Resource.meta.source"),
]

# The supplied R4 SearchParameter Bundle omits Communication, Basic, Group and
# Subscription's own parameters; these rows are the R4 definitions from
# communication.html, basic.html, group.html and subscription.html (4.0.1), kept
# here so the table stays derived.
SUPPLEMENT = [
    ("Communication", "based-on", "reference", "Communication.basedOn", []),
    ("Communication", "category", "token", "Communication.category", []),
    ("Communication", "encounter", "reference", "Communication.encounter", ["Encounter"]),
    ("Communication", "identifier", "token", "Communication.identifier", []),
    ("Communication", "medium", "token", "Communication.medium", []),
    ("Communication", "part-of", "reference", "Communication.partOf", []),
    ("Communication", "patient", "reference", "Communication.subject", ["Patient"]),
    ("Communication", "received", "date", "Communication.received", []),
    ("Communication", "recipient", "reference", "Communication.recipient",
     ["CareTeam", "Device", "Group", "HealthcareService", "Organization", "Patient",
      "Practitioner", "PractitionerRole", "RelatedPerson"]),
    ("Communication", "sender", "reference", "Communication.sender",
     ["Device", "HealthcareService", "Organization", "Patient", "Practitioner",
      "PractitionerRole", "RelatedPerson"]),
    ("Communication", "sent", "date", "Communication.sent", []),
    ("Communication", "status", "token", "Communication.status", []),
    ("Communication", "subject", "reference", "Communication.subject", ["Group", "Patient"]),
    ("Basic", "code", "token", "Basic.code", []),
    ("Basic", "created", "date", "Basic.created", []),
    ("Basic", "identifier", "token", "Basic.identifier", []),
    ("Basic", "patient", "reference", "Basic.subject", ["Patient"]),
    ("Basic", "subject", "reference", "Basic.subject", []),
    # group.html (4.0.1): a cohort of patients for Group/[id]/$export (Bulk Data IG v2)
    ("Group", "actual", "token", "Group.actual", []),
    ("Group", "characteristic", "token", "Group.characteristic.code", []),
    ("Group", "code", "token", "Group.code", []),
    ("Group", "exclude", "token", "Group.characteristic.exclude", []),
    ("Group", "identifier", "token", "Group.identifier", []),
    ("Group", "managing-entity", "reference", "Group.managingEntity",
     ["Organization", "Practitioner", "PractitionerRole", "RelatedPerson"]),
    ("Group", "member", "reference", "Group.member.entity",
     ["Device", "Group", "Medication", "Patient", "Practitioner", "PractitionerRole",
      "Substance"]),
    ("Group", "type", "token", "Group.type", []),
    # subscription.html (4.0.1): the supplied Bundle has none of them either (issue 31)
    ("Subscription", "contact", "token", "Subscription.contact", []),
    ("Subscription", "criteria", "string", "Subscription.criteria", []),
    ("Subscription", "payload", "token", "Subscription.channel.payload", []),
    ("Subscription", "status", "token", "Subscription.status", []),
    ("Subscription", "type", "token", "Subscription.channel.type", []),
    ("Subscription", "url", "uri", "Subscription.channel.endpoint", []),
]


def split_union(expression: str) -> list[str]:
    """Split a FHIRPath union at top-level ``|`` (not inside parentheses or strings)."""
    parts, depth, quote, current = [], 0, False, []
    for ch in expression:
        if ch == "'":
            quote = not quote
        elif not quote and ch == "(":
            depth += 1
        elif not quote and ch == ")":
            depth -= 1
        if ch == "|" and depth == 0 and not quote:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    parts.append("".join(current).strip())
    return [p for p in parts if p]


def strip_parens(part: str) -> str:
    while part.startswith("(") and part.endswith(")"):
        part = part[1:-1].strip()
    return part


# One AuditEvent is written per read (issue 3): indexing all 24 R4 parameters would cost
# more than the read itself. These are the ones an auditor searches by (docs/security.md).
AUDIT_EVENT_PARAMS = {"_id", "_lastUpdated", "action", "agent", "altid", "date", "entity",
                      "outcome", "patient", "subtype", "type"}


def derive(bundle: dict) -> list[dict]:
    rows: list[dict] = []
    for rtype in SUPPORTED_TYPES:
        for name, kind, expr in COMMON:
            rows.append({
                "type": rtype, "name": name, "kind": kind,
                "paths": [{"expression": expr.replace("Resource.", f"{rtype}.")}],
                "targets": [], "url": f"http://hl7.org/fhir/SearchParameter/Resource-{name[1:]}",
            })
    for entry in bundle["entry"]:
        sp = entry["resource"]
        if sp["type"] not in KINDS or not sp.get("expression") or sp["code"].startswith("_"):
            continue
        for rtype in sp["base"]:
            if rtype not in SUPPORTED_TYPES:
                continue
            paths = []
            for part in split_union(sp["expression"]):
                bare = strip_parens(part)
                if not (bare.startswith(rtype + ".") or bare == rtype):
                    continue
                only = RESOLVE_IS.findall(bare)
                path = RESOLVE_IS.sub("", bare)
                paths.append({"expression": path, **({"only": only[0]} if only else {})})
            if not paths:
                continue
            rows.append({
                "type": rtype, "name": sp["code"], "kind": sp["type"], "paths": paths,
                "targets": sorted(sp.get("target", [])), "url": sp["url"],
            })
    for rtype, name, kind, expr, targets in SUPPLEMENT:
        if not any(r["type"] == rtype and r["name"] == name for r in rows):
            only = {"only": "Patient"} if name == "patient" else {}
            rows.append({"type": rtype, "name": name, "kind": kind,
                         "paths": [{"expression": expr, **only}], "targets": targets,
                         "url": f"http://hl7.org/fhir/SearchParameter/{rtype}-{name}"})
    rows = [r for r in rows if r["type"] != "AuditEvent" or r["name"] in AUDIT_EVENT_PARAMS]
    rows.sort(key=lambda r: (r["type"], r["name"]))
    return rows


def main() -> None:
    source = Path(sys.argv[1] if len(sys.argv) > 1 else
                  "../shared/references/fhir-r4/definitions/search-parameters-teleimagerie.json")
    rows = derive(json.loads(source.read_text()))
    out = Path(__file__).resolve().parent.parent / "fhir_server/search/search_parameters.json"
    out.write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n")
    print(f"{len(rows)} parameters written to {out}")


if __name__ == "__main__":
    main()
