"""The compiled invariants answer what fhirpathpy answers (ADR 0027): on every example of
our profiles, the official R4 examples of the same types, and mutations of them aimed at
the elements the invariants read; where a closure cannot vouch, it hands over
(:class:`Fallback`) and fhirpathpy answers, its errors included."""

from __future__ import annotations

import json
from typing import Any

import fhirpathpy
import pytest
from fhirpathpy.models import models
from hypothesis import HealthCheck, given, settings

from fhir_server.core.canonical import BASE
from fhir_server.validation.fhirpath import Fallback, compile_fast
from fhir_server.validation.registry import DEFINITIONS
from tests.unit.validation.mutations import examples, mutated


def _invariants() -> list[tuple[str, str, str]]:
    out = []
    for path in sorted(DEFINITIONS.glob("StructureDefinition-*.json")):
        sd = json.loads(path.read_text())
        for element in sd["snapshot"]["element"]:
            if "." in element["id"]:
                continue
            out += [(sd["type"], c["key"], c["expression"])
                    for c in element.get("constraint", []) if c.get("source") == BASE]
    return out


INVARIANTS = _invariants()
TYPES = {t for t, _, _ in INVARIANTS}


CORPUS = examples(TYPES.__contains__)


def _reference(expression: str, resource: dict[str, Any]) -> Any:
    try:
        return fhirpathpy.evaluate(resource, expression, {"resource": resource},
                                   models["r4"])
    except Exception as exc:
        return ("error", type(exc))


def _agree(resource: dict[str, Any]) -> int:
    """Compare every invariant of the resource's type; the number the closures answered."""
    answered = 0
    for rtype, key, expression in INVARIANTS:
        if rtype != resource.get("resourceType"):
            continue
        fast = compile_fast(expression)
        assert fast is not None, key
        expected = _reference(expression, resource)
        try:
            got = fast(resource)
        except Fallback:
            continue
        answered += 1
        assert got == expected, (key, resource)
    return answered


def test_every_profile_invariant_compiles() -> None:
    assert len(INVARIANTS) >= 12
    assert all(compile_fast(e) is not None for _, _, e in INVARIANTS)


def test_the_examples_agree_and_are_answered_by_the_closures() -> None:
    answered = sum(_agree(r) for r in CORPUS)
    total = sum(1 for r in CORPUS for t, _, _ in INVARIANTS if t == r["resourceType"])
    assert answered >= 0.9 * total


TRICKY: list[Any] = [
    "final", "amended", "registered", "fr-FR", "en", "MG", "CT", "PLAC", True, False, 1, 0,
    "urn:oid:1.2.250.1.213.1.4.8", "urn:oid:1.2.250.1.213.1.4.10", "http://unitsofmeasure.org",
    "123456789012345", "1234567890123AB", "x", 2.5, None, [], {}, {"code": "MG"},
    {"coding": [{"code": "PLAC"}, {"code": "X"}]}, [{"code": "CT"}, {"code": "MG"}],
    {"extension": [{"url": "http://x", "valueString": "y"}]},
    {"url": "https://teleimagerie.fr/fhir/StructureDefinition/tlm-modality",
     "valueCoding": {"code": "MG"}},
]


@pytest.mark.skipif(not CORPUS, reason="no examples")
@settings(max_examples=800, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(resource=mutated(CORPUS, TRICKY, [
    "status", "language", "performer", "effectiveDateTime", "basedOn", "valueQuantity",
    "valueString", "extension", "identifier", "requestor"]))
def test_mutations_agree(resource: dict[str, Any]) -> None:
    _agree(resource)


def test_an_uncompiled_shape_stays_with_fhirpathpy() -> None:
    assert compile_fast("name.given.first().length() > 2") is None
    assert compile_fast("%resource.status = 'final'") is None
