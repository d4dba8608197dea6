"""The MongoDB store (mongoengine), for production and scale-out (ADR 0003).

``resources`` holds the current version of each resource with its extracted search
values as typed arrays beside it (``tok``, ``str``, ``dt``, ``num``, ``qty``, ``uri``,
``ref``) under multikey indexes, and sort keys (``sa``/``sd``); ``history`` keeps every
version. Writes use write concern majority + journal. A write unit is a multi-document
transaction when the deployment supports it (replica set / sharded cluster); on a
standalone server it is an undo log that restores the prior state if the unit fails
(README: no isolation from concurrent readers, and a crash mid-unit is not undone).
"""

from __future__ import annotations

import contextvars
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import mongoengine as me
import orjson
from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure
from pymongo.write_concern import WriteConcern

from fhir_server.audit.records import expand, instant_us
from fhir_server.core.errors import ErrorKind, FhirError, invalid
from fhir_server.search.extract import IndexRows, Memo, extract
from fhir_server.search.query import (
    ANY,
    AllOf,
    AnyOf,
    Chain,
    Clause,
    Has,
    InCare,
    Not,
    PatientSet,
    RangeValue,
    ReferenceValue,
    SearchQuery,
    Term,
    TokenValue,
    types_read,
)
from fhir_server.search.registry import param_kind
from fhir_server.store import budget
from fhir_server.store.base import (
    APPEND_ONLY_TYPES,
    Page,
    Stored,
    journal_put,
    keyset_page,
)
from fhir_server.store.budget import mongo_ms

ALIAS = "teleimagerie"
ARRAYS = {"token": "tok", "string": "str", "date": "dt", "number": "num", "quantity": "qty",
          "uri": "uri", "reference": "ref"}
FIELDS = {
    "token": ("s", "c", "t"), "string": ("n", "e"), "date": ("lo", "hi"), "number": ("v",),
    "quantity": ("v", "s", "c", "u"), "uri": ("v",), "reference": ("t", "i", "u", "is", "iv"),
}
MAX_CHAIN_IDS = 50_000
LOCK_SECONDS = 30
# Server answers to a createIndexes racing another process's identical one on a first
# start: NamespaceExists, WriteConflict, ConflictingOperationInProgress,
# IndexBuildAlreadyInProgress. Retried; a real spec conflict (85, 86) is not.
TRANSIENT_INDEX_CODES = frozenset({48, 112, 117, 276})
INDEX_ATTEMPTS = 6


class ResourceDoc(me.Document):
    """Current version of a resource, with its index arrays (multikey indexes)."""

    key = me.StringField(primary_key=True)  # "Type/id"
    ordinal = me.IntField(required=True, db_field="pk")  # keyset order, stable on update
    type = me.StringField(required=True)
    rid = me.StringField(required=True)
    vid = me.IntField(required=True)
    updated = me.IntField(required=True)
    deleted = me.BooleanField(default=False)
    body = me.BinaryField()
    # Extracted search values, one typed array per search parameter kind (multikey).
    tok = me.ListField(me.DictField())
    strings = me.ListField(me.DictField(), db_field="str")
    dt = me.ListField(me.DictField())
    num = me.ListField(me.DictField())
    qty = me.ListField(me.DictField())
    uri = me.ListField(me.DictField())
    ref = me.ListField(me.DictField())
    sa = me.DictField()  # ascending sort keys by parameter name
    sd = me.DictField()  # descending sort keys by parameter name
    pending = me.BooleanField()  # a journal record not indexed yet (ADR 0007)
    meta = {  # noqa: RUF012 - mongoengine reads this class attribute
        "collection": "resources", "db_alias": ALIAS, "auto_create_index": False,
        "indexes": [
            {"fields": ["type", "ordinal"]},
            {"fields": ["ordinal"], "unique": True},
            {"fields": ["type", "tok.p", "tok.c"]},
            {"fields": ["type", "tok.p", "tok.t"]},
            {"fields": ["type", "strings.p", "strings.n"]},
            {"fields": ["type", "dt.p", "dt.lo"]},
            {"fields": ["type", "dt.p", "dt.hi"]},
            {"fields": ["type", "num.p", "num.v"]},
            {"fields": ["type", "qty.p", "qty.v"]},
            {"fields": ["type", "uri.p", "uri.v"]},
            {"fields": ["type", "ref.p", "ref.i"]},
            {"fields": ["type", "ref.p", "ref.u"]},
            {"fields": ["type", "ref.p", "ref.iv"]},
            {"fields": ["ref.t", "ref.i", "ref.p"]},
            {"fields": ["pending", "ordinal"], "sparse": True},
        ],
    }


class HistoryDoc(me.Document):
    """One version (``method`` DELETE for a deletion, body absent)."""

    seq = me.IntField(primary_key=True)
    type = me.StringField(required=True)
    rid = me.StringField(required=True)
    vid = me.IntField(required=True)
    updated = me.IntField(required=True)
    method = me.StringField(required=True)
    body = me.BinaryField()
    meta = {  # noqa: RUF012 - mongoengine reads this class attribute
        "collection": "history", "db_alias": ALIAS, "auto_create_index": False,
        "indexes": [
            {"fields": ["type", "rid", "vid"], "unique": True},
            {"fields": ["type", "-seq"]},
            {"fields": ["updated"]},
        ],
    }


class JournalDoc(me.Document):
    """A chained journal record (ADR 0016), expanded into AuditEvents by the indexer."""

    seq = me.IntField(primary_key=True)
    events = me.IntField(required=True)  # AuditEvents it stands for
    body = me.BinaryField(required=True)
    pending = me.BooleanField()  # not expanded yet
    meta = {  # noqa: RUF012 - mongoengine reads this class attribute
        "collection": "journal", "db_alias": ALIAS, "auto_create_index": False,
        "indexes": [{"fields": ["pending", "seq"], "sparse": True}],
    }


class CounterDoc(me.Document):
    name = me.StringField(primary_key=True)
    value = me.IntField(default=0)
    meta = {"collection": "counters", "db_alias": ALIAS}  # noqa: RUF012


class LockDoc(me.Document):
    """A lease serialising conditional interactions on the same criteria."""

    key = me.StringField(primary_key=True)
    owner = me.StringField(required=True)
    expires = me.DateTimeField(required=True)
    meta = {"collection": "locks", "db_alias": ALIAS,  # noqa: RUF012
            "indexes": [{"fields": ["expires"], "expireAfterSeconds": 0}]}


def ensure_indexes(docs: tuple[type[me.Document], ...], pause: float = 0.2) -> None:
    """Create the collections' indexes; safe when several processes start on a new
    database at once (issue 27 item 13). createIndexes of an existing identical index is
    a no-op, and the transient answers a concurrent build can draw are retried."""
    for doc in docs:
        for attempt in range(1, INDEX_ATTEMPTS + 1):
            try:
                doc.ensure_indexes()
                break
            except OperationFailure as exc:
                if exc.code not in TRANSIENT_INDEX_CODES or attempt == INDEX_ATTEMPTS:
                    raise
                time.sleep(pause * attempt)


@dataclass
class _Unit:
    depth: int = 0
    session: Any = None
    undo: list[tuple[str, Any, Any]] = field(default_factory=list)


_unit: contextvars.ContextVar[_Unit | None] = contextvars.ContextVar("mongo_unit", default=None)


def _esc(text: str) -> str:
    return re.escape(text)


class MongoCompiler:
    """Compile the search AST to MongoDB filters over the index arrays."""

    def __init__(self, store: MongoStore) -> None:
        self.store = store

    def where(self, rtype: str, terms: list[Term]) -> dict[str, Any]:
        conds = [self.term(t) for t in terms]
        base: dict[str, Any] = {"type": rtype, "deleted": False}
        if conds:
            base["$and"] = conds
        return base

    def term(self, term: Term) -> dict[str, Any]:
        if isinstance(term, Clause):
            return self.clause(term)
        if isinstance(term, AnyOf):
            return {"$or": [self.term(t) for t in term.options]} if term.options \
                else {"pk": {"$lt": -1}}
        if isinstance(term, AllOf):
            return {"$and": [self.term(t) for t in term.terms]} if term.terms else {}
        if isinstance(term, Not):
            return {"$nor": [self.term(term.term)]}
        if isinstance(term, InCare):
            return self.in_care(term)
        if isinstance(term, Chain):
            ors = []
            for target, inner in zip(term.target_types, term.inner, strict=True):
                ids = self.store._distinct_ids(self.where(target, [inner]))
                ors.append({"t": target, "i": {"$in": ids}})
            return {"ref": {"$elemMatch": {"p": term.param.key, "$or": ors}}}
        assert isinstance(term, Has)
        ids = self.store._referenced_ids(self.where(term.source_type, term.inner), term.ref.key)
        return {"rid": {"$in": ids}}

    def patient_ids(self, source: PatientSet) -> set[str]:
        flt = self.where(source.source_type, source.terms)
        if source.ref is None:
            return set(self.store._distinct_ids(flt))
        return {i for i, _ in self.store._patients_of(flt, source.ref.key)}

    def in_care(self, term: InCare) -> dict[str, Any]:
        """The guard (R-SEC-2), same semantics as the embedded store's sub-selects: the
        sets are read first (a ``$in`` of thousands of ids is cheap here); a patient
        opened from a resource on matches what was created (``pk``) no earlier."""
        ids = set(term.ids)
        for source in term.sets:
            ids |= self.patient_ids(source)
        key = term.param.key if term.param is not None else None

        def patient_is(value: Any) -> dict[str, Any]:
            if key is None:
                return {"rid": value}
            return {"ref": {"$elemMatch": {"p": key, "t": "Patient", "i": value}}}

        ors: list[dict[str, Any]] = [patient_is({"$in": sorted(ids)})] if ids else []
        opened: dict[str, int] = {}
        for since in term.since:
            flt = self.where(since.source_type, since.terms)
            for pid, pk in self.store._patients_of(flt, since.ref.key):
                opened[pid] = min(pk, opened.get(pid, pk))
        ors += [{**patient_is(pid), "pk": {"$gte": pk}} for pid, pk in sorted(opened.items())]
        return {"$or": ors} if ors else {"pk": {"$lt": -1}}

    def clause(self, clause: Clause) -> dict[str, Any]:
        kind = clause.param.kind
        ident = clause.modifier == "identifier" or (
            kind == "reference" and clause.values and isinstance(clause.values[0], TokenValue))
        arr = ARRAYS[kind]
        key = clause.param.key
        if clause.missing is not None:
            present = {arr: {"$elemMatch": {"p": key}}}
            return {arr: {"$not": {"$elemMatch": {"p": key}}}} if clause.missing else present
        ors = [self.value("reference-identifier" if ident else kind, clause.modifier, v)
               for v in clause.values]
        match = {"p": key, "$or": ors}
        if clause.modifier == "not":
            return {arr: {"$not": {"$elemMatch": match}}}
        return {arr: {"$elemMatch": match}}

    def value(self, kind: str, modifier: str | None, v: Any) -> dict[str, Any]:
        if kind == "token":
            return _token(v, "s", "c")
        if kind == "reference-identifier":
            return _token(v, "is", "iv")
        if kind == "string":
            if modifier == "exact":
                return {"e": v}
            if modifier == "contains":
                return {"n": {"$regex": _esc(v)}}
            return {"n": {"$regex": "^" + _esc(v)}}
        if kind == "uri":
            if modifier == "below":
                return {"v": {"$regex": "^" + _esc(v)}}
            if modifier == "above":
                return {"v": {"$in": [v[:i] for i in range(1, len(v) + 1)]}}
            return {"v": v}
        if kind == "date":
            if isinstance(v, tuple):  # bounds merged by query.merge_date_bounds
                return {"$and": [_date(b) for b in v]}
            return _date(v)
        if kind in ("number", "quantity"):
            cond = _number(v)
            if kind == "quantity":
                extra: list[dict[str, Any]] = []
                if v.code:
                    extra.append({"$or": [{"c": v.code}, {"u": v.code}]})
                if v.system:
                    extra.append({"s": v.system})
                if extra:
                    return {"$and": [cond, *extra]}
            return cond
        assert isinstance(v, ReferenceValue)
        if v.url and v.rid:
            return {"$or": [{"u": v.url}, {"i": v.rid, "t": v.rtype}]}
        if v.url:
            return {"u": v.url}
        if v.rtype:
            return {"i": v.rid, "t": v.rtype}
        return {"i": v.rid}


def _token(v: TokenValue, sys_f: str, code_f: str) -> dict[str, Any]:
    if v.text is not None:
        return {"t": {"$regex": _esc(v.text)}}
    out: dict[str, Any] = {}
    if v.code is not None:
        out[code_f] = v.code
    if v.system is None:
        out[sys_f] = None
    elif v.system is not ANY:
        out[sys_f] = v.system
    return out or {"p": {"$exists": True}}


def _date(v: RangeValue) -> dict[str, Any]:
    lo, hi = int(v.low), int(v.high)
    within = {"lo": {"$gte": lo}, "hi": {"$lte": hi}}
    return {
        "eq": within,
        "ne": {"$or": [{"lo": {"$lt": lo}}, {"hi": {"$gt": hi}}]},
        "gt": {"hi": {"$gt": hi}},
        "lt": {"lo": {"$lt": lo}},
        "ge": {"hi": {"$gt": lo}, "$or": [{"hi": {"$gt": hi}}, within]},
        "le": {"lo": {"$lt": hi}, "$or": [{"lo": {"$lt": lo}}, within]},
        "sa": {"lo": {"$gte": hi}},
        "eb": {"hi": {"$lte": lo}},
        "ap": {"lo": {"$lt": hi}, "hi": {"$gt": lo}},
    }[v.prefix]  # type: ignore[return-value]


def _number(v: RangeValue) -> dict[str, Any]:
    return {
        "eq": {"v": {"$gte": v.low, "$lt": v.high}},
        "ne": {"$or": [{"v": {"$lt": v.low}}, {"v": {"$gte": v.high}}]},
        "gt": {"v": {"$gt": v.value}},
        "lt": {"v": {"$lt": v.value}},
        "ge": {"v": {"$gte": v.value}},
        "le": {"v": {"$lte": v.value}},
        "sa": {"v": {"$gt": v.value}},
        "eb": {"v": {"$lt": v.value}},
        "ap": {"v": {"$gte": v.low, "$lte": v.high}},
    }[v.prefix]  # type: ignore[return-value]


def keyset(columns: list[tuple[str, bool]], values: list[Any], after: bool) -> dict[str, Any]:
    """Documents strictly after/before ``values`` in ``columns`` order (null lowest)."""
    ors: list[dict[str, Any]] = []
    for i, (col, desc) in enumerate(columns):
        cond: dict[str, Any] = {c: values[j] for j, (c, _) in enumerate(columns[:i])}
        val = values[i]
        if (not desc) == after:
            cond[col] = {"$ne": None} if val is None else {"$gt": val}
        else:
            if val is None:
                continue
            cond = {"$and": [cond, {"$or": [{col: {"$lt": val}}, {col: None}]}]}
        ors.append(cond)
    return {"$or": ors} if ors else {"pk": {"$lt": -1}}


def _index_fields(rows: IndexRows) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind, arr in ARRAYS.items():
        values = getattr(rows, kind)
        if values:
            names = ("p", *FIELDS[kind])
            out[arr] = [dict(zip(names, v, strict=True)) for v in values]
    if rows.sort:
        out["sa"] = {k.split(".", 1)[1]: a for k, (a, _) in rows.sort.items()}
        out["sd"] = {k.split(".", 1)[1]: d for k, (_, d) in rows.sort.items()}
    return out


class MongoStore:
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
        concern = WriteConcern(w="majority", j=True)
        self.res = self._with_concern(ResourceDoc._get_collection(), concern)
        self.hist = self._with_concern(HistoryDoc._get_collection(), concern)
        self.journal = self._with_concern(JournalDoc._get_collection(), concern)
        self.counters = CounterDoc._get_collection()
        self.locks = LockDoc._get_collection()

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
    def _session(self) -> Any:
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
    @staticmethod
    def _stored(doc: dict[str, Any]) -> Stored:
        body = doc.get("body")
        return Stored(doc["type"], doc["rid"], doc["vid"], doc["updated"],
                      bool(doc.get("deleted")), bytes(body) if body is not None else None,
                      pk=doc["pk"])

    _PROJ: ClassVar[dict[str, int]] = {"type": 1, "rid": 1, "vid": 1, "updated": 1,
                                       "deleted": 1, "body": 1, "pk": 1}

    def read(self, rtype: str, rid: str) -> Stored | None:
        if rtype in APPEND_ONLY_TYPES:
            self._catch_up()
        doc = self.res.find_one({"_id": f"{rtype}/{rid}"}, self._PROJ, session=self._session())
        return self._stored(doc) if doc else None

    def vread(self, rtype: str, rid: str, vid: int) -> Stored | None:
        if rtype in APPEND_ONLY_TYPES:
            current = self.read(rtype, rid)
            return current if current is not None and current.vid == vid else None
        doc = self.hist.find_one({"type": rtype, "rid": rid, "vid": vid},
                                 session=self._session())
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
        return [self._stored(d) for d in self.res.find(
            {"_id": {"$in": ids}, "deleted": False}, self._PROJ, session=self._session())
            .max_time_ms(mongo_ms())]

    # -- writes ------------------------------------------------------------------------
    @staticmethod
    def _doc(item: Stored, rows: IndexRows | None, pk: int) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "_id": f"{item.type}/{item.id}", "pk": pk, "type": item.type, "rid": item.id,
            "vid": item.vid, "updated": item.updated, "deleted": item.deleted,
            "body": item.body,
        }
        if rows is not None and not item.deleted:
            doc.update(_index_fields(rows))
        return doc

    @staticmethod
    def _hist(item: Stored, seq: int) -> dict[str, Any]:
        return {"_id": seq, "type": item.type, "rid": item.id, "vid": item.vid,
                "updated": item.updated, "method": item.method, "body": item.body}

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

    # -- the audit journal (ADR 0007, 0016) ----------------------------------------------
    def journal_append(self, records: list[tuple[int, int, bytes]]) -> None:
        unit = _unit.get()
        assert unit is not None, "journal_append() outside a write unit"
        docs = [{"_id": seq, "events": n, "body": body, "pending": True}
                for seq, n, body in records]
        try:
            self.journal.insert_many(docs, ordered=True, session=unit.session)
        except BulkWriteError:
            if unit.session is None:  # the ones inserted before the duplicate
                self.journal.delete_many({"_id": {"$in": [d["_id"] for d in docs]},
                                          "body": {"$in": [d["body"] for d in docs]}})
            raise FhirError(ErrorKind.CONFLICT, "a record of the batch already exists") from None
        if unit.session is None:
            unit.undo.extend(("journal", d["_id"], None) for d in docs)

    def journal_last(self) -> bytes | None:
        doc = self.journal.find_one({}, {"body": 1}, sort=[("_id", -1)],
                                    session=self._session())
        return bytes(doc["body"]) if doc else None

    def journal_records(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        return [(int(d["_id"]), bytes(d["body"])) for d in self.journal.find(
            {"_id": {"$gt": after}}, {"body": 1}).sort("_id", 1).limit(limit)]

    def journal_backlog(self) -> int:
        """AuditEvents not yet expanded and indexed (events appended one by one before
        records existed included)."""
        pending = list(self.journal.aggregate([{"$match": {"pending": True}}, {
            "$group": {"_id": None, "n": {"$sum": "$events"}}}]))
        return int(self.res.count_documents({"pending": True})) + (
            int(pending[0]["n"]) if pending else 0)

    def index_journal(self, limit: int = 1000) -> int:
        """Expand and index about ``limit`` AuditEvents of the oldest records; how many.
        Concurrent indexers may expand the same record: an AuditEvent is inserted under
        its own key, so the second insert is refused and nothing is written twice."""
        done = self._index_events(limit)
        if done:
            return done
        docs: list[dict[str, Any]] = []
        count = 0
        for rec in self.journal.find({"pending": True}).sort("_id", 1).limit(limit):
            if docs and count + rec["events"] > limit:
                break
            docs.append(rec)
            count += rec["events"]
        events = [event for rec in docs for event in expand(orjson.loads(rec["body"]))]
        if not events:
            return 0
        first = self._next("pk", len(events))
        memo = Memo()  # the events of a record share elements: extracted once (ADR 0017)
        rows = [self._doc(Stored("AuditEvent", e["id"], 1, instant_us(e["meta"]["lastUpdated"]),
                                 False, orjson.dumps(e)), self.indexer(e, memo), first + n)
                for n, e in enumerate(events)]
        self._insert_new(rows)
        self.journal.update_many({"_id": {"$in": [d["_id"] for d in docs]}},
                                 {"$unset": {"pending": ""}})
        return len(events)

    def _insert_new(self, docs: list[dict[str, Any]]) -> None:
        """Insert, skipping documents another indexer inserted first."""
        if self.mock:  # mongomock's bulk API rejects the arguments pymongo 4.9+ passes
            for doc in docs:
                try:
                    self.res.insert_one(doc)
                except DuplicateKeyError:
                    pass
            return
        try:
            self.res.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                raise

    def _index_events(self, limit: int) -> int:
        """Index AuditEvents appended one by one, before records existed. Each update
        matches only a still-pending event, so concurrent indexers never write one twice."""
        docs = list(self.res.find({"pending": True}, {"body": 1}).sort("pk", 1).limit(limit))
        if not docs:
            return 0
        updates = [({"_id": d["_id"], "pending": True},
                    {"$set": _index_fields(self.indexer(orjson.loads(d["body"]), None)),
                     "$unset": {"pending": ""}}) for d in docs]
        if self.mock:
            return sum(self.res.update_one(f, u).modified_count for f, u in updates)
        return int(self.res.bulk_write([UpdateOne(f, u) for f, u in updates],
                                       ordered=False).modified_count)

    def _catch_up(self) -> None:
        """Before reading the journal's AuditEvents or index fields: expand and index every
        record appended so far."""
        while self.index_journal():
            pass

    # -- search ------------------------------------------------------------------------
    def _distinct_ids(self, flt: dict[str, Any]) -> list[str]:
        ids = [d["rid"] for d in self.res.find(flt, {"rid": 1}, session=self._session())
               .limit(MAX_CHAIN_IDS + 1).max_time_ms(mongo_ms())]
        if len(ids) > MAX_CHAIN_IDS:
            raise FhirError(ErrorKind.TOO_COSTLY, f"chained search matches more than "
                            f"{MAX_CHAIN_IDS} resources; narrow it")
        return ids

    def _referenced_ids(self, flt: dict[str, Any], param_key: str) -> list[str]:
        ids: set[str] = set()
        for doc in self.res.find(flt, {"ref": 1}, session=self._session()).limit(
                MAX_CHAIN_IDS + 1).max_time_ms(mongo_ms()):
            ids.update(r["i"] for r in doc.get("ref", []) if r.get("p") == param_key
                       and r.get("i"))
        return sorted(ids)

    def _patients_of(self, flt: dict[str, Any], param_key: str) -> list[tuple[str, int]]:
        """(patient id, pk) for each matching resource's ``param_key`` Patient reference."""
        out: list[tuple[str, int]] = []
        for doc in self.res.find(flt, {"ref": 1, "pk": 1}, session=self._session()
                                 ).max_time_ms(mongo_ms()):
            out += [(r["i"], doc["pk"]) for r in doc.get("ref", [])
                    if r.get("p") == param_key and r.get("t") == "Patient" and r.get("i")]
        return out

    @budget.interruptible
    def search(self, query: SearchQuery, count_only: bool = False) -> Page:
        if APPEND_ONLY_TYPES & types_read(query.type, query.terms):
            self._catch_up()
        flt = MongoCompiler(self).where(query.type, query.terms)
        session = self._session()
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
        proj = {**self._PROJ, "sa": 1, "sd": 1}
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

        items = [self._stored(d) for d in docs]
        for item, doc in zip(items, docs, strict=True):
            item.key = keys(doc)
        return keyset_page(items, total,
                           keys(docs[0]) if docs else None, keys(docs[-1]) if docs else None,
                           cursor, more)

    @budget.interruptible
    def values(self, query: SearchQuery, keys: list[str]) -> dict[str, list[tuple[Any, ...]]]:
        if APPEND_ONLY_TYPES & types_read(query.type, query.terms):
            self._catch_up()
        wanted = {key: (ARRAYS[param_kind(key)], FIELDS[param_kind(key)]) for key in keys}
        arrays = {array for array, _ in wanted.values()}
        flt = MongoCompiler(self).where(query.type, query.terms)
        out: dict[str, list[tuple[Any, ...]]] = {key: [] for key in keys}
        # only the index arrays travel, never the bodies
        for doc in self.res.find(flt, {**{a: 1 for a in arrays}, "pk": 1, "_id": 0},
                                 session=self._session()).max_time_ms(mongo_ms()):
            for key, (array, names) in wanted.items():
                out[key] += [(doc.get("pk"), *(v.get(n) for n in names))
                             for v in doc.get(array) or [] if v.get("p") == key]
        return out

    @budget.interruptible
    def outgoing(self, items: list[Stored], param_keys: list[str]) -> list[tuple[str, str]]:
        pks = [i.pk for i in items if i.pk]
        if not pks or not param_keys:
            return []
        if any(i.type in APPEND_ONLY_TYPES for i in items):
            self._catch_up()
        wanted = set(param_keys)
        out: set[tuple[str, str]] = set()
        for doc in self.res.find({"pk": {"$in": pks}}, {"ref": 1}, session=self._session()
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
        for doc in self.res.find(flt, self._PROJ, session=self._session()).batch_size(
                200).max_time_ms(mongo_ms()):
            budget.take_rows(1)  # bounded while read, not after
            out.append(self._stored(doc))
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
