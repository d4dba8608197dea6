"""Write ``profiles/definitions/*.json``: our StructureDefinitions with their differential
(the specification below) and a snapshot generated against the FHIR R4 base definitions
in ``../shared/references/fhir-r4/definitions`` (issue 4). Run by hand after changing a
profile; the output is committed, the server never reads the references.

Snapshot generation (FHIR R4 profiling.html#snapshot): each differential element is
merged onto the base element with the same id; a slice is a copy of the sliced element
inserted after its siblings; children of datatypes (a slice's ``system``, an extension's
``url`` and ``value[x]``) come from the datatype table below.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from profiles.spec import EXTENSIONS, PROFILES, VERSION  # noqa: E402

OUT = ROOT / "profiles" / "definitions"
BASE_DEFS = ROOT.parent / "shared" / "references" / "fhir-r4" / "definitions"
FHIR = "http://hl7.org/fhir/StructureDefinition/"

# datatype children used under slices and extensions: name -> (min, max, type codes)
DATATYPES: dict[str, list[tuple[str, int, str, list[str]]]] = {
    "Identifier": [("id", 0, "1", ["string"]), ("extension", 0, "*", ["Extension"]),
                   ("use", 0, "1", ["code"]), ("type", 0, "1", ["CodeableConcept"]),
                   ("system", 0, "1", ["uri"]), ("value", 0, "1", ["string"]),
                   ("period", 0, "1", ["Period"]), ("assigner", 0, "1", ["Reference"])],
    "Extension": [("id", 0, "1", ["string"]), ("extension", 0, "*", ["Extension"]),
                  ("url", 1, "1", ["uri"]),
                  ("value[x]", 0, "1", ["base64Binary", "boolean", "code", "date",
                                        "dateTime", "decimal", "integer", "string", "uri",
                                        "Address", "Attachment", "CodeableConcept", "Coding",
                                        "Identifier", "Period", "Quantity", "Reference"])],
    "Coding": [("id", 0, "1", ["string"]), ("extension", 0, "*", ["Extension"]),
               ("system", 0, "1", ["uri"]), ("version", 0, "1", ["string"]),
               ("code", 0, "1", ["code"]), ("display", 0, "1", ["string"]),
               ("userSelected", 0, "1", ["boolean"])],
    "CodeableConcept": [("id", 0, "1", ["string"]), ("extension", 0, "*", ["Extension"]),
                        ("coding", 0, "*", ["Coding"]), ("text", 0, "1", ["string"])],
    "Reference": [("id", 0, "1", ["string"]), ("extension", 0, "*", ["Extension"]),
                  ("reference", 0, "1", ["string"]), ("type", 0, "1", ["uri"]),
                  ("identifier", 0, "1", ["Identifier"]), ("display", 0, "1", ["string"])],
    "Quantity": [("id", 0, "1", ["string"]), ("extension", 0, "*", ["Extension"]),
                 ("value", 0, "1", ["decimal"]), ("comparator", 0, "1", ["code"]),
                 ("unit", 0, "1", ["string"]), ("system", 0, "1", ["uri"]),
                 ("code", 0, "1", ["code"])],
    "HumanName": [("id", 0, "1", ["string"]), ("extension", 0, "*", ["Extension"]),
                  ("use", 0, "1", ["code"]), ("text", 0, "1", ["string"]),
                  ("family", 0, "1", ["string"]), ("given", 0, "*", ["string"]),
                  ("prefix", 0, "*", ["string"]), ("suffix", 0, "*", ["string"]),
                  ("period", 0, "1", ["Period"])],
    "ContactPoint": [("id", 0, "1", ["string"]), ("extension", 0, "*", ["Extension"]),
                     ("system", 0, "1", ["code"]), ("value", 0, "1", ["string"]),
                     ("use", 0, "1", ["code"]), ("rank", 0, "1", ["positiveInt"]),
                     ("period", 0, "1", ["Period"])],
}


def _strip(element: dict[str, Any]) -> dict[str, Any]:
    element = {k: v for k, v in element.items() if k not in ("mapping", "alias")}
    return element


def _datatype_element(parent: dict[str, Any], name: str) -> dict[str, Any]:
    types = [t["code"] for t in parent.get("type", [])]
    for tcode in types:
        for child, mn, mx, ctypes in DATATYPES.get(tcode, []):
            if child == name:
                path = f"{parent['path']}.{name}"
                return {"id": f"{parent['id']}.{name}", "path": path, "min": mn, "max": mx,
                        "base": {"path": f"{tcode}.{name}", "min": mn, "max": mx},
                        "type": [{"code": c} for c in ctypes]}
    raise SystemExit(f"no datatype child {name!r} under {parent['id']} ({types})")


def _subtree_end(elements: list[dict[str, Any]], eid: str) -> int:
    """Index after the last element of ``eid``'s subtree (children and slices)."""
    end = next(i for i, e in enumerate(elements) if e["id"] == eid) + 1
    while end < len(elements) and (elements[end]["id"].startswith(eid + ".") or
                                   elements[end]["id"].startswith(eid + ":")):
        end += 1
    return end


def _path_of(eid: str) -> str:
    return ".".join(part.split(":", 1)[0] for part in eid.split("."))


def snapshot(base: list[dict[str, Any]], diff: list[dict[str, Any]]) -> list[dict[str, Any]]:
    elements = [_strip(copy.deepcopy(e)) for e in base]
    for d in diff:
        eid = d["id"]
        index = {e["id"]: i for i, e in enumerate(elements)}
        if eid not in index:
            head, _, last = eid.rpartition(".")
            if ":" in last:  # a new slice of head.name
                sliced = f"{head}.{last.split(':', 1)[0]}" if head else last.split(":")[0]
                new = copy.deepcopy(elements[index[sliced]])
                new["id"], new["sliceName"] = eid, last.split(":", 1)[1]
                new["min"] = 0  # a slice is optional unless the differential says otherwise
                new.pop("slicing", None)
                elements.insert(_subtree_end(elements, sliced), new)
            else:  # a datatype child of an element or of a slice
                parent = elements[index[head]]
                new = _datatype_element(parent, last)
                new["id"], new["path"] = eid, _path_of(eid)
                elements.insert(_subtree_end(elements, head), new)
            index = {e["id"]: i for i, e in enumerate(elements)}
        target = elements[index[eid]]
        for key, value in d.items():
            if key == "constraint":
                target["constraint"] = [*target.get("constraint", []), *value]
            elif key not in ("id", "path"):
                target[key] = value
        target["path"] = _path_of(eid)
    return elements


def _differential(diff: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"id": d["id"], "path": _path_of(d["id"]), **{k: v for k, v in d.items()
                                                         if k not in ("id", "path")}}
            for d in diff]


def structure_definition(spec: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    diff = spec["differential"]
    return {
        "resourceType": "StructureDefinition", "id": spec["id"], "url": spec["url"],
        "version": VERSION, "name": spec["name"], "title": spec["title"], "status": "active",
        "experimental": False, "publisher": "teleimagerie", "description": spec["description"],
        "fhirVersion": "4.0.1", "kind": spec.get("kind", "resource"), "abstract": False,
        **({"context": spec["context"]} if "context" in spec else {}),
        "type": spec["type"], "baseDefinition": spec.get("base", FHIR + spec["type"]),
        "derivation": "constraint",
        "snapshot": {"element": snapshot(base["snapshot"]["element"], diff)},
        "differential": {"element": _differential(diff)},
    }


def extension_base() -> dict[str, Any]:
    root = {"id": "Extension", "path": "Extension", "min": 0, "max": "*",
            "base": {"path": "Extension", "min": 0, "max": "*"},
            "short": "Optional Extensions Element"}
    children = [_datatype_element({"id": "Extension", "path": "Extension",
                                   "type": [{"code": "Extension"}]}, name)
                for name, *_ in DATATYPES["Extension"]]
    return {"snapshot": {"element": [root, *children]}}


def main() -> None:
    if not BASE_DEFS.is_dir():
        sys.exit(f"needs the FHIR R4 base definitions in {BASE_DEFS}")
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("StructureDefinition-*.json"):
        old.unlink()
    for spec in PROFILES:
        base = json.loads((BASE_DEFS / f"StructureDefinition-{spec['type']}.json").read_text())
        sd = structure_definition(spec, base)
        (OUT / f"StructureDefinition-{spec['id']}.json").write_text(
            json.dumps(sd, ensure_ascii=False, indent=1) + "\n")
    for spec in EXTENSIONS:
        sd = structure_definition({**spec, "type": "Extension", "kind": "complex-type",
                                   "base": FHIR + "Extension"}, extension_base())
        (OUT / f"StructureDefinition-{spec['id']}.json").write_text(
            json.dumps(sd, ensure_ascii=False, indent=1) + "\n")
    print(f"wrote {len(PROFILES) + len(EXTENSIONS)} StructureDefinitions to {OUT}")


if __name__ == "__main__":
    main()
