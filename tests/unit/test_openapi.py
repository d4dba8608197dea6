"""The OpenAPI document describes the real API (issue 29 item 4): it validates
(openapi-spec-validator), has a path for every interaction and operation the
CapabilityStatement lists, unique operation ids, and the bearer security scheme."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from openapi_spec_validator import validate

from fhir_server.config import Settings
from fhir_server.workflow.engine import Workflow
from teleimagerie.wiring import create_app
from tests.conftest import make_store, secured_core

METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Any],
                                                                      dict[str, Any]]]:
    """(the OpenAPI document, the CapabilityStatement) of one app with the workflow."""
    tmp: Path = tmp_path_factory.mktemp("openapi")
    core = secured_core(make_store("sqlite", tmp), tmp / "data")
    core.workflow = Workflow()
    with TestClient(create_app(Settings(data_dir=tmp / "data"), server=core)) as http:
        doc = http.get("/openapi.json")
        statement = http.get("/fhir/metadata")
        assert doc.status_code == 200 and statement.status_code == 200
        yield doc.json(), statement.json()


def _operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def test_the_document_validates(served: tuple[dict[str, Any], dict[str, Any]]) -> None:
    doc, _ = served
    validate(doc)  # raises on any violation of the OpenAPI schema


def test_operation_ids_are_unique(served: tuple[dict[str, Any], dict[str, Any]]) -> None:
    doc, _ = served
    ids = [op["operationId"] for _, _, op in _operations(doc)]
    assert len(ids) > 250
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


def test_every_interaction_of_the_capability_statement_has_a_path(
        served: tuple[dict[str, Any], dict[str, Any]]) -> None:
    doc, statement = served
    described = {(path.split("/")[2] if path.count("/") >= 2 else "", op.get(
        "x-fhir-interaction")) for path, _, op in _operations(doc)}
    rest = statement["rest"][0]
    for resource in rest["resource"]:
        for interaction in resource["interaction"]:
            assert (resource["type"], interaction["code"]) in described, \
                (resource["type"], interaction["code"])
    system = {op.get("x-fhir-interaction") for path, _, op in _operations(doc)
              if path.startswith("/fhir") and path.count("/") <= 2}
    for interaction in rest["interaction"]:
        assert any(interaction["code"] in (label or "").split() for label in system), \
            interaction["code"]
    # compartment searches: one path per compartment the statement lists
    assert {op.get("x-fhir-compartment") for _, _, op in _operations(doc)} - {None} == \
        set(rest["compartment"])
    # and nothing the statement does not list (metadata aside)
    for rtype, code in described:
        if code and code not in ("capabilities", "search-compartment") and rtype and \
                not rtype.startswith(("_", "$")):
            listed = next(r for r in rest["resource"] if r["type"] == rtype)
            assert code in {i["code"] for i in listed["interaction"]}, (rtype, code)


def test_every_operation_of_the_capability_statement_has_a_path(
        served: tuple[dict[str, Any], dict[str, Any]]) -> None:
    doc, statement = served
    paths = set(doc["paths"])
    rest = statement["rest"][0]
    wanted = [(r["type"], op["name"]) for r in rest["resource"] for op in r.get("operation", [])]
    wanted += [("", op["name"]) for op in rest.get("operation", [])]
    names = {name for _, name in wanted}
    assert {"accept", "refuse", "indicators", "validate", "everything", "expand",
            "lookup", "translate", "validate-code"} <= names
    for rtype, name in wanted:
        candidates = {f"/fhir/${name}"} if not rtype else \
            {f"/fhir/{rtype}/${name}", f"/fhir/{rtype}/{{id}}/${name}"}
        assert candidates & paths, (rtype, name)
    # every operation path in the document is one the statement lists
    for path in paths:
        if "$" in path:
            parts = path.split("/")
            name = parts[-1][1:]
            rtype = parts[2] if len(parts) > 3 else ""
            assert (rtype, name) in wanted, path


def test_bearer_is_the_default_security_and_metadata_is_public(
        served: tuple[dict[str, Any], dict[str, Any]]) -> None:
    doc, _ = served
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": doc["components"]["securitySchemes"]["bearer"]["description"]}
    assert doc["security"] == [{"bearer": []}]
    assert doc["paths"]["/fhir/metadata"]["get"]["security"] == []
    # one path per type and interaction, not a catch-all
    assert "/fhir/{path}" not in doc["paths"]
    assert doc["paths"]["/fhir/ServiceRequest/{id}/$accept"]["post"]["operationId"] == \
        "accept-instance-ServiceRequest"
    assert "get" in doc["paths"]["/fhir/Patient/{id}/$everything"]
    assert {"/dicomweb/studies", "/fhir/Patient/{id}/_history/{vid}"} <= set(doc["paths"])
