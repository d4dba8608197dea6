"""Search parameters the workflow adds on Task, so indicators and work lists are indexed
queries (R-EVAL-1, R-CONS-3, R-VAL-5). Published in the CapabilityStatement like the
standard ones."""

from __future__ import annotations

from typing import Any

from fhir_server.core.canonical import url
from fhir_server.search.registry import register_missing
from fhir_server.store.base import Column, Summary, register_summary
from fhir_server.workflow.machine import EXT_INCIDENT, EXT_LATE, EXT_TURNAROUND, FLAG_SYSTEM

STEPS = ("validation", "examen", "interpretation", "total")


def _row(name: str, kind: str, expression: str, targets: tuple[str, ...] = ()
         ) -> dict[str, Any]:
    return {"type": "Task", "name": name, "kind": kind, "targets": list(targets),
            "url": url("SearchParameter", f"Task-{name}"),
            "paths": [{"expression": expression}]}


ROWS = [
    _row("tlm-due", "date", "Task.restriction.period.end"),
    _row("tlm-late", "token", f"Task.extension.where(url='{EXT_LATE}').value"),
    _row("tlm-reason", "token", "Task.statusReason"),
    _row("tlm-incident", "string", f"Task.extension.where(url='{EXT_INCIDENT}').value"),
    _row("tlm-modality", "token", "Task.input.where(type.coding.code='modalite').value"),
    _row("tlm-site", "reference", "Task.input.where(type.coding.code='site').value",
         ("Organization",)),
    *(_row(f"tlm-turnaround-{step}", "quantity",
           f"Task.extension.where(url='{EXT_TURNAROUND}').extension.where(url='{step}').value")
      for step in STEPS),
]


# The indicators' summary rows (issue 30, R-EVAL-1): one per request Task, one per
# performer of a report, kept by the stores in the write unit (store.base.Summary).
REQUESTS = Summary("tlm-requests", "Task", "Task.authored-on", (
    Column("code", "Task.code"), Column("state", "Task.business-status"),
    Column("site", "Task.tlm-site", (1, 2)), Column("modality", "Task.tlm-modality"),
    Column("owner", "Task.owner", (1, 2)), Column("reason", "Task.tlm-reason"),
    Column("late", "Task.tlm-late"), Column("incident", "Task.tlm-incident", present=True),
    *(Column(f"turnaround-{step}", f"Task.tlm-turnaround-{step}", (1,)) for step in STEPS)))
REPORTS = Summary("tlm-reports", "DiagnosticReport", "DiagnosticReport.date", (
    Column("performer", "DiagnosticReport.performer", (1, 2)),
    Column("status", "DiagnosticReport.status"),
    Column("remote", "DiagnosticReport._tag", equals=(FLAG_SYSTEM, "teleimagerie"))),
    each="performer")


def register_all() -> None:
    register_missing(ROWS)
    register_summary(REQUESTS)
    register_summary(REPORTS)
