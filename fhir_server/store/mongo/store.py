"""The MongoDB store (mongoengine), for production and scale-out (ADR 0003).

``resources`` holds the current version of each resource with its extracted search
values as typed arrays beside it (``tok``, ``str``, ``dt``, ``num``, ``qty``, ``uri``,
``ref``) under multikey indexes, and sort keys (``sa``/``sd``); ``history`` keeps every
version. Writes use write concern majority + journal. A write unit is a multi-document
transaction when the deployment supports it (replica set / sharded cluster); on a
standalone server it is an undo log that restores the prior state if the unit fails
(README: no isolation from concurrent readers, and a crash mid-unit is not undone).

:mod:`.compiler` makes a search's plan and this module runs it (the plan's lookups
first); :mod:`.records` is the document format, :mod:`.journal` the audit journal.
"""

from __future__ import annotations

import contextvars
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import mongoengine as me
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError
from pymongo.write_concern import WriteConcern

from fhir_server.audit.chain import journal_put
from fhir_server.core.errors import ErrorKind, FhirError, invalid
from fhir_server.search.extract import IndexRows, Memo, extract
from fhir_server.search.kinds import KINDS
from fhir_server.search.query import SearchQuery, types_read
from fhir_server.search.registry import param_kind
from fhir_server.store import budget
from fhir_server.store.base import (
    APPEND_ONLY_TYPES,
    DAY_US,
    FILL_CHUNK,
    GROUPED,
    SUMMARIES,
    Page,
    Stored,
    SummaryReads,
    keyset_page,
)
from fhir_server.store.budget import mongo_ms
from fhir_server.store.mongo.compiler import Lookup, MongoCompiler, MongoPlan, keyset
from fhir_server.store.mongo.journal import MongoJournal
from fhir_server.store.mongo.records import (
    ALIAS,
    PROJ,
    CounterDoc,
    HistoryDoc,
    JournalDoc,
    LockDoc,
    ResourceDoc,
    ensure_indexes,
    history_doc,
    index_rows,
    resource_doc,
    stored,
    summary_docs,
)

MAX_CHAIN_IDS = 50_000
LOCK_SECONDS = 30


@dataclass
class _Unit:
    depth: int = 0
    session: Any = None
    undo: list[tuple[str, Any, Any]] = field(default_factory=list)


_unit: contextvars.ContextVar[_Unit | None] = contextvars.ContextVar("mongo_unit", default=None)



class MongoStore(SummaryReads):
    """MongoDB behind the same protocol as the embedded store."""

    def __init__(self, url: str,
                 indexer: Callable[[dict[str, Any], Memo | None], IndexRows] = extract) -> None:
        self.indexer = indexer
        kwargs: dict[str, Any] = {}
        host = url
        if url.startswith("mongomock://"):
            import mongomock

            host = "mongodb://" + url[len("mongomock://"):]
            kwargs["mongo_client_class"] = mongomock.MongoClient
        db = host.rsplit("/", 1)[-1].split("?")[0] or "teleimagerie"
        me.disconnect(ALIAS)
        me.connect(db=db, host=host, alias=ALIAS, uuidRepresentation="standard", **kwargs)
        self.mock = "mongo_client_class" in kwargs
        self.client = me.get_connection(ALIAS)
        ensure_indexes((ResourceDoc, HistoryDoc, LockDoc, JournalDoc))
        self.supports_transactions = self._detect_transactions()
        self.savepoints = False  # MongoDB transactions have none
        self.serial_units = False  # concurrent units; conflicts abort one of them
        concern = WriteConcern(w="majority", j=True)
        self.res = self._with_concern(ResourceDoc._get_collection(), concern)
        self.hist = self._with_concern(HistoryDoc._get_collection(), concern)
        self.journal = self._with_concern(JournalDoc._get_collection(), concern)
        self.counters = CounterDoc._get_collection()
        self._journal = MongoJournal(self)
        self.locks = LockDoc._get_collection()
        self._filled: set[str] = set()  # summaries known filled in this database
        self._fill_cursor: dict[str, int] = {}  # the last pk filled, per summary
        self._filler: threading.Thread | None = None
        self._filler_lock = threading.Lock()

    def _with_concern(self, coll: Any, concern: WriteConcern) -> Any:
        return coll if self.mock else coll.with_options(write_concern=concern)

    def _detect_transactions(self) -> bool:
        if self.mock:
            return False
        hello = self.client.admin.command("hello")
        return bool(hello.get("setName")) or hello.get("msg") == "isdbgrid"

    def close(self) -> None:
        me.disconnect(ALIAS)

    # -- units and locks ---------------------------------------------------------------
    @staticmethod
    def unit() -> _Unit | None:
        """This context's write unit, if any."""
        return _unit.get()

    def session(self) -> Any:
        unit = _unit.get()
        return unit.session if unit else None

    @contextmanager
    def write(self, durable: bool = True) -> Iterator[None]:  # always majority + journal
        unit = _unit.get()
        if unit is not None:
            unit.depth += 1
            try:
                yield
            finally:
                unit.depth -= 1
            return
        unit = _Unit(depth=1)
        token = _unit.set(unit)
        try:
            if self.supports_transactions:
                with self.client.start_session() as session:
                    unit.session = session
                    with session.start_transaction(
                            write_concern=WriteConcern(w="majority", j=True)):
                        yield
            else:
                try:
                    yield
                except BaseException:
                    self._undo(unit)
                    raise
        finally:
            _unit.reset(token)

    def _undo(self, unit: _Unit) -> None:
        for kind, key, prior in reversed(unit.undo):
            if kind == "history":
                self.hist.delete_one({"_id": key})
            elif kind == "journal":
                self.journal.delete_one({"_id": key})
            elif prior is None:
                self.res.delete_one({"_id": key})
            else:
                self.res.replace_one({"_id": key}, prior, upsert=True)

    @contextmanager
    def lock(self, key: str) -> Iterator[None]:
        owner = uuid.uuid4().hex
        deadline = time.monotonic() + 10.0
        delay = 0.002
        while True:
            now = datetime.now(UTC)
            try:
                self.locks.insert_one({"_id": key, "owner": owner,
                                       "expires": now + timedelta(seconds=LOCK_SECONDS)})
                break
            except DuplicateKeyError:
                self.locks.delete_one({"_id": key, "expires": {"$lt": now}})  # stale lease
                if time.monotonic() > deadline:
                    raise FhirError(ErrorKind.UNAVAILABLE, "conditional interaction on the "
                                    "same criteria is busy; retry") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        try:
            yield
        finally:
            self.locks.delete_one({"_id": key, "owner": owner})

    def _next(self, name: str, n: int = 1) -> int:
        """Reserve ``n`` numbers of a counter; the first one is returned."""
        doc = self.counters.find_one_and_update({"_id": name}, {"$inc": {"value": n}},
                                                upsert=True,
                                                return_document=ReturnDocument.AFTER)
        return int(doc["value"]) - n + 1

    # -- reads -------------------------------------------------------------------------
    def read(self, rtype: str, rid: str) -> Stored | None:
        if rtype in APPEND_ONLY_TYPES:
            self._catch_up()
        doc = self.res.find_one({"_id": f"{rtype}/{rid}"}, PROJ, session=self.session())
        return stored(doc) if doc else None

    def vread(self, rtype: str, rid: str, vid: int) -> Stored | None:
        if rtype in APPEND_ONLY_TYPES:
            current = self.read(rtype, rid)
            return current if current is not None and current.vid == vid else None
        doc = self.hist.find_one({"type": rtype, "rid": rid, "vid": vid},
                                 session=self.session())
        if doc is None:
            return None
        body = doc.get("body")
        return Stored(rtype, rid, vid, doc["updated"], doc["method"] == "DELETE",
                      bytes(body) if body is not None else None, doc["method"])

    @budget.interruptible
    def read_many(self, keys: list[tuple[str, str]]) -> list[Stored]:
        if not keys:
            return []
        if any(rtype in APPEND_ONLY_TYPES for rtype, _ in keys):
            self._catch_up()
        ids = sorted({f"{t}/{i}" for t, i in keys})
        return [stored(d) for d in self.res.find(
            {"_id": {"$in": ids}, "deleted": False}, PROJ, session=self.session())
            .max_time_ms(mongo_ms())]

    # -- writes ------------------------------------------------------------------------
    # the documents ``put`` writes (tests insert many at once with them)
    _doc = staticmethod(resource_doc)
    _hist = staticmethod(history_doc)

    def put(self, item: Stored, rows: IndexRows | None) -> None:
        if item.type in APPEND_ONLY_TYPES:
            journal_put(self, item)
            return
        unit = _unit.get()
        assert unit is not None, "put() outside a write unit"
        session = unit.session
        key = f"{item.type}/{item.id}"
        prior = self.res.find_one({"_id": key}, session=session)
        doc = self._doc(item, rows, prior["pk"] if prior else self._next("pk"))
        # Compare-and-swap on the version the caller built on: two writers that read the
        # same version can never both succeed, with or without multi-document transactions.
        try:
            if item.vid == 1:
                self.res.insert_one(doc, session=session)
                swapped = True
            else:
                swapped = self.res.replace_one({"_id": key, "vid": item.vid - 1}, doc,
                                               session=session).matched_count == 1
        except DuplicateKeyError:
            swapped = False
        if not swapped:
            raise FhirError(ErrorKind.CONFLICT, f"{key} was changed concurrently; retry "
                            "with the current version")
        if session is None:
            unit.undo.append(("resource", key, prior))
        seq = self._next("seq")
        self.hist.insert_one(self._hist(item, seq), session=session)
        if session is None:
            unit.undo.append(("history", seq, None))

    # -- the audit journal (ADR 0007, 0016): :mod:`.journal` ---------------------------
    def journal_append(self, records: list[tuple[int, int, bytes]]) -> None:
        self._journal.append(records)

    def journal_last(self) -> bytes | None:
        return self._journal.last()

    def journal_records(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        return self._journal.records(after, limit)

    def journal_backlog(self) -> int:
        return self._journal.backlog()

    def index_journal(self, limit: int = 1000) -> int:
        return self._journal.index(limit)

    def _catch_up(self) -> None:
        self._journal.catch_up()

    # -- search ------------------------------------------------------------------------
    def _run(self, plan: MongoPlan) -> dict[str, Any]:
        """The plan's filter, its lookups run and its slots filled (inner plans first)."""
        for slot in plan.slots:
            slot.target.update(slot.fill([self._lookup(lookup) for lookup in slot.lookups]))
        return plan.filter

    def _lookup(self, lookup: Lookup) -> Any:
        flt = self._run(lookup.plan)
        if lookup.op == "ids":
            return self._distinct_ids(flt)
        assert lookup.key is not None
        if lookup.op == "referenced":
            return self._referenced_ids(flt, lookup.key)
        return self._patients_of(flt, lookup.key)

    def _filter(self, query: SearchQuery) -> dict[str, Any]:
        return self._run(MongoCompiler().plan(query.type, query.terms))

    def _distinct_ids(self, flt: dict[str, Any]) -> list[str]:
        ids = [d["rid"] for d in self.res.find(flt, {"rid": 1}, session=self.session())
               .limit(MAX_CHAIN_IDS + 1).max_time_ms(mongo_ms())]
        if len(ids) > MAX_CHAIN_IDS:
            raise FhirError(ErrorKind.TOO_COSTLY, f"chained search matches more than "
                            f"{MAX_CHAIN_IDS} resources; narrow it")
        return ids

    def _referenced_ids(self, flt: dict[str, Any], param_key: str) -> list[str]:
        ids: set[str] = set()
        for doc in self.res.find(flt, {"ref": 1}, session=self.session()).limit(
                MAX_CHAIN_IDS + 1).max_time_ms(mongo_ms()):
            ids.update(r["i"] for r in doc.get("ref", []) if r.get("p") == param_key
                       and r.get("i"))
        return sorted(ids)

    def _patients_of(self, flt: dict[str, Any], param_key: str) -> list[tuple[str, int]]:
        """(patient id, pk) for each matching resource's ``param_key`` Patient reference."""
        out: list[tuple[str, int]] = []
        for doc in self.res.find(flt, {"ref": 1, "pk": 1}, session=self.session()
                                 ).max_time_ms(mongo_ms()):
            out += [(r["i"], doc["pk"]) for r in doc.get("ref", [])
                    if r.get("p") == param_key and r.get("t") == "Patient" and r.get("i")]
        return out

    @budget.interruptible
    def search(self, query: SearchQuery, count_only: bool = False) -> Page:
        if APPEND_ONLY_TYPES & types_read(query.type, query.terms):
            self._catch_up()
        flt = self._filter(query)
        session = self.session()
        total = None
        if count_only or query.total in ("accurate", "estimate"):
            total = self.res.count_documents(flt, session=session, **_max_time())
        if count_only:
            return Page([], total)
        columns = [(f"{'sd' if desc else 'sa'}.{p.name}", desc) for p, desc in query.sort]
        columns.append(("pk", False))
        cursor = query.cursor
        after = cursor is None or cursor["d"] == "after"
        page_flt = flt
        if cursor is not None:
            if len(cursor["k"]) != len(columns):
                raise invalid("paging cursor does not match the search", "_cursor")
            page_flt = {"$and": [flt, keyset(columns, cursor["k"], after)]}
        order = [(c, -1 if desc == after else 1) for c, desc in columns]
        proj = {**PROJ, "sa": 1, "sd": 1}
        docs = list(self.res.find(page_flt, proj, session=session).sort(order)
                    .limit(query.count + 1).max_time_ms(mongo_ms()))
        more = len(docs) > query.count
        docs = docs[:query.count]
        if not after:
            docs.reverse()

        def keys(doc: dict[str, Any]) -> list[Any]:
            out = []
            for col, _ in columns:
                node: Any = doc
                for part in col.split("."):
                    node = node.get(part) if isinstance(node, dict) else None
                out.append(node)
            return out

        items = [stored(d) for d in docs]
        for item, doc in zip(items, docs, strict=True):
            item.key = keys(doc)
        return keyset_page(items, total,
                           keys(docs[0]) if docs else None, keys(docs[-1]) if docs else None,
                           cursor, more)

    @budget.interruptible
    def values(self, query: SearchQuery, keys: list[str]) -> dict[str, list[tuple[Any, ...]]]:
        if APPEND_ONLY_TYPES & types_read(query.type, query.terms):
            self._catch_up()
        wanted = {key: (KINDS[param_kind(key)].array, KINDS[param_kind(key)].fields)
                  for key in keys}
        arrays = {array for array, _ in wanted.values()}
        flt = self._filter(query)
        out: dict[str, list[tuple[Any, ...]]] = {key: [] for key in keys}
        # only the index arrays travel, never the bodies
        for doc in self.res.find(flt, {**{a: 1 for a in arrays}, "pk": 1, "_id": 0},
                                 session=self.session()).max_time_ms(mongo_ms()):
            for key, (array, names) in wanted.items():
                out[key] += [(doc.get("pk"), *(v.get(n) for n in names))
                             for v in doc.get(array) or [] if v.get("p") == key]
        return out

    @budget.interruptible
    def tally(self, query: SearchQuery, keys: list[str], by: str | None = None
              ) -> dict[str, list[tuple[Any, ...]]]:
        """One aggregation per index array over the compiled match (R-EVAL-1)."""
        if APPEND_ONLY_TYPES & types_read(query.type, query.terms):
            self._catch_up()
        by_array: dict[str, list[str]] = {}
        for key in keys:
            by_array.setdefault(param_kind(key), []).append(key)
        out: dict[str, list[tuple[Any, ...]]] = {key: [] for key in keys}
        flt = self._filter(query)
        for kind, wanted in by_array.items():
            array = KINDS[kind].array
            names = KINDS[kind].fields[:GROUPED[kind]]
            group: dict[str, Any] = {"p": "$x.p", **{f"f{i}": f"$x.{n}"
                                                     for i, n in enumerate(names)}}
            pipeline: list[dict[str, Any]] = [
                {"$match": flt}, {"$project": {"x": f"${array}", "d": "$dt", "_id": 0}},
                {"$unwind": "$x"}, {"$match": {"x.p": {"$in": wanted}}}]
            if by is not None:
                # the day's first µs: the µs less their remainder in the day
                pipeline += [{"$unwind": "$d"}, {"$match": {"d.p": by}}]
                group["day"] = {"$subtract": ["$d.lo", {"$mod": ["$d.lo", DAY_US]}]}
            pipeline.append({"$group": {"_id": group, "n": {"$sum": 1}}})
            limit = mongo_ms()
            timed = {} if limit is None else {"maxTimeMS": limit}
            for doc in self.res.aggregate(pipeline, session=self.session(), **timed):
                g = doc["_id"]
                fields = tuple(g.get(f"f{i}") for i in range(len(names)))
                day = (g["day"] // DAY_US,) if by is not None else ()
                out[g["p"]].append((*day, *fields, doc["n"]))
        return out

    def _summary(self, name: str, days: tuple[int, int], where: list[tuple[str, Any]],
                 columns: list[str], grouped: bool) -> list[tuple[Any, ...]] | None:
        summary = SUMMARIES[name]
        column = {"day": "d", **{c.name: f"v{i}" for i, c in enumerate(summary.columns)}}
        if not self._ready(summary):
            return None
        row: dict[str, Any] = {"s": name, "d": {"$gte": days[0], "$lt": days[1]}}
        for col, value in where:
            values = list(value) if isinstance(value, list | tuple) else [value]
            row[column[col]] = {"$in": values}
        pipeline: list[dict[str, Any]] = [
            {"$match": {"type": summary.rtype, "deleted": False,
                        "sm": {"$elemMatch": row}}},
            {"$project": {"sm": 1, "_id": 0}}, {"$unwind": "$sm"},
            {"$match": {f"sm.{k}": v for k, v in row.items()}}]
        if grouped:
            pipeline.append({"$group": {"_id": {c: f"$sm.{column[c]}" for c in columns},
                                        "n": {"$sum": 1}}})
        limit = mongo_ms()
        timed = {} if limit is None else {"maxTimeMS": limit}
        found = self.res.aggregate(pipeline, session=self.session(), **timed)
        if grouped:
            return [(*(doc["_id"].get(c) for c in columns), doc["n"]) for doc in found]
        return [tuple(doc["sm"].get(column[c]) for c in columns) for doc in found]

    def _marked_filled(self, name: str) -> bool:
        return self.counters.find_one({"_id": f"summary:{name}"}) is not None

    def _fill_all(self) -> None:
        while self.fill_summaries():
            pass

    def fill_summaries(self, limit: int = FILL_CHUNK) -> int:
        """Summary rows of up to ``limit`` resources stored before their summary was
        declared (an older database), from their index arrays; how many (0: every
        summary is filled). A resource written meanwhile gets the same rows either way."""
        for summary in SUMMARIES.values():
            if summary.name in self._filled:
                continue
            marker = f"summary:{summary.name}"
            if self.counters.find_one({"_id": marker}) is not None:
                self._filled.add(summary.name)
                continue
            after = self._fill_cursor.get(summary.name, 0)
            docs = list(self.res.find(
                {"type": summary.rtype, "deleted": False, "pk": {"$gt": after}},
                {"body": 0, "sa": 0, "sd": 0}).sort("pk", 1).limit(limit))
            if not docs:
                self.counters.update_one({"_id": marker}, {"$set": {"value": 1}},
                                         upsert=True)
                self._filled.add(summary.name)
                continue
            for doc in docs:
                self.res.update_one({"_id": doc["_id"], "vid": doc["vid"]}, {"$set": {
                    "sm": summary_docs(summary.rtype, index_rows(doc))}})
            self._fill_cursor[summary.name] = docs[-1]["pk"]
            return len(docs)
        return 0

    @budget.interruptible
    def outgoing(self, items: list[Stored], param_keys: list[str]) -> list[tuple[str, str]]:
        pks = [i.pk for i in items if i.pk]
        if not pks or not param_keys:
            return []
        if any(i.type in APPEND_ONLY_TYPES for i in items):
            self._catch_up()
        wanted = set(param_keys)
        out: set[tuple[str, str]] = set()
        for doc in self.res.find({"pk": {"$in": pks}}, {"ref": 1}, session=self.session()
                                 ).max_time_ms(mongo_ms()):
            out.update((r["t"], r["i"]) for r in doc.get("ref", [])
                       if r.get("p") in wanted and r.get("t") and r.get("i"))
        return sorted(out)

    @budget.interruptible
    def incoming(self, param_keys: list[str], targets: list[tuple[str, str]]) -> list[Stored]:
        if not targets or not param_keys:
            return []
        if any(key.split(".", 1)[0] in APPEND_ONLY_TYPES for key in param_keys):
            self._catch_up()
        by_type: dict[str, list[str]] = {}
        for t, i in targets:
            by_type.setdefault(t, []).append(i)
        ors = [{"t": t, "i": {"$in": ids}} for t, ids in by_type.items()]
        flt = {"deleted": False,
               "ref": {"$elemMatch": {"p": {"$in": param_keys}, "$or": ors}}}
        out: list[Stored] = []
        for doc in self.res.find(flt, PROJ, session=self.session()).batch_size(
                200).max_time_ms(mongo_ms()):
            budget.take_rows(1)  # bounded while read, not after
            out.append(stored(doc))
        return out

    # -- history -----------------------------------------------------------------------
    @budget.interruptible
    def history(self, rtype: str | None, rid: str | None, since: int | None,
                count: int, cursor: dict[str, Any] | None, counted: bool = True) -> Page:
        """System history is the clinical history: journal types are listed by type and
        read from their records, which are their only versions (ADR 0006)."""
        journal = rtype in APPEND_ONLY_TYPES
        if journal:
            self._catch_up()
        coll, key = (self.res, "pk") if journal else (self.hist, "_id")
        flt: dict[str, Any] = {"type": rtype} if rtype else {}
        if rid:
            flt["rid"] = rid
        if since is not None:
            flt["updated"] = {"$gte": since}
        total = coll.count_documents(flt, **_max_time()) if counted else None
        after = cursor is None or cursor["d"] == "after"
        page_flt = dict(flt)
        if cursor is not None:
            page_flt[key] = {"$lt" if after else "$gt": cursor["k"][0]}
        docs = list(coll.find(page_flt).sort([(key, -1 if after else 1)]).limit(count + 1)
                    .max_time_ms(mongo_ms()))
        more = len(docs) > count
        docs = docs[:count]
        if not after:
            docs.reverse()
        items = [Stored(d["type"], d["rid"], d["vid"], d["updated"],
                        d.get("method") == "DELETE",
                        bytes(d["body"]) if d.get("body") is not None else None,
                        d.get("method", "POST"), pk=d[key]) for d in docs]
        return keyset_page(items, total, [docs[0][key]] if docs else None,
                           [docs[-1][key]] if docs else None, cursor, more)


def _max_time() -> dict[str, int]:
    """``maxTimeMS`` for a count: the request's remaining budget (issue 27 item 7)."""
    ms = mongo_ms()
    return {"maxTimeMS": ms} if ms is not None else {}
