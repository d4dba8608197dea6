"""The MongoDB store's record format (ADR 0003): the collections, their indexes, and the
resource document — the current version with one typed index array per search parameter
kind (the kind's :attr:`~fhir_server.search.kinds.base.Kind.array`, entries ``p`` plus
its :attr:`~fhir_server.search.kinds.base.Kind.fields`) and its sort keys."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar

import mongoengine as me
from pymongo.errors import OperationFailure

from fhir_server.search.extract import IndexRows
from fhir_server.search.kinds import KINDS
from fhir_server.store.base import Stored, summaries_of

if TYPE_CHECKING:
    class _Document:
        """What this module uses of mongoengine's Document (untyped)."""

        meta: ClassVar[dict[str, Any]]

        @classmethod
        def ensure_indexes(cls) -> None: ...

        @classmethod
        def _get_collection(cls) -> Any: ...
else:
    _Document = me.Document

ALIAS = "teleimagerie"
# Server answers to a createIndexes racing another process's identical one on a first
# start: NamespaceExists, WriteConflict, ConflictingOperationInProgress,
# IndexBuildAlreadyInProgress. Retried; a real spec conflict (85, 86) is not.
TRANSIENT_INDEX_CODES = frozenset({48, 112, 117, 276})
INDEX_ATTEMPTS = 6
PROJ: dict[str, int] = {"type": 1, "rid": 1, "vid": 1, "updated": 1, "deleted": 1, "body": 1,
                        "pk": 1}


class ResourceDoc(_Document):
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
    # summary rows (store.base.Summary): {"s": name, "d": day, "v0": …, "v1": …}
    summaries = me.ListField(me.DictField(), db_field="sm")
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
            {"fields": ["summaries.s", "summaries.d"], "sparse": True},
        ],
    }


class HistoryDoc(_Document):
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


class JournalDoc(_Document):
    """A chained journal record (ADR 0016), expanded into AuditEvents by the indexer."""

    seq = me.IntField(primary_key=True)
    events = me.IntField(required=True)  # AuditEvents it stands for
    body = me.BinaryField(required=True)
    pending = me.BooleanField()  # not expanded yet
    meta = {  # noqa: RUF012 - mongoengine reads this class attribute
        "collection": "journal", "db_alias": ALIAS, "auto_create_index": False,
        "indexes": [{"fields": ["pending", "seq"], "sparse": True}],
    }


class CounterDoc(_Document):
    name = me.StringField(primary_key=True)
    value = me.IntField(default=0)
    meta = {"collection": "counters", "db_alias": ALIAS}  # noqa: RUF012


class LockDoc(_Document):
    """A lease serialising conditional interactions on the same criteria."""

    key = me.StringField(primary_key=True)
    owner = me.StringField(required=True)
    expires = me.DateTimeField(required=True)
    meta = {"collection": "locks", "db_alias": ALIAS,  # noqa: RUF012
            "indexes": [{"fields": ["expires"], "expireAfterSeconds": 0}]}


def ensure_indexes(docs: tuple[type[_Document], ...], pause: float = 0.2) -> None:
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



def index_fields(rows: IndexRows) -> dict[str, Any]:
    """The index arrays and sort keys of a resource document."""
    out: dict[str, Any] = {}
    for name, kind in KINDS.items():
        values = getattr(rows, name)
        if values:
            names = ("p", *kind.fields)
            out[kind.array] = [dict(zip(names, v, strict=True)) for v in values]
    if rows.sort:
        out["sa"] = {k.split(".", 1)[1]: a for k, (a, _) in rows.sort.items()}
        out["sd"] = {k.split(".", 1)[1]: d for k, (_, d) in rows.sort.items()}
    return out


def resource_doc(item: Stored, rows: IndexRows | None, pk: int) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "_id": f"{item.type}/{item.id}", "pk": pk, "type": item.type, "rid": item.id,
        "vid": item.vid, "updated": item.updated, "deleted": item.deleted,
        "body": item.body,
    }
    if rows is not None and not item.deleted:
        doc.update(index_fields(rows))
        summary = summary_docs(item.type, rows)
        if summary:
            doc["sm"] = summary
    return doc


def summary_docs(rtype: str, rows: IndexRows) -> list[dict[str, Any]]:
    """The summary rows of a resource (every summary declared for its type)."""
    return [{"s": summary.name, "d": row[0],
             **{f"v{i}": value for i, value in enumerate(row[1:])}}
            for summary in summaries_of(rtype) for row in summary.rows(rows)]


def index_rows(doc: dict[str, Any]) -> IndexRows:
    """The index rows of a resource document (the inverse of :func:`index_fields`)."""
    rows = IndexRows()
    for name, kind in KINDS.items():
        names = ("p", *kind.fields)
        getattr(rows, name).extend(tuple(v.get(n) for n in names)
                                   for v in doc.get(kind.array) or [])
    return rows


def history_doc(item: Stored, seq: int) -> dict[str, Any]:
    return {"_id": seq, "type": item.type, "rid": item.id, "vid": item.vid,
            "updated": item.updated, "method": item.method, "body": item.body}


def stored(doc: dict[str, Any]) -> Stored:
    """A resource document (``PROJ``) as the protocol's :class:`Stored`."""
    body = doc.get("body")
    return Stored(doc["type"], doc["rid"], doc["vid"], doc["updated"],
                  bool(doc.get("deleted")), bytes(body) if body is not None else None,
                  pk=doc["pk"])
