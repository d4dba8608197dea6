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
from collections import Counter
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
from fhir_server.workflow.search import STEPS

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


def indicators(server: FhirServer, req: FhirRequest) -> FhirResponse:
    """R-EVAL-1 / R-TLE-3 indicators as a Parameters resource. Every figure is a tally the
    store computes (a GROUP BY / an aggregation over the index), so a year of 100 000
    requests answers within a page's time (issue 30)."""
    scope = Scope(server, req)
    store = view(server)

    def count(query: SearchQuery) -> int:
        return store.search(query, count_only=True).total or 0

    out: list[dict[str, Any]] = [
        {"name": "period", "valuePeriod": {"start": scope.start, "end": scope.end}}]
    turnaround = [f"Task.tlm-turnaround-{step}" for step in STEPS]
    found = store.tally(scope.tasks(), ["Task.code", "Task.business-status", "Task.tlm-late",
                                        *turnaround])
    kinds = _by_code(found["Task.code"])
    totals = {kind: kinds[FULFILMENT[kind]] for kind in (TELEDIAGNOSTIC, TELEEXPERTISE)}
    out += [_int("telediagnostics", totals[TELEDIAGNOSTIC]),
            _int("teleexpertises", totals[TELEEXPERTISE])]
    everything = sum(totals.values())
    states = _by_code(found["Task.business-status"])
    out += [{"name": "state", "part": [{"name": "code", "valueCode": code},
                                       {"name": "display", "valueString": STATES[code].display},
                                       _int("count", states[code])]}
            for code in STATES if states.get(code)]
    for step, key in zip(STEPS, turnaround, strict=True):
        out.append({"name": "turnaround",
                    "part": [{"name": "step", "valueCode": step}, *_spread(found[key])]})
    refused_n = states["refusee"]
    refused = store.tally(scope.tasks(("business-status", "refusee")), ["Task.tlm-reason"])
    reasons = sorted(_by_code(refused["Task.tlm-reason"]).items(), key=lambda c: (-c[1], c[0]))
    out.append({"name": "refusals", "part": [
        _int("count", refused_n), {"name": "rate", "valueDecimal": _rate(refused_n, everything)},
        *({"name": "reason", "part": [{"name": "code", "valueCode": code}, _int("count", n),
                                      {"name": "rate", "valueDecimal": _rate(n, everything)}]}
          for code, n in reasons)]})
    out.append(_int("cancellations", states["annulee"]))
    out.append(_int("incidents", count(scope.tasks(("tlm-incident:missing", "false")))))
    late_flags = _by_code(found["Task.tlm-late"])
    late, reported = late_flags["true"], late_flags["true"] + late_flags["false"]
    out.append({"name": "late-reports", "part": [
        _int("count", late), _int("reported", reported),
        {"name": "rate", "valueDecimal": _rate(late, reported)}]})
    overdue = scope.parser.parse("Task", [("code", f"{TASK_SYSTEM}|{INFORMATION}"),
                                          ("status", "requested,in-progress"),
                                          ("tlm-due", f"lt{now()}")])
    out.append(_int("information-overdue", count(overdue)))
    out += _imagers(server, scope)
    if scope.series:
        out += _series(server, scope, scope.series)
    return FhirResponse(200, {}, resource={"resourceType": "Parameters", "parameter": out})


SERIES_KEYS = {"kind": "Task.code", "site": "Task.tlm-site", "modality": "Task.tlm-modality",
               "imager": "Task.owner"}


def _bucket(day: int, interval: str) -> str:
    """The first day (ISO date) of the ``interval`` holding UTC day number ``day``."""
    first = date(1970, 1, 1) + timedelta(days=day)
    if interval == "week":
        first -= timedelta(days=first.weekday())
    elif interval == "month":
        first = first.replace(day=1)
    return first.isoformat()


def _series(server: FhirServer, scope: Scope, interval: str) -> list[dict[str, Any]]:
    """Volumes over time (requests authored per interval) per kind, site, modality and
    imager — the console's plots (issue 30, R-EVAL-1); opt-in with ``series``."""
    found = view(server).tally(scope.tasks(), list(SERIES_KEYS.values()), by="Task.authored-on")
    out = []
    for dimension, key in SERIES_KEYS.items():
        counts: Counter[tuple[str, str]] = Counter()
        for day, first, second, n in found[key]:
            # token (system, code) -> code; reference (type, id) -> type/id
            label = second if param_kind(key) == "token" else f"{first}/{second}"
            if second:
                counts[(_bucket(day, interval), label)] += n
        out.append({"name": "series", "part": [
            {"name": "dimension", "valueCode": dimension},
            {"name": "interval", "valueCode": interval},
            *({"name": "point", "part": [{"name": "start", "valueDate": start},
                                         {"name": "key", "valueString": label},
                                         _int("count", n)]}
              for (start, label), n in sorted(counts.items()))]})
    return out


def _imagers(server: FhirServer, scope: Scope) -> list[dict[str, Any]]:
    """R-TLE-3: each imager's remote share of the reports they signed in the period."""
    store = view(server)
    assert server.workflow is not None
    threshold = server.workflow.settings.remote_share_warning

    def by_performer(query: SearchQuery) -> Counter[str]:
        key = "DiagnosticReport.performer"
        out: Counter[str] = Counter()
        for t, i, n in store.tally(query, [key])[key]:
            if t == "Practitioner" and i:
                out[f"{t}/{i}"] += n
        return out

    remote = by_performer(scope.reports(("_tag", f"{FLAG_SYSTEM}|teleimagerie")))
    total = by_performer(scope.reports())
    out = []
    for practitioner, n in sorted(total.items()):
        share = _rate(remote[practitioner], n)
        part: list[dict[str, Any]] = [
            {"name": "practitioner", "valueReference": {"reference": practitioner}},
            _int("remote", remote[practitioner]), _int("total", n),
            {"name": "share", "valueDecimal": share}]
        if share > threshold:
            part.append({"name": "warning", "valueString": (
                f"part de l'activité à distance {share:.0%} > {threshold:.0%} (R-TLE-3)")})
        out.append({"name": "imager", "part": part})
    return out


OPERATIONS: dict[tuple[str | None, str], Handler] = {(None, "indicators"): indicators}
