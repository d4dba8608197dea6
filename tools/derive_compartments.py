"""Derive ``fhir_server/search/compartments.json`` from the R4 CompartmentDefinitions.

Run once when the reference material changes::

    python tools/derive_compartments.py \
        ../shared/references/fhir-r4/definitions/CompartmentDefinition-*.json

Each definition (compartmentdefinition.html) lists, per resource type, the search
parameters whose reference to the compartment's resource puts a resource in it. The
output keeps the types this server stores, with the parameters its search table knows
(a parameter missing from ``search_parameters.json`` cannot be searched: it is left out,
listed under ``missing`` and reported). Types with no parameter are never in the
compartment and are left out; ``{def}`` (the compartment's own resource) is kept as is.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT.parent / "shared/references/fhir-r4/definitions"


def derive(definitions: list[dict], table: list[dict], supported: set[str]) -> dict:
    known = {(r["type"], r["name"]) for r in table}
    out: dict[str, dict] = {}
    for definition in definitions:
        if definition.get("resourceType") != "CompartmentDefinition" or \
                not definition.get("search"):
            continue
        code = definition["code"]
        members: dict[str, list[str]] = {}
        missing: list[str] = []
        for entry in definition.get("resource", []):
            rtype, params = entry["code"], entry.get("param") or []
            if rtype not in supported or not params:
                continue
            for param in params:
                if param == "{def}" or (rtype, param.split(".")[0]) in known:
                    members.setdefault(rtype, []).append(param)
                else:
                    missing.append(f"{rtype}.{param}")
                    print(f"{code} compartment: {rtype}.{param} is not in "
                          "search_parameters.json: left out", file=sys.stderr)
        out[code] = {"url": definition["url"], "version": definition.get("version", ""),
                     "resources": dict(sorted(members.items())), "missing": sorted(missing)}
    return dict(sorted(out.items()))


def main() -> None:
    sources = [Path(a) for a in sys.argv[1:]] or sorted(
        DEFAULT.glob("CompartmentDefinition-*.json"))
    table = json.loads((ROOT / "fhir_server/search/search_parameters.json").read_text())
    sys.path.insert(0, str(ROOT))
    from fhir_server.core.resource_types import SUPPORTED_TYPES

    data = derive([json.loads(p.read_text()) for p in sources], table, set(SUPPORTED_TYPES))
    out = ROOT / "fhir_server/search/compartments.json"
    out.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    print(f"{', '.join(data)} compartment(s) written to {out}")


if __name__ == "__main__":
    main()
