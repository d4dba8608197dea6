"""Parameters written into URLs (fhir_server.core.params)."""

from urllib.parse import urlencode

from hypothesis import given
from hypothesis import strategies as st

from fhir_server.core.params import query_string


@given(st.lists(st.tuples(st.text(max_size=20), st.text(max_size=40)), max_size=6))
def test_query_string_is_urlencode(items: list[tuple[str, str]]) -> None:
    """The cached quoting writes exactly what urllib's urlencode writes (issue 32)."""
    assert query_string(items) == urlencode(items)
