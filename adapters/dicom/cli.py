"""``teleimagerie dicom import PATH…`` (files, folder trees, DICOMDIRs; a progress bar and
a summary) and ``teleimagerie dicom scp`` (the C-STORE SCP alone)."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from adapters.dicom.pipeline import Importer
from adapters.dicom.reader import expand
from adapters.dicom.settings import DicomSettings


def run(args: argparse.Namespace) -> int:
    if args.dicom_command == "scp":
        from adapters.dicom import service

        service.main()
        return 0
    from fhir_server.config import Settings
    from fhir_server.runtime import build_core

    server = build_core(Settings.from_env())
    try:
        importer = Importer(server, DicomSettings.from_env())
        files = list(expand(args.paths))
        console = Console(stderr=True)
        with Progress(TextColumn("lecture des en-têtes"), BarColumn(), MofNCompleteColumn(),
                      console=console, disable=args.json or not console.is_terminal
                      ) as progress:
            task = progress.add_task("", total=len(files))
            summary = importer.import_paths(files, lambda _: progress.advance(task))
    finally:
        if server.audit is not None:
            server.audit.close()
    if args.json:
        print(json.dumps(summary.as_dict(), ensure_ascii=False, indent=1))
    else:
        out = Console()
        table = Table("Study Instance UID", "instances", "nouvelles", "ImagingStudy", "doses",
                      "erreur", title=f"{summary.files} fichier(s), {summary.imported} "
                      f"instance(s) importée(s), {len(summary.failed)} en échec")
        for s in summary.studies:
            table.add_row(s.uid, str(s.instances), str(s.new_instances), s.reference,
                          str(s.doses), s.error)
        out.print(table)
        for source, reason in summary.failed:
            if not any(reason == s.error for s in summary.studies):
                out.print(f"[red]échec[/red] {source} : {reason}")
    return 1 if summary.failed else 0

