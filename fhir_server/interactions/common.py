"""What the interactions share: a client's write (:func:`persist`, on
:func:`fhir_server.store.versions.store_version`), response headers, Prefer, conditionals."""

from __future__ import annotations

from email.utils import formatdate
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from fhir_server.core.errors import ErrorKind, FhirError, outcome
from fhir_server.core.formats import RawJson
from fhir_server.core.model import FhirRequest, FhirResponse
from fhir_server.search.query import QueryParser, SearchQuery
from fhir_server.store.base import Stored
from fhir_server.store.versions import store_version

if TYPE_CHECKING:
    from fhir_server.interactions.port import Server


def http_date(us: int) -> str:
    return formatdate(us / 1_000_000, usegmt=True)


def etag(vid: int) -> str:
    return f'W/"{vid}"'


def cache_headers(item: Stored) -> dict[str, str]:
    return {"ETag": etag(item.vid), "Last-Modified": http_date(item.updated)}


def version_headers(req: FhirRequest, item: Stored) -> dict[str, str]:
    return {**cache_headers(item),
            "Location": f"{req.base_url}/{item.type}/{item.id}/_history/{item.vid}"}


def if_match_versions(value: str) -> set[str]:
    """The version ids an ``If-Match`` names (``W/"3"``, ``"3"``, a list, ``*``). Version
    ids are opaque to clients: a tag that is not one of ours simply matches nothing."""
    tags = set()
    for part in value.split(","):
        tag = part.strip()
        if tag.startswith("W/"):
            tag = tag[2:]
        tags.add(tag[1:-1] if len(tag) >= 2 and tag[0] == tag[-1] == '"' else tag)
    return tags


def check_if_match(req: FhirRequest, current: Stored | None) -> None:
    """412 unless ``If-Match`` names the current version (http.html#concurrency). A
    deletion is a version too: its ETag (the one DELETE answered) may be matched, so a
    ``PUT`` with it brings the resource back. ``*`` matches any live resource."""
    value = req.header("if-match")
    if value is None:
        return
    wanted = if_match_versions(value)
    if current is not None and (str(current.vid) in wanted or
                                ("*" in wanted and not current.deleted)):
        return
    have = "none" if current is None else etag(current.vid) + (
        " (a deletion)" if current.deleted else "")
    raise FhirError(ErrorKind.PRECONDITION_FAILED,
                    f"If-Match {value} does not match the current version: {have}")


def persist(server: Server, req: FhirRequest, rtype: str, rid: str,
            resource: dict[str, Any] | None, method: str, previous: Stored | None) -> Stored:
    """Write a client's new version: the workflow's rules and side effects around it (issue
    5) — whichever way it arrived (REST, Bundle entry, HL7/DICOM adapter)."""
    workflow = server.workflow
    given = resource  # validated by the interaction; what the workflow changes is not
    # the workflow's hooks are typed with the concrete FhirServer (the server hands every
    # interaction its own view); the interactions only know the protocol (issue 28 layers)
    if workflow is not None:
        resource = workflow.before_write(
            server, req, rtype, rid, resource, previous)  # type: ignore[arg-type]
    item = store_version(server, server.store, rtype, rid, resource, method, previous,
                         checked=resource is given)
    if workflow is not None:
        workflow.after_write(server, req, item, resource, previous)  # type: ignore[arg-type]
    return item


def written(req: FhirRequest, item: Stored, status: int, message: str) -> FhirResponse:
    """Response to create/update/patch honouring ``Prefer: return=`` (http.html#ops)."""
    headers = version_headers(req, item)
    asked = preference(req, "return")
    prefer = asked if asked in RETURN_VALUES else "representation"
    if asked == prefer:
        headers[PREFERENCE_APPLIED] = f"return={prefer}"
    if prefer == "minimal":
        return FhirResponse(status, headers)
    if prefer == "OperationOutcome":
        return FhirResponse(status, headers, resource=outcome(message))
    return FhirResponse(status, headers, raw=RawJson(item.body or b""))


PREFERENCE_APPLIED = "Preference-Applied"  # RFC 7240 §3: what of ``Prefer`` was honoured
RETURN_VALUES = ("minimal", "representation", "OperationOutcome")


def preference(req: FhirRequest, name: str) -> str | None:
    for part in (req.header("prefer") or "").split(";"):
        for item in part.split(","):
            key, _, value = item.strip().partition("=")
            if key.strip() == name:
                return value.strip().strip('"')
    return None


def applied_handling(req: FhirRequest, resp: FhirResponse) -> None:
    """``Preference-Applied: handling=…`` on a successful search (the one interaction
    where unknown parameters are either ignored or refused; search.html#errors).
    ``respond-async`` is not supported, so never reported."""
    handling = preference(req, "handling")
    if handling in ("strict", "lenient") and resp.status < 300 and \
            req.interaction.value.startswith("search"):
        applied = resp.headers.get(PREFERENCE_APPLIED)
        value = f"handling={handling}"
        resp.headers[PREFERENCE_APPLIED] = f"{applied}, {value}" if applied else value


def conditional_query(server: Server, rtype: str, criteria: list[tuple[str, str]],
                      what: str) -> SearchQuery:
    """Criteria of a conditional interaction: unknown parameters are an error, not ignored."""
    criteria = [(k, v) for k, v in criteria if k not in ("_format", "_pretty")]
    if not criteria:
        raise FhirError(ErrorKind.INVALID, f"{what} needs search criteria")
    query = QueryParser(server.limits, strict=True).parse(rtype, criteria)
    query.count = 2
    query.total = "none"
    query.sort = []
    return query


def criteria_from_header(value: str) -> list[tuple[str, str]]:
    text = value.split("?", 1)[1] if "?" in value else value
    return parse_qsl(text, keep_blank_values=True)


def lock_key(rtype: str, criteria: list[tuple[str, str]]) -> str:
    return rtype + "?" + "&".join(f"{k}={v}" for k, v in sorted(criteria))


def find_matches(server: Server, rtype: str, criteria: list[tuple[str, str]],
                 what: str) -> list[Stored]:
    return server.store.search(conditional_query(server, rtype, criteria, what)).items
