"""number kind (search.html#number): implicit precision."""

import pytest

from fhir_server.core.errors import FhirError
from fhir_server.search.kinds.number import KIND

K = "RiskAssessment.probability"


def test_extract_numbers_not_booleans() -> None:
    assert KIND.extract(K, [1, 2.5, True, "3"], None) == [(K, 1.0), (K, 2.5)]


def test_parse_precision_and_conditions() -> None:
    v = KIND.parse(None, "100", K)
    assert (v.prefix, v.low, v.high) == ("eq", 99.5, 100.5)
    assert KIND.sql(v, None, K, None) == ("value >= ? AND value < ?", [99.5, 100.5])  # type: ignore[arg-type]
    assert KIND.mongo(KIND.parse(None, "gt5", K), None) == {"v": {"$gt": 5.0}}
    with pytest.raises(FhirError):
        KIND.parse(None, "5|mg", K)  # a number has no unit
