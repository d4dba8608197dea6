"""Tamper evidence for the audit trail (R-SEC-3): a hash chain over the journal records.

The AuditEvents of one interaction are appended as one record (:mod:`records`; ADR
0016) carrying its sequence number, the previous record's hash and its own hash =
SHA-256(previous hash || canonical JSON of the record). Records are appended under the
store's chain lock, so the chain is one line across threads, worker processes and
MongoDB replicas. Each AuditEvent served carries its record's link and its place in it.
``verify`` walks the records, checks that every AuditEvent is exactly what its record
says, and reports the first broken link: an edited record or event (hash or content
mismatch), a deleted one (sequence gap, missing event) or an extra one.

Trails written before records existed (one link per AuditEvent) are verified as such;
the first record continues their chain.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from fhir_server.audit import records
from fhir_server.audit.records import CHAIN_URL, GENESIS
from fhir_server.core.errors import ErrorKind, FhirError
from fhir_server.search.values import format_instant, now_us
from fhir_server.store.base import Store, Stored

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
    """Per-event links (trails from before records): the event without its ``hash``."""
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


def _legacy_head(store: Store) -> tuple[int, str]:
    page = store.history("AuditEvent", None, None, 1, None, counted=False)
    for item in page.items:
        ext = _chain_ext(orjson.loads(item.body)) if item.body else None
        if ext is not None:
            seq, digest = _field(ext, "sequence"), _field(ext, "hash")
            if seq and seq.isdigit() and digest:
                return int(seq), digest
    return 0, GENESIS


# how ``records.link`` ends a record: its link fields, the hash last
_TAIL = re.compile(rb'"sequence":(\d+),"previous":"[0-9a-f]{64}","lastUpdated":"[^"]*",'
                   rb'"hash":"([0-9a-f]{64})"}$')


def head(store: Store) -> tuple[int, str]:
    """(sequence, hash) of the last chained record, (0, GENESIS) when none."""
    last = store.journal_last()
    if last is None:
        return _legacy_head(store)
    # A read batch's record is tens of KB: not worth parsing whole on every append.
    tail = _TAIL.search(last, max(0, len(last) - 300))
    if tail:
        return int(tail.group(1)), tail.group(2).decode()
    record = orjson.loads(last)
    return int(record["sequence"]), str(record["hash"])


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


def append(store: Store, events: list[dict[str, Any]], durable: bool = True,
           ids: list[str] | None = None) -> None:
    """Chain and store ``events`` atomically (one write unit, under the chain lock) as one
    record (:func:`records.compact`).

    Ids and the record are prepared before taking the lock; only the link needs the chain
    head, so writers wait the least. The store expands and indexes the record later
    (ADR 0007, 0016, 0017)."""
    if not events:
        return
    record = records.compact(events, ids or event_ids(len(events)))
    # the events of one append are committed together: they share one instant
    updated = format_instant(now_us())
    with store.lock(LOCK), store.write(durable):
        seq, previous = head(store)
        body = records.link(record, seq + 1, previous, updated)
        store.journal_append([(seq + 1, len(events), body)])


@dataclass
class Report:
    checked: int = 0
    head_sequence: int = 0
    head_hash: str = GENESIS
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def journal_put(store: Store, item: Stored) -> None:
    """An AuditEvent written by a trusted caller (an import) through ``put``: chained like
    the server's own, under its id; never a second version or a deletion (ADR 0016)."""
    if item.vid != 1 or item.body is None:
        raise FhirError(ErrorKind.CONFLICT, f"{item.type} is append-only: its records "
                        "cannot be changed or deleted")
    if store.read(item.type, item.id) is not None:
        raise FhirError(ErrorKind.CONFLICT, f"{item.type}/{item.id} already exists")
    append(store, [orjson.loads(item.body)], ids=[item.id])


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
    """Walk the chain; the first broken link is reported (and the walk goes on). Records
    not yet expanded are expanded first, so every AuditEvent can be compared."""
    while store.index_journal(1000):
        pass
    report = Report()
    state = {"previous": GENESIS, "seq": 1}
    claimed = _verify_events(store, report, state)
    produced = _verify_records(store, report, state, expected_head)
    if claimed > produced:
        report.problems.append(f"{claimed - produced} AuditEvent(s) name a journal record "
                               "that does not list them (added behind the server's back)")
    if expected_head is not None:
        seq, digest = expected_head
        if report.head_sequence < seq:
            report.problems.append(f"chain ends at {report.head_sequence}, the exported head "
                                   f"was {seq}: events were removed from the end")
        elif state.get("seen_head") != digest:
            report.problems.append(f"event {seq} no longer has the exported hash {digest}")
    return report


def _check_link(report: Report, state: dict[str, Any], where: str, seq: int,
                previous: str | None, digest: str | None, computed: str,
                expected_head: tuple[int, str] | None) -> None:
    expected_seq = state["seq"]
    if seq != expected_seq:
        report.problems.append(f"{where}: sequence {seq} where {expected_seq} was expected "
                               f"(events {expected_seq}..{seq - 1} missing)")
    elif previous != state["previous"]:
        report.problems.append(f"{where}: previous-hash does not match event {seq - 1}")
    if computed != digest:
        report.problems.append(f"{where}: content does not match its hash (edited)")
    if expected_head is not None and seq == expected_head[0]:
        state["seen_head"] = digest
    state["previous"], state["seq"] = digest or "", seq + 1
    report.head_sequence, report.head_hash = seq, digest or ""


def _verify_events(store: Store, report: Report, state: dict[str, Any]) -> int:
    """AuditEvents chained one by one (before records), and how many name a record."""
    claimed = 0
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
        if _field(ext, "member") is not None:
            claimed += 1  # checked against its record
            continue
        seq_text, prev, digest = (_field(ext, n) for n in ("sequence", "previous", "hash"))
        seq = int(seq_text) if seq_text and seq_text.isdigit() else -1
        _check_link(report, state, where, seq, prev, digest, link_hash(prev or "", resource),
                    None)
        report.checked += 1
    return claimed


def _verify_records(store: Store, report: Report, state: dict[str, Any],
                    expected_head: tuple[int, str] | None) -> int:
    """Records in chain order, and the AuditEvents each stands for; how many those are."""
    produced, after = 0, 0
    while True:
        batch = store.journal_records(after, 500)
        for key, body in batch:
            record = orjson.loads(body)
            seq = record.get("sequence")
            seq = seq if isinstance(seq, int) else -1
            previous = record.get("previous")
            computed = hashlib.sha256(str(previous).encode() +
                                      records.canonical(record)).hexdigest()
            _check_link(report, state, f"journal record {key}", seq, previous,
                        record.get("hash"), computed, expected_head)
            expected = records.expand(record)
            stored = {i.id: i.body for i in store.read_many(
                [("AuditEvent", e["id"]) for e in expected])}
            for event in expected:
                where = f"AuditEvent/{event['id']} (journal record {key})"
                if event["id"] not in stored:
                    report.problems.append(f"{where}: missing (deleted)")
                elif stored[event["id"]] != orjson.dumps(event):
                    report.problems.append(f"{where}: content does not match its record "
                                           "(edited)")
            produced += len(expected)
            report.checked += len(expected)
        if len(batch) < 500:
            return produced
        after = batch[-1][0]
