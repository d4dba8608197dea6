"""The MongoDB store's audit journal (ADR 0007, 0016): chained records appended in bulk
to ``journal``, expanded into AuditEvent documents and indexed later — by an idle-time
indexer, or before any read of the journal's types."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from fhir_server.audit.records import expand, instant_us
from fhir_server.core.errors import ErrorKind, FhirError
from fhir_server.search.extract import Memo
from fhir_server.store.base import Stored
from fhir_server.store.mongo.records import index_fields, resource_doc

if TYPE_CHECKING:
    from fhir_server.store.mongo.store import MongoStore


class MongoJournal:
    """The journal of one store (the ``journal`` collection, and the AuditEvent
    documents of ``resources`` it expands into)."""

    def __init__(self, store: MongoStore) -> None:
        self.store = store

    def append(self, records: list[tuple[int, int, bytes]]) -> None:
        unit = self.store.unit()
        assert unit is not None, "journal_append() outside a write unit"
        docs = [{"_id": seq, "events": n, "body": body, "pending": True}
                for seq, n, body in records]
        try:
            self.store.journal.insert_many(docs, ordered=True, session=unit.session)
        except BulkWriteError:
            if unit.session is None:  # the ones inserted before the duplicate
                self.store.journal.delete_many({
                    "_id": {"$in": [d["_id"] for d in docs]},
                    "body": {"$in": [d["body"] for d in docs]}})
            raise FhirError(ErrorKind.CONFLICT, "a record of the batch already exists") from None
        if unit.session is None:
            unit.undo.extend(("journal", d["_id"], None) for d in docs)

    def last(self) -> bytes | None:
        doc = self.store.journal.find_one({}, {"body": 1}, sort=[("_id", -1)],
                                          session=self.store.session())
        return bytes(doc["body"]) if doc else None

    def records(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        return [(int(d["_id"]), bytes(d["body"])) for d in self.store.journal.find(
            {"_id": {"$gt": after}}, {"body": 1}).sort("_id", 1).limit(limit)]

    def backlog(self) -> int:
        """AuditEvents not yet expanded and indexed (events appended one by one before
        records existed included)."""
        pending = list(self.store.journal.aggregate([{"$match": {"pending": True}}, {
            "$group": {"_id": None, "n": {"$sum": "$events"}}}]))
        return int(self.store.res.count_documents({"pending": True})) + (
            int(pending[0]["n"]) if pending else 0)

    def index(self, limit: int = 1000) -> int:
        """Expand and index about ``limit`` AuditEvents of the oldest records; how many.
        Concurrent indexers may expand the same record: an AuditEvent is inserted under
        its own key, so the second insert is refused and nothing is written twice."""
        done = self._index_events(limit)
        if done:
            return done
        docs: list[dict[str, Any]] = []
        count = 0
        for rec in self.store.journal.find({"pending": True}).sort("_id", 1).limit(limit):
            if docs and count + rec["events"] > limit:
                break
            docs.append(rec)
            count += rec["events"]
        events = [event for rec in docs for event in expand(orjson.loads(rec["body"]))]
        if not events:
            return 0
        first = self.store._next("pk", len(events))
        memo = Memo()  # the events of a record share elements: extracted once (ADR 0017)
        rows = [resource_doc(Stored("AuditEvent", e["id"], 1, instant_us(e["meta"]["lastUpdated"]),
                                 False, orjson.dumps(e)), self.store.indexer(e, memo), first + n)
                for n, e in enumerate(events)]
        self._insert_new(rows)
        self.store.journal.update_many({"_id": {"$in": [d["_id"] for d in docs]}},
                                 {"$unset": {"pending": ""}})
        return len(events)

    def _insert_new(self, docs: list[dict[str, Any]]) -> None:
        """Insert, skipping documents another indexer inserted first."""
        if self.store.mock:  # mongomock's bulk API rejects the arguments pymongo 4.9+ passes
            for doc in docs:
                try:
                    self.store.res.insert_one(doc)
                except DuplicateKeyError:
                    pass
            return
        try:
            self.store.res.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                raise

    def _index_events(self, limit: int) -> int:
        """Index AuditEvents appended one by one, before records existed. Each update
        matches only a still-pending event, so concurrent indexers never write one twice."""
        docs = list(self.store.res.find({"pending": True}, {"body": 1}).sort("pk", 1).limit(limit))
        if not docs:
            return 0
        updates = [({"_id": d["_id"], "pending": True},
                    {"$set": index_fields(self.store.indexer(orjson.loads(d["body"]), None)),
                     "$unset": {"pending": ""}}) for d in docs]
        if self.store.mock:
            return sum(self.store.res.update_one(f, u).modified_count for f, u in updates)
        return int(self.store.res.bulk_write([UpdateOne(f, u) for f, u in updates],
                                       ordered=False).modified_count)

    def catch_up(self) -> None:
        """Before reading the journal's AuditEvents or index fields: expand and index every
        record appended so far."""
        while self.index():
            pass

