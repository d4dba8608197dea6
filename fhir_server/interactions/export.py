"""``$export`` — FHIR Bulk Data Access IG v2 (hl7.org/fhir/uv/bulkdata/export.html),
asynchronous (async-bundle pattern of the IG; ADR 0025).

- Kick-off: ``GET|POST [base]/$export``, ``[base]/Patient/$export``,
  ``[base]/Group/[id]/$export`` with ``Prefer: respond-async`` → 202 and
  ``Content-Location`` (the status URL). Parameters: ``_outputFormat`` (NDJSON only),
  ``_since``, ``_type``, ``_typeFilter``; a POST carries them in a ``Parameters`` body.
- Status: ``GET [base]/$export-poll-status?_jobId=…`` → 202 with ``X-Progress`` and
  ``Retry-After`` while it runs, 200 and the manifest when done, an OperationOutcome
  (500) when it failed; ``DELETE`` cancels it (202), after which it is 404.
- Files: ``GET [base]/$export-file?_jobId=…&_file=…`` (``requiresAccessToken``: the
  kick-off's principal only), streamed from disk as ``application/fhir+ndjson``.

Rights are a search's (R-SEC-2): each type needs the search right of the caller's roles
and scopes (a named type without it is refused, an implied one left out), and every page
is a search through the caller's guard (:mod:`.bulk.run`). Each request is audited by
the server like any operation (BALP), the kick-off with its query, a download with the
file it served. The job is its record on disk (:mod:`.bulk.jobs`).
"""

from __future__ import annotations

import re
import time
from email.utils import formatdate
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

from fhir_server.core.errors import ErrorKind, FhirError, invalid, not_found, outcome
from fhir_server.core.model import FhirRequest, FhirResponse
from fhir_server.core.resource_types import CONFORMANCE_TYPES, SUPPORTED_TYPES, is_supported
from fhir_server.interactions.bulk import run
from fhir_server.interactions.bulk.jobs import (
    ACCEPTED,
    COMPLETED,
    FAILED,
    ExportSettings,
    Gone,
    Jobs,
)
from fhir_server.interactions.search import may_search
from fhir_server.search.compartments import compartment
from fhir_server.search.query import RESULT_PARAMS, QueryParser
from fhir_server.search.values import date_range, now_us
from fhir_server.security.access import GuardedStore
from fhir_server.store.base import Store

if TYPE_CHECKING:
    from fhir_server.interactions.port import Server

OUTPUT_FORMATS = frozenset({"application/fhir+ndjson", "application/ndjson", "ndjson"})
NDJSON = "application/fhir+ndjson"
KICKOFF_PARAMS = frozenset({"_outputFormat", "_since", "_type", "_typeFilter", "_format"})
RETRY_AFTER = "2"  # seconds between polls the server asks for
MAX_GROUP_MEMBERS = 10_000
_NEXT_FILTER = re.compile(r",(?=[A-Z][A-Za-z]*\?)")  # where the next Type?query starts


def jobs() -> Jobs:
    return Jobs(ExportSettings.from_env())


def _owner(req: FhirRequest) -> dict[str, str] | None:
    principal = req.context.principal
    return None if principal is None else {"sub": principal.sub, "iss": principal.issuer}


# -- kick-off ----------------------------------------------------------------------------

def kickoff(server: Server, req: FhirRequest) -> FhirResponse:
    """Start an export (export.html#bulk-data-kick-off-request)."""
    level = _level(req)
    if "respond-async" not in (req.header("prefer") or ""):
        raise invalid("$export is asynchronous: send the header Prefer: respond-async")
    params = _parameters(req)
    unknown = sorted({k for k, _ in params} - KICKOFF_PARAMS)
    if unknown:
        raise FhirError(ErrorKind.INVALID, f"$export does not support the parameter "
                        f"{unknown[0]} (supported: _outputFormat, _since, _type, "
                        "_typeFilter)", expression=[unknown[0]])
    fmt = _single(params, "_outputFormat") or NDJSON
    if fmt not in OUTPUT_FORMATS:
        raise invalid(f"_outputFormat {fmt!r} is not supported: use {NDJSON}",
                      "_outputFormat")
    since = _since(_single(params, "_since"))
    named = _named_types(params)
    allowed = _level_types(level)
    for rtype in named:
        if rtype in CONFORMANCE_TYPES or not is_supported(rtype):
            raise invalid(f"_type: resource type {rtype} is not exported", "_type")
        if rtype not in allowed:
            raise invalid(f"_type: {rtype} is not in the Patient compartment", "_type")
    types = [t for t in (named or allowed) if may_search(req, t, bool(named))]
    filters = _type_filters(params, types)
    patients = _group_members(server, req) if level == "group" else None
    transaction = _transaction_time(server.store)
    plan = run.Plan(types, transaction, since, filters, patients)
    store = server.store
    box = jobs()
    box.sweep()
    job_id = box.new_id()
    record: dict[str, Any] = {
        "id": job_id, "status": ACCEPTED, "owner": _owner(req), "created": time.time(),
        "beat": time.time(), "request": _request_url(req, params), "level": level,
        "transactionTime": _instant(transaction), "base": req.base_url,
        "types": types, "progress": None, "output": [], "error": []}
    box.create(record)
    run.start(box, record, _worker_store(store), plan)
    location = f"{req.base_url}/$export-poll-status?{urlencode({'_jobId': job_id})}"
    req.audit_targets = [t for t in (_target(req),) if t]
    return FhirResponse(202, {"Content-Location": location}, resource=outcome(
        f"export {job_id} accepted: poll {location}"))


def _level(req: FhirRequest) -> str:
    if req.resource_type is None and req.id is None:
        return "system"
    if req.resource_type == "Patient" and req.id is None:
        return "patient"
    if req.resource_type == "Group" and req.id is not None:
        return "group"
    raise FhirError(ErrorKind.NOT_FOUND, "$export is served on [base]/$export, "
                    "[base]/Patient/$export and [base]/Group/[id]/$export")


def _target(req: FhirRequest) -> str | None:
    return f"Group/{req.id}" if req.resource_type == "Group" and req.id else None


def _parameters(req: FhirRequest) -> list[tuple[str, str]]:
    """The query's parameters, and a POST's ``Parameters`` body (export.html: POST)."""
    params = list(req.params)
    body = req.body
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        for p in body.get("parameter") or []:
            value = next((v for k, v in p.items() if k.startswith("value")), None)
            if isinstance(p.get("name"), str) and isinstance(value, str | bool | int):
                params.append((p["name"], str(value).lower() if isinstance(value, bool)
                               else str(value)))
    elif body is not None:
        raise invalid("a $export POST carries a Parameters resource")
    return params


def _single(params: list[tuple[str, str]], name: str) -> str | None:
    values = [v for k, v in params if k == name]
    if len(values) > 1:
        raise invalid(f"{name} is given more than once", name)
    return values[0] if values else None


def _since(text: str | None) -> int | None:
    """``_since``: an instant; resources changed strictly after it."""
    if text is None:
        return None
    found = date_range(text) if "T" in text else None
    if found is None:
        raise invalid(f"_since {text!r} is not a FHIR instant (e.g. "
                      "2024-01-01T00:00:00Z)", "_since")
    return found[0]


def _named_types(params: list[tuple[str, str]]) -> list[str]:
    names: list[str] = []
    for key, value in params:
        if key == "_type":
            names += [n.strip() for n in value.split(",") if n.strip() and n.strip()
                      not in names]
    if any(k == "_type" for k, _ in params) and not names:
        raise invalid("_type names no resource type", "_type")
    return names


def _level_types(level: str) -> list[str]:
    """What an export of this level covers without ``_type``: every stored type at the
    system level, the Patient compartment's types (compartmentdefinition-patient) for a
    patient or a group."""
    if level == "system":
        return [t for t in SUPPORTED_TYPES if t not in CONFORMANCE_TYPES]
    return ["Patient", *sorted(t for t in compartment("Patient").members if t != "Patient")]


def _type_filters(params: list[tuple[str, str]], types: list[str]
                  ) -> dict[str, list[list[tuple[str, str]]]]:
    """``_typeFilter=Type?search``: each checked now (400 on an unknown parameter); the
    filters of one type are ORed (export.html#_typefilter)."""
    out: dict[str, list[list[tuple[str, str]]]] = {}
    for key, value in params:
        if key != "_typeFilter":
            continue
        for item in _filter_items(value):
            rtype, _, query = item.partition("?")
            if rtype not in types:
                raise invalid(f"_typeFilter {rtype!r} names a type this export does not "
                              "cover (see _type and your rights)", "_typeFilter")
            pairs = parse_qsl(query, keep_blank_values=True)
            bad = [k for k, _ in pairs if k in RESULT_PARAMS or
                   k.startswith(("_include", "_revinclude"))]
            if not pairs or bad:
                raise invalid(f"_typeFilter {item!r}: a search on {rtype} without result "
                              "parameters (_count, _sort, _include…)", "_typeFilter")
            QueryParser(run._PARSER_LIMITS, strict=True).parse(rtype, pairs)
            out.setdefault(rtype, []).append(pairs)
    return out


def _filter_items(value: str) -> list[str]:
    """The filters of one ``_typeFilter`` value: comma-separated, each ``Type?query``; a
    comma followed by anything but ``Type?`` belongs to the query (an OR list)."""
    return [part for part in _NEXT_FILTER.split(value) if part.strip()]


def _group_members(server: Server, req: FhirRequest) -> list[str]:
    """The patients of ``Group/[id]`` (``member.entity``, inactive members left out), read
    through the caller's guard: a Group it may not see is absent (404)."""
    assert req.id
    group = server.store.read("Group", req.id)
    if group is None or group.body is None:
        if group is not None and group.deleted:
            raise FhirError(ErrorKind.GONE, f"Group/{req.id} was deleted")
        raise not_found("Group", req.id)
    import orjson

    resource = orjson.loads(group.body)
    patients: list[str] = []
    for member in resource.get("member") or []:
        ref = (member.get("entity") or {}).get("reference") if isinstance(member, dict) \
            else None
        if member.get("inactive") is True or not isinstance(ref, str):
            continue
        kind, _, rid = ref.partition("/")
        if kind == "Patient" and rid and rid not in patients:
            patients.append(rid.split("/")[0])
    if len(patients) > MAX_GROUP_MEMBERS:
        raise FhirError(ErrorKind.TOO_COSTLY, f"Group/{req.id} has more than "
                        f"{MAX_GROUP_MEMBERS} patients: export it by _typeFilter instead")
    return patients


def _transaction_time(store: Store) -> int:
    """Now, taken inside a write unit: every version stamped before it has committed,
    so the next ``_since`` export misses none (writers are serialised)."""
    with store.write(durable=False):
        return now_us()


def _instant(us: int) -> str:
    """An instant to the microsecond (``transactionTime``: the next ``_since``)."""
    from datetime import UTC, datetime, timedelta

    dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)
    return dt.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _request_url(req: FhirRequest, params: list[tuple[str, str]]) -> str:
    path = {"system": "", "patient": "Patient/",
            "group": f"Group/{req.id}/"}[_level(req)]
    query = urlencode(params)
    return f"{req.base_url}/{path}$export" + (f"?{query}" if query else "")


def _worker_store(store: Store) -> Store:
    """The job's own view of the store, as the caller may see it (its guard, for its
    thread). It does not list the patients of every page for an audit: the kick-off's
    and the downloads' AuditEvents are the export's (ADR 0025)."""
    if isinstance(store, GuardedStore):
        view = type(store)(store, store.access)  # the guard unwraps the view it is given
        view.records_touched = False
        return view
    return store


# -- status, cancel ----------------------------------------------------------------------

def status(server: Server, req: FhirRequest) -> FhirResponse:
    """``GET`` the status of a job (export.html#bulk-data-status-request); ``DELETE``
    cancels it (export.html#bulk-data-delete-request)."""
    box = jobs()
    box.sweep()
    record = _job(box, req)
    if req.method == "DELETE":
        box.remove(record["id"])
        return FhirResponse(202, {}, resource=outcome(f"export {record['id']} cancelled"))
    state = record.get("status")
    if state not in (COMPLETED, FAILED) and not run.running_here(record["id"]) and \
            box.stale(record):
        record.update(status=FAILED, ended=time.time(), message="the export was "
                      "interrupted (server restart); kick it off again")
        try:
            box.save(record, flush=True)
        except Gone:
            raise not_found("export", record["id"]) from None
        for path in box.path(record["id"]).glob("*.ndjson"):
            path.unlink(missing_ok=True)
        state = FAILED
    if state == FAILED:
        raise FhirError(ErrorKind.INTERNAL, str(record.get("message") or "export failed"))
    if state != COMPLETED:
        return FhirResponse(202, {"X-Progress": _progress(record),
                                  "Retry-After": RETRY_AFTER})
    return FhirResponse(200, {"Expires": formatdate(
        float(record["ended"]) + box.settings.retention, usegmt=True)},
        resource=manifest(record))


def _job(box: Jobs, req: FhirRequest) -> dict[str, Any]:
    """The caller's job: another principal's is as absent (404), like a hidden resource."""
    if req.resource_type is not None or req.id is not None:
        raise FhirError(ErrorKind.NOT_FOUND, f"${req.operation} is a system-level operation")
    job_id = req.param("_jobId") or ""
    record = box.load(job_id) if job_id else None
    if record is None or record.get("owner") != _owner(req):
        raise FhirError(ErrorKind.NOT_FOUND, f"no export job {job_id[:40]!r} (unknown, "
                        "cancelled or expired)")
    return record


def _progress(record: dict[str, Any]) -> str:
    done = record.get("progress")
    if not done:
        return "queued"
    return (f"{done['type']} ({done['rank']}/{done['types']} types): "
            f"{done['exported']} resources exported")


def manifest(record: dict[str, Any]) -> dict[str, Any]:
    """The complete status (export.html#response---complete-status)."""
    def url(name: str) -> str:
        return f"{record['base']}/$export-file?{urlencode({'_jobId': record['id'], '_file': name})}"

    return {
        "transactionTime": record["transactionTime"],
        "request": record["request"],
        "requiresAccessToken": True,
        "output": [{"type": o["type"], "url": url(o["file"]), "count": o["count"]}
                   for o in record.get("output") or []],
        "error": [{"type": e["type"], "url": url(e["file"]), "count": e["count"]}
                  for e in record.get("error") or []],
    }


# -- files -------------------------------------------------------------------------------

def download(server: Server, req: FhirRequest) -> FhirResponse:
    """One output file (export.html#file-request), with the kick-off's token; streamed
    from disk by the transport, never read whole."""
    box = jobs()
    record = _job(box, req)
    name = req.param("_file") or ""
    path = box.file(record["id"], name) if record.get("status") == COMPLETED else None
    if path is None:
        raise FhirError(ErrorKind.NOT_FOUND, f"export {record['id']} has no file "
                        f"{name[:80]!r}")
    return FhirResponse(200, {"Content-Disposition": f'attachment; filename="{name}"'},
                        file=str(path))


OPERATIONS = {
    (None, "export"): kickoff,
    ("Patient", "export"): kickoff,
    ("Group", "export"): kickoff,
    (None, "export-poll-status"): status,
    (None, "export-file"): download,
}
