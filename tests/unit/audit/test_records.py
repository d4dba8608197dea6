"""Journal records store the events of one append as the first event and per-event deltas
(ADR 0017, R-SEC-3): expansion must give back exactly the events appended."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_server.audit import records

_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2, 2), st.floats(-2, 2, width=16),
                  st.sampled_from(["a", "b", ""]))
_json = st.recursive(
    _leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), inner,
                                            max_size=4)),
    max_leaves=12)


@given(_json, _json)
@settings(max_examples=400, deadline=None)
def test_patch_of_delta_gives_the_value_back(base: Any, value: Any) -> None:
    """Equal as JSON: ``true`` is not ``1`` and ``1`` is not ``1.0`` (Python says they are)."""
    same = orjson.OPT_SORT_KEYS
    assert orjson.dumps(records.patch(base, records.delta(base, value)), option=same) == \
        orjson.dumps(value, option=same)


def _read(n: int, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "AuditEvent", "action": "R", "recorded": f"2026-11-22T10:00:0{n}Z",
            "agent": [{"who": {"display": "Dr X", "identifier": {"value": "8100"}}},
                      {"who": {"display": "teleimagerie"}}],
            "entity": [{"what": {"identifier": {"value": f"req-{n}"}}},
                       {"what": {"reference": f"Patient/p{n}"}, "role": {"code": "1"}}],
            **extra}


def _linked(events: list[dict[str, Any]]) -> dict[str, Any]:
    record = records.compact(events, [f"id{n}" for n in range(len(events))])
    return dict(orjson.loads(records.link(record, 7, records.GENESIS, "2026-11-22T10:00:09Z")))


def test_a_record_expands_to_the_events_appended_whatever_they_differ_in() -> None:
    events = [_read(0), _read(1), _read(2, outcome="4", outcomeDesc=None),
              {k: v for k, v in _read(3).items() if k != "agent"},
              {**_read(4), "entity": [{"what": {"reference": "Patient/p4"}}]},
              {"resourceType": "AuditEvent", "type": {"code": "rest"}}]
    expanded = records.expand(_linked(events))
    assert [e["id"] for e in expanded] == [f"id{n}" for n in range(len(events))]
    for n, (event, served) in enumerate(zip(events, expanded, strict=True)):
        chain = served["extension"][-1]
        assert chain["url"] == records.CHAIN_URL
        assert {"url": "member", "valueString": str(n)} in chain["extension"]
        assert {k: v for k, v in served.items() if k not in ("id", "meta", "extension")} == event


def test_a_read_costs_its_record_a_few_leaves_not_a_whole_event() -> None:
    one = len(orjson.dumps(_linked([_read(0)])))
    many = len(orjson.dumps(_linked([_read(n % 10) for n in range(100)])))
    # each further read adds its recorded time, request id and patient, not the agents
    assert (many - one) / 99 < len(orjson.dumps(_read(0))) / 2


def test_records_of_the_first_form_still_expand_as_before() -> None:
    """ADR 0016 records (shared event + last entity per member) stay verifiable."""
    shared = {k: v for k, v in _read(0).items() if k != "resourceType"}
    shared["entity"] = shared["entity"][:1]
    old = {"event": shared, "members": [["a", {"what": {"reference": "Patient/1"}}],
                                        ["b", None]],
           "sequence": 3, "previous": records.GENESIS, "lastUpdated": "2026-11-22T10:00:00Z",
           "hash": "h"}
    first, second = records.expand(old)
    assert list(first)[:3] == ["resourceType", "id", "meta"]
    assert first["entity"][-1] == {"what": {"reference": "Patient/1"}}
    assert second["entity"] == shared["entity"]
