"""``teleimagerie directory load FILE [--dry-run] [--json]``: provision the directory.

Wired into ``teleimagerie.cli`` with :func:`add_parser`; :func:`run` returns the exit
status: 0 loaded (or nothing to do), 1 the file's content is wrong or the server refused
it (nothing written), 2 usage (unreadable file, unknown format).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fhir_server.runtime import CoreBuilder


def add_parser(subparsers: Any, build: CoreBuilder) -> argparse.ArgumentParser:
    """Register ``directory`` (subcommand ``load``) on the ``teleimagerie`` subparsers;
    ``func`` runs :func:`run` on the core ``build`` makes (the composition root's)."""
    directory: argparse.ArgumentParser = subparsers.add_parser(
        "directory", help="provision the directory: structures (FINESS), professionals "
        "(RPPS, specialties), their roles and MSSanté addresses (docs/provisioning.md)")
    sub = directory.add_subparsers(dest="directory_command", required=True)
    load = sub.add_parser(
        "load", help="load a FHIR Bundle (.json) or a CSV (.csv) — idempotent, one "
        "transaction per file")
    load.add_argument("file", help="directory file: FHIR Bundle (JSON) or CSV")
    load.add_argument("--dry-run", action="store_true",
                      help="check the file and show what would change, write nothing")
    load.add_argument("--json", action="store_true", help="print the summary as JSON")
    directory.set_defaults(func=lambda args: run(args, build))
    return directory


def run(args: argparse.Namespace, build: CoreBuilder) -> int:
    if getattr(args, "directory_command", None) != "load":
        print("usage: teleimagerie directory load FILE [--dry-run] [--json]", file=sys.stderr)
        return 2
    from pathlib import Path

    from adapters.provisioning.loader import LoadError, load
    from fhir_server.config import Settings

    if not Path(args.file).is_file():  # before opening the store: a usage error
        print(f"error: {args.file}: no such file", file=sys.stderr)
        return 2
    server = build(Settings.from_env())
    try:
        summary = load(server, args.file, dry_run=args.dry_run)
    except LoadError as exc:
        for warning in exc.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        for error in exc.errors:
            print(f"error: {error}", file=sys.stderr)
        if not exc.usage:
            print(f"{len(exc.errors)} error(s): nothing was written", file=sys.stderr)
        return 2 if exc.usage else 1
    finally:
        if server.audit is not None:
            server.audit.close()
    if args.json:
        print(json.dumps(summary.as_dict(), ensure_ascii=False, indent=1))
    else:
        print("\n".join(summary.lines()))
    for warning in summary.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0
