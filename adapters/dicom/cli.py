"""``teleimagerie dicom import PATH…`` (files, folder trees, DICOMDIRs; a progress bar and
a summary) and ``teleimagerie dicom scp`` (the C-STORE SCP alone).

A file that is not DICOM Part 10 (no ``DICM`` after the preamble: a README.txt, a
thumbnail in the folder) is skipped with a warning on stderr, not counted as a failure
(issue 29); pydicom's own warnings about lenient reads are kept off the terminal. The
summary table folds long identifiers rather than cutting them (``--json`` for scripts).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from adapters.dicom.pipeline import Importer
from adapters.dicom.reader import expand
from adapters.dicom.settings import DicomSettings
from fhir_server.runtime import CoreBuilder


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """pydicom's warnings and log lines (lenient reads of odd headers) off stderr."""
    logger = logging.getLogger("pydicom")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
            warnings.filterwarnings("ignore", category=UserWarning, message=r".*DICOM.*")
            yield
    finally:
        logger.setLevel(level)


def is_part10(path: Path) -> bool:
    """A DICOM Part 10 file: ``DICM`` at offset 128 (PS3.10 §7.1)."""
    try:
        with path.open("rb") as fp:
            fp.seek(128)
            return fp.read(4) == b"DICM"
    except OSError:
        return True  # let the reader say why it cannot be read


def run(args: argparse.Namespace, build: CoreBuilder) -> int:
    if args.dicom_command == "scp":
        from adapters.dicom import service

        service.main(build)
        return 0
    from fhir_server.config import Settings

    server = build(Settings.from_env())
    try:
        importer = Importer(server, DicomSettings.from_env())
        found = list(expand(args.paths))
        files = [f for f in found if is_part10(f)]
        ignored = [str(f) for f in found if f not in files]
        for name in ignored:
            print(f"ignoré : {name} n'est pas un fichier DICOM Part 10", file=sys.stderr)
        console = Console(stderr=True)
        with Progress(TextColumn("lecture des en-têtes"), BarColumn(), MofNCompleteColumn(),
                      console=console, disable=args.json or not console.is_terminal
                      ) as progress:
            task = progress.add_task("", total=len(files))
            with quiet_libraries():
                summary = importer.import_paths(files, lambda _: progress.advance(task))
        summary.files += len(ignored)
        summary.skipped.extend(ignored)
    finally:
        if server.audit is not None:
            server.audit.close()
    if args.json:
        print(json.dumps(summary.as_dict(), ensure_ascii=False, indent=1))
    else:
        out = Console()
        if not out.is_terminal:  # a pipe or a file: room for whole UIDs on one line
            out = Console(width=200)
        table = Table(title=f"{summary.files} fichier(s), {summary.imported} "
                      f"instance(s) importée(s), {len(summary.failed)} en échec, "
                      f"{len(summary.skipped)} ignoré(s)", caption="--json : le résumé "
                      "complet en JSON")
        # identifiers are folded onto several lines, never cut with an ellipsis
        table.add_column("Study Instance UID", overflow="fold")
        for name in ("instances", "nouvelles"):
            table.add_column(name, justify="right")
        table.add_column("ImagingStudy", overflow="fold")
        table.add_column("doses", justify="right")
        table.add_column("erreur", overflow="fold")
        for s in summary.studies:
            table.add_row(s.uid, str(s.instances), str(s.new_instances), s.reference,
                          str(s.doses), s.error)
        out.print(table)
        for source, reason in summary.failed:
            if not any(reason == s.error for s in summary.studies):
                out.print(f"[red]échec[/red] {source} : {reason}")
    return 1 if summary.failed else 0

