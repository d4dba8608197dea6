"""Journal records: the compact, chained form of the AuditEvents of one interaction
(R-SEC-3; ADR 0016).

BALP asks for one AuditEvent per patient concerned; a search returning 20 patients
makes 20 events that differ only in their last entity (the patient). A record stores them
once: the shared event (``event``, without that last entity) and, per AuditEvent, its id
and last entity (``members``). Records are what is chained and made durable before an
answer; the store later turns each into its AuditEvents (:func:`expand`, a pure function)
and indexes those. Any run of consecutive events equal but for their last entity is one
record, so the rule needs no knowledge of who built the events.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from fhir_server.core.canonical import url
from fhir_server.search.values import date_range

CHAIN_URL = url("StructureDefinition", "audit-chain")
GENESIS = "0" * 64
_OWN = ("resourceType", "id", "meta")  # set on expansion, never taken from the events


def _split(event: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """(the event without its last entity and own fields, that last entity or None)."""
    entity = event.get("entity") or []
    shared = {k: v for k, v in event.items() if k not in _OWN and k != "entity"}
    if entity:
        if len(entity) > 1:
            shared["entity"] = entity[:-1]
        return shared, entity[-1]
    return shared, None


def group(events: list[dict[str, Any]], ids: list[str]) -> list[dict[str, Any]]:
    """Records (without their links) for ``events``, in order, each AuditEvent keeping
    its id from ``ids``."""
    out: list[dict[str, Any]] = []
    last: dict[str, Any] | None = None
    for event, rid in zip(events, ids, strict=True):
        shared, entity = _split(event)
        if last is not None and shared == last["event"]:
            last["members"].append([rid, entity])
            continue
        last = {"event": shared, "members": [[rid, entity]]}
        out.append(last)
    return out


def canonical(record: dict[str, Any]) -> bytes:
    """The hashed form: sorted keys, no whitespace, without the record's own hash."""
    return orjson.dumps({k: v for k, v in record.items() if k != "hash"},
                        option=orjson.OPT_SORT_KEYS)


def link(record: dict[str, Any], sequence: int, previous: str, updated: str) -> bytes:
    """Chain ``record`` after ``previous``; its stored bytes."""
    record.update(sequence=sequence, previous=previous, lastUpdated=updated)
    record["hash"] = hashlib.sha256(previous.encode() + canonical(record)).hexdigest()
    return orjson.dumps(record)


def expand(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The AuditEvents a record stands for, exactly as served (deterministic)."""
    shared = record["event"]
    meta = {"versionId": "1", "lastUpdated": record["lastUpdated"]}
    out = []
    for n, (rid, entity) in enumerate(record["members"]):
        event: dict[str, Any] = {"resourceType": "AuditEvent", "id": rid, "meta": meta,
                                 **shared}
        if entity is not None:
            event["entity"] = [*shared.get("entity", []), entity]
        event["extension"] = [*shared.get("extension", []), {"url": CHAIN_URL, "extension": [
            {"url": "sequence", "valueString": str(record["sequence"])},
            {"url": "member", "valueString": str(n)},
            {"url": "previous", "valueString": record["previous"]},
            {"url": "hash", "valueString": record["hash"]}]}]
        out.append(event)
    return out


def instant_us(text: str) -> int:
    """µs since the epoch of a record's ``lastUpdated`` (the stores' ``updated``)."""
    span = date_range(text)
    if span is None:
        raise ValueError(f"not an instant: {text}")
    return span[0]
