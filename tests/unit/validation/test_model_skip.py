"""The R4B model is skipped only where the element-wise walk proves it would accept the
resource (ADR 0027): ``base_issues`` answers exactly what it answered with the model
always run — on the official R4 examples, our profiles' examples and thousands of
mutations of them aimed at what the model checks (required elements, choice groups,
calendar validity, white space, codes, decimals, base64, positional nulls)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import fhirtypes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from fhir_server.core.errors import Issue
from fhir_server.core.resource_types import is_supported, model_class
from fhir_server.validation import base_spec
from fhir_server.validation.resource import _path, base_issues
from tests.conftest import REFERENCES

ROOT = Path(__file__).resolve().parents[3]
R4_EXAMPLES = REFERENCES / "fhir-r4" / "examples"


def always_model(body: dict[str, Any], rtype: str) -> list[Issue]:
    """``base_issues`` as it was before ADR 0027: the walk, then the model, always."""
    issues = base_spec.check(body, rtype)
    try:
        model_class(rtype).model_validate(body)
    except ValidationError as exc:
        seen = [e for i in issues for e in i.expression]
        for err in exc.errors():
            where = _path(rtype, tuple(err["loc"]))
            if any(where == e or where.startswith((e + ".", e + "[")) for e in seen):
                continue
            kind = str(err["type"])
            issues.append(Issue(f"{where}: {err['msg']}", code="required" if "missing" in kind
                                else "structure" if kind == "extra_forbidden" else "value",
                                expression=[where]))
    except (TypeError, ValueError, AttributeError, LookupError) as exc:
        if not issues:
            issues.append(Issue(f"{rtype}: not a valid resource ({exc})", code="structure",
                                expression=[rtype]))
    return issues


def _corpus() -> list[dict[str, Any]]:
    out = [json.loads(p.read_text()) for p in sorted((ROOT / "profiles" / "examples")
                                                     .glob("*.json"))]
    if R4_EXAMPLES.is_dir():
        out += [r for r in (json.loads(p.read_text()) for p in sorted(R4_EXAMPLES.glob("*.json")))
                if is_supported(r.get("resourceType", ""))]
    return out


CORPUS = _corpus()


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


def _sites(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path] if path else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _sites(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _sites(v, (*path, i))
    return out


def _set(body: Any, path: tuple[Any, ...], value: Any, delete: bool) -> None:
    for step in path[:-1]:
        body = body[step]
    if delete:
        del body[path[-1]]
    else:
        body[path[-1]] = value


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    body = copy.deepcopy(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(1, 3))):
        sites = [s for s in _sites(body) if s[0] != "resourceType"]
        if not sites:
            break
        site = draw(st.sampled_from(sites))
        action = draw(st.sampled_from(["delete", "tricky", "choice", "underscore"]))
        if action == "delete":
            _set(body, site, None, delete=True)
        elif action == "tricky":
            _set(body, site, copy.deepcopy(draw(st.sampled_from(TRICKY))), delete=False)
        else:
            parent: Any = body
            for step in site[:-1]:
                parent = parent[step]
            key = site[-1]
            if isinstance(key, str) and isinstance(parent, dict):
                name = (draw(st.sampled_from(["valueString", "valueBoolean", "effectivePeriod",
                                               "deceasedBoolean", "onsetString"]))
                        if action == "choice" else "_" + key.lstrip("_"))
                parent[name] = copy.deepcopy(draw(st.sampled_from(TRICKY)))
    return body


@pytest.mark.skipif(not CORPUS, reason="no examples")
@settings(max_examples=800, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(body=mutated())
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
