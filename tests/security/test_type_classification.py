"""Every served type is classified in one table, and every role × type obeys it
(R-SEC-2, R-SEC-4, R-ACT-1; issue 27 item 5).

``fhir_server.core.resource_types.CLASSIFICATION`` says what each type holds (patient
data, HL7 v2 message records, directory, audit trail, the implementation guide). The
roles, the patient compartment and the guard are checked against it here: a type the
server starts serving without a row fails the first test. Then each role reads and
counts each type as a principal with no relationship to the patient whose data it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_server.core.resource_types import (
    AUDIT,
    CLASSIFICATION,
    CONFORMANCE,
    CONFORMANCE_TYPES,
    DIRECTORY,
    PATIENT_DATA,
    PATIENT_MESSAGES,
    SUBSCRIPTIONS,
    SUPPORTED_TYPES,
    classified,
)
from fhir_server.interactions.routing import route
from fhir_server.search.registry import get
from fhir_server.security import roles
from fhir_server.security.compartment import NARROWING_PARAM, PATIENT_PATHS, in_compartment
from fhir_server.server.dispatch import FhirServer
from tests.conftest import mint, serve
from tests.security.guard_world import instance, put

PATIENT_CLASSES = (PATIENT_DATA, PATIENT_MESSAGES)
# documented "no patient data" (docs/security.md): people who reach every patient's
# record of nothing but their own domain
NO_PATIENT_DATA = ("admin", "biomedical-engineer", "auditor")


def test_every_served_type_is_classified_once(fhir: FhirServer) -> None:
    served = set(SUPPORTED_TYPES) | set(CONFORMANCE_TYPES)
    statement = fhir.handle(route("GET", "metadata", []))
    assert statement.resource is not None
    listed = {r["type"] for rest in statement.resource["rest"] for r in rest["resource"]}
    missing = sorted((served | listed) - set(CLASSIFICATION))
    assert not missing, f"served types missing from CLASSIFICATION: {missing}"
    assert not set(CLASSIFICATION) - served, "CLASSIFICATION names a type not served"
    assert set(CLASSIFICATION.values()) == {PATIENT_DATA, PATIENT_MESSAGES, DIRECTORY, AUDIT,
                                            CONFORMANCE, SUBSCRIPTIONS}


def test_the_compartment_and_the_guard_follow_the_table_R_SEC_2() -> None:
    for rtype, kind in CLASSIFICATION.items():
        assert in_compartment(rtype) == (kind in (*PATIENT_CLASSES, AUDIT)), rtype
    assert set(PATIENT_PATHS) == {t for t, k in CLASSIFICATION.items()
                                  if k in (*PATIENT_CLASSES, AUDIT)}
    for rtype in PATIENT_PATHS:
        name = "tlm-security-context" if rtype == "Binary" else NARROWING_PARAM[rtype]
        param = get(rtype, name)
        assert param is not None and param.kind in ("reference", "token"), rtype


def test_the_roles_follow_the_table_R_ACT_1() -> None:
    assert roles.PATIENT_DATA == classified(PATIENT_DATA)
    assert roles.DIRECTORY == classified(DIRECTORY)
    for role in roles.ROLES.values():
        assert set(role.grants) <= set(CLASSIFICATION), role.code
        if role.code in NO_PATIENT_DATA:
            reached = [t for t in role.grants if CLASSIFICATION[t] == PATIENT_DATA]
            assert not reached, f"{role.code} reaches patient data: {reached}"
        if CLASSIFICATION.get("AuditEvent") and role.code != "auditor":
            assert "AuditEvent" not in role.grants, role.code


# -- every served type × every role ---------------------------------------------------------

STORED = [t for t in SUPPORTED_TYPES if t != "AuditEvent"]


@pytest.fixture
def world(secured: FhirServer, store: Any, tmp_path: Path) -> dict[str, Any]:
    """One resource of every stored type — of patient B for patient data — and patient
    A, whose token is the patient role's; practitioners with no request at all."""
    w: dict[str, Any] = {"core": secured, "dir": tmp_path, "ids": {}}
    w["A"] = put(store, instance("Patient", None))
    w["B"] = put(store, instance("Patient", None))
    for rtype in STORED:
        if rtype == "Patient":
            w["ids"][rtype] = w["B"]
        elif CLASSIFICATION[rtype] in PATIENT_CLASSES:
            w["ids"][rtype] = put(store, instance(rtype, w["B"]))
        else:
            w["ids"][rtype] = put(store, instance(rtype))
    put(store, {"resourceType": "Practitioner", "identifier": [
        {"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "810000000301"}]})
    return w


def _client(w: dict[str, Any], code: str) -> TestClient:
    role = roles.ROLES[code]
    if role.system:
        token = mint(w["dir"], [code], ["system/*.cruds"], sub=code)
    elif role.reach == "self":
        token = mint(w["dir"], [code], ["patient/*.rs"], patient=w["A"], sub=code)
    else:
        token = mint(w["dir"], [code], ["user/*.cruds"], id_nat_ps="810000000301", sub=code)
    return serve(w["core"], w["dir"], token)


def _expected(code: str, rtype: str, w: dict[str, Any]) -> tuple[int, int | None]:
    """(status of reading B's resource of ``rtype``, of counting ``rtype``; the
    minimum count, None when refused)."""
    role = roles.ROLES[code]
    letters = role.letters(rtype)
    kind = CLASSIFICATION[rtype]
    read = 200 if "r" in letters else 403
    if read == 200 and kind in PATIENT_CLASSES and role.reach != "all":
        read = 404  # another patient's: as absent
    if kind == SUBSCRIPTIONS:  # another principal's (issue 31): as absent, not counted
        return (404 if read == 200 else read), (0 if "s" in letters else None)
    if "s" not in letters:
        return read, None
    if kind not in PATIENT_CLASSES or role.reach == "all":
        return read, 1
    return read, 1 if (role.reach == "self" and rtype == "Patient") else 0


@pytest.mark.parametrize("code", sorted(roles.ROLES))
def test_every_type_as_every_role_R_SEC_2_R_SEC_4(world: dict[str, Any], code: str) -> None:
    http = _client(world, code)
    failures = []
    for rtype in STORED:
        read, least = _expected(code, rtype, world)
        r = http.get(f"/fhir/{rtype}/{world['ids'][rtype]}")
        if r.status_code != read:
            failures.append(f"read {rtype}: {r.status_code}, expected {read}")
        r = http.get(f"/fhir/{rtype}?_summary=count")
        if least is None:
            if r.status_code != 403:
                failures.append(f"count {rtype}: {r.status_code}, expected 403")
            continue
        total = r.json().get("total") if r.status_code == 200 else None
        exact = least == 0 or (CLASSIFICATION[rtype] in PATIENT_CLASSES and
                               roles.ROLES[code].reach == "self")
        if total is None or (total != least if exact else total < least):
            failures.append(f"count {rtype}: {r.status_code} {total}, expected "
                            f"{'' if exact else '>= '}{least}")
    r = http.get("/fhir/AuditEvent?_summary=count")
    if r.status_code != (200 if code == "auditor" else 403):
        failures.append(f"count AuditEvent: {r.status_code}")
    for rtype in sorted(CONFORMANCE_TYPES):  # the implementation guide: every known role
        if http.get(f"/fhir/{rtype}?_count=1").status_code != 200:
            failures.append(f"search {rtype}")
    assert not failures, f"{code}:\n" + "\n".join(failures)
