"""The base R4 specification's element-wise check (issue 25; fhir_server/validation/base_spec)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from fhir_server.core.errors import ErrorKind, FhirError
from fhir_server.core.resource_types import SUPPORTED_TYPES
from fhir_server.validation.base_spec import (
    BINDINGS_FILE,
    check,
    plan_of,
    primitive_error,
    resource_plan,
)
from fhir_server.validation.resource import validate_resource
from tests.conftest import REFERENCES

ROOT = Path(__file__).resolve().parents[3]
DEFINITIONS = REFERENCES / "fhir-r4" / "definitions"


def _expressions(resource: dict[str, Any]) -> list[str]:
    return [e for issue in check(resource) for e in issue.expression]


@pytest.mark.parametrize(("kind", "value"), [
    ("boolean", True), ("boolean", False), ("integer", -2_147_483_648), ("integer", 0),
    ("unsignedInt", 0), ("positiveInt", 1), ("positiveInt", 2_147_483_647),
    ("decimal", 1), ("decimal", 1.5), ("string", "  spaces allowed  "), ("string", "a\tb\nc"),
    ("code", "entered-in-error"), ("code", "a b"), ("id", "a" * 64), ("id", "A-1.b"),
    ("uri", "urn:oid:1.2.3"), ("url", "http://x/y?z=1"), ("canonical", "http://x|1.0"),
    ("oid", "urn:oid:1.2.250.1.213"), ("uuid", "urn:uuid:c757873d-ec9a-4326-a141-556f43239520"),
    ("date", "2024"), ("date", "2024-02"), ("date", "2024-02-29"),
    ("dateTime", "2024-02-29T23:59:60.123+14:00"), ("dateTime", "2024-02"),
    ("instant", "2024-02-29T10:00:00Z"), ("time", "10:00:00.5"),
    ("base64Binary", "aGVsbG8="), ("base64Binary", "aGVs bG8/"), ("markdown", "**x**"),
])
def test_valid_primitives(kind: str, value: Any) -> None:
    assert primitive_error(kind, value) is None


@pytest.mark.parametrize(("kind", "value"), [
    ("boolean", "true"), ("boolean", 1), ("boolean", "yes"), ("boolean", {}),
    ("integer", "3"), ("integer", 3.0), ("integer", True), ("integer", 2_147_483_648),
    ("integer", -2_147_483_649), ("unsignedInt", -1), ("positiveInt", 0),
    ("decimal", "1.5"), ("decimal", True), ("string", ""), ("string", 3), ("string", "a\x00b"),
    ("string", "a\x1bb"), ("markdown", "x\x7f"), ("code", " male"), ("code", "male "),
    ("code", "a  b"), ("code", "a\nb"), ("id", "a" * 65), ("id", "a_b"), ("id", ""),
    ("uri", "has space"), ("oid", "1.2.3"),
    ("uuid", "urn:uuid:C757873D-EC9A-4326-A141-556F43239520"),
    ("date", "2024-2-01"), ("date", "24-02-01"), ("date", "2024-02-01T10:00:00Z"),
    ("dateTime", "2024-02-01T10:00:00"), ("dateTime", "2024-02-01T10:00Z"),
    ("instant", "2024-02-01"), ("instant", "2024-02-01T10:00:00"), ("time", "25:00:00"),
    ("base64Binary", "abc"), ("base64Binary", "ab=c"), ("base64Binary", "a*bc"),
])
def test_invalid_primitives(kind: str, value: Any) -> None:
    assert primitive_error(kind, value) is not None


def test_the_issue_examples_each_name_their_element() -> None:
    assert _expressions({"resourceType": "Patient", "active": "yes"}) == ["Patient.active"]
    assert _expressions({"resourceType": "Patient", "active": 1}) == ["Patient.active"]
    assert _expressions({"resourceType": "Patient", "deceasedBoolean": "false"}) == \
        ["Patient.deceasedBoolean"]
    assert _expressions({"resourceType": "ImagingStudy", "status": "available",
                         "numberOfSeries": "3"}) == ["ImagingStudy.numberOfSeries"]
    assert _expressions({"resourceType": "Patient", "gender": "maybe"}) == ["Patient.gender"]
    assert _expressions({"resourceType": "Observation", "status": "bogus"}) == \
        ["Observation.status"]
    assert _expressions({"resourceType": "ServiceRequest", "intent": "wish"}) == \
        ["ServiceRequest.intent"]
    assert _expressions({"resourceType": "DiagnosticReport", "status": "done"}) == \
        ["DiagnosticReport.status"]


def test_required_bindings_reach_datatypes_and_backbone_elements() -> None:
    issues = check({
        "resourceType": "Patient", "text": {"status": "made-up", "div": "<div>x</div>"},
        "identifier": [{"use": "primary"}], "name": [{"use": "nick"}],
        "telecom": [{"system": "pigeon", "use": "office"}],
        "address": [{"use": "holiday", "type": "virtual"}],
        "contact": [{"gender": "f"}], "link": [{"type": "same", "other": {"reference": "x"}}],
        "extension": [{"url": "http://x", "valueQuantity": {"comparator": "~"}}]})
    assert {i.expression[0] for i in issues} == {
        "Patient.text.status", "Patient.identifier[0].use", "Patient.name[0].use",
        "Patient.telecom[0].system", "Patient.telecom[0].use", "Patient.address[0].use",
        "Patient.address[0].type", "Patient.contact[0].gender", "Patient.link[0].type",
        "Patient.extension[0].valueQuantity.comparator"}
    assert all(i.code == "code-invalid" for i in issues)


def test_recursive_backbone_elements_keep_their_binding() -> None:
    consent = {"resourceType": "Consent", "provision": {"type": "permit", "provision": [
        {"type": "maybe"}]}}
    assert _expressions(consent) == ["Consent.provision.provision[0].type"]


def test_shape_null_empty_arrays_and_objects_unknown_elements() -> None:
    assert _expressions({"resourceType": "Patient", "active": None}) == ["Patient.active"]
    assert _expressions({"resourceType": "Patient", "name": []}) == ["Patient.name"]
    assert _expressions({"resourceType": "Patient", "name": [{}]}) == ["Patient.name[0]"]
    assert _expressions({"resourceType": "Patient", "managingOrganization": {}}) == \
        ["Patient.managingOrganization"]
    assert _expressions({"resourceType": "Patient", "name": {"family": "x"}}) == ["Patient.name"]
    assert _expressions({"resourceType": "Patient", "gender": ["male"]}) == ["Patient.gender"]
    assert _expressions({"resourceType": "Patient", "colour": "blue"}) == ["Patient.colour"]
    assert _expressions({"resourceType": "Patient", "_active": {}}) == ["Patient.active"]
    assert _expressions({"resourceType": "Patient", "name": [{"given": ["a", None]}]}) == \
        ["Patient.name[0].given[1]"]
    # a positional null beside an extension is how JSON carries an extended primitive
    assert check({"resourceType": "Patient", "name": [{"given": ["a", None], "_given": [
        None, {"extension": [{"url": "http://x", "valueString": "y"}]}]}]}) == []
    assert _expressions({"resourceType": "Patient", "contained": [
        {"resourceType": "Organization", "active": "true"}]}) == \
        ["Patient.contained[0].active"]


def test_extensible_and_preferred_bindings_are_not_enforced() -> None:
    assert check({"resourceType": "Patient", "language": "xx-unknown",
                  "maritalStatus": {"coding": [{"system": "urn:x", "code": "z"}]},
                  "communication": [{"language": {"text": "klingon"}}]}) == []


def test_validate_resource_answers_400_with_one_issue_per_problem() -> None:
    with pytest.raises(FhirError) as caught:
        validate_resource({"resourceType": "Patient", "active": "yes", "gender": "maybe",
                           "birthDate": "2024-02-30"})
    assert caught.value.kind == ErrorKind.STRUCTURE and caught.value.status == 400
    issues = caught.value.operation_outcome()["issue"]
    assert [i["expression"] for i in issues] == [["Patient.active"], ["Patient.gender"],
                                                 ["Patient.birthDate"]]
    assert [i["code"] for i in issues] == ["structure", "code-invalid", "value"]


@pytest.mark.parametrize("rtype", SUPPORTED_TYPES)
def test_every_served_type_has_a_plan(rtype: str) -> None:
    plan = resource_plan(rtype)
    assert plan is not None and plan.resource and "id" in plan.elements


def test_the_bindings_table_is_derived_not_written() -> None:
    """The committed table is what tools/derive_required_bindings.py produces."""
    if not DEFINITIONS.is_dir():
        pytest.skip("R4 definitions absent")
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import derive_required_bindings  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(ROOT / "tools"))
    assert derive_required_bindings.derive() == json.loads(BINDINGS_FILE.read_text())


def _sd_types() -> list[tuple[str, str, str]]:
    """(type, element path, R4 primitive type) of every single-type primitive element of
    the R4 StructureDefinitions in the references."""
    out = []
    for rtype in SUPPORTED_TYPES:
        path = DEFINITIONS / f"StructureDefinition-{rtype}.json"
        if not path.exists():
            continue
        for element in json.loads(path.read_text())["snapshot"]["element"]:
            types = [t["code"] for t in element.get("type", [])]
            if len(types) == 1 and types[0][0].islower() and "[x]" not in element["path"] \
                    and element["path"].count(".") >= 1 and "contentReference" not in element:
                out.append((rtype, element["path"], types[0]))
    return out


@pytest.mark.skipif(not DEFINITIONS.is_dir(), reason="R4 definitions absent")
def test_element_types_are_those_of_the_r4_structure_definitions() -> None:
    """The plans read the R4B models; every primitive element the R4 definitions type
    must get the same type (FHIRPath ``System.String`` ids are R4's ``id``/``string``)."""
    wrong = []
    for rtype, path, r4_type in _sd_types():
        plan = resource_plan(rtype)
        assert plan is not None
        parts = path.split(".")[1:]
        for name in parts[:-1]:
            element = plan.elements[name]
            plan = plan_of(element.model, element.path)
        kind = plan.elements[parts[-1]].kind
        expected = {"http://hl7.org/fhirpath/System.String": "string"}.get(r4_type, r4_type)
        if path.endswith(".id") and path.count(".") == 1:
            expected = "id"
        if kind != expected:
            wrong.append(f"{path}: R4 {expected}, plan {kind}")
    assert not wrong, wrong


def test_found_by_the_property_test() -> None:
    """Wrong JSON types the models crash on, or that are not hashable, stay 400s."""
    assert _expressions({"resourceType": "Patient", "identifier": [{"use": {"value": "x"}}]}) \
        == ["Patient.identifier[0].use"]
    with pytest.raises(FhirError) as caught:  # fhir_core's url validator: AttributeError
        validate_resource({"resourceType": "Patient", "photo": [{"url": 0}]})
    assert caught.value.status == 400
    assert caught.value.issues[0].expression == ["Patient.photo[0].url"]


def test_the_1_mib_limit_is_the_string_types() -> None:
    assert primitive_error("string", "a" * (1024 * 1024 + 1)) is not None
    assert primitive_error("base64Binary", "QUJD" * 300_000) is None  # Binary.data may be large
