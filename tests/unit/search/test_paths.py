"""The fast simple-path evaluator agrees with FHIRPath on every official R4 example."""

from __future__ import annotations

import json

import pytest
from fhirpathpy import compile as fhirpath_compile
from fhirpathpy.models import models

from fhir_server.core.resource_types import SUPPORTED_TYPES
from fhir_server.search.paths import compile_simple
from fhir_server.search.registry import params_for
from tests.conftest import REFERENCES

EXAMPLES = REFERENCES / "fhir-r4" / "examples"


def test_only_plain_dotted_paths_take_the_fast_path() -> None:
    assert compile_simple("Observation.subject") is not None
    assert compile_simple("Observation.value as Quantity") is None
    assert compile_simple("Patient.telecom.where(system='email')") is None


def test_choice_elements_are_resolved() -> None:
    evaluate = compile_simple("Observation.effective")
    assert evaluate is not None
    assert evaluate({"resourceType": "Observation", "effectiveDateTime": "2024-01-02"}) == [
        "2024-01-02"]
    assert evaluate({"resourceType": "Patient", "effectiveDateTime": "x"}) == []


@pytest.mark.skipif(not EXAMPLES.is_dir(), reason=f"R4 examples absent ({EXAMPLES})")
def test_fast_paths_match_fhirpath_on_the_r4_examples() -> None:
    compared = 0
    for path in sorted(EXAMPLES.glob("*.json")):
        resource = json.loads(path.read_text())
        if resource.get("resourceType") not in SUPPORTED_TYPES:
            continue
        for param in params_for(resource["resourceType"]).values():
            for sp in param.paths:
                fast = compile_simple(sp.expression)
                if fast is None:
                    continue
                slow = fhirpath_compile(sp.expression, models["r4"])
                assert json.dumps(fast(resource), default=str, sort_keys=True) == json.dumps(
                    slow(resource), default=str, sort_keys=True), (path.name, sp.expression)
                compared += 1
    assert compared > 1000
