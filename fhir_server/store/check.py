"""``teleimagerie store check [--type TYPE…] [--json]``: which stored resources would
today's validation refuse? (issue 25, item 4)

An operator upgrading to a release that validates more strictly scans what is stored:
every current version of every type we serve, through the store protocol (both
backends), is put through the write path's checks — the base R4 specification
(:func:`fhir_server.validation.resource.base_issues`: JSON types, formats, required
bindings; a write would get 400) and the profiles that apply to it (``meta.profile`` and
``TELEIMG_REQUIRED_PROFILES``; a write would get 422). Business rules of the workflow
depend on the request and are not replayed.

Nothing is changed: the resources are read, never written (reading AuditEvents expands
the audit journal's pending records into their index first, as any read of them does).
Exit status: 0 every resource would be accepted, 1 some would be refused (listed with
type/id, version, status and first issue), 2 the store cannot be opened.

Wired into ``teleimagerie.cli`` with :func:`add_parser`; :func:`run` returns the status.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from fhir_server.core.errors import Issue
from fhir_server.core.resource_types import SUPPORTED_TYPES
from fhir_server.search.query import SearchQuery
from fhir_server.store.base import Store, Stored
from fhir_server.validation.registry import ProfileRegistry
from fhir_server.validation.resource import base_issues

PAGE = 500


@dataclass
class Refusal:
    """A stored current version the write path would refuse today."""

    type: str
    id: str
    version: int
    status: int  # 400 base specification, 422 profile
    issues: list[Issue]

    def as_dict(self) -> dict[str, Any]:
        first = self.issues[0]
        return {"resource": f"{self.type}/{self.id}", "version": self.version,
                "status": self.status, "issues": len(self.issues),
                "diagnostics": first.diagnostics, "expression": first.expression}

    def line(self) -> str:
        first = self.issues[0]
        where = ", ".join(first.expression)
        text = first.diagnostics if not where or first.diagnostics.startswith(where) \
            else f"{where}: {first.diagnostics}"
        more = f" (+{len(self.issues) - 1} more)" if len(self.issues) > 1 else ""
        return f"{self.type}/{self.id} version {self.version}: {self.status} {text}{more}"


@dataclass
class Report:
    checked: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    refused: list[Refusal] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.refused

    def as_dict(self) -> dict[str, Any]:
        return {"checked": self.checked, "byType": self.by_type,
                "refused": [r.as_dict() for r in self.refused]}


def count(store: Store, rtype: str) -> int:
    query = SearchQuery(type=rtype, count=0, total="accurate")
    return store.search(query, count_only=True).total or 0


def current_versions(store: Store, rtype: str) -> Iterator[Stored]:
    """Every current (not deleted) version of ``rtype``, page by page."""
    query = SearchQuery(type=rtype, count=PAGE, total="none")
    while True:
        page = store.search(query)
        yield from page.items
        if not page.next_cursor or not page.items:
            return
        query.cursor = page.next_cursor


def judge(item: Stored, profiles: ProfileRegistry) -> Refusal | None:
    """What the write path would answer to this version, were it written today."""
    if item.body is None:
        return None
    try:
        resource = orjson.loads(item.body)
    except orjson.JSONDecodeError as exc:
        return Refusal(item.type, item.id, item.vid, 400,
                       [Issue(f"stored body is not JSON: {exc}", code="structure")])
    issues = base_issues(resource, item.type) if isinstance(resource, dict) else \
        [Issue("stored body is not a JSON object", code="structure")]
    if issues:
        return Refusal(item.type, item.id, item.vid, 400, issues)
    errors = [i for i in profiles.validate(resource) if i.severity in ("error", "fatal")]
    if errors:
        return Refusal(item.type, item.id, item.vid, 422, errors)
    return None


def scan(store: Store, profiles: ProfileRegistry | None = None,
         types: list[str] | None = None,
         progress: Callable[[str, int], None] | None = None) -> Report:
    """Check every current version of ``types`` (default: every type we serve);
    ``progress(type, n)`` after each page."""
    registry = profiles or ProfileRegistry()
    report = Report()
    for rtype in types or list(SUPPORTED_TYPES):
        seen = 0
        for item in current_versions(store, rtype):
            seen += 1
            refusal = judge(item, registry)
            if refusal is not None:
                report.refused.append(refusal)
            if progress is not None and seen % 100 == 0:
                progress(rtype, 100)
        if progress is not None and seen % 100:
            progress(rtype, seen % 100)
        report.by_type[rtype] = seen
        report.checked += seen
    return report


# -- command line ------------------------------------------------------------------------
def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``store`` (subcommand ``check``) on the ``teleimagerie`` subparsers; sets
    ``func=run``."""
    store: argparse.ArgumentParser = subparsers.add_parser(
        "store", help="the stored data: check it against today's validation")
    sub = store.add_subparsers(dest="store_command", required=True)
    check = sub.add_parser(
        "check", help="list the stored resources (current versions) that today's "
        "validation would refuse — changes nothing; exit 1 if any")
    check.add_argument("--type", action="append", dest="types", metavar="TYPE",
                       help="only this resource type (repeatable; default: every type)")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    store.set_defaults(func=run)
    return store


def run(args: argparse.Namespace) -> int:
    if getattr(args, "store_command", None) != "check":
        print("usage: teleimagerie store check [--type TYPE] [--json]", file=sys.stderr)
        return 2
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from fhir_server.config import Settings
    from fhir_server.store import open_store

    types = args.types or list(SUPPORTED_TYPES)
    unknown = [t for t in types if t not in SUPPORTED_TYPES]
    if unknown:
        print(f"error: not a type this server stores: {', '.join(unknown)}", file=sys.stderr)
        return 2
    settings = Settings.from_env()
    try:
        store = open_store(settings.store_url, settings.data_dir)
    except Exception as exc:  # any backend's failure to open it is reported
        print(f"error: cannot open the store: {exc}", file=sys.stderr)
        return 2
    try:
        total = sum(count(store, t) for t in types)
        console = Console(stderr=True)
        with Progress(TextColumn("vérification {task.fields[type]}"), BarColumn(),
                      MofNCompleteColumn(), console=console,
                      disable=args.json or not console.is_terminal) as bar:
            task = bar.add_task("", total=total, type="")
            report = scan(store, ProfileRegistry(settings.required_profiles), types,
                          lambda rtype, n: bar.update(task, advance=n, type=rtype))
    finally:
        store.close()
    if args.json:
        print(json.dumps(report.as_dict(), ensure_ascii=False, indent=1))
    else:
        for refusal in report.refused:
            print(refusal.line())
        verdict = "all would be accepted" if report.ok else \
            f"{len(report.refused)} would be refused"
        print(f"{report.checked} current version(s) checked: {verdict}")
    return 0 if report.ok else 1
