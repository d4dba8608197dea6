"""reference kind (search.html#reference): ``:Type``, ``:identifier``."""

from fhir_server.search.kinds.base import ReferenceValue, TokenValue
from fhir_server.search.kinds.reference import KIND, parse_reference_value

K = "Observation.subject"


def test_extract_relative_absolute_identifier_and_type_filter() -> None:
    rows = KIND.extract(K, [{"reference": "Patient/p"}, {"reference": "http://x/y"},
                            {"identifier": {"system": "urn:s", "value": "1"}, "type": "Patient"}],
                        None)
    assert rows == [(K, "Patient", "p", None, None, None),
                    (K, None, None, "http://x/y", None, None),
                    (K, "Patient", None, None, "urn:s", "1")]
    assert KIND.extract(K, [{"reference": "Group/g"}], "Patient") == []
    assert KIND.sort_key(rows[:2]) == ("Patient/p", "http://x/y")


def test_parse_forms() -> None:
    assert KIND.parse(None, "Patient/p", K) == ReferenceValue("Patient", "p", None)
    assert KIND.parse(None, "http://h/fhir/Patient/p", K) == ReferenceValue(
        "Patient", "p", "http://h/fhir/Patient/p")
    assert parse_reference_value("p", K, "Patient") == ReferenceValue("Patient", "p", None)
    assert KIND.parse("identifier", "urn:s|1", K) == TokenValue("urn:s", "1")


def test_identifier_is_compiled_on_the_identifier_columns() -> None:
    v = TokenValue("urn:s", "1")
    assert KIND.sql(v, "identifier", K, None) == (  # type: ignore[arg-type]
        "idval = ? AND idsys = ?", ["1", "urn:s"])
    assert KIND.mongo(v, "identifier") == {"iv": "1", "is": "urn:s"}
    assert KIND.mongo(ReferenceValue("Patient", "p", None), None) == {"i": "p", "t": "Patient"}
