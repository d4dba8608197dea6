"""The import contracts of pyproject ``[tool.importlinter]`` hold (issue 28 item 1): the
layers of ``fhir_server`` point one way (http > runtime > server > interactions >
workflow > security > store implementations > audit > storage protocol > search |
validation > core), no domain module names a store implementation, and ``fhir_server``
never imports the adapters nor the composition root; a wrong-way import fails here, in
``make test``."""

from __future__ import annotations

import os
import re
import tomllib
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


def test_every_store_module_is_in_a_layer() -> None:
    """The store is layered module by module (protocol below the audit, implementations
    above it), so a new module under ``fhir_server/store`` must be given a layer."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    layers = next(c for c in config["tool"]["importlinter"]["contracts"]
                  if c["id"] == "fhir-server-layers")["layers"]
    named = {m.strip() for layer in layers for m in re.split(r"[|:]", layer)}
    store = ROOT / "fhir_server" / "store"
    modules = {f"store.{p.stem}" for p in store.glob("*.py") if p.stem != "__init__"}
    modules |= {f"store.{p.name}" for p in store.iterdir() if (p / "__init__.py").is_file()}
    assert modules <= named, f"store modules in no layer: {sorted(modules - named)}"
