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


# -- one guarded way in (issue 28 item 5, ADR 0022) ------------------------------------------
# The modules that may reach the store without the guard — ``records._raw_store`` or a
# GuardedStore's ``inner`` — and why. Any other module of the packages fails the test:
# adapters act as a named system principal through the guard (``security.system.as_system``
# with a principal of ``adapters/principals.py``, or the peer's ``hl7:``/``dicom:`` one).
UNGUARDED = {
    "fhir_server/workflow/records.py": "save: the server's own versions, named in the audit",
    "fhir_server/security/access.py": "the guard itself wraps the store",
    "fhir_server/security/system.py": "builds the guard of a named system principal",
}
UNGUARDED_PACKAGES = ("fhir_server/store/", "fhir_server/audit/")  # storage, audit, migrations


def _unguarded_uses(path: Path) -> int:
    import ast

    uses = 0
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (isinstance(node, ast.Name) and node.id.endswith("raw_store")) or \
                (isinstance(node, ast.alias) and node.name.endswith("raw_store")) or \
                (isinstance(node, ast.FunctionDef) and node.name.endswith("raw_store")):
            uses += 1
        elif isinstance(node, ast.Attribute) and node.attr == "inner" and (
                (isinstance(node.value, ast.Name) and node.value.id in ("store", "self")) or
                (isinstance(node.value, ast.Attribute) and node.value.attr == "store")):
            uses += 1
    return uses


def test_only_the_listed_modules_reach_the_unguarded_store() -> None:
    found = set()
    for package in ("fhir_server", "adapters", "teleimagerie"):
        for path in (ROOT / package).rglob("*.py"):
            name = path.relative_to(ROOT).as_posix()
            if not name.startswith(UNGUARDED_PACKAGES) and _unguarded_uses(path):
                found.add(name)
    assert found - UNGUARDED.keys() == set(), "reaches the store without the guard"
    assert UNGUARDED.keys() - found == set(), "listed but no longer needed: drop it"
