"""Journal records: the compact, chained form of the AuditEvents of one append
(R-SEC-3; ADR 0016, 0017).

BALP asks for one AuditEvent per patient concerned, and the audit sink appends the events
of many reads at once; those events repeat the same agents, source and codings and differ
in a few leaves (recorded time, request id, target, patient). A record stores the first
event whole (``shared``) and, per AuditEvent, its id and its :func:`delta` from
``shared`` (``members``): ~250 bytes for a read instead of ~2 KB. Records are what is
chained and made durable before an answer; the store later turns each into its
AuditEvents (:func:`expand`, a pure function) and indexes those. The form needs no
knowledge of who built the events (REST, HL7, DICOM, delivery).

Records of the first form (``event`` + ``members[[id, last entity]]``, ADR 0016) still
expand as they did.
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


REMOVED = "-"  # never a FHIR element name: the keys a delta removes


def _same(a: Any, b: Any) -> bool:
    """JSON equality: Python's ``==`` holds for ``true`` and ``1``, or ``1`` and ``1.0``."""
    if a is b:
        return True
    if a != b:
        return False
    if isinstance(a, dict | list | float):  # and 0.0 is not -0.0
        return orjson.dumps(a) == orjson.dumps(b)
    return type(a) is type(b)


DEPTH = 3  # how deep a delta looks: an event's elements, their array items, their keys


def delta(base: Any, value: Any, depth: int = DEPTH) -> Any:
    """What turns ``base`` into ``value`` (:func:`patch`), looking ``depth`` levels down:
    for two objects, the keys that differ (their deltas; a new key's value verbatim) and
    ``"-"``: the keys removed; for two arrays of one length, their items' deltas; otherwise,
    or ``depth`` levels down, ``value`` itself. Deeper deltas would save bytes that cost
    less to store than the Python to find them (issue 3)."""
    if not depth:
        return value
    if type(base) is dict and type(value) is dict:
        out = {}
        kept = 0
        for k, v in value.items():
            if k in base:
                kept += 1
                old = base[k]
                if not _same(old, v):
                    out[k] = delta(old, v, depth - 1) if depth > 1 else v
            else:
                out[k] = v
        if kept < len(base):
            out[REMOVED] = [k for k in base if k not in value]
        return out
    if type(base) is list and type(value) is list and len(base) == len(value):
        return [delta(b, v, depth - 1) for b, v in zip(base, value, strict=True)]
    return value


def patch(base: Any, change: Any, depth: int = DEPTH) -> Any:
    """``base`` with a :func:`delta` of the same ``depth`` applied; ``base`` is not
    modified."""
    if not depth:
        return change
    if type(base) is dict and type(change) is dict:
        if not change:
            return base.copy()
        removed = change.get(REMOVED)
        out = {k: v for k, v in base.items() if k not in removed} if removed else base.copy()
        for k, v in change.items():
            if k in base:
                out[k] = patch(base[k], v, depth - 1)
            elif k != REMOVED:
                out[k] = v
        return out
    if type(base) is list and type(change) is list and len(base) == len(change):
        return [patch(b, c, depth - 1) for b, c in zip(base, change, strict=True)]
    return change


def compact(events: list[dict[str, Any]], ids: list[str]) -> dict[str, Any]:
    """The record (without its link) of ``events``, each AuditEvent keeping its id from
    ``ids``."""
    shared = {k: v for k, v in events[0].items() if k not in _OWN}
    members = []
    for rid, event in zip(ids, events, strict=True):
        change = delta(shared, event)
        for k in _OWN:  # set on expansion, never taken from the events
            change.pop(k, None)
        members.append([rid, change])
    return {"shared": shared, "members": members}


def canonical(record: dict[str, Any]) -> bytes:
    """The hashed form: sorted keys, no whitespace, without the record's own hash."""
    return orjson.dumps({k: v for k, v in record.items() if k != "hash"},
                        option=orjson.OPT_SORT_KEYS)


def link(record: dict[str, Any], sequence: int, previous: str, updated: str) -> bytes:
    """Chain ``record`` after ``previous``; its stored bytes."""
    record.update(sequence=sequence, previous=previous, lastUpdated=updated)
    record["hash"] = hashlib.sha256(previous.encode() + canonical(record)).hexdigest()
    return orjson.dumps(record)


def _bodies(record: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(id, the AuditEvent's content without id, meta and link) per member."""
    if "shared" in record:
        shared = record["shared"]
        return [(rid, patch(shared, change)) for rid, change in record["members"]]
    shared = record["event"]  # first form: members differ in their last entity only
    out = []
    for rid, entity in record["members"]:
        body = dict(shared)
        if entity is not None:
            body["entity"] = [*shared.get("entity", []), entity]
        out.append((rid, body))
    return out


def expand(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The AuditEvents a record stands for, exactly as served (deterministic)."""
    meta = {"versionId": "1", "lastUpdated": record["lastUpdated"]}
    out = []
    for n, (rid, body) in enumerate(_bodies(record)):
        event: dict[str, Any] = {"resourceType": "AuditEvent", "id": rid, "meta": meta,
                                 **body}
        event["extension"] = [*body.get("extension", []), {"url": CHAIN_URL, "extension": [
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
