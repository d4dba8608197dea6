"""The layers point one way (issue 28 item 1): the import-linter contracts of
``pyproject.toml`` ([tool.importlinter]) hold — the core (``fhir_server``) never imports
the adapters nor the composition root (``teleimagerie``), the adapters never the root."""

from __future__ import annotations

import os
from pathlib import Path

from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_hold() -> None:
    here = Path.cwd()
    os.chdir(ROOT)  # the packages are found from the project's root
    try:
        status = lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True,
                              no_logo=True)
    finally:
        os.chdir(here)
    assert status == 0, "a wrong-way import: run `lint-imports` for the broken contract"
