"""The search parameter kinds, one module each (Blaze's shape; issue 28 item 2).

:data:`KINDS` maps a kind's name (``SearchParameter.type``) to the object that extracts
its index rows, accepts its modifiers, parses its values and compiles them for each
backend (:class:`~fhir_server.search.kinds.base.Kind`). Extraction, the query parser,
the SQLite and MongoDB compilers and stores loop over it; none names a kind.
"""

from __future__ import annotations

from fhir_server.search.kinds import date, number, quantity, reference, string, token, uri
from fhir_server.search.kinds.base import Kind

KINDS: dict[str, Kind] = {module.KIND.name: module.KIND for module in (
    string, token, reference, date, quantity, uri, number)}

__all__ = ["KINDS", "Kind"]
