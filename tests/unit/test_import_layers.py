"""The import contracts of pyproject ``[tool.importlinter]`` hold (issue 28 item 1): the
layers of ``fhir_server`` point one way (http > runtime > server > interactions >
workflow > security > store implementations > audit > storage protocol > search |
validation > core), no domain module names a store implementation, and ``fhir_server``
never imports the adapters nor the composition root; a wrong-way import fails here, in
``make test``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from importlinter import cli

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_hold(monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(ROOT)  # the configuration is the project's pyproject.toml
    monkeypatch.syspath_prepend(os.fspath(ROOT))
    code = cli.lint_imports(config_filename=os.fspath(ROOT / "pyproject.toml"),
                            no_cache=True, no_logo=True)
    assert code == 0, capsys.readouterr().out
