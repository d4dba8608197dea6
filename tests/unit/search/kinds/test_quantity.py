"""quantity kind (search.html#quantity)."""

from fhir_server.search.kinds.quantity import KIND

K = "Observation.value-quantity"


def test_extract_value_system_code_unit() -> None:
    q = {"value": 3.2, "system": "http://unitsofmeasure.org", "code": "mGy", "unit": "mGy"}
    assert KIND.extract(K, [q, {"unit": "x"}], None) == [
        (K, 3.2, "http://unitsofmeasure.org", "mGy", "mGy")]


def test_code_matches_code_or_unit() -> None:
    v = KIND.parse(None, "gt5||mGy", K)
    assert KIND.sql(v, None, K, None) == (  # type: ignore[arg-type]
        "value > ? AND (code = ? OR unit = ?)", [5.0, "mGy", "mGy"])
    assert KIND.mongo(v, None) == {"$and": [{"v": {"$gt": 5.0}},
                                            {"$or": [{"c": "mGy"}, {"u": "mGy"}]}]}
