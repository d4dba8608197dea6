"""The R4B model is skipped only where the element-wise walk proves it would accept the
resource (ADR 0027): ``base_issues`` answers exactly what it answered with the model
always run — on the official R4 examples, our profiles' examples and thousands of
mutations of them aimed at what the model checks (required elements, choice groups,
calendar validity, white space, codes, decimals, base64, positional nulls)."""

from __future__ import annotations

from typing import Any

import pytest
from fhir.resources.R4B import fhirtypes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from fhir_server.core.errors import Issue
from fhir_server.core.resource_types import is_supported
from fhir_server.validation import base_spec
from fhir_server.validation.resource import base_issues, with_model_issues
from tests.unit.validation.mutations import examples, mutated


def always_model(body: dict[str, Any], rtype: str) -> list[Issue]:
    """``base_issues`` as it was before ADR 0027: the walk, then the model, always."""
    return with_model_issues(body, rtype, base_spec.check(body, rtype))


CORPUS = examples(is_supported)


def _same(body: dict[str, Any]) -> None:
    rtype = body["resourceType"]
    expected = [(i.diagnostics, i.code, i.expression) for i in always_model(body, rtype)]
    got = [(i.diagnostics, i.code, i.expression) for i in base_issues(body, rtype)]
    assert got == expected, body


def test_the_examples_get_the_same_answer_and_mostly_skip_the_model() -> None:
    skipped = 0
    for body in CORPUS:
        _same(body)
        issues, sure = base_spec.walk(body)
        skipped += sure and not issues
    # the fast path is the common one: a valid resource is not handed to the model
    assert skipped >= 0.8 * len([b for b in CORPUS if not always_model(b, b["resourceType"])])


# values aimed at what the model checks and the walk must not vouch for blindly
TRICKY: list[Any] = [
    "2024-02-30", "2023-02-29", "2024-02-29", "2024-13", "2024-00", "2024-02-29T10:00:00Z",
    "2024-02-30T10:00:00+01:00", "2016-12-31T23:59:60Z", "2024-02-29T10:00:00.1234567Z",
    "2024-02-29T24:00:00Z", "23:59:60", "10:00:00.123456789", "\u00a0", " ", "\u00a0a",
    "a\u00a0b", "\u2003", "é", "李", "x\u0085y", "urn:uuid:c757873d-ec9a-1326-a141-556f43239520",
    "urn:uuid:c757873d-ec9a-4326-a141-556f43239520", "aGVsbG8=", "aGVs bG8/", "ab==", "",
    "0", "-0", "1e5", True, False, 0, 1, -1, 2_147_483_647, 1.5, -0.0, 1e16, 5e-324, None,
    {"extension": [{"url": "http://x", "valueString": "y"}]}, [], {}, [None], ["a", None],
]


@pytest.mark.skipif(not CORPUS, reason="no examples")
@settings(max_examples=800, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(body=mutated(CORPUS, TRICKY, ["valueString", "valueBoolean", "effectivePeriod",
                                   "deceasedBoolean", "onsetString"]))
def test_mutations_get_the_same_answer_with_or_without_the_model(body: dict[str, Any]) -> None:
    _same(body)


def test_required_choice_and_calendar_are_left_to_the_model() -> None:
    """What the walk does not report itself, it does not vouch for either."""
    cases = [
        {"resourceType": "Observation", "status": "final"},  # code required
        {"resourceType": "Observation", "code": {"text": "x"}},  # status required
        {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
         "valueString": "a", "valueBoolean": True},  # two values of one choice
        {"resourceType": "Patient", "birthDate": "2023-02-29"},  # no such day
        {"resourceType": "Patient", "name": [{"family": "\u00a0"}]},  # white space only
    ]
    for body in cases:
        issues, sure = base_spec.walk(body)
        assert not issues and not sure, body
        assert base_issues(body, body["resourceType"]), body


def _adapter(kind: str) -> TypeAdapter[Any]:
    return TypeAdapter(getattr(fhirtypes, kind[0].upper() + kind[1:] + "Type"))


@pytest.mark.parametrize("kind", ["date", "dateTime", "instant", "time"])
@settings(max_examples=300, deadline=None, derandomize=True)
@given(data=st.data())
def test_the_calendar_rule_is_the_models(kind: str, data: st.DataObject) -> None:
    """On every value its R4 regex admits, the walk's calendar rule answers as the
    model's own validator of the type (leap seconds, decimals, offsets, 29 February)."""
    value = data.draw(st.from_regex(base_spec.PATTERNS[kind], fullmatch=True))
    try:
        _adapter(kind).validate_python(value)
        accepted = True
    except ValidationError:
        accepted = False
    assert base_spec._sure_calendar(value) == accepted, value


@settings(max_examples=300, deadline=None, derandomize=True)
@given(value=st.text(min_size=1, max_size=8))
def test_what_the_walk_vouches_for_in_strings_and_codes_the_model_accepts(value: str) -> None:
    if base_spec.primitive_error("string", value) is None and base_spec._sure_string(value):
        _adapter("string").validate_python(value)
    if base_spec.primitive_error("code", value) is None and base_spec._sure_code(value):
        _adapter("code").validate_python(value)
