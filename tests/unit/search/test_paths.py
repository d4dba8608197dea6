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


def test_dotted_paths_literal_filters_and_choice_types_take_the_fast_path() -> None:
    assert compile_simple("Observation.subject") is not None
    assert compile_simple("Observation.value as Quantity") is not None
    assert compile_simple("Patient.telecom.where(system='email')") is not None
    assert compile_simple("Patient.extension('http://x')") is not None
    assert compile_simple("Patient.deceased.exists() and Patient.deceased != false") is None
    assert compile_simple("Observation.value as Nonsense") is None


def test_literal_filter_and_choice_type() -> None:
    task = {"resourceType": "Task", "input": [
        {"type": {"coding": [{"code": "site"}]}, "valueReference": {"reference": "O/1"}},
        {"type": {"coding": [{"code": "x"}]}, "valueString": "no"}]}
    site = compile_simple("Task.input.where(type.coding.code='site').value")
    assert site is not None and site(task) == [{"reference": "O/1"}]
    quantity = compile_simple("Observation.component.value as Quantity")
    assert quantity is not None and quantity({"resourceType": "Observation", "component": [
        {"valueQuantity": {"value": 1}}, {"valueString": "a"}]}) == [{"value": 1}]


def test_choice_elements_are_resolved() -> None:
    evaluate = compile_simple("Observation.effective")
    assert evaluate is not None
    assert evaluate({"resourceType": "Observation", "effectiveDateTime": "2024-01-02"}) == [
        "2024-01-02"]
    assert evaluate({"resourceType": "Patient", "effectiveDateTime": "x"}) == []


def _plain(value: object) -> str:
    """JSON with numbers as text: fhirpathpy hands decimals back as strings."""
    def norm(v: object) -> object:
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        if isinstance(v, list):
            return [norm(x) for x in v]
        return str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
    return json.dumps(norm(value), default=str, sort_keys=True)


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
                try:
                    expected = slow(resource)
                except ValueError:  # fhirpathpy wants a singleton left of "as"; search
                    continue  # applies it per item, as the fast path does
                assert _plain(fast(resource)) == _plain(expected), (path.name, sp.expression)
                compared += 1
    assert compared > 1000
