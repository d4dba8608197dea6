"""The state machine table and the workflow settings (R-VAL-*, R-VAL-5, R-TLE-2)."""

from __future__ import annotations

import pytest

from fhir_server.security.roles import ROLES
from fhir_server.workflow.indicators import percentile
from fhir_server.workflow.machine import OPEN_STATES, STATES, TRANSITIONS
from fhir_server.workflow.settings import WorkflowSettings, parse_delays, parse_minutes
from terminology.service import terminology

STATE_VS = "https://teleimagerie.fr/fhir/ValueSet/teleimagerie-request-state"
STATE_CS = "https://teleimagerie.fr/fhir/CodeSystem/teleimagerie-request-state"


def test_every_transition_joins_known_states_and_roles() -> None:
    for t in TRANSITIONS.values():
        assert t.target in STATES and t.sources <= set(STATES), t.name
        assert t.roles <= set(ROLES), t.name


def test_closed_states_only_leave_by_amendment() -> None:
    for t in TRANSITIONS.values():
        closed = t.sources - OPEN_STATES
        assert not closed or t.name == "amend-report", t.name


def test_every_state_is_in_the_published_code_system() -> None:
    for code in STATES:
        assert terminology().in_value_set(STATE_VS, STATE_CS, code)


def test_state_statuses_are_valid_fhir_codes() -> None:
    task = {"draft", "requested", "received", "accepted", "rejected", "ready", "cancelled",
            "in-progress", "on-hold", "failed", "completed", "entered-in-error"}
    request = {"draft", "active", "on-hold", "revoked", "completed", "entered-in-error"}
    for state in STATES.values():
        assert state.task_status in task and state.request_status in request


def test_delays_parse_and_override_per_priority_R_VAL_5() -> None:
    assert parse_minutes("90min", "X") == 90 and parse_minutes("4h", "X") == 240
    assert parse_minutes("2d", "X") == 2880 and parse_minutes("15", "X") == 15
    delays = parse_delays("stat=30min, routine=3d")
    assert delays["stat"] == 30 and delays["routine"] == 4320 and delays["urgent"] == 1440
    with pytest.raises(SystemExit, match="priority"):
        parse_delays("soon=1h")
    with pytest.raises(SystemExit, match="delay"):
        parse_delays("stat=quickly")


def test_settings_from_environment_R_TLE_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEIMG_TELEEXPERTISE_LIMIT", "6")
    monkeypatch.setenv("TELEIMG_INFORMATION_DELAY", "2d")
    settings = WorkflowSettings.from_env()
    assert settings.teleexpertise_limit == 6 and settings.information_delay == 2880
    monkeypatch.setenv("TELEIMG_TELEEXPERTISE_LIMIT", "four")
    with pytest.raises(SystemExit):
        WorkflowSettings.from_env()


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 11)]
    assert percentile(values, 0.9) == 9.0 and percentile(values, 0.5) == 5.0
    assert percentile([7.0], 0.9) == 7.0
