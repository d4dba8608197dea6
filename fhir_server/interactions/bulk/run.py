"""The export itself: each type's resources, page after page, into NDJSON files
(Bulk Data Access IG v2, export.html "Bulk Data Output File Request").

Every page is a search through the store view of the job's principal — the request's
:class:`~fhir_server.security.access.GuardedStore` — so a file holds exactly what the
same search would return (care relationship, masking, opposition: R-SEC-2, R-CONS-5).
Pages are keyset pages in insertion order: nothing but one page is ever in memory, and
each resource is written as its stored bytes (no re-serialisation) followed by a newline.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from fhir_server import logs
from fhir_server.core.errors import FhirError, outcome
from fhir_server.core.limits import Limits
from fhir_server.interactions.bulk.jobs import COMPLETED, FAILED, RUNNING, Gone, Jobs
from fhir_server.search.compartments import compartment
from fhir_server.search.query import AllOf, AnyOf, InCare, QueryParser, SearchQuery, Term
from fhir_server.search.registry import get
from fhir_server.search.values import format_instant
from fhir_server.store.base import Store

log = logging.getLogger("teleimagerie.export")

PAGE = 2000  # resources per store page: one page at a time in memory
FILE_LINES = 250_000  # resources per file, then the type's next file (IG: several per type)
BUFFER = 1 << 20  # bytes buffered per open file
_PARSER_LIMITS = Limits(max_or_values=10_000, max_search_terms=256)


@dataclass
class Plan:
    """What one job exports: its types in order, a ``_since`` bound (µs, exclusive), the
    transaction time (µs, inclusive), each type's ``_typeFilter`` queries (ORed), and
    the patients of a Group export (None: not narrowed to patients)."""

    types: list[str]
    transaction_us: int
    since_us: int | None = None
    filters: dict[str, list[list[tuple[str, str]]]] = field(default_factory=dict)
    patients: list[str] | None = None

    def query(self, rtype: str, cursor: dict[str, Any] | None, count: int = PAGE
              ) -> SearchQuery:
        """One page's search (built afresh for every page: the guard adds its terms to
        the query it is given)."""
        parser = QueryParser(_PARSER_LIMITS, strict=True)
        params: list[tuple[str, str]] = []
        if self.since_us is not None:  # the index is coarser (ms): the exact test is ours
            params.append(("_lastUpdated", f"ge{format_instant(self.since_us - 1000)}"))
        query = parser.parse(rtype, params)
        chosen = self.filters.get(rtype)
        if chosen:
            query.terms.append(AnyOf([AllOf(parser.parse(rtype, f).terms) for f in chosen]))
        if self.patients is not None:
            query.terms.append(members_term(rtype, self.patients))
        query.count, query.total, query.cursor, query.sort = count, "none", cursor, []
        return query


def members_term(rtype: str, patients: list[str]) -> Term:
    """``rtype``'s resources in the compartment of one of ``patients`` (the R4 Patient
    compartment's parameters, compiled as the guard's patient sets are)."""
    options: list[Term] = []
    if rtype == "Patient":
        options.append(InCare(None, [], patients, []))
    for name in compartment("Patient").members.get(rtype, ()):
        param = get(rtype, name)
        if param is not None and param.kind == "reference":
            options.append(InCare(param, [], patients, []))
    return AnyOf(options)


@dataclass
class Output:
    """One type's files as they are written."""

    folder: Path
    rtype: str
    files: list[tuple[str, int]] = field(default_factory=list)  # (name, count)
    _out: IO[bytes] | None = None
    _lines: int = 0

    def write(self, body: bytes) -> None:
        out = self._out
        if out is None or self._lines >= FILE_LINES:
            self.close()
            name = f"{self.rtype}-{len(self.files) + 1}.ndjson"
            out = self._out = open(self.folder / name, "wb", buffering=BUFFER)
            self.files.append((name, 0))
            self._lines = 0
        out.write(body)
        out.write(b"\n")
        self._lines += 1

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
            self.files[-1] = (self.files[-1][0], self._lines)


Progress = Callable[[str, int, int, int], None]  # type, its rank, types, exported so far


def export(store: Store, plan: Plan, folder: Path, progress: Progress | None = None
           ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Write every type of ``plan`` into ``folder``: the manifest's ``output`` entries
    ({type, file, count}) and ``error`` entries (one OperationOutcome line per type that
    failed). ``progress`` is told after every page; it may raise to stop the export."""
    output: list[dict[str, Any]] = []
    errors: list[bytes] = []
    exported = 0
    for rank, rtype in enumerate(plan.types, 1):
        files = Output(folder, rtype)
        try:
            cursor: dict[str, Any] | None = None
            while True:
                page = store.search(plan.query(rtype, cursor))
                for item in page.items:
                    # changed after the transaction time: for the next `_since` export
                    if item.body is None or item.updated > plan.transaction_us or (
                            plan.since_us is not None and item.updated <= plan.since_us):
                        continue
                    files.write(item.body)
                    exported += 1
                if progress is not None:
                    progress(rtype, rank, len(plan.types), exported)
                cursor = page.next_cursor
                if cursor is None:
                    break
        except FhirError as exc:
            diagnostics = exc.issues[0].diagnostics if exc.issues else str(exc)
            errors.append(orjson.dumps(outcome(f"{rtype}: {diagnostics}", "error",
                                               "exception")))
        finally:
            files.close()
        output += [{"type": rtype, "file": name, "count": count}
                   for name, count in files.files]
    error_entries: list[dict[str, Any]] = []
    if errors:
        with open(folder / "errors.ndjson", "wb") as out:
            out.writelines(line + b"\n" for line in errors)
        error_entries.append({"type": "OperationOutcome", "file": "errors.ndjson",
                              "count": len(errors)})
    return output, error_entries


# jobs running in this process (a poll on another process reads the record's beat)
_RUNNING: dict[str, threading.Thread] = {}


def running_here(job_id: str) -> bool:
    thread = _RUNNING.get(job_id)
    return thread is not None and thread.is_alive()


def run_job(jobs: Jobs, record: dict[str, Any], store: Store, plan: Plan,
            progress: Progress | None = None) -> dict[str, Any]:
    """Run one job to its end, keeping its record current (status, progress, beat);
    the final record. A cancel (its directory removed) stops it at the next page."""
    folder = jobs.path(record["id"])
    record.update(status=RUNNING, beat=time.time())
    jobs.save(record)
    last = [0.0]

    def beat(rtype: str, rank: int, total: int, exported: int) -> None:
        record["progress"] = {"type": rtype, "rank": rank, "types": total,
                              "exported": exported}
        now = time.monotonic()
        if now - last[0] > 0.5:  # the record at most twice a second: cheap, and current
            record["beat"] = time.time()
            jobs.save(record)
            last[0] = now
        elif not folder.is_dir():
            raise Gone(record["id"])
        if progress is not None:
            progress(rtype, rank, total, exported)

    try:
        output, errors = export(store, plan, folder, beat)
    except Gone:
        return record
    except Exception as exc:  # the client is told at its next poll
        log.error("export %s failed: %s", record["id"], logs.failure(exc))
        record.update(status=FAILED, ended=time.time(), message="the export failed; "
                      "see the server log (kick it off again)")
        try:
            jobs.save(record, flush=True)
        except Gone:
            pass
        return record
    record.update(status=COMPLETED, ended=time.time(), output=output, error=errors,
                  beat=time.time())
    try:
        jobs.save(record, flush=True)
    except Gone:
        pass
    return record


def start(jobs: Jobs, record: dict[str, Any], store: Store, plan: Plan) -> threading.Thread:
    """Run the job in a background thread of this process (daemon: a restart ends it,
    and its next poll fails it cleanly)."""
    thread = threading.Thread(target=_run_quietly, args=(jobs, record, store, plan),
                              name=f"export-{record['id'][:8]}", daemon=True)
    _RUNNING[record["id"]] = thread
    thread.start()
    return thread


def _run_quietly(jobs: Jobs, record: dict[str, Any], store: Store, plan: Plan) -> None:
    try:
        run_job(jobs, record, store, plan)
    finally:
        _RUNNING.pop(record["id"], None)
