"""date kind (search.html#date): ranges and prefixes."""

import pytest

from fhir_server.core.errors import FhirError
from fhir_server.search.kinds.base import RangeValue
from fhir_server.search.kinds.date import KIND
from fhir_server.search.values import MAX_US, date_range

K = "ServiceRequest.authored"


class _Widths:
    def date_width(self, key: str) -> int:
        return 100


def test_extract_date_and_open_period() -> None:
    day = date_range("2024-03-04")
    assert day is not None
    rows = KIND.extract(K, ["2024-03-04", {"start": "2024-03-04"}], None)
    assert rows == [(K, *day), (K, day[0], MAX_US)]
    assert KIND.sort_key(rows) == (day[0], MAX_US)


def test_parse_prefix_and_malformed() -> None:
    v = KIND.parse(None, "ge2024", K)
    assert isinstance(v, RangeValue) and v.prefix == "ge"
    with pytest.raises(FhirError):
        KIND.parse(None, "2024-13-45", K)


def test_sql_bounds_use_the_widest_interval_and_mongo_merged_bounds() -> None:
    v = RangeValue("gt", 1000, 2000)
    assert KIND.sql(v, None, K, _Widths()) == ("low > ? AND high > ?", [1900, 2000])
    lo, hi = RangeValue("ge", 0, 10), RangeValue("lt", 20, 30)
    assert KIND.mongo((lo, hi), None) == {"$and": [KIND.mongo(lo, None), KIND.mongo(hi, None)]}
