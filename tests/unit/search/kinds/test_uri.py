"""uri kind (search.html#uri): ``:below``, ``:above``."""

from fhir_server.search.kinds.uri import KIND

K = "ValueSet.url"


def test_extract_strings_only() -> None:
    assert KIND.extract(K, ["http://a/b", {"x": 1}], None) == [(K, "http://a/b")]


def test_above_and_below() -> None:
    assert KIND.sql("http://a", "below", K, None)[0] == "value >= ? AND value < ?"  # type: ignore[arg-type]
    assert KIND.mongo("ab", "above") == {"v": {"$in": ["a", "ab"]}}
    assert KIND.mongo("a.b", "below") == {"v": {"$regex": "^a\\.b"}}
    assert KIND.parse(None, "a\\,b", K) == "a,b"
