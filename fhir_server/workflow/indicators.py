"""``GET [base]/$indicators`` — activity indicators from the server's own data (R-EVAL-1,
R-TLE-3).

Every figure is a count or a tally of index values (:meth:`Store.tally`, a GROUP BY in
SQLite, an aggregation in MongoDB) on the request Tasks (their custom search parameters,
:mod:`fhir_server.workflow.search`) and on DiagnosticReports: the stores answer from
their indexes, no resource body is loaded. Filters: ``start`` / ``end`` (dates, default:
the current calendar year), ``site`` (Organization), ``imager`` (Practitioner),
``modality`` (DICOM code). ``series`` (day | week | month) adds the volumes over time
per kind, site, modality and imager (the console's plots, issue 30).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from fhir_server.core.errors import ErrorKind, FhirError, invalid
from fhir_server.core.model import FhirRequest, FhirResponse
from fhir_server.search.query import QueryParser, SearchQuery
from fhir_server.search.registry import param_kind
from fhir_server.workflow.machine import (
    FLAG_SYSTEM,
    FULFILMENT,
    INFORMATION,
    STATES,
    TASK_SYSTEM,
    TELEDIAGNOSTIC,
    TELEEXPERTISE,
)
from fhir_server.workflow.records import now, view
from fhir_server.workflow.search import REPORTS, REQUESTS, STEPS

if TYPE_CHECKING:
    from fhir_server.server.dispatch import FhirServer, Handler

ALLOWED = frozenset({"admin", "auditor", "ris", "remote-imager"})
UCUM = "http://unitsofmeasure.org"


def _minutes(value: float) -> dict[str, Any]:
    return {"value": round(value, 1), "unit": "min", "system": UCUM, "code": "min"}


def _int(name: str, value: int) -> dict[str, Any]:
    return {"name": name, "valueInteger": value}


def _rate(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (p90: the smallest value ≥ 90 % of them)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


class Scope:
    """The filters, turned into search criteria on Tasks and on reports."""

    def __init__(self, server: FhirServer, req: FhirRequest) -> None:
        year = now()[:4]
        self.start = req.param("start") or f"{year}-01-01"
        self.end = req.param("end") or f"{int(year) + 1}-01-01"
        for name, value in (("start", self.start), ("end", self.end)):
            if len(value) < 4 or not value[:4].isdigit():
                raise invalid(f"{name} must be a date (YYYY-MM-DD), got {value!r}",
                              f"Parameters.parameter[{name}]")
        self.site = req.param("site")
        self.imager = req.param("imager")
        self.modality = req.param("modality")
        self.series = req.param("series")
        if self.series not in (None, "day", "week", "month"):
            raise invalid(f"series must be day, week or month, got {self.series!r}",
                          "Parameters.parameter[series]")
        principal = req.context.principal
        if principal is not None:
            roles = set(principal.roles)
            if not roles & ALLOWED:
                raise FhirError(ErrorKind.FORBIDDEN, "$indicators is for the roles "
                                f"{', '.join(sorted(ALLOWED))} (R-EVAL-1)")
            if roles & ALLOWED == {"remote-imager"}:
                mine = sorted(r for r in server.store.access.parties()  # type: ignore[attr-defined]
                              if r.startswith("Practitioner/"))
                if not mine or (self.imager and self.imager not in mine):
                    raise FhirError(ErrorKind.FORBIDDEN, "an imager sees their own indicators "
                                    "only (imager=their Practitioner)")
                self.imager = mine[0]
        self.parser = QueryParser(server.limits, strict=True)

    def tasks(self, *extra: tuple[str, str]) -> SearchQuery:
        criteria = [*extra, ("code", ",".join(f"{TASK_SYSTEM}|{c}" for c in FULFILMENT.values())),
                    ("authored-on", f"ge{self.start}"), ("authored-on", f"lt{self.end}")]
        if self.site:
            criteria.append(("tlm-site", self.site))
        if self.imager:
            criteria.append(("owner", self.imager))
        if self.modality:
            criteria.append(("tlm-modality", self.modality))
        return self.parser.parse("Task", criteria)

    def reports(self, *extra: tuple[str, str]) -> SearchQuery:
        criteria = [("date", f"ge{self.start}"), ("date", f"lt{self.end}"),
                    ("status", "final,amended,corrected,appended")]
        if self.imager:
            criteria.append(("performer", self.imager))
        return self.parser.parse("DiagnosticReport", [*criteria, *extra])


def _by_code(rows: list[tuple[Any, ...]]) -> Counter[str]:
    """Token tallies (system, code, n) summed by code."""
    out: Counter[str] = Counter()
    for _, code, n in rows:
        if code:
            out[code] += n
    return out


def _nth(histogram: list[tuple[float, int]], rank: int) -> float:
    """The ``rank``-th (0-based) value of the sorted multiset ``(value, how many)``."""
    seen = 0
    for value, n in histogram:
        seen += n
        if rank < seen:
            return value
    raise IndexError(rank)


def _spread(rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """Count, median and nearest-rank p90 of a quantity tally ``(value, n)`` — the same
    figures as :func:`statistics.median` and :func:`percentile` on the values listed."""
    histogram = sorted((value, n) for value, n in rows if value is not None)
    total = sum(n for _, n in histogram)
    part: list[dict[str, Any]] = [_int("count", total)]
    if total:
        middle = total // 2
        median = (_nth(histogram, middle) if total % 2 else
                  (_nth(histogram, middle - 1) + _nth(histogram, middle)) / 2)
        p90 = _nth(histogram, max(0, math.ceil(0.9 * total) - 1))
        part += [{"name": "median", "valueQuantity": _minutes(median)},
                 {"name": "p90", "valueQuantity": _minutes(p90)}]
    return part


@dataclass
class Facts:
    """What the figures are made of, from the summary rows or from the index."""

    kinds: Counter[str] = field(default_factory=Counter)  # fulfilment code -> requests
    states: Counter[str] = field(default_factory=Counter)
    turnaround: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    reasons: Counter[str] = field(default_factory=Counter)  # of the refused requests
    incidents: int = 0
    late: Counter[str] = field(default_factory=Counter)  # "true" / "false"
    # dimension -> (UTC day, label, requests)
    series: dict[str, list[tuple[int, str, int]]] = field(default_factory=dict)
    remote: Counter[str] = field(default_factory=Counter)  # Practitioner -> reports
    total: Counter[str] = field(default_factory=Counter)


DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _day(value: str) -> int:
    return (date.fromisoformat(value) - date(1970, 1, 1)).days


def _reference(value: str | None, rtype: str) -> str | None:
    """A filter's reference as the summaries keep it (Type/id); None when it is another
    form (a URL, an identifier): the index answers those."""
    if value is None:
        return None
    if "/" not in value:
        return f"{rtype}/{value}"
    return value if value.startswith(f"{rtype}/") and value.count("/") == 1 else None


def _from_summaries(server: FhirServer, scope: Scope) -> Facts | None:
    """The figures from the summary rows (:data:`fhir_server.workflow.search.REQUESTS`,
    ``REPORTS``): one pass over a narrow row per request, no search match. None when
    the filters are not whole days and plain values (the index answers those)."""
    if not (DAY.match(scope.start) and DAY.match(scope.end)) or \
            (scope.modality and ("|" in scope.modality or "," in scope.modality)):
        return None
    site, imager = _reference(scope.site, "Organization"), _reference(scope.imager,
                                                                      "Practitioner")
    if (scope.site and site is None) or (scope.imager and imager is None):
        return None
    store = view(server)
    days = (_day(scope.start), _day(scope.end))
    where: list[tuple[str, Any]] = [("code", list(FULFILMENT.values()))]
    where += [(name, value) for name, value in (("site", site), ("owner", imager),
                                                 ("modality", scope.modality)) if value]
    steps = [f"turnaround-{step}" for step in STEPS]
    dims = list(SERIES_COLUMNS.values()) if scope.series else []
    rows = store.summary_rows(REQUESTS.name, days, where,
                              ["code", "state", "reason", "late", "incident", *steps,
                               *(["day", *dims] if dims else [])])
    if rows is None:  # a narrowed view: the guard's terms need the index
        return None
    facts = _requests(rows, dims)
    where = [("status", list(SIGNED))] + ([("performer", imager)] if imager else [])
    rows = store.summarize(REPORTS.name, days, where, ["performer", "remote"]) or []
    for performer, remote, n in rows:
        if performer and performer.startswith("Practitioner/"):
            facts.total[performer] += n
            facts.remote[performer] += n if remote else 0
    return facts


def _requests(rows: list[tuple[Any, ...]], dims: list[str]) -> Facts:
    """The request figures in one pass over the summary rows (code, state, reason, late,
    incident, the turnaround per step, then with ``dims`` the day and those columns)."""
    facts = Facts()
    histograms: list[Counter[float]] = [Counter() for _ in STEPS]
    series: list[Counter[tuple[int, str]]] = [Counter() for _ in dims]
    width = len(STEPS)
    for row in rows:
        code, state, reason, late, incident = row[:5]
        facts.kinds[code] += 1
        if state:
            facts.states[state] += 1
            if reason and state == "refusee":
                facts.reasons[reason] += 1
        if late:
            facts.late[late] += 1
        if incident:
            facts.incidents += 1
        for histogram, value in zip(histograms, row[5:5 + width], strict=True):
            if value is not None:
                histogram[value] += 1
        if dims:
            day = row[5 + width]
            for counts, label in zip(series, row[6 + width:], strict=True):
                if label:
                    counts[(day, label)] += 1
    facts.turnaround = {step: list(h.items()) for step, h in zip(STEPS, histograms,
                                                                 strict=True)}
    if dims:
        facts.series = {dimension: [(d, label, n) for (d, label), n in counts.items()]
                        for dimension, counts in zip(SERIES_COLUMNS, series, strict=True)}
    return facts


def _from_index(server: FhirServer, scope: Scope) -> Facts:
    """The figures from the index (:meth:`Store.tally` over the search match)."""
    store = view(server)
    turnaround = [f"Task.tlm-turnaround-{step}" for step in STEPS]
    found = store.tally(scope.tasks(), ["Task.code", "Task.business-status", "Task.tlm-late",
                                        *turnaround])
    facts = Facts(kinds=_by_code(found["Task.code"]),
                  states=_by_code(found["Task.business-status"]),
                  late=_by_code(found["Task.tlm-late"]))
    for step, key in zip(STEPS, turnaround, strict=True):
        facts.turnaround[step] = [(v, n) for v, n in found[key] if v is not None]
    refused = store.tally(scope.tasks(("business-status", "refusee")), ["Task.tlm-reason"])
    facts.reasons = _by_code(refused["Task.tlm-reason"])
    facts.incidents = store.search(scope.tasks(("tlm-incident:missing", "false")),
                                   count_only=True).total or 0
    if scope.series:
        keys = {dimension: f"Task.{name}" for dimension, name in (
            ("kind", "code"), ("site", "tlm-site"), ("modality", "tlm-modality"),
            ("imager", "owner"))}
        rows = store.tally(scope.tasks(), list(keys.values()), by="Task.authored-on")
        for dimension, key in keys.items():
            # token (system, code) -> code; reference (type, id) -> type/id
            facts.series[dimension] = [
                (day, second if param_kind(key) == "token" else f"{first}/{second}", n)
                for day, first, second, n in rows[key] if second]
    facts.remote, facts.total = _performers(server, scope)
    return facts


def _performers(server: FhirServer, scope: Scope) -> tuple[Counter[str], Counter[str]]:
    """R-TLE-3: per Practitioner, the remote reports and all reports signed in the
    period (from the index); with the imager filter, that imager's only."""
    store = view(server)

    def by_performer(query: SearchQuery) -> Counter[str]:
        key = "DiagnosticReport.performer"
        out: Counter[str] = Counter()
        for t, i, n in store.tally(query, [key])[key]:
            if t == "Practitioner" and i:
                out[f"{t}/{i}"] += n
        return out

    remote = by_performer(scope.reports(("_tag", f"{FLAG_SYSTEM}|teleimagerie")))
    total = by_performer(scope.reports())
    if scope.imager:  # the imager's own share: not their co-signers' (R-TLE-3)
        mine = _reference(scope.imager, "Practitioner") or scope.imager
        remote, total = (Counter({k: v for k, v in c.items() if k == mine})
                         for c in (remote, total))
    return remote, total


def indicators(server: FhirServer, req: FhirRequest) -> FhirResponse:
    """R-EVAL-1 / R-TLE-3 indicators as a Parameters resource: counted from the summary
    rows the stores keep per request and per report, so a year of 100 000 requests
    answers within a page's time (issue 30); from the index when the filters need it."""
    scope = Scope(server, req)
    facts = _from_summaries(server, scope) or _from_index(server, scope)
    out: list[dict[str, Any]] = [
        {"name": "period", "valuePeriod": {"start": scope.start, "end": scope.end}}]
    totals = {kind: facts.kinds[FULFILMENT[kind]] for kind in (TELEDIAGNOSTIC, TELEEXPERTISE)}
    out += [_int("telediagnostics", totals[TELEDIAGNOSTIC]),
            _int("teleexpertises", totals[TELEEXPERTISE])]
    everything = sum(totals.values())
    states = facts.states
    out += [{"name": "state", "part": [{"name": "code", "valueCode": code},
                                       {"name": "display", "valueString": STATES[code].display},
                                       _int("count", states[code])]}
            for code in STATES if states.get(code)]
    for step in STEPS:
        out.append({"name": "turnaround", "part": [{"name": "step", "valueCode": step},
                                                   *_spread(facts.turnaround[step])]})
    refused_n = states["refusee"]
    reasons = sorted(facts.reasons.items(), key=lambda c: (-c[1], c[0]))
    out.append({"name": "refusals", "part": [
        _int("count", refused_n), {"name": "rate", "valueDecimal": _rate(refused_n, everything)},
        *({"name": "reason", "part": [{"name": "code", "valueCode": code}, _int("count", n),
                                      {"name": "rate", "valueDecimal": _rate(n, everything)}]}
          for code, n in reasons)]})
    out.append(_int("cancellations", states["annulee"]))
    out.append(_int("incidents", facts.incidents))
    late, reported = facts.late["true"], facts.late["true"] + facts.late["false"]
    out.append({"name": "late-reports", "part": [
        _int("count", late), _int("reported", reported),
        {"name": "rate", "valueDecimal": _rate(late, reported)}]})
    overdue = scope.parser.parse("Task", [("code", f"{TASK_SYSTEM}|{INFORMATION}"),
                                          ("status", "requested,in-progress"),
                                          ("tlm-due", f"lt{now()}")])
    out.append(_int("information-overdue",
                    view(server).search(overdue, count_only=True).total or 0))
    out += _imagers(server, facts)
    if scope.series:
        out += _series(facts, scope.series)
    return FhirResponse(200, {}, resource={"resourceType": "Parameters", "parameter": out})


SIGNED = ("final", "amended", "corrected", "appended")
SERIES_COLUMNS = {"kind": "code", "site": "site", "modality": "modality", "imager": "owner"}


def _bucket(day: int, interval: str) -> str:
    """The first day (ISO date) of the ``interval`` holding UTC day number ``day``."""
    first = date(1970, 1, 1) + timedelta(days=day)
    if interval == "week":
        first -= timedelta(days=first.weekday())
    elif interval == "month":
        first = first.replace(day=1)
    return first.isoformat()


def _series(facts: Facts, interval: str) -> list[dict[str, Any]]:
    """Volumes over time (requests authored per interval) per kind, site, modality and
    imager — the console's plots (issue 30, R-EVAL-1); opt-in with ``series``."""
    out = []
    for dimension in SERIES_COLUMNS:
        counts: Counter[tuple[str, str]] = Counter()
        for day, label, n in facts.series.get(dimension, []):
            counts[(_bucket(day, interval), label)] += n
        out.append({"name": "series", "part": [
            {"name": "dimension", "valueCode": dimension},
            {"name": "interval", "valueCode": interval},
            *({"name": "point", "part": [{"name": "start", "valueDate": start},
                                         {"name": "key", "valueString": label},
                                         _int("count", n)]}
              for (start, label), n in sorted(counts.items()))]})
    return out


def _imagers(server: FhirServer, facts: Facts) -> list[dict[str, Any]]:
    """R-TLE-3: each imager's remote share of the reports they signed in the period."""
    assert server.workflow is not None
    threshold = server.workflow.settings.remote_share_warning
    out = []
    for practitioner, n in sorted(facts.total.items()):
        share = _rate(facts.remote[practitioner], n)
        part: list[dict[str, Any]] = [
            {"name": "practitioner", "valueReference": {"reference": practitioner}},
            _int("remote", facts.remote[practitioner]), _int("total", n),
            {"name": "share", "valueDecimal": share}]
        if share > threshold:
            part.append({"name": "warning", "valueString": (
                f"part de l'activité à distance {share:.0%} > {threshold:.0%} (R-TLE-3)")})
        out.append({"name": "imager", "part": part})
    return out


OPERATIONS: dict[tuple[str | None, str], Handler] = {(None, "indicators"): indicators}
