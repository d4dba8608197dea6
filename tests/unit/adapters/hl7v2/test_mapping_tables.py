"""The HL7 v2 mapping tables (issue 28): the README's field tables are generated from them,
every row cites a requirement of ``teleimagerie.md``, and the generic mapper does what
the module docstring says."""

from __future__ import annotations

import re
from typing import Any

import pytest

from adapters.hl7v2 import tables
from adapters.hl7v2.mapping import Row, Source, Table, apply, each, per_occurrence, put, special
from adapters.hl7v2.message import Field, Message, MessageError
from tests.behaviour.hl7_world import omi
from tests.conftest import REFERENCES

REQUIREMENTS = REFERENCES.parent / "requirements" / "teleimagerie.md"
FLOW_TABLES = [(f"{module}.{t.resource}", t) for _, module, ts in tables.FLOWS for t in ts]


def test_readme_field_tables_are_generated_from_the_mapping_tables() -> None:
    """A drift fails: run ``python tools/hl7v2_readme.py`` after changing a table."""
    text = tables.README.read_text(encoding="utf-8")
    assert tables.BEGIN in text and tables.END in text
    assert tables.updated(text) == text, "README drifted: run python tools/hl7v2_readme.py"


@pytest.fixture(scope="module")
def requirement_ids() -> set[str]:
    if not REQUIREMENTS.exists():
        pytest.skip(f"{REQUIREMENTS} not present")
    return set(re.findall(r"\*\*(R-[A-Z]+-\d+)\*\*", REQUIREMENTS.read_text(encoding="utf-8")))


@pytest.mark.parametrize(("name", "table"), FLOW_TABLES, ids=[n for n, _ in FLOW_TABLES])
def test_every_row_cites_a_requirement_that_exists(name: str, table: Table,
                                                   requirement_ids: set[str]) -> None:
    assert table.rows
    for row in table.rows:
        assert row.requirement in requirement_ids, f"{name}: {row.source} cites " \
            f"{row.requirement}, not in teleimagerie.md"
        assert row.convert.__name__ != "<lambda>", "converters are named (the README shows them)"


def test_a_source_that_is_neither_a_field_nor_an_obx_needs_a_special_converter() -> None:
    with pytest.raises(ValueError, match="not marked special"):
        Row("ORC-9 / MSH-7", "authoredOn", str, "R-REQ-1")
    assert Row("PID-3*", "identifier", str, "R-EXAM-1").kind == "fields"
    assert Row("OBX REGION_ANATOMIQUE n.2", "x", str, "R-REQ-2").obx_part == "2"


def test_put_paths() -> None:
    def put_at(target: str, item: Any) -> None:
        put(out, Row("—", target, _whole, "R-INT-2"), item)

    out: dict[str, Any] = {"contained": [{}]}
    put_at("extension[]", {"url": "a"})
    put_at("extension[]", [{"url": "b"}, {"url": "c"}])
    put_at("contained.0.batch.lotNumber", "L1")
    put_at("dosage.dose", {"value": 1})
    put_at(".", {"id": "x"})
    assert out == {"contained": [{"batch": {"lotNumber": "L1"}}], "extension": [
        {"url": "a"}, {"url": "b"}, {"url": "c"}], "dosage": {"dose": {"value": 1}}, "id": "x"}


def _value(f: Field) -> str:
    return f.value


@special
def _whole(src: Source) -> str:
    return str(len(src.resource))


def test_generic_mapper_rows_required_key_and_occurrences() -> None:
    """One row per field; empty values are not written; ``required`` fails the message
    (AE 101 at the field); ``key`` drops the resource; an OBX group per OBX-4 n."""
    msg = Message(omi())
    src = Source(msg)
    table = Table("X", (Row("IPC-3", "uid", _value, "R-INT-2"),
                        Row("IPC-9", "absent", _value, "R-INT-2"),
                        Row("ZZZ-1", "no_segment", _value, "R-INT-2"),
                        Row("—", "count", _whole, "R-INT-2")))
    assert apply(table, src) == {"uid": "1.2.250.1.999.3.1", "count": "1"}
    with pytest.raises(MessageError) as failed:
        apply(Table("X", (Row("IPC-9", "x", _value, "R-INT-2", required="IPC-9 absent"),)), src)
    assert (failed.value.code, failed.value.location) == ("101", "IPC^1^9")
    assert apply(Table("X", (Row("IPC-9", "x", _value, "R-INT-2", key=True),)), src) is None
    obx = Table("X", (Row("OBX APPAREIL_IMAGERIE n.1", "id", _text, "R-EXAM-3", key=True),
                      Row("OBX APPAREIL_IMAGERIE n.2", "model", _text, "R-EXAM-3")))
    assert per_occurrence(obx, src, "APPAREIL_IMAGERIE") == [
        ("1", {"id": "SN-CT-0007", "model": "Scanner 64 barrettes"})]
    assert each(Table("X", (Row("OBX CODE_ACTE_IMAGERIE", ".", _code, "R-REP-3"),
                            Row("OBX ABSENT", ".", _code, "R-REP-3"))), src) == [
        {"code": "ACQK001"}]


def _text(o: Any) -> str:
    return str(o.text())


def _code(o: Any) -> dict[str, str]:
    return {"code": o.segment.get(5)}
