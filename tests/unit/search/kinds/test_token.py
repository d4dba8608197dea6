"""token kind (search.html#token)."""

import pytest

from fhir_server.core.errors import FhirError
from fhir_server.search.kinds.base import ANY, TokenValue
from fhir_server.search.kinds.token import KIND

K = "Patient.identifier"


def test_extract_identifier_coding_and_boolean() -> None:
    rows = KIND.extract(K, [{"system": "urn:s", "value": "1"},
                            {"coding": [{"system": "urn:c", "code": "x", "display": "Été"}]},
                            True], None)
    assert rows == [(K, "urn:s", "1", None), (K, "urn:c", "x", "ete"), (K, None, "true", None)]
    assert KIND.sort_key(rows) == ("1", "x")


def test_parse_forms_and_text() -> None:
    assert KIND.parse(None, "urn:s|a\\|b", K) == TokenValue("urn:s", "a|b")
    assert KIND.parse(None, "|x", K) == TokenValue(None, "x")
    assert KIND.parse("text", "Été", K) == TokenValue(ANY, None, "ete")
    with pytest.raises(FhirError):
        KIND.parse(None, "a|b|c", K)


def test_sql_and_mongo_conditions() -> None:
    v = TokenValue("urn:s", "1")
    assert KIND.sql(v, None, K, None) == ("code = ? AND system = ?", ["1", "urn:s"])  # type: ignore[arg-type]
    assert KIND.mongo(v, None) == {"c": "1", "s": "urn:s"}
    assert KIND.mongo(TokenValue(None, "1"), None) == {"c": "1", "s": None}
    assert KIND.mongo(TokenValue(ANY, None, "a.b"), "text") == {"t": {"$regex": "a\\.b"}}
