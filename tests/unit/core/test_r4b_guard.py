"""ADR 0002: structural validation uses fhir.resources R4B; guard the R4 differences.

For every supported type with an R4 StructureDefinition in the references, the
element paths (all levels, choice types expanded) must equal those of the R4B model,
except the differences listed and handled in the ADR.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from fhir_server.core.resource_types import SUPPORTED_TYPES, model_class
from tests.conftest import REFERENCES

DEFINITIONS = REFERENCES / "fhir-r4" / "definitions"
# (type, top-level element) differences known and handled; see docs/adr/0002.
KNOWN_DIFFERENCES: set[tuple[str, str]] = set()


def _r4_elements(rtype: str) -> set[str]:
    sd = json.loads((DEFINITIONS / f"StructureDefinition-{rtype}.json").read_text())
    names: set[str] = set()
    for element in sd["snapshot"]["element"]:
        path = element["path"]
        if path.count(".") != 1:
            continue
        name = path.split(".")[1]
        if name.endswith("[x]"):
            names |= {name[:-3] + t["code"][0].upper() + t["code"][1:] for t in element["type"]}
        else:
            names.add(name)
    return names


def _model_elements(rtype: str) -> set[str]:
    out = set()
    for name, info in model_class(rtype).model_fields.items():
        alias: Any = info.alias or name
        if alias.startswith("_") or name.endswith("__ext") or alias in (
                "resourceType", "fhir_comments"):
            continue
        out.add(alias)
    return out


@pytest.mark.skipif(not DEFINITIONS.is_dir(), reason="R4 definitions absent")
@pytest.mark.parametrize("rtype", [t for t in SUPPORTED_TYPES])
def test_r4b_model_has_the_r4_elements(rtype: str) -> None:
    if not (DEFINITIONS / f"StructureDefinition-{rtype}.json").exists():
        pytest.skip(f"no R4 StructureDefinition for {rtype} in the references")
    r4 = _r4_elements(rtype)
    r4b = _model_elements(rtype)
    diff = {(rtype, n) for n in r4 ^ r4b} - KNOWN_DIFFERENCES
    assert not diff, f"R4 vs R4B differences not covered by ADR 0002: {sorted(diff)}"
