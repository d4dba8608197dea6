"""batch and transaction — POST [base] with a Bundle (http.html#transaction).

A transaction is all-or-nothing in one store write unit: entries are processed in the
spec's order (DELETE, POST, PUT/PATCH, GET/HEAD), ``urn:uuid`` fullUrls and conditional
references (``Patient?identifier=…``) are resolved first and every reference rewritten.
A batch runs each entry on its own and reports per-entry status. Entries go through
the same routing and interaction code as HTTP requests.

``urn:uuid:``/``urn:oid:`` fullUrls are replaced wherever the transaction rules name them
(http.html#trules): every ``Reference.reference`` (contained resources included) and the
``href``/``src`` links of the narrative. ``Prefer: return=`` applies to each entry.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import orjson

from fhir_server.core.errors import ErrorKind, FhirError, Issue
from fhir_server.core.formats import RawJson, materialize
from fhir_server.core.model import FhirRequest, FhirResponse, Interaction
from fhir_server.interactions.common import (
    PREFERENCE_APPLIED,
    RETURN_VALUES,
    criteria_from_header,
    find_matches,
    preference,
)
from fhir_server.interactions.routing import route, split_url
from fhir_server.validation.resource import check_id

if TYPE_CHECKING:
    from fhir_server.interactions.port import Server

ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
CONDITIONAL_REF = re.compile(r"^([A-Z][A-Za-z]+)\?(.+)$")
# <a href="urn:uuid:…">, <img src='urn:uuid:…'> in a Narrative.div
NARRATIVE_LINK = re.compile(r"""(\s(?:href|src)\s*=\s*)(["'])(urn:(?:uuid|oid):[^"']*)\2""")


def batch(server: Server, req: FhirRequest) -> FhirResponse:
    bundle = req.body
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise FhirError(ErrorKind.INVALID, "POST to the base expects a batch or transaction "
                        "Bundle", expression=["Bundle"])
    kind = bundle.get("type")
    if kind not in ("batch", "transaction"):
        raise FhirError(ErrorKind.INVALID, f"Bundle.type must be batch or transaction, not "
                        f"{kind!r}", expression=["Bundle.type"])
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise FhirError(ErrorKind.STRUCTURE, "Bundle.entry must be an array",
                        expression=["Bundle.entry"])
    if len(entries) > server.limits.max_bundle_entries:
        raise FhirError(ErrorKind.TOO_LARGE, f"{len(entries)} entries exceed the limit of "
                        f"{server.limits.max_bundle_entries}", expression=["Bundle.entry"])
    for i, entry in enumerate(entries):
        _check_entry(i, entry)
    _check_full_urls(entries)
    if kind == "transaction":
        responses = _transaction(server, req, entries)
    else:
        responses = [_batch_entry(server, req, i, entry) for i, entry in enumerate(entries)]
    headers: dict[str, str] = {}
    prefer = preference(req, "return")
    if prefer in RETURN_VALUES and any(e["request"]["method"] in ("POST", "PUT", "PATCH")
                                       for e in entries):
        headers[PREFERENCE_APPLIED] = f"return={prefer}"  # answered so in each write entry
    return FhirResponse(200, headers, resource={
        "resourceType": "Bundle", "type": f"{kind}-response", "entry": responses})


def _check_entry(i: int, entry: Any) -> None:
    where = f"Bundle.entry[{i}]"
    request = entry.get("request") if isinstance(entry, dict) else None
    if not isinstance(request, dict) or not isinstance(request.get("url"), str) or \
            not isinstance(request.get("method"), str) or request["method"] not in ORDER:
        raise FhirError(ErrorKind.INVALID, f"{where}.request needs a method (GET, HEAD, POST, "
                        "PUT, PATCH, DELETE) and a url", expression=[f"{where}.request"])
    if request["method"] in ("POST", "PUT") and not isinstance(entry.get("resource"), dict):
        raise FhirError(ErrorKind.INVALID, f"{where}: {request['method']} needs a resource",
                        expression=[f"{where}.resource"])


def _check_full_urls(entries: list[dict[str, Any]]) -> None:
    """400 naming the entry for a fullUrl that is not a URI, or that an earlier entry
    already has (bdl-7: unique, unless the versions differ). A duplicate would make
    ``urn:uuid`` references ambiguous: the last entry silently won (issue 27)."""
    seen: dict[tuple[str, Any], int] = {}
    for i, entry in enumerate(entries):
        full_url = entry.get("fullUrl")
        if full_url is None:
            continue
        where = f"Bundle.entry[{i}].fullUrl"
        if not isinstance(full_url, str) or not full_url or \
                any(c.isspace() or ord(c) < 32 for c in full_url):
            raise FhirError(ErrorKind.INVALID, f"{where} must be a URI (a string without "
                            "whitespace)", expression=[where])
        resource = entry.get("resource")
        meta = resource.get("meta") if isinstance(resource, dict) else None
        version = meta.get("versionId") if isinstance(meta, dict) else None
        key = (full_url, version if isinstance(version, str) else None)
        if key in seen:
            raise FhirError(ErrorKind.INVALID, f"{where}: {full_url[:200]} is also the "
                            f"fullUrl of Bundle.entry[{seen[key]}] (bdl-7: fullUrl must be "
                            "unique in a Bundle)", expression=[where])
        seen[key] = i


def _entry_request(req: FhirRequest, entry: dict[str, Any], where: str = "Bundle.entry"
                   ) -> FhirRequest:
    request = entry["request"]
    url = request["url"]
    if url.startswith(req.base_url + "/"):
        url = url[len(req.base_url) + 1:]
    path, params = split_url(url)
    headers = {}
    for field, header in (("ifNoneExist", "if-none-exist"), ("ifMatch", "if-match"),
                          ("ifNoneMatch", "if-none-match"), ("ifModifiedSince",
                                                             "if-modified-since")):
        if isinstance(request.get(field), str):
            headers[header] = request[field]
    prefer = req.header("prefer")
    if prefer:
        headers["prefer"] = prefer
    body = entry.get("resource")
    if request["method"] == "PATCH" and isinstance(body, dict) and \
            body.get("resourceType") == "Binary":
        try:
            body = orjson.loads(base64.b64decode(body.get("data", ""), validate=True))
        except (ValueError, TypeError):
            raise FhirError(ErrorKind.INVALID, "a PATCH entry's Binary.data must be a "
                            "base64 JSON Patch document",
                            expression=[f"{where}.resource.data"]) from None
    # Entries act for the same principal, share its access view and audit list.
    context = replace(req.context, source="bundle")
    return route(request["method"], path, params, body=body, headers=headers,
                 base_url=req.base_url, context=context)


def _response_entry(req: FhirRequest, resp: FhirResponse) -> dict[str, Any]:
    status = f"{resp.status} {HTTPStatus(resp.status).phrase}"
    response: dict[str, Any] = {"status": status}
    if "Location" in resp.headers:
        response["location"] = resp.headers["Location"]
    if "ETag" in resp.headers:
        response["etag"] = resp.headers["ETag"]
    out: dict[str, Any] = {}
    payload = resp.raw if resp.raw is not None else resp.resource
    resource = materialize(payload) if payload is not None else None
    if "Last-Modified" in resp.headers:  # an instant, not the header's HTTP-date
        response["lastModified"] = _instant(resp.headers["Last-Modified"], resource)
    if resource is not None:
        if resource.get("resourceType") == "OperationOutcome" and resp.status >= 300:
            response["outcome"] = resource
        else:
            if resource.get("resourceType") not in (None, "OperationOutcome", "Bundle"):
                out["fullUrl"] = f"{req.base_url}/{resource['resourceType']}/{resource['id']}"
            out["resource"] = resource
    out["response"] = response
    return out


def _instant(http_date: str, resource: dict[str, Any] | None) -> str:
    """Bundle.entry.response.lastModified is an instant: the resource's own
    ``meta.lastUpdated`` when it has one, else the Last-Modified header converted
    (the HTTP-date there made the response Bundle invalid, and unrenderable in XML)."""
    meta = resource.get("meta") if isinstance(resource, dict) else None
    updated = meta.get("lastUpdated") if isinstance(meta, dict) else None
    if isinstance(updated, str):
        return updated
    when = parsedate_to_datetime(http_date).astimezone(UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _batch_entry(server: Server, req: FhirRequest, i: int, entry: dict[str, Any]
                 ) -> dict[str, Any]:
    try:
        sub = _entry_request(req, entry, f"Bundle.entry[{i}]")
        if sub.interaction == Interaction.BATCH:
            raise FhirError(ErrorKind.INVALID, "a batch entry cannot be a nested batch")
        resp = server.dispatch(sub)
    except FhirError as exc:
        resp = FhirResponse(exc.status, {}, resource=exc.operation_outcome())
    return _response_entry(req, resp)


def _transaction(server: Server, req: FhirRequest, entries: list[dict[str, Any]]
                 ) -> list[dict[str, Any]]:
    order = sorted(range(len(entries)), key=lambda i: ORDER[entries[i]["request"]["method"]])
    results: dict[int, dict[str, Any]] = {}
    with server.store.write():
        requests = {i: _entry_request(req, entries[i], f"Bundle.entry[{i}]")
                    for i in range(len(entries))}
        mapping, existing = _assign_ids(server, entries, requests)
        for i, sub in requests.items():
            sub.context.deferred = []
            if sub.body is not None and sub.interaction != Interaction.PATCH:
                sub.body = _rewrite(server, sub.body, mapping, f"Bundle.entry[{i}].resource")
        for i in order:
            sub = requests[i]
            if sub.interaction == Interaction.BATCH:
                raise FhirError(ErrorKind.INVALID, f"Bundle.entry[{i}] cannot be a nested "
                                "transaction")
            with _located(i):
                resp = existing[i] if i in existing else server.dispatch(sub)
            results[i] = _response_entry(req, resp)
        for i in order:  # rules about other entries, now that every entry is applied
            with _located(i):
                for check in requests[i].context.deferred or []:
                    check()
    return [results[i] for i in range(len(entries))]


@contextmanager
def _located(i: int) -> Iterator[None]:
    """An entry's refusal names the entry (Bundle.entry[i])."""
    try:
        yield
    except FhirError as exc:
        where = f"Bundle.entry[{i}]"
        exc.issues = [Issue(f"{where}: {issue.diagnostics}", issue.code, issue.severity,
                            issue.expression or [where]) for issue in exc.issues]
        raise


def _assign_ids(server: Server, entries: list[dict[str, Any]],
                requests: dict[int, FhirRequest]
                ) -> tuple[dict[str, str], dict[int, FhirResponse]]:
    """fullUrl -> ``Type/id`` for every entry that creates, and the conditional creates
    already satisfied by an existing resource (their responses)."""
    mapping: dict[str, str] = {}
    existing: dict[int, FhirResponse] = {}
    for i, sub in requests.items():
        full_url = entries[i].get("fullUrl")
        rtype = sub.resource_type
        target: str | None = None
        if sub.interaction == Interaction.CREATE and rtype:
            found = _existing(server, sub, rtype, i)
            if found is not None:
                existing[i], target = found
            else:
                sub.assigned_id = str(uuid.uuid4())
                target = f"{rtype}/{sub.assigned_id}"
        elif sub.interaction == Interaction.UPDATE and rtype and isinstance(full_url, str):
            target = _update_target(server, sub, rtype, i)
        if target is not None and isinstance(full_url, str):
            mapping[full_url] = target
    return mapping, existing


def _existing(server: Server, sub: FhirRequest, rtype: str, i: int
              ) -> tuple[FhirResponse, str] | None:
    """A conditional create (``ifNoneExist``) one resource already satisfies: its answer
    and its ``Type/id``; 412 when several do."""
    condition = sub.header("if-none-exist")
    if not condition:
        return None
    matches = find_matches(server, rtype, criteria_from_header(condition),
                           f"Bundle.entry[{i}].request.ifNoneExist")
    if len(matches) > 1:
        raise FhirError(ErrorKind.PRECONDITION_FAILED,
                        f"Bundle.entry[{i}]: ifNoneExist matches {len(matches)}")
    if not matches:
        return None
    found = matches[0]
    return FhirResponse(
        200, {"Location": f"{sub.base_url}/{rtype}/{found.id}/_history/{found.vid}",
              "ETag": f'W/"{found.vid}"'},
        raw=RawJson(found.body or b"")), f"{rtype}/{found.id}"


def _update_target(server: Server, sub: FhirRequest, rtype: str, i: int) -> str | None:
    """The ``Type/id`` an update entry writes: its id, the one resource its conditional
    criteria match, or (none matched) the id it creates."""
    if sub.id is not None:
        return f"{rtype}/{check_id(sub.id)}"
    if not isinstance(sub.body, dict):
        return None
    matches = find_matches(server, rtype, sub.params, f"Bundle.entry[{i}]")
    if len(matches) == 1:
        return f"{rtype}/{matches[0].id}"
    if matches:
        return None
    new_id = sub.body.get("id") or str(uuid.uuid4())
    sub.body = {**sub.body, "id": new_id}
    return f"{rtype}/{new_id}"


def _rewrite(server: Server, node: Any, mapping: dict[str, str], where: str) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                out[key] = _resolve_reference(server, value, mapping, where)
            elif key == "div" and isinstance(value, str):  # Narrative.div (xhtml)
                out[key] = NARRATIVE_LINK.sub(
                    lambda m: m.group(1) + m.group(2) + mapping.get(m.group(3), m.group(3)) +
                    m.group(2), value)
            else:
                out[key] = _rewrite(server, value, mapping, where)
        return out
    if isinstance(node, list):
        return [_rewrite(server, v, mapping, where) for v in node]
    return node


def _resolve_reference(server: Server, ref: str, mapping: dict[str, str], where: str) -> str:
    if ref in mapping:
        return mapping[ref]
    if ref.startswith("urn:uuid:") or ref.startswith("urn:oid:"):
        raise FhirError(ErrorKind.INVALID, f"{where}: reference {ref} matches no fullUrl in "
                        "the transaction", expression=[where])
    match = CONDITIONAL_REF.match(ref)
    if match is None:
        return ref
    rtype, query = match.groups()
    path, params = split_url(f"{rtype}?{query}")
    found = find_matches(server, path, params, f"conditional reference {ref}")
    if len(found) != 1:
        raise FhirError(ErrorKind.PRECONDITION_FAILED if found else ErrorKind.NOT_FOUND,
                        f"{where}: conditional reference {ref} matches {len(found)} resources "
                        "(exactly one required)", expression=[where])
    mapping[ref] = f"{rtype}/{found[0].id}"
    return mapping[ref]
