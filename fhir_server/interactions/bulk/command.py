"""``teleimagerie export``: a Bulk Data export of the store into a directory, with progress
(issue 31).

The command is a client of the core like any other: it kicks off ``$export`` through
``FhirServer.handle`` as ``system:export``, a connector with the RIS connector's role
narrowed to ``system/*.rs`` (every patient's data and the directory; not the HL7
message records nor the audit trail — the auditor exports it over HTTP), so the export
is authorised, guarded and audited as over HTTP.
It waits for the job, printing its progress, then moves the NDJSON files into ``--out``
with the manifest (``manifest.json``, file names relative to it) and removes the job.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import orjson

from fhir_server.core.model import FhirRequest, FhirResponse, Interaction, RequestContext
from fhir_server.interactions.bulk import run
from fhir_server.interactions.bulk.jobs import COMPLETED
from fhir_server.interactions.export import jobs
from fhir_server.security.principal import Principal
from fhir_server.security.scopes import parse_scopes
from fhir_server.security.system import ISSUER

# the command's principal: a connector reading what the RIS connector may read
EXPORTER = Principal(sub="system:export", issuer=ISSUER, roles=("ris",),
                     scopes=parse_scopes("system/*.rs"), name="teleimagerie (export)")


class Core(Protocol):
    """What the command needs of the server (the composition root's core)."""

    store: Any
    limits: Any

    def handle(self, req: FhirRequest) -> FhirResponse: ...


def add_parser(subparsers: Any, build: Callable[[Any], Any]) -> argparse.ArgumentParser:
    """Register ``export`` on the ``teleimagerie`` subparsers; ``build`` makes the core."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "export", help="Bulk Data export (FHIR Bulk Data IG v2) of the store into a "
        "directory: NDJSON files per type and manifest.json")
    parser.add_argument("--out", required=True, help="directory to write (created)")
    parser.add_argument("--type", help="resource types, comma-separated (_type)")
    parser.add_argument("--since", help="only resources changed after this instant "
                        "(_since; the transactionTime of a previous export's manifest)")
    parser.add_argument("--type-filter", action="append", default=[],
                        help="Type?search, repeatable (_typeFilter)")
    level = parser.add_mutually_exclusive_group()
    level.add_argument("--patients", action="store_true",
                       help="the Patient compartment only (Patient/$export)")
    level.add_argument("--group", help="the compartments of a Group's patients "
                       "(Group/[id]/$export)")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    parser.set_defaults(func=lambda args: main(args, build))
    return parser


def main(args: argparse.Namespace, build: Callable[[Any], Any]) -> int:
    from fhir_server.config import Settings

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        print(f"error: {out} exists and is not an empty directory", file=sys.stderr)
        return 2
    core: Core = build(Settings.from_env())
    try:
        return export(core, args, out)
    finally:
        core.store.close()


def export(core: Core, args: argparse.Namespace, out: Path) -> int:
    params = [(k, v) for k, v in (("_type", args.type), ("_since", args.since)) if v]
    params += [("_typeFilter", f) for f in args.type_filter]
    rtype, rid = ("Group", args.group) if args.group else \
        ("Patient", None) if args.patients else (None, None)
    context = RequestContext(principal=EXPORTER, source="internal",
                             request_id=f"cli-export-{int(time.time())}")
    resp = core.handle(FhirRequest(
        Interaction.OPERATION, rtype, rid, params=params, operation="export", method="GET",
        headers={"prefer": "respond-async"}, context=context, base_url="urn:export"))
    if resp.status != 202:
        print(f"error: {_diagnostics(resp)}", file=sys.stderr)
        return 1
    job = resp.headers["Content-Location"].rsplit("=", 1)[1]
    began = time.monotonic()
    thread = run._RUNNING.get(job)
    box = jobs()
    while thread is not None and thread.is_alive():
        thread.join(0.5)
        record = box.load(job)
        if record and record.get("progress") and not args.quiet:
            done = record["progress"]
            rate = done["exported"] / max(time.monotonic() - began, 1e-6)
            print(f"\r{done['type']} ({done['rank']}/{done['types']}): "
                  f"{done['exported']} resources, {rate:,.0f}/s   ", end="",
                  file=sys.stderr, flush=True)
    record = box.load(job)
    if record is None or record.get("status") != COMPLETED:
        reason = (record or {}).get("message") or "the export did not complete"
        print(f"\nerror: {reason}", file=sys.stderr)
        box.remove(job)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    for entry in [*record.get("output", []), *record.get("error", [])]:
        shutil.move(str(box.path(job) / entry["file"]), out / entry["file"])
    manifest = {"transactionTime": record["transactionTime"],
                "request": record["request"].replace("urn:export/", "[base]/"),
                "requiresAccessToken": False,
                "output": [{"type": o["type"], "url": o["file"], "count": o["count"]}
                           for o in record.get("output", [])],
                "error": [{"type": e["type"], "url": e["file"], "count": e["count"]}
                          for e in record.get("error", [])]}
    (out / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    box.remove(job)
    total = sum(o["count"] for o in manifest["output"])
    elapsed = time.monotonic() - began
    print(f"\r{total} resources in {len(manifest['output'])} files, {elapsed:.1f} s "
          f"({total / max(elapsed, 1e-6):,.0f}/s) -> {out}", file=sys.stderr)
    return 0


def _diagnostics(resp: FhirResponse) -> str:
    issues = (resp.resource or {}).get("issue") or [{}]
    return str(issues[0].get("diagnostics") or f"HTTP {resp.status}")
