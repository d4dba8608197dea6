"""The kind registry: one object per kind, the same row layout for both backends."""

import json
from pathlib import Path

from fhir_server.search import registry
from fhir_server.search.kinds import KINDS


def test_every_kind_of_the_parameter_table_has_its_module() -> None:
    rows = json.loads((Path(registry.__file__).parent / "search_parameters.json").read_text())
    # number has no parameter in the table today; register() accepts it
    assert {row["kind"] for row in [*rows, *registry.CORE_ROWS]} <= set(KINDS)


def test_each_kind_lays_its_row_out_alike_in_both_backends() -> None:
    arrays = set()
    for name, kind in KINDS.items():
        assert kind.name == name
        assert len(kind.columns) == len(kind.fields)  # a row: (p, fields…) in both
        assert "missing" in kind.modifiers
        arrays.add(kind.array)
    assert len(arrays) == len(KINDS)
