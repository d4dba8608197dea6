"""Patient/[id]/$everything (patient-operation-everything) — the right of access (R-SEC-4).

The patient and every resource of its compartment the caller may see, as a searchset
Bundle paged by a keyset cursor that walks the compartment types in a fixed order.
Supports ``_count``, ``_type`` and ``_since``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fhir_server.core.errors import invalid, not_found
from fhir_server.core.formats import RawJson
from fhir_server.core.limits import Limits
from fhir_server.core.model import FhirRequest, FhirResponse
from fhir_server.core.params import query_string
from fhir_server.search.query import QueryParser, decode_cursor, encode_cursor
from fhir_server.security.compartment import NARROWING_PARAM
from fhir_server.store.base import Stored

if TYPE_CHECKING:
    from fhir_server.interactions.port import Server

# Patient first, then its clinical record; the audit trail is not part of the record.
TYPES = ["Patient", *sorted(t for t in NARROWING_PARAM if t not in ("Patient", "AuditEvent"))]


def everything(server: Server, req: FhirRequest) -> FhirResponse:
    assert req.id
    if server.store.read("Patient", req.id) is None:
        raise not_found("Patient", req.id)
    asked = _Params(server.limits.default_count, list(TYPES))
    for key, value in req.params:
        asked.take(key, value, server.limits.max_count)
    count, types, since, cursor = asked.count, asked.types, asked.since, asked.cursor
    kept, cursor_param = asked.kept, asked.cursor_param
    items: list[Stored] = []
    index, inner = int(cursor.get("t", 0)), cursor.get("k")
    parser = QueryParser(Limits(default_count=count, max_count=server.limits.max_count))
    while index < len(types) and len(items) < count:
        rtype = types[index]
        param = NARROWING_PARAM[rtype]
        target = req.id if param == "_id" else f"Patient/{req.id}"
        params = [(param, target)] + ([("_lastUpdated", f"ge{since}")] if since else [])
        query = parser.parse(rtype, params)
        query.count = count - len(items)
        query.total = "none"
        query.cursor = inner
        page = server.store.search(query)
        items.extend(page.items)
        if page.next_cursor is not None:
            inner = page.next_cursor
            if len(items) >= count:
                break
        else:
            index, inner = index + 1, None
    base = f"{req.base_url}/Patient/{req.id}/$everything"
    first = f"{base}?{query_string(kept)}" if kept else base
    this = f"{base}?{query_string([*kept, ('_cursor', cursor_param)])}" if cursor_param \
        else first
    links = [{"relation": "self", "url": this}, {"relation": "first", "url": first}]
    if index < len(types):
        nxt = [*kept, ("_cursor", encode_cursor({"d": "after", "t": index, "k": inner}))]
        links.append({"relation": "next", "url": f"{base}?{query_string(nxt)}"})
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "link": links}
    if items:
        bundle["entry"] = [{"fullUrl": f"{req.base_url}/{i.type}/{i.id}",
                            "resource": RawJson(i.body or b"{}"),
                            "search": {"mode": "match"}} for i in items]
    return FhirResponse(200, {}, resource=bundle)


@dataclass
class _Params:
    """$everything's parameters; ``kept``: those the paging links repeat."""

    count: int
    types: list[str]
    since: str | None = None
    cursor: dict[str, Any] = field(default_factory=lambda: {"t": 0, "k": None})
    kept: list[tuple[str, str]] = field(default_factory=list)
    cursor_param: str | None = None

    def take(self, key: str, value: str, max_count: int) -> None:
        if key == "_count":
            if not value.isdigit() or int(value) == 0:
                raise invalid("_count must be a positive integer", "_count")
            self.count = min(int(value), max_count)
        elif key == "_type":
            wanted = {t.strip() for t in value.split(",") if t.strip()}
            self.types = [t for t in TYPES if t in wanted]
        elif key == "_since":
            self.since = value
        elif key == "_cursor":
            self.cursor = _decode(value)
            self.cursor_param = value
            return
        else:
            return
        self.kept.append((key, value))


def _decode(value: str) -> dict[str, Any]:
    data = decode_cursor(value)
    if not isinstance(data.get("t"), int):
        raise invalid("invalid paging cursor", "_cursor")
    return data
