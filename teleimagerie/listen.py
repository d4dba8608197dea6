"""Entry point of a listener process started by ``teleimagerie serve`` (issue 24):
``python -m teleimagerie.listen adapters.hl7v2.service`` runs that service's ``main``
with the composition root's core builder, so the adapter never imports the root."""

from __future__ import annotations

import importlib
import sys

from teleimagerie.wiring import build_core


def main(argv: list[str]) -> None:
    if len(argv) != 1 or not argv[0].startswith("adapters.") or \
            not argv[0].endswith(".service"):
        raise SystemExit("usage: python -m teleimagerie.listen adapters.<name>.service")
    importlib.import_module(argv[0]).main(build_core)


if __name__ == "__main__":
    main(sys.argv[1:])
