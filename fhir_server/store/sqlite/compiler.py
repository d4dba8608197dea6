"""Compile the search AST into SQL over the index tables (search.html semantics).

A compiler produces a plan (:class:`SqlPlan`: one ``WHERE`` over the resource table and
its ``WITH`` sub-selects); :mod:`.store` executes it. It reads nothing itself: the date
widths a date clause bounds its range scan with are given by the store, read once per
query that needs them. Each value's condition comes from its kind
(:mod:`fhir_server.search.kinds`); the guard (:class:`InCare`, ADR 0020) is compiled into
the same statement as uncorrelated sub-selects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from fhir_server.search.kinds import KINDS
from fhir_server.search.kinds.base import Sql
from fhir_server.search.query import (
    AllOf,
    AnyOf,
    Chain,
    Clause,
    Has,
    InCare,
    Not,
    Opened,
    PatientSet,
    Term,
)
from fhir_server.store.sqlite.records import tables_for


@dataclass(slots=True)
class SqlPlan:
    """What the store runs: ``{head}SELECT … FROM <resource> {alias} WHERE {where}``."""

    where: str
    args: list[Any]
    head: str  # the statement's WITH clause ("" when none)
    head_args: list[Any]


class SqlCompiler:
    """Compile the search AST into SQL over the index tables (search.html semantics)."""

    def __init__(self, widths: Callable[[], dict[str, int]]) -> None:
        self._n = 0
        self._widths = widths
        self._date_widths: dict[str, int] | None = None
        self._ctes: list[Sql] = []
        self._cte_names: dict[tuple[int, ...], str] = {}

    def plan(self, alias: str, rtype: str, terms: list[Term]) -> SqlPlan:
        """The plan of a search of ``rtype`` (rows aliased ``alias``)."""
        where, args = self.where(alias, rtype, terms)
        head, head_args = self.prefix()
        return SqlPlan(where, args, head, head_args)

    def date_width(self, key: str) -> int:
        """Widest stored interval of a date parameter, read once per query that needs it."""
        if self._date_widths is None:
            self._date_widths = self._widths()
        return self._date_widths.get(key, 0)

    def alias(self) -> str:
        self._n += 1
        return f"r{self._n}"

    def where(self, alias: str, rtype: str, terms: list[Term]) -> Sql:
        sql = [f"{alias}.type = ?", f"{alias}.deleted = 0"]
        args: list[Any] = [rtype]
        for term in terms:
            part, part_args = self.term(alias, rtype, term)
            sql.append(part)
            args += part_args
        return " AND ".join(sql), args

    def term(self, alias: str, rtype: str, term: Term) -> Sql:
        if isinstance(term, Clause):
            return self.clause(alias, rtype, term)
        if isinstance(term, AnyOf):
            if term.options and all(isinstance(t, Clause) and t.missing is None and
                                    t.modifier != "not" for t in term.options):
                # one indexed lookup per option, as one set (an OR of IN would scan)
                subs = [self.matching(rtype, t) for t in term.options
                        if isinstance(t, Clause)]
                return (f"{alias}.pk IN ({' UNION '.join(sql for sql, _ in subs)})",
                        [a for _, sub_args in subs for a in sub_args])
            parts = [self.term(alias, rtype, t) for t in term.options]
            return ("(" + " OR ".join(f"({sql})" for sql, _ in parts) + ")" if parts else "0",
                    [a for _, part_args in parts for a in part_args])
        if isinstance(term, AllOf):
            parts = [self.term(alias, rtype, t) for t in term.terms]
            return (" AND ".join(f"({sql})" for sql, _ in parts) if parts else "1",
                    [a for _, part_args in parts for a in part_args])
        if isinstance(term, Not):
            sql, args = self.term(alias, rtype, term.term)
            return f"NOT ({sql})", args
        if isinstance(term, InCare):
            return self.in_care(alias, rtype, term)
        if isinstance(term, Chain):
            ors, args = [], [term.param.key]
            for target, inner in zip(term.target_types, term.inner, strict=True):
                a2 = self.alias()
                cond, cargs = self.where(a2, target, [inner])
                ors.append(f"(x.rtype = ? AND x.rid IN (SELECT {a2}.id FROM "
                           f"{tables_for(target).resource} {a2} WHERE {cond}))")
                args += [target, *cargs]
            return (f"{alias}.pk IN (SELECT x.pk FROM {tables_for(rtype).index['reference']} x "
                    f"WHERE x.p = ? AND ({' OR '.join(ors)}))", args)
        assert isinstance(term, Has)
        a3 = self.alias()
        cond, cargs = self.where(a3, term.source_type, term.inner)
        source = tables_for(term.source_type)
        # uncorrelated (the type is bound, not read from the row): computed once
        return (f"{alias}.id IN (SELECT x.rid FROM {source.index['reference']} x WHERE x.p = ? "
                f"AND x.rtype = ? AND x.pk IN (SELECT {a3}.pk FROM "
                f"{source.resource} {a3} WHERE {cond}))", [term.ref.key, rtype, *cargs])

    def cte(self, key: tuple[int, ...], build: Callable[[], Sql], columns: str) -> str:
        """A named sub-select of the statement (``WITH``), built once however many times
        the guard names it (a Binary's guard names its targets' sets): flat SQL, each
        set computed once per statement (issue 27 item 6)."""
        if key not in self._cte_names:
            sql, args = build()
            name = f"g{len(self._ctes) + 1}"
            self._ctes.append((f"{name}({columns}) AS ({sql})", args))
            self._cte_names[key] = name
        return self._cte_names[key]

    def prefix(self) -> Sql:
        """The statement's ``WITH`` clause (to put before the SELECT using ``where``)."""
        if not self._ctes:
            return "", []
        return ("WITH " + ", ".join(sql for sql, _ in self._ctes) + " ",
                [a for _, args in self._ctes for a in args])

    def _patient_set(self, source: PatientSet) -> Sql:
        a = self.alias()
        tables = tables_for(source.source_type)
        cond, args = self.where(a, source.source_type, source.terms)
        if source.ref is None:
            return f"SELECT {a}.id FROM {tables.resource} {a} WHERE {cond}", args
        return (f"SELECT {a}x.rid FROM {tables.index['reference']} {a}x WHERE {a}x.p = ? "
                f"AND {a}x.rtype = 'Patient' AND {a}x.pk IN (SELECT {a}.pk FROM "
                f"{tables.resource} {a} WHERE {cond})", [source.ref.key, *args])

    def _opened(self, opened: Opened) -> Sql:
        """(patient, the first matching source's pk) for each patient a source names."""
        s = self.alias()
        source = tables_for(opened.source_type)
        cond, args = self.where(s, opened.source_type, opened.terms)
        return (f"SELECT {s}x.rid, MIN({s}.pk) FROM {source.index['reference']} {s}x JOIN "
                f"{source.resource} {s} ON {s}.pk = {s}x.pk WHERE {s}x.p = ? AND "
                f"{s}x.rtype = 'Patient' AND {cond} GROUP BY {s}x.rid",
                [opened.ref.key, *args])

    def in_care(self, alias: str, rtype: str, term: InCare) -> Sql:
        """The guard (R-SEC-2): the resource's patient is in a set, or was opened by a
        resource created no later than it (``pk`` is creation order). The sets are
        uncorrelated sub-selects (``WITH``), computed once per statement."""
        ors: list[str] = []
        args: list[Any] = []
        names = [self.cte((id(source),), partial(self._patient_set, source), "id")
                 for source in term.sets]
        parts = [f"SELECT id FROM {name}" for name in names]
        if term.ids:
            parts.append("VALUES " + ", ".join(["(?)"] * len(term.ids)))
            args += list(term.ids)
        index = tables_for(rtype).index["reference"]
        union = " UNION ".join(parts)
        if union and term.param is None:
            ors.append(f"{alias}.id IN ({union})")
        elif union and term.param is not None:
            y = self.alias()
            ors.append(f"{alias}.pk IN (SELECT {y}.pk FROM {index} {y} WHERE {y}.p = ? AND "
                       f"{y}.rtype = 'Patient' AND {y}.rid IN ({union}))")
            args = [term.param.key, *args]
        for opened in term.since if not tables_for(rtype).append_only else []:
            name = self.cte((id(opened),), partial(self._opened, opened), "id, pk")
            if term.param is None:
                ors.append(f"EXISTS (SELECT 1 FROM {name} WHERE {name}.id = {alias}.id AND "
                           f"{name}.pk <= {alias}.pk)")
                continue
            y = self.alias()
            ors.append(f"EXISTS (SELECT 1 FROM {index} {y} CROSS JOIN {name} WHERE "
                       f"{y}.pk = {alias}.pk AND {y}.p = ? AND {y}.rtype = 'Patient' AND "
                       f"{name}.id = {y}.rid AND {name}.pk <= {alias}.pk)")
            args.append(term.param.key)
        return ("(" + " OR ".join(ors) + ")" if ors else "0"), args

    def clause(self, alias: str, rtype: str, clause: Clause) -> Sql:
        table = tables_for(rtype).index[clause.param.kind]
        if clause.missing is not None:
            op = "NOT IN" if clause.missing else "IN"
            return f"{alias}.pk {op} (SELECT pk FROM {table} WHERE p = ?)", [clause.param.key]
        op = "NOT IN" if clause.modifier == "not" else "IN"
        sub, args = self.matching(rtype, clause)
        return f"{alias}.pk {op} ({sub})", args

    def matching(self, rtype: str, clause: Clause) -> Sql:
        """The pks whose index rows match ``clause``'s values (``:not`` negated by the
        caller; ``:missing`` is not a row match)."""
        key = clause.param.key
        kind = KINDS[clause.param.kind]
        ors, args = [], []
        for value in clause.values:
            cond, cargs = kind.sql(value, clause.modifier, key, self)
            ors.append(f"({cond})")
            args += cargs
        return (f"SELECT pk FROM {tables_for(rtype).index[kind.name]} WHERE p = ? AND "
                f"({' OR '.join(ors)})", [key, *args])


def keyset(columns: list[tuple[str, bool]], values: list[Any], after: bool) -> Sql:
    """Rows strictly after (or before) ``values`` in the order ``columns`` (NULL lowest)."""
    ors: list[str] = []
    args: list[Any] = []
    for i, (col, desc) in enumerate(columns):
        conds: list[str] = []
        cargs: list[Any] = []
        for pcol, _ in columns[:i]:
            pval = values[columns.index((pcol, _))]
            if pval is None:
                conds.append(f"{pcol} IS NULL")
            else:
                conds.append(f"{pcol} = ?")
                cargs.append(pval)
        val = values[i]
        greater = (not desc) == after
        if greater:
            conds.append(f"{col} IS NOT NULL" if val is None else f"{col} > ?")
        else:
            conds.append("0" if val is None else f"({col} < ? OR {col} IS NULL)")
        if val is not None:
            cargs.append(val)
        ors.append("(" + " AND ".join(conds) + ")")
        args += cargs
    return "(" + " OR ".join(ors) + ")", args


