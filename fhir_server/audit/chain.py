"""Tamper evidence for the audit trail (R-SEC-3): a hash chain over the AuditEvents.

Each AuditEvent carries, in the ``audit-chain`` extension, its sequence number, the
previous event's hash and its own hash = SHA-256(previous hash || canonical JSON of the
event without its hash). Events are appended under the store's chain lock, so the chain
is one line across threads, worker processes and MongoDB replicas. ``verify`` walks it
in write order and reports the first broken link: an edited event (hash mismatch), a
deleted one (sequence gap or previous-hash mismatch) or an extra version.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from fhir_server.core.canonical import url
from fhir_server.search.extract import IndexRows
from fhir_server.search.values import format_instant, now_us
from fhir_server.store.base import Store, Stored

CHAIN_URL = url("StructureDefinition", "audit-chain")
GENESIS = "0" * 64
LOCK = "audit-chain"


def _chain_ext(resource: dict[str, Any]) -> dict[str, Any] | None:
    for ext in resource.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == CHAIN_URL:
            return ext
    return None


def _field(ext: dict[str, Any], name: str) -> str | None:
    for sub in ext.get("extension") or []:
        if isinstance(sub, dict) and sub.get("url") == name:
            value = sub.get("valueString")
            return value if isinstance(value, str) else None
    return None


def canonical(resource: dict[str, Any]) -> bytes:
    """The hashed form: sorted keys, no whitespace, the ``hash`` sub-extension removed."""
    link = _chain_ext(resource)
    if link is None or _field(link, "hash") is None:  # being appended: nothing to remove
        return orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)
    ext = []
    for item in resource.get("extension") or []:
        if isinstance(item, dict) and item.get("url") == CHAIN_URL:
            item = {**item, "extension": [s for s in item.get("extension") or []
                                          if not (isinstance(s, dict) and s.get("url") == "hash")]}
        ext.append(item)
    body = {**resource, "extension": ext} if ext else resource
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def link_hash(previous: str, resource: dict[str, Any]) -> str:
    return hashlib.sha256(previous.encode() + canonical(resource)).hexdigest()


def head(store: Store) -> tuple[int, str]:
    """(sequence, hash) of the last chained AuditEvent, (0, GENESIS) when none."""
    page = store.history("AuditEvent", None, None, 1, None, counted=False)
    for item in page.items:
        if item.body is None:
            continue
        ext = _chain_ext(orjson.loads(item.body))
        if ext is not None:
            seq, digest = _field(ext, "sequence"), _field(ext, "hash")
            if seq and seq.isdigit() and digest:
                return int(seq), digest
    return 0, GENESIS


def event_ids(count: int) -> list[str]:
    """Time-ordered UUIDs (version 7 layout, RFC 9562): new events land at the end of the
    id index instead of at random pages. One clock read and one ``urandom`` call per
    batch: the audit trail of a search makes one id per patient (issue 3)."""
    millis = time.time_ns() // 1_000_000
    noise = os.urandom(10 * count)
    out = []
    for n in range(count):
        value = millis << 80 | int.from_bytes(noise[10 * n:10 * n + 10], "big")
        value = value & ~(0xF << 76) | 0x7 << 76  # version 7
        value = value & ~(0x3 << 62) | 0x2 << 62  # RFC 4122 variant
        text = f"{value:032x}"
        out.append(f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}")
    return out


def append(store: Store, events: list[dict[str, Any]], durable: bool = True) -> None:
    """Chain and store ``events`` atomically (one write unit, under the chain lock).

    Ids and timestamps are prepared before taking the lock; only the links (sequence,
    previous hash, hash) need the chain head, so writers wait the least. The store
    indexes the events later (ADR 0007)."""
    if not events:
        return
    # the events of one append are committed together: they share one instant
    updated = now_us()
    meta = {"versionId": "1", "lastUpdated": format_instant(updated)}
    prepared = [{"resourceType": "AuditEvent", "id": rid, "meta": dict(meta),
                 **{k: v for k, v in event.items()
                    if k not in ("resourceType", "id", "meta", "extension")},
                 "extension": list(event.get("extension") or [])}
                for rid, event in zip(event_ids(len(events)), events, strict=True)]
    with store.lock(LOCK), store.write(durable):
        seq, previous = head(store)
        items: list[tuple[Stored, IndexRows | None]] = []
        for resource in prepared:
            seq += 1
            link: dict[str, Any] = {"url": CHAIN_URL, "extension": [
                {"url": "sequence", "valueString": str(seq)},
                {"url": "previous", "valueString": previous}]}
            resource["extension"].append(link)
            previous = link_hash(previous, resource)
            link["extension"].append({"url": "hash", "valueString": previous})
            items.append((Stored("AuditEvent", resource["id"], 1, updated, False,
                                 orjson.dumps(resource), "POST"), None))
        store.append(items)


@dataclass
class Report:
    checked: int = 0
    head_sequence: int = 0
    head_hash: str = GENESIS
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _oldest_first(store: Store, page_size: int = 1000) -> Iterator[Stored]:
    """Every AuditEvent version in write order (keyset pages walked forward)."""
    cursor: dict[str, Any] = {"d": "before", "k": [0]}
    while True:
        page = store.history("AuditEvent", None, None, page_size, cursor, counted=False)
        items = list(reversed(page.items))  # "before" pages come newest-first
        yield from items
        if len(items) < page_size:
            return
        cursor = {"d": "before", "k": [items[-1].pk]}


def verify(store: Store, expected_head: tuple[int, str] | None = None) -> Report:
    """Walk the chain; the first broken link is reported (and the walk goes on)."""
    report = Report()
    previous, expected_seq = GENESIS, 1
    seen_head: str | None = None
    for item in _oldest_first(store):
        where = f"AuditEvent/{item.id}/_history/{item.vid}"
        if item.deleted or item.body is None:
            report.problems.append(f"{where}: an AuditEvent was deleted")
            continue
        if item.vid != 1:
            report.problems.append(f"{where}: an AuditEvent was modified (version {item.vid})")
        resource = orjson.loads(item.body)
        ext = _chain_ext(resource)
        if ext is None:
            report.problems.append(f"{where}: not chained")
            continue
        seq_text, prev, digest = (_field(ext, n) for n in ("sequence", "previous", "hash"))
        seq = int(seq_text) if seq_text and seq_text.isdigit() else -1
        if seq != expected_seq:
            report.problems.append(f"{where}: sequence {seq} where {expected_seq} was expected "
                                   f"(events {expected_seq}..{seq - 1} missing)")
        elif prev != previous:
            report.problems.append(f"{where}: previous-hash does not match event {seq - 1}")
        if link_hash(prev or "", resource) != digest:
            report.problems.append(f"{where}: content does not match its hash (edited)")
        report.checked += 1
        if expected_head is not None and seq == expected_head[0]:
            seen_head = digest
        previous, expected_seq = digest or "", seq + 1
        report.head_sequence, report.head_hash = seq, digest or ""
    if expected_head is not None:
        seq, digest = expected_head
        if report.head_sequence < seq:
            report.problems.append(f"chain ends at {report.head_sequence}, the exported head "
                                   f"was {seq}: events were removed from the end")
        elif seen_head != digest:
            report.problems.append(f"event {seq} no longer has the exported hash {digest}")
    return report
