"""Compile the search AST into a plan of MongoDB filters over the index arrays.

The compiler runs nothing. What a filter needs from other documents — the ids a chain's
targets match, the ids a ``_has`` source references, the patients of the guard's sets
(:class:`InCare`, ADR 0020) — is a :class:`Lookup`, a sub-plan the store runs first; its
results fill a :class:`Slot`, an empty condition placed in the filter, so the filter is
complete without being walked again. Each value's condition comes from its kind
(:mod:`fhir_server.search.kinds`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from fhir_server.search.kinds import KINDS
from fhir_server.search.query import (
    AllOf,
    AnyOf,
    Chain,
    Clause,
    Has,
    InCare,
    Not,
    PatientSet,
    Term,
)

NOTHING: dict[str, Any] = {"pk": {"$lt": -1}}  # matches no document


@dataclass(slots=True)
class MongoPlan:
    """A filter over the resource documents, complete once its slots are filled."""

    filter: dict[str, Any]
    slots: list[Slot] = field(default_factory=list)


@dataclass(slots=True)
class Lookup:
    """A sub-query: the documents ``plan`` matches, read as ``op``: ``ids`` (their ids),
    ``referenced`` (the ids their ``key`` references point at) or ``patients``
    ((patient id, pk) of their ``key`` Patient references)."""

    op: Literal["ids", "referenced", "patients"]
    plan: MongoPlan
    key: str | None = None


@dataclass(slots=True)
class Slot:
    """A condition of the filter (``target``, empty until filled) made from the
    lookups' results by ``fill``."""

    target: dict[str, Any]
    lookups: list[Lookup]
    fill: Callable[[list[Any]], dict[str, Any]]


class MongoCompiler:
    """Compile the search AST into a :class:`MongoPlan` (search.html semantics)."""

    def __init__(self) -> None:
        self._slots: list[Slot] = []

    def plan(self, rtype: str, terms: list[Term]) -> MongoPlan:
        outer, self._slots = self._slots, []
        try:
            return MongoPlan(self.where(rtype, terms), self._slots)
        finally:
            self._slots = outer

    def where(self, rtype: str, terms: list[Term]) -> dict[str, Any]:
        conds = [self.term(t) for t in terms]
        base: dict[str, Any] = {"type": rtype, "deleted": False}
        if conds:
            base["$and"] = conds
        return base

    def _slot(self, lookups: list[Lookup], fill: Callable[[list[Any]], dict[str, Any]]
              ) -> dict[str, Any]:
        target: dict[str, Any] = {}
        self._slots.append(Slot(target, lookups, fill))
        return target

    def term(self, term: Term) -> dict[str, Any]:
        if isinstance(term, Clause):
            return self.clause(term)
        if isinstance(term, AnyOf):
            return {"$or": [self.term(t) for t in term.options]} if term.options \
                else dict(NOTHING)
        if isinstance(term, AllOf):
            return {"$and": [self.term(t) for t in term.terms]} if term.terms else {}
        if isinstance(term, Not):
            return {"$nor": [self.term(term.term)]}
        if isinstance(term, InCare):
            return self.in_care(term)
        if isinstance(term, Chain):
            return self.chain(term)
        return self.has(term)

    def chain(self, term: Chain) -> dict[str, Any]:
        """Resources whose reference points at a match of one of the target types."""
        key, targets = term.param.key, list(term.target_types)
        lookups = [Lookup("ids", self.plan(target, [inner]))
                   for target, inner in zip(targets, term.inner, strict=True)]

        def fill(results: list[Any]) -> dict[str, Any]:
            ors = [{"t": t, "i": {"$in": ids}} for t, ids in zip(targets, results, strict=True)]
            return {"ref": {"$elemMatch": {"p": key, "$or": ors}}}

        return self._slot(lookups, fill)

    def has(self, term: Has) -> dict[str, Any]:
        """Resources a match of the source type references."""
        lookup = Lookup("referenced", self.plan(term.source_type, term.inner), term.ref.key)
        return self._slot([lookup], lambda results: {"rid": {"$in": results[0]}})

    def _patients(self, source: PatientSet) -> Lookup:
        plan = self.plan(source.source_type, source.terms)
        if source.ref is None:
            return Lookup("ids", plan)
        return Lookup("patients", plan, source.ref.key)

    def in_care(self, term: InCare) -> dict[str, Any]:
        """The guard (R-SEC-2), same semantics as the embedded store's sub-selects: the
        sets are read first (a ``$in`` of thousands of ids is cheap here); a patient
        opened from a resource on matches what was created (``pk``) no earlier."""
        sets = [self._patients(source) for source in term.sets]
        since = [Lookup("patients", self.plan(s.source_type, s.terms), s.ref.key)
                 for s in term.since]
        key = term.param.key if term.param is not None else None
        given = list(term.ids)

        def patient_is(value: Any) -> dict[str, Any]:
            if key is None:
                return {"rid": value}
            return {"ref": {"$elemMatch": {"p": key, "t": "Patient", "i": value}}}

        def fill(results: list[Any]) -> dict[str, Any]:
            ids = set(given)
            for lookup, found in zip(sets, results, strict=False):
                ids.update(found if lookup.op == "ids" else (i for i, _ in found))
            ors: list[dict[str, Any]] = [patient_is({"$in": sorted(ids)})] if ids else []
            opened: dict[str, int] = {}
            for found in results[len(sets):]:
                for pid, pk in found:
                    opened[pid] = min(pk, opened.get(pid, pk))
            ors += [{**patient_is(pid), "pk": {"$gte": pk}}
                    for pid, pk in sorted(opened.items())]
            return {"$or": ors} if ors else dict(NOTHING)

        return self._slot([*sets, *since], fill)

    def clause(self, clause: Clause) -> dict[str, Any]:
        kind = KINDS[clause.param.kind]
        arr, key = kind.array, clause.param.key
        if clause.missing is not None:
            present = {arr: {"$elemMatch": {"p": key}}}
            return {arr: {"$not": {"$elemMatch": {"p": key}}}} if clause.missing else present
        match = {"p": key, "$or": [kind.mongo(v, clause.modifier) for v in clause.values]}
        if clause.modifier == "not":
            return {arr: {"$not": {"$elemMatch": match}}}
        return {arr: {"$elemMatch": match}}


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
    return {"$or": ors} if ors else dict(NOTHING)
