"""A Subscription's criteria compiled once into a predicate over a write's index rows
(issue 31; R4 subscription.html "criteria"): matching runs in the write unit against the
values :func:`fhir_server.search.extract.extract` gave the store, never by re-running a
search.

A criteria string is parsed by the search parser (so it accepts what a search accepts,
and refuses the same), then each AND clause is evaluated on the resource's rows of its
parameter with the condition its kind compiles for MongoDB (``Kind.mongo``): the rows are
the very entries of the MongoDB index arrays (``store/mongo/records.index_fields``), so a
subscription matches what a search would find. Chains, ``_has`` and result parameters
read other resources or shape a page: a criteria naming them is refused.

Each predicate names an *anchor* when it can — the (parameter, code or id) values one of
its clauses requires — so a write evaluates only the subscriptions anchored on one of its
own values, plus those without an anchor (:class:`Bucket`).
"""

from __future__ import annotations

import operator
import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any
from urllib.parse import parse_qsl

from fhir_server.core.errors import FhirError, invalid
from fhir_server.core.limits import Limits
from fhir_server.core.resource_types import is_supported
from fhir_server.search.extract import IndexRows
from fhir_server.search.kinds import KINDS
from fhir_server.search.query import Clause, QueryParser, ReferenceValue, TokenValue

Doc = dict[str, Any]
Anchor = tuple[str, str]  # (parameter key, code or id)
# (parameter key, entry field, order operator, bound): a comparison some row must pass
Range = tuple[str, str, str, Any]
_RESULT = frozenset({"_count", "_sort", "_include", "_revinclude", "_total", "_summary",
                     "_elements", "_format", "_pretty", "_contained", "_containedType"})


@dataclass(frozen=True)
class Condition:
    """One AND clause: the OR of its values' conditions over the rows of ``key``."""

    key: str
    fields: tuple[str, ...]
    conditions: tuple[Doc, ...]
    negated: bool = False  # ``:not``
    missing: bool | None = None  # ``:missing``
    # the conditions compiled once into closures (interpreting the dicts at each write
    # would cost several times more)
    tests: tuple[Callable[[Doc], bool], ...] = field(default=(), compare=False, repr=False)


@dataclass(frozen=True)
class Predicate:
    """The compiled criteria of one subscription on ``type``."""

    type: str
    conditions: tuple[Condition, ...]
    anchors: frozenset[Anchor] = frozenset()  # empty: evaluated on every write of type
    ranged: Range | None = None  # without anchors: a bound some row must pass

    def matches(self, rows: Rows) -> bool:
        return all(_holds(c, rows) for c in self.conditions)


class Rows:
    """A write's index rows as MongoDB index entries, grouped by parameter (built once
    per write, whatever the number of subscriptions)."""

    def __init__(self, rows: IndexRows) -> None:
        self.rows = rows
        self._by_key: dict[str, list[Doc]] | None = None

    def of(self, key: str, fields: tuple[str, ...]) -> list[Doc]:
        if self._by_key is None:
            self._by_key = {}
            for name, kind in KINDS.items():
                names = ("p", *kind.fields)
                for row in getattr(self.rows, name):
                    self._by_key.setdefault(row[0], []).append(dict(zip(names, row,
                                                                        strict=True)))
        return self._by_key.get(key, [])

    def anchors(self) -> list[Anchor]:
        """The (parameter, code) of its tokens and (parameter, id) of its references."""
        out = [(r[0], r[2]) for r in self.rows.token if r[2] is not None]
        out += [(r[0], r[2]) for r in self.rows.reference if r[2] is not None]
        return out


def split(criteria: str) -> tuple[str, list[tuple[str, str]]]:
    """``Type?a=b&c=d`` -> (type, parameters)."""
    rtype, _, query = criteria.strip().partition("?")
    return rtype, parse_qsl(query, keep_blank_values=True)


def compile_criteria(criteria: str, limits: Limits | None = None) -> Predicate:
    """The predicate of ``criteria``; a 400 (invalid) naming what is not supported."""
    rtype, params = split(criteria)
    if not rtype or not is_supported(rtype) or "/" in rtype:
        raise invalid(f"Subscription.criteria: {rtype or '(empty)'} is not a resource type "
                      "this server serves", "Subscription.criteria")
    shaped = sorted({k for k, _ in params if k.split(":")[0] in _RESULT})
    if shaped:
        raise invalid(f"Subscription.criteria: {', '.join(shaped)} shape a page of results, "
                      "not what a notification is about", "Subscription.criteria")
    try:
        query = QueryParser(limits or Limits(), strict=True).parse(rtype, params)
    except FhirError as exc:
        raise invalid("Subscription.criteria: " + (exc.issues[0].diagnostics or "invalid"
                                                   if exc.issues else "invalid"),
                      "Subscription.criteria") from exc
    conditions: list[Condition] = []
    anchors: frozenset[Anchor] = frozenset()
    for term in query.terms:
        if not isinstance(term, Clause):
            raise invalid("Subscription.criteria: chained parameters and _has read other "
                          "resources; a subscription is matched on the written resource's "
                          "own values", "Subscription.criteria")
        kind = KINDS[term.param.kind]
        conds = tuple(kind.mongo(v, term.modifier) for v in term.values)
        conditions.append(Condition(term.param.key, kind.fields, conds,
                                    term.modifier == "not", term.missing,
                                    tuple(_compile(c) for c in conds)))
        found = _anchors(term)
        if found and (not anchors or len(found) < len(anchors)):
            anchors = found  # the most selective clause
    ranged = None if anchors else next(
        (r for c in conditions if (r := _range(c)) is not None), None)
    return Predicate(rtype, tuple(conditions), anchors, ranged)


def _range(condition: Condition) -> Range | None:
    """A necessary comparison of a one-value clause (``birthdate=lt1950``: some row's
    ``lo`` below the bound), so the bucket finds its candidates by bisection."""
    if condition.negated or condition.missing is not None or len(condition.conditions) != 1:
        return None
    for key, want in condition.conditions[0].items():
        if not key.startswith("$") and isinstance(want, dict) and len(want) == 1:
            op, bound = next(iter(want.items()))
            if op in _ORDER and isinstance(bound, int | float):
                return condition.key, key, op, bound
    return None


def _anchors(clause: Clause) -> frozenset[Anchor]:
    """The values one of which a resource must carry to match ``clause`` (empty: none
    such, e.g. a ``:text`` search, a URL reference, a date)."""
    # a reference's type modifier (``subject:Patient=``) keeps the anchor on the id
    if clause.missing is not None or not (clause.modifier is None or
                                          clause.modifier[:1].isupper()):
        return frozenset()
    out = set()
    for value in clause.values:
        if isinstance(value, TokenValue) and clause.param.kind == "token" and \
                value.code is not None and value.text is None:
            out.add((clause.param.key, value.code))
        elif isinstance(value, ReferenceValue) and value.rid and not value.url:
            out.add((clause.param.key, value.rid))
        else:
            return frozenset()
    return frozenset(out)


def _holds(condition: Condition, rows: Rows) -> bool:
    mine = rows.of(condition.key, condition.fields)
    if condition.missing is not None:
        return (not mine) == condition.missing
    hit = any(test(doc) for doc in mine for test in condition.tests)
    return not hit if condition.negated else hit


Test = Callable[[Doc], bool]
_ORDER = {"$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt, "$lte": operator.le}


def _compile(cond: Doc) -> Test:
    """``cond`` (the subset of MongoDB's query language the kinds compile to) as a test
    of one index entry."""
    parts: list[Test] = []
    for key, want in cond.items():
        if key in ("$or", "$and"):
            subs = tuple(_compile(c) for c in want)
            parts.append(_any(subs) if key == "$or" else _all(subs))
        elif isinstance(want, dict) and want and all(k.startswith("$") for k in want):
            parts += [_operator(key, op, arg) for op, arg in want.items()]
        else:
            parts.append(_equal(key, want))
    return parts[0] if len(parts) == 1 else _all(tuple(parts))


def _equal(key: str, want: Any) -> Test:
    return lambda d: bool(d.get(key) == want)


def _any(tests: tuple[Test, ...]) -> Test:
    return lambda d: any(f(d) for f in tests)


def _all(tests: tuple[Test, ...]) -> Test:
    return lambda d: all(f(d) for f in tests)


def _operator(key: str, op: str, arg: Any) -> Test:
    if op == "$exists":
        return lambda d: (key in d) == bool(arg)
    if op == "$regex":
        pattern = _regex(arg)
        return lambda d: isinstance(v := d.get(key), str) and pattern.search(v) is not None
    if op == "$in":
        return lambda d: d.get(key) in arg
    if op == "$ne":
        return lambda d: bool(d.get(key) != arg)
    if op not in _ORDER:
        raise ValueError(f"operator {op} is not evaluated in memory")
    compare = _ORDER[op]

    def ordered(d: Doc) -> bool:
        value = d.get(key)
        try:
            return value is not None and bool(compare(value, arg))
        except TypeError:
            return False
    return ordered


@cache
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


@dataclass
class Bucket:
    """The predicates on one type, by anchor: a write reads the lists of its own
    anchors and the unanchored list, nothing else."""

    anchored: dict[Anchor, list[Any]] = field(default_factory=dict)
    # (key, field, op) -> bounds ascending, and the values in the same order
    ranges: dict[tuple[str, str, str], tuple[list[Any], list[Any]]] = field(
        default_factory=dict)
    scan: list[Any] = field(default_factory=list)

    def add(self, predicate: Predicate, value: Any) -> None:
        if predicate.anchors:
            for anchor in predicate.anchors:
                self.anchored.setdefault(anchor, []).append(value)
        elif predicate.ranged is not None:
            key, name, op, bound = predicate.ranged
            bounds, values = self.ranges.setdefault((key, name, op), ([], []))
            at = bisect_right(bounds, bound)
            bounds.insert(at, bound)
            values.insert(at, value)
        else:
            self.scan.append(value)

    def candidates(self, rows: Rows) -> list[Any]:
        out = list(self.scan)
        for (key, name, op), (bounds, values) in self.ranges.items():
            found = [v for d in rows.of(key, ()) if (v := d.get(name)) is not None]
            if not found:
                continue
            if op in ("$lt", "$lte"):  # some row below the bound: the bounds above min
                low = min(found)
                out += values[(bisect_right if op == "$lt" else bisect_left)(bounds, low):]
            else:  # some row above the bound: the bounds below max
                high = max(found)
                out += values[:(bisect_left if op == "$gt" else bisect_right)(bounds, high)]
        if self.anchored:
            seen: set[int] = set()
            for anchor in rows.anchors():
                for value in self.anchored.get(anchor, ()):
                    if id(value) not in seen:
                        seen.add(id(value))
                        out.append(value)
        return out
