"""The layers point one way (issue 28 item 1): the import-linter contracts of
``pyproject.toml`` ([tool.importlinter]) hold — the core (``fhir_server``) never imports
the adapters nor the composition root (``teleimagerie``), the adapters never the root."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

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


def test_the_server_principals_act_through_the_guard_with_least_privilege(fhir: Any) -> None:
    """Each named principal reaches only the types its scopes grant (role ∩ scope,
    R-SEC-2); the ``server`` role is in-process only: no token can carry it."""
    from adapters.principals import CDA_PUBLISHER, HL7_JOURNAL, QUEUE_GAUGES
    from fhir_server.search.query import QueryParser
    from fhir_server.security.access import ALL
    from fhir_server.security.roles import ROLES
    from fhir_server.security.system import SERVER, as_system
    from fhir_server.workflow.records import WORKFLOW, save, view

    with fhir.store.write():
        save(fhir, "Patient", "p", {"resourceType": "Patient"})
        save(fhir, "Basic", "m", {"resourceType": "Basic", "code": {"text": "message"}})
        save(fhir, "AuditEvent", "a", {
            "resourceType": "AuditEvent", "recorded": "2026-01-01T00:00:00Z",
            "type": {"code": "rest"}, "agent": [{"requestor": True}],
            "source": {"observer": {"display": "x"}}})
    journal = as_system(fhir, HL7_JOURNAL)
    assert journal.read("Basic", "m") is not None
    assert journal.read("Patient", "p") is None  # not its records
    assert view(fhir).read("Patient", "p") is not None
    assert view(fhir).read("Basic", "m") is None  # the workflow reads no message record
    assert view(fhir).read("AuditEvent", "a") is None  # nor the trail
    assert as_system(fhir, CDA_PUBLISHER).read("AuditEvent", "a") is None
    gauges = as_system(fhir, QUEUE_GAUGES)
    assert gauges.search(QueryParser(fhir.limits).parse("Basic", []), count_only=True).total == 1
    assert not gauges.access.permits("Basic", "u")
    for principal in (HL7_JOURNAL, WORKFLOW, QUEUE_GAUGES):
        guarded = as_system(fhir, principal)
        assert all(guarded.access.reach(t, "s") is ALL for t in ("Task", "Basic")
                   if guarded.access.permits(t, "s"))  # no care-relationship filter
    assert SERVER.code not in ROLES
