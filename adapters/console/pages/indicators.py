"""``/console/indicateurs``: the activity indicators (R-EVAL-1, R-TLE-3, issue 30) —
volumes over time per kind, site, modality and imager, turnaround per step (median, p90),
refusals by reason, late reports, incidents, a-posteriori information overdue, each
imager's remote share against the warning line; period, site and interval filters; every
figure as CSV.

Everything comes from one ``GET [base]/$indicators?series=…`` through the core as the
signed-in user (:class:`adapters.console.fhir.Fhir`): the operation's roles and its
narrowing (an imager sees their own figures only) are the page's; no second business
path. Names of sites and imagers come from the directory, read the same way."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from adapters.console.web import Nav, User, console, requires
from fhir_server.workflow.indicators import ALLOWED

router = APIRouter()
Allowed = Annotated[User, Depends(requires(*ALLOWED))]
NAV = [Nav("Indicateurs", "/console/indicateurs", ALLOWED, order=40)]
INTERVALS = {"month": "mois", "week": "semaine", "day": "jour"}
DIMENSIONS = {"kind": "type d'acte", "site": "site", "modality": "modalité",
              "imager": "radiologue"}
STEPS = {"validation": "validation", "examen": "examen", "interpretation": "interprétation",
         "total": "total"}
PLOTTED = 8  # lines per volume plot; the others are summed as "autres" (the CSV has all)


@dataclass
class Figure:
    """One figure: a table (its CSV) and how it is drawn (``kind``: ``time`` lines over
    the buckets, ``bars`` per label, ``none``)."""

    name: str
    title: str
    header: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    kind: str = "none"
    plot: dict[str, Any] = field(default_factory=dict)


def _value(part: dict[str, Any]) -> Any:
    return next((v for k, v in part.items() if k.startswith("value")), None)


def _parts(parameter: dict[str, Any]) -> dict[str, Any]:
    return {p["name"]: _value(p) for p in parameter.get("part", []) if _value(p) is not None}


def _minutes(quantity: Any) -> float | None:
    return quantity.get("value") if isinstance(quantity, dict) else None


def figures(answer: dict[str, Any], labels: dict[str, str],
            threshold: float) -> list[Figure]:
    """The page's figures from the ``$indicators`` Parameters (``labels``: display names
    of the references)."""
    params = answer.get("parameter") or []
    value = {p["name"]: _value(p) for p in params if _value(p) is not None}
    out: list[Figure] = []
    summary = Figure("synthese", "Synthèse de la période", ["indicateur", "valeur"], [
        ["télédiagnostics", value.get("telediagnostics", 0)],
        ["téléexpertises", value.get("teleexpertises", 0)],
        ["annulations", value.get("cancellations", 0)],
        ["incidents", value.get("incidents", 0)],
        ["information a posteriori en retard", value.get("information-overdue", 0)]])
    out.append(summary)
    for p in params:
        if p["name"] != "series":
            continue
        parts = p.get("part", [])
        dimension = next(_value(x) for x in parts if x["name"] == "dimension")
        counts: dict[str, dict[str, int]] = defaultdict(dict)
        for point in (x for x in parts if x["name"] == "point"):
            got = _parts(point)
            counts[got["key"]][got["start"]] = got["count"]
        starts = sorted({s for by in counts.values() for s in by})
        keys = sorted(counts, key=lambda k: -sum(counts[k].values()))
        named = [labels.get(k, k) for k in keys]
        rows: list[list[Any]] = [[s, *(counts[k].get(s, 0) for k in keys)] for s in starts]
        shown = keys[:PLOTTED]
        lines = [{"label": labels.get(k, k), "values": [counts[k].get(s, 0) for s in starts]}
                 for k in shown]
        if len(keys) > PLOTTED:
            lines.append({"label": "autres", "values": [
                sum(counts[k].get(s, 0) for k in keys[PLOTTED:]) for s in starts]})
        out.append(Figure(f"volumes-{dimension}",
                          f"Demandes par {DIMENSIONS.get(dimension, dimension)}",
                          ["début", *named], rows, "time", {"x": starts, "lines": lines}))
    turnaround = [_parts(p) for p in params if p["name"] == "turnaround"]
    rows = [[STEPS.get(t["step"], t["step"]), t.get("count", 0), _minutes(t.get("median")),
             _minutes(t.get("p90"))] for t in turnaround]
    out.append(Figure("delais", "Délais par étape (minutes)",
                      ["étape", "nombre", "médiane", "p90"], rows, "bars", {
                          "x": [r[0] for r in rows],
                          "lines": [{"label": "médiane", "values": [r[2] for r in rows]},
                                    {"label": "p90", "values": [r[3] for r in rows]}]}))
    refusals: dict[str, Any] = next((p for p in params if p["name"] == "refusals"),
                                    {"part": []})
    reasons = [_parts(r) for r in refusals.get("part", []) if r["name"] == "reason"]
    total: dict[str, Any] = _parts(refusals)
    rows = [[r["code"], r["count"], r["rate"]] for r in reasons]
    out.append(Figure(
        "refus", f"Refus par motif ({total.get('count', 0)} refus, taux "
        f"{100 * total.get('rate', 0):.1f} %)", ["motif", "nombre", "taux"], rows, "bars",
        {"x": [r[0] for r in rows], "percent": True,
         "lines": [{"label": "taux de refus (%)", "values": [100 * float(r[2]) for r in rows]}]}))
    states = [_parts(p) for p in params if p["name"] == "state"]
    out.append(Figure("etats", "Demandes par état", ["état", "libellé", "nombre"],
                      [[s["code"], s["display"], s["count"]] for s in states]))
    late = _parts(next((p for p in params if p["name"] == "late-reports"), {"part": []}))
    out.append(Figure("retards", "Comptes rendus en retard", ["en retard", "rendus", "taux"],
                      [[late.get("count", 0), late.get("reported", 0), late.get("rate", 0)]]))
    imagers = [_parts(p) for p in params if p["name"] == "imager"]
    rows = [[labels.get(i["practitioner"]["reference"], i["practitioner"]["reference"]),
             i["remote"], i["total"], i["share"], "oui" if "warning" in i else "non"]
            for i in imagers]
    out.append(Figure(
        "part-distance", f"Part de l'activité à distance par radiologue (seuil "
        f"{threshold:.0%}, R-TLE-3)", ["radiologue", "à distance", "total", "part",
                                        "alerte"], rows, "bars",
        {"x": [r[0] for r in rows], "percent": True,
         "lines": [{"label": "part à distance (%)", "values": [100 * float(r[3]) for r in rows]},
                   {"label": f"seuil {threshold:.0%}", "values": [100 * threshold] * len(rows),
                    "line": True}]}))
    return out


def _query(request: Request) -> dict[str, str]:
    """The filters of the page (defaults: the operation's period, monthly series)."""
    q = request.query_params
    out = {name: q.get(name, "").strip() for name in ("start", "end", "site")}
    interval = q.get("interval", "")
    out["interval"] = interval if interval in INTERVALS else "month"
    return {k: v for k, v in out.items() if v}


def _ask(user: User, query: dict[str, str]) -> Any:
    params = [(k, v) for k, v in query.items() if k in ("start", "end", "site")]
    return user.fhir.call("GET", "$indicators", [*params, ("series", query["interval"])])


def _labels(user: User, answer: dict[str, Any]) -> dict[str, str]:
    """Display names of the sites and imagers the answer names, read through the core
    (a directory the user may not read leaves the references as they are)."""
    refs: dict[str, set[str]] = defaultdict(set)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("reference") if "reference" in node else None
            if isinstance(ref, str) and "/" in ref:
                refs[ref.split("/")[0]].add(ref.split("/")[1])
            key = node.get("valueString") if node.get("name") == "key" else None
            if isinstance(key, str) and key.split("/")[0] in ("Organization", "Practitioner"):
                refs[key.split("/")[0]].add(key.split("/", 1)[1])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(answer)
    out: dict[str, str] = {}
    for rtype in ("Organization", "Practitioner"):
        ids = sorted(refs.get(rtype, ()))[:200]
        if not ids:
            continue
        found = user.fhir.search(rtype, [("_id", ",".join(ids)), ("_count", "200")])
        for res in found.entries(rtype) if found.ok else []:
            out[f"{rtype}/{res['id']}"] = _name(res) or f"{rtype}/{res['id']}"
    return out


def _name(res: dict[str, Any]) -> str:
    if isinstance(res.get("name"), str):
        return str(res["name"])
    for name in res.get("name") or []:
        text = name.get("text") or " ".join([*name.get("given", []), name.get("family", "")])
        if text.strip():
            return str(text).strip()
    return ""


def _sites(user: User) -> list[tuple[str, str]]:
    found = user.fhir.search("Organization", [("_count", "200"), ("_sort", "name")])
    return [(f"Organization/{r['id']}", _name(r) or r["id"])
            for r in (found.entries("Organization") if found.ok else [])]


def _threshold(request: Request) -> float:
    workflow = console(request).core.workflow
    return workflow.settings.remote_share_warning if workflow is not None else 0.2


@router.get("/indicateurs", name="indicators")
def page(request: Request, user: Allowed) -> Response:
    query = _query(request)
    answer = _ask(user, query)
    here = console(request)
    if not answer.ok:  # the core's refusal, in its words: nothing of the figures
        return here.render(request, "indicators.html", user, status=answer.status,
                           title="Indicateurs", error=answer.message, figures=[],
                           query=query, sites=[], intervals=INTERVALS, period={},
                           export="")
    found = figures(answer.resource, _labels(user, answer.resource), _threshold(request))
    period: dict[str, Any] = next((p["valuePeriod"] for p in answer.resource["parameter"]
                   if p["name"] == "period"), {})
    export = "&".join(f"{k}={v}" for k, v in query.items())
    return here.render(request, "indicators.html", user, title="Indicateurs", error="",
                       figures=found, query=query, sites=_sites(user), intervals=INTERVALS,
                       period=period, export=export,
                       plots={f.name: {"kind": f.kind, **f.plot} for f in found
                              if f.kind != "none"})


@router.get("/indicateurs/export.csv", name="indicators-csv")
def export(request: Request, figure: str,
           user: Allowed) -> Response:
    """One figure as CSV (UTF-8, comma separated, a header line)."""
    query = _query(request)
    answer = _ask(user, query)
    if not answer.ok:
        return Response(answer.message, status_code=answer.status,
                        media_type="text/plain; charset=utf-8")
    found = {f.name: f for f in figures(answer.resource, _labels(user, answer.resource),
                                        _threshold(request))}
    if figure not in found:
        return Response(f"figure inconnue : {figure}", status_code=404,
                        media_type="text/plain; charset=utf-8")
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\r\n")
    writer.writerow(found[figure].header)
    writer.writerows(found[figure].rows)
    return Response(text.getvalue(), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="indicateurs-{figure}.csv"',
        "Cache-Control": "no-store"})
