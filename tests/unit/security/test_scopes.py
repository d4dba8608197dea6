"""SMART scope parsing (SMART App Launch v2 §scopes, v1 compatibility)."""

from __future__ import annotations

from fhir_server.security.scopes import Scope, parse_scope, parse_scopes


def test_v2_and_v1_scopes_parse_to_letters() -> None:
    assert parse_scope("patient/Observation.rs") == Scope("patient", "Observation", "rs")
    assert parse_scope("user/*.cruds") == Scope("user", "*", "cruds")
    assert parse_scope("system/Patient.read") == Scope("system", "Patient", "rs")
    assert parse_scope("user/Observation.write") == Scope("user", "Observation", "cud")
    assert parse_scope("user/*.*") == Scope("user", "*", "cruds")


def test_malformed_or_granular_scopes_grant_nothing() -> None:
    for text in ("openid", "launch/patient", "user/Observation.sr", "user/Obs.rr",
                 "admin/*.cruds", "patient/Observation.rs?category=laboratory", "user/*.x"):
        assert parse_scope(text) is None, text
    assert parse_scopes("openid fhirUser user/Patient.r") == (Scope("user", "Patient", "r"),)


def test_scope_grants_by_type_and_letter() -> None:
    scope = Scope("user", "Observation", "rs")
    assert scope.grants("Observation", "r") and not scope.grants("Observation", "u")
    assert not scope.grants("Patient", "r")
    assert Scope("system", "*", "d").grants("Patient", "d")
