"""string kind (search.html#string)."""

from fhir_server.search.kinds.string import KIND

K = "Patient.name"


def test_extract_human_name_parts_normalized() -> None:
    rows = KIND.extract(K, [{"family": "Lefèvre", "given": ["Élodie"]}], None)
    assert rows == [(K, "lefevre", "Lefèvre"), (K, "elodie", "Élodie")]
    assert KIND.sort_key(rows) == ("elodie", "lefevre")


def test_parse_and_modifiers() -> None:
    assert KIND.parse(None, "Lefèvre", K) == "lefevre"
    assert KIND.parse("exact", "Lefèvre", K) == "Lefèvre"
    assert KIND.sql("lef", None, K, None)[1] == ["lef", "lef\U0010ffff"]  # type: ignore[arg-type]
    assert KIND.sql("a_b", "contains", K, None) == (  # type: ignore[arg-type]
        "norm LIKE ? ESCAPE '\\'", ["%a\\_b%"])
    assert KIND.mongo("lef", None) == {"n": {"$regex": "^lef"}}
    assert KIND.mongo("X", "exact") == {"e": "X"}
