"""Derive ``fhir_server/validation/required_bindings.json``: the base specification's
*required* bindings on coded elements (FHIR R4 terminologies.html#required) of every type
we serve, of their backbone elements and of the datatypes they reach (issue 25).

Run once when the reference material or the models change::

    python tools/derive_required_bindings.py

Where each fact comes from, in this order:

* **Which element is bound, how strongly, to which value set**: the R4 (4.0.1)
  StructureDefinitions in ``../shared/references/fhir-r4/definitions`` (``snapshot``
  elements with ``binding.strength``). The references hold no datatype definitions and no
  definitions of Binary, Communication, MedicationAdministration, Flag nor Basic: for those
  the rows below (``NOT_IN_REFERENCES``) are the R4 definitions from datatypes.html and the
  resources' pages (4.0.1), kept here so the table stays derived.
* **The codes of each value set**: the fhir.resources R4B models' own enum tables
  (``enum_values`` of the element, ADR 0002) when they are complete; the models derive
  them from the element's short text, which ends in ``+`` (or ``etc.``) when the value set
  holds more, or names no code at all (AuditEvent.action). Those value sets, listed in
  ``R4_CODES``, are copied from their R4 pages (valueset-*.html, 4.0.1). A value set whose
  codes come from an external, unbounded system (BCP-13 MIME types, ISO 4217 currencies)
  is checked for its syntax only (``SYNTAX``).

The script cross-checks the sources: every code-typed element the models give an enum
table must be in the table (or be known as not required), every bound element of the
references must exist in the models, and the models' complete tables must agree with
``R4_CODES``. It fails rather than writing a table it cannot vouch for.
"""

from __future__ import annotations

import inspect
import json
import sys
import typing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fhir.resources.R4B import get_fhir_model_class  # noqa: E402

from fhir_server.core.resource_types import SUPPORTED_TYPES  # noqa: E402

REFS = ROOT.parent / "shared" / "references" / "fhir-r4" / "definitions"
OUT = ROOT / "fhir_server" / "validation" / "required_bindings.json"
VS = "http://hl7.org/fhir/ValueSet/"

# Required bindings of R4 (4.0.1) the references do not define: datatypes.html,
# metadatatypes.html and the resource pages. path -> value set.
NOT_IN_REFERENCES: dict[str, str] = {
    "Address.use": VS + "address-use",
    "Address.type": VS + "address-type",
    "Attachment.contentType": VS + "mimetypes",
    "ContactPoint.system": VS + "contact-point-system",
    "ContactPoint.use": VS + "contact-point-use",
    "Contributor.type": VS + "contributor-type",
    "DataRequirement.type": VS + "all-types",
    "DataRequirement.sort.direction": VS + "sort-direction",
    "HumanName.use": VS + "name-use",
    "Identifier.use": VS + "identifier-use",
    "Money.currency": VS + "currencies",
    "Narrative.status": VS + "narrative-status",
    "ParameterDefinition.use": VS + "operation-parameter-use",
    "ParameterDefinition.type": VS + "all-types",
    "Quantity.comparator": VS + "quantity-comparator",
    "Age.comparator": VS + "quantity-comparator",
    "Count.comparator": VS + "quantity-comparator",
    "Distance.comparator": VS + "quantity-comparator",
    "Duration.comparator": VS + "quantity-comparator",
    "RelatedArtifact.type": VS + "related-artifact-type",
    "Signature.targetFormat": VS + "mimetypes",
    "Signature.sigFormat": VS + "mimetypes",
    "Timing.repeat.durationUnit": VS + "units-of-time",
    "Timing.repeat.periodUnit": VS + "units-of-time",
    "Timing.repeat.dayOfWeek": VS + "days-of-week",
    "Timing.repeat.when": VS + "event-timing",
    "TriggerDefinition.type": VS + "trigger-type",
    "Binary.contentType": VS + "mimetypes",
    "Communication.status": VS + "event-status",
    "Communication.priority": VS + "request-priority",
    "MedicationAdministration.status": VS + "medication-admin-status",
    "Flag.status": VS + "flag-status",
    "Group.type": VS + "group-type",  # group.html (4.0.1), issue 31
    "Subscription.status": VS + "subscription-status",
    "Subscription.channel.type": VS + "subscription-channel-type",
}

# Code-typed elements the models give an enum table to although R4 does not bind them
# required (the table comes from the element's short text).
NOT_REQUIRED = {"Expression.language"}  # extensible in R4

# Value sets whose R4 content the models' tables do not hold in full (valueset-*.html).
R4_CODES: dict[str, list[str]] = {
    VS + "diagnostic-report-status": [
        "registered", "partial", "preliminary", "final", "amended", "corrected", "appended",
        "cancelled", "entered-in-error", "unknown"],
    VS + "observation-status": [
        "registered", "preliminary", "final", "amended", "corrected", "cancelled",
        "entered-in-error", "unknown"],
    VS + "task-status": [
        "draft", "requested", "received", "accepted", "rejected", "ready", "cancelled",
        "in-progress", "on-hold", "failed", "completed", "entered-in-error"],
    VS + "udi-entry-type": ["barcode", "rfid", "manual", "card", "self-reported", "unknown"],
    VS + "audit-event-action": ["C", "R", "U", "D", "E"],
    VS + "audit-event-outcome": ["0", "4", "8", "12"],
    VS + "network-type": ["1", "2", "3", "4", "5"],
    VS + "quantity-comparator": ["<", "<=", ">=", ">"],
    VS + "event-timing": [
        "MORN", "MORN.early", "MORN.late", "NOON", "AFT", "AFT.early", "AFT.late", "EVE",
        "EVE.early", "EVE.late", "NIGHT", "PHS", "HS", "WAKE", "C", "CM", "CD", "CV", "AC",
        "ACM", "ACD", "ACV", "PC", "PCM", "PCD", "PCV"],
    VS + "consent-state-codes": [
        "draft", "proposed", "active", "rejected", "inactive", "entered-in-error"],
    VS + "event-status": [
        "preparation", "in-progress", "not-done", "on-hold", "stopped", "completed",
        "entered-in-error", "unknown"],
}

# Unbounded external code systems: the code's syntax is checked, not its membership.
SYNTAX: dict[str, str] = {
    VS + "mimetypes": "mime",  # BCP-13 (urn:ietf:bcp:13)
    VS + "currencies": "currency",  # ISO 4217
    VS + "all-types": "type-name",  # every FHIR type name: a name, not checked further
}


def _element_classes(annotation: Any) -> list[str]:
    """Names of the FHIR model classes an annotation refers to (``abc.XType``)."""
    out: list[str] = []
    for arg in typing.get_args(annotation):
        out += _element_classes(arg)
    if inspect.isclass(annotation) and annotation.__name__.endswith("Type") \
            and annotation.__module__.endswith("abc"):
        out.append(annotation.__name__[:-4])
    return out


def _is_datatype(cls: Any) -> bool:
    return bool(cls.__module__.rsplit(".", 1)[-1] == cls.__name__.lower())


def model_enums() -> tuple[dict[str, list[str]], set[str]]:
    """``Type.path`` -> enum table of every code element the models reach from the types we
    serve, with paths restarting at each datatype (``Identifier.use``) and following
    backbone elements (``Patient.contact.gender``); and the paths of every element."""
    found: dict[str, list[str]] = {}
    elements: set[str] = set()
    done: set[Any] = set()

    def walk(cls: Any, path: str) -> None:
        if cls in done:
            return
        done.add(cls)
        for name, info in cls.model_fields.items():
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            if not extra.get("element_property"):
                continue
            here = f"{path}.{info.alias or name}"
            elements.add(here)
            if "enum_values" in extra:
                found[here] = list(extra["enum_values"])
            for child in _element_classes(info.annotation):
                if child in ("Resource", "FHIRPrimitiveExtension"):
                    continue
                klass = get_fhir_model_class(child)
                walk(klass, child if _is_datatype(klass) else here)

    for rtype in SUPPORTED_TYPES:
        walk(get_fhir_model_class(rtype), rtype)
    return found, elements


def reference_bindings() -> tuple[dict[str, str], set[str]]:
    """Required bindings of the R4 StructureDefinitions in the references, and the types
    they define."""
    required: dict[str, str] = {}
    defined: set[str] = set()
    for path in sorted(REFS.glob("StructureDefinition-*.json")):
        sd = json.loads(path.read_text())
        if sd.get("type") not in SUPPORTED_TYPES:
            continue
        defined.add(sd["type"])
        for element in sd["snapshot"]["element"]:
            binding = element.get("binding") or {}
            if binding.get("strength") == "required":
                codes = {t["code"] for t in element.get("type", [])}
                if codes - {"code"}:
                    raise SystemExit(f"{element['path']}: a required binding on {codes} "
                                     "(only code elements are handled)")
                required[element["path"]] = binding["valueSet"].split("|")[0]
    return required, defined


def _codes(path: str, vs: str, enums: dict[str, list[str]]) -> tuple[list[str], str]:
    """The codes of value set ``vs`` bound to ``path`` and where they come from: the R4
    value set page, or the models' enum table when it is complete."""
    table = [c for c in enums.get(path, []) if c not in ("+", "etc.")]
    complete = path in enums and len(table) == len(enums[path])
    if vs in R4_CODES:
        if complete and sorted(table) != sorted(R4_CODES[vs]):
            raise SystemExit(f"{path}: the models' table {table} differs from R4 "
                             f"{R4_CODES[vs]}")
        return R4_CODES[vs], "R4 value set page (4.0.1)"
    if complete:
        return table, "fhir.resources R4B enum table"
    raise SystemExit(f"{path}: the models' table {enums[path]} is incomplete; "
                     f"add {vs} to R4_CODES")


def derive() -> dict[str, Any]:
    enums, elements = model_enums()
    required, defined = reference_bindings()
    for path, vs in NOT_IN_REFERENCES.items():
        if path.split(".")[0] in defined:
            raise SystemExit(f"{path}: defined by the references, remove it from the script")
        required[path] = vs
    value_sets: dict[str, dict[str, Any]] = {}
    for path, vs in sorted(required.items()):
        if path not in enums and vs not in R4_CODES and vs not in SYNTAX:
            raise SystemExit(f"{path}: no codes for {vs} (add them to R4_CODES)")
        if path not in elements:
            raise SystemExit(f"{path}: no such element in the models")
        if vs in SYNTAX:
            value_sets[vs] = {"syntax": SYNTAX[vs]}
            continue
        codes, source = _codes(path, vs, enums)
        known = value_sets.get(vs)
        if known and sorted(known["codes"]) != sorted(codes):
            raise SystemExit(f"{vs}: two different code lists")
        value_sets[vs] = {"codes": codes, "source": source}
    unbound = sorted(p for p in enums if p not in required and p not in NOT_REQUIRED)
    if unbound:
        raise SystemExit(f"code elements with an enum table but no required binding: {unbound}")
    bindings: dict[str, dict[str, str]] = {}
    for path, vs in sorted(required.items()):
        owner, _, rest = path.partition(".")
        bindings.setdefault(owner, {})[rest] = vs
    return {
        "description": "Required bindings of the FHIR R4 base specification for the types "
                       "served, their backbone elements and the datatypes they reach "
                       "(derived by tools/derive_required_bindings.py; do not edit)",
        "fhirVersion": "4.0.1",
        "bindings": bindings,
        "valueSets": dict(sorted(value_sets.items())),
    }


def main() -> None:
    table = derive()
    OUT.write_text(json.dumps(table, indent=1, ensure_ascii=False) + "\n")
    n = sum(len(v) for v in table["bindings"].values())
    print(f"wrote {OUT.relative_to(ROOT)}: {n} bound elements, "
          f"{len(table['valueSets'])} value sets")


if __name__ == "__main__":
    main()
