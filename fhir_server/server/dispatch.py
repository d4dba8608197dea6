"""The transport-agnostic server: :class:`FhirServer` turns a FhirRequest into a FhirResponse.

``dispatch`` raises :class:`FhirError`; ``handle`` renders errors as OperationOutcome;
``render`` produces bytes and media type. The FastAPI app, Bundle entries and the
HL7/DICOM adapters all go through here.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fhir_server import logs
from fhir_server.audit.balp import build
from fhir_server.core.errors import ErrorKind, FhirError
from fhir_server.core.formats import (
    dumps,
    is_xml,
    materialize,
    media_type,
    native_binary,
    subset,
    subset_bundle,
    to_xml,
)
from fhir_server.core.limits import Limits
from fhir_server.core.model import FhirRequest, FhirResponse, Interaction
from fhir_server.core.resource_types import CONFORMANCE_TYPES, require_supported
from fhir_server.interactions import (
    bundle,
    capabilities,
    conformance,
    create,
    delete,
    everything,
    export,
    history,
    patch,
    read,
    search,
    update,
    vread,
)
from fhir_server.interactions.common import applied_handling
from fhir_server.security.access import GuardedStore
from fhir_server.security.policy import SecurityPolicy, access_for, authorize
from fhir_server.store.base import Store
from fhir_server.store.versions import WriteObserver
from fhir_server.validation.registry import ProfileRegistry

if TYPE_CHECKING:
    from fhir_server.audit.sink import AuditSink
    from fhir_server.workflow.engine import Workflow

log = logging.getLogger("teleimagerie.fhir")

# a handler of the server's tables; the interactions' own are typed against the
# narrower protocol (interactions.port.Handler), which this accepts
Handler = Callable[["FhirServer", FhirRequest], FhirResponse]

HANDLERS: dict[Interaction, Handler] = {
    Interaction.CAPABILITIES: capabilities.capabilities,
    Interaction.READ: read.read,
    Interaction.VREAD: vread.vread,
    Interaction.CREATE: create.create,
    Interaction.UPDATE: update.update,
    Interaction.PATCH: patch.patch,
    Interaction.DELETE: delete.delete,
    Interaction.HISTORY_INSTANCE: history.history,
    Interaction.HISTORY_TYPE: history.history,
    Interaction.HISTORY_SYSTEM: history.history,
    Interaction.SEARCH_TYPE: search.search,
    Interaction.SEARCH_SYSTEM: search.search_system,
    Interaction.SEARCH_COMPARTMENT: search.search_compartment,
    Interaction.BATCH: bundle.batch,
}
# (resource type or None, operation name) -> handler
OPERATIONS: dict[tuple[str | None, str], Handler] = {
    ("Patient", "everything"): everything.everything,
    **conformance.OPERATIONS,
    **export.OPERATIONS,  # Bulk Data $export (issue 31)
}
SUBSETTABLE = {Interaction.READ, Interaction.VREAD, Interaction.SEARCH_TYPE,
               Interaction.SEARCH_SYSTEM, Interaction.SEARCH_COMPARTMENT,
               Interaction.HISTORY_INSTANCE, Interaction.HISTORY_TYPE,
               Interaction.HISTORY_SYSTEM}


@dataclass
class Rendered:
    status: int
    headers: dict[str, str]
    body: bytes
    media_type: str
    file: str | None = None  # streamed by the transport instead of ``body``

    @property
    def content_type(self) -> str:
        """The Content-Type header: FHIR formats in UTF-8; a Binary's own type as is."""
        if self.media_type.startswith("application/fhir+"):
            return f"{self.media_type};charset=utf-8"
        return self.media_type


WRITES = frozenset({Interaction.CREATE, Interaction.UPDATE, Interaction.PATCH,
                    Interaction.DELETE, Interaction.BATCH})


class FhirServer:
    """The core. With a ``security`` policy every request is authenticated, authorised
    and served from a :class:`GuardedStore`; with an ``audit`` sink every interaction
    (Bundle entries included, refusals included) leaves an AuditEvent. Without them it
    trusts its caller (in-process tools and unit tests only)."""

    def __init__(self, store: Store, limits: Limits | None = None,
                 security: SecurityPolicy | None = None, audit: AuditSink | None = None,
                 name: str = "teleimagerie FHIR server",
                 profiles: ProfileRegistry | None = None,
                 workflow: Workflow | None = None) -> None:
        self.store = store
        # without a policy only the profiles a resource declares are enforced
        self.profiles = profiles or ProfileRegistry()
        self.limits = limits or Limits()
        # the téléimagerie rules and request lifecycle (issue 5); None: plain FHIR server
        self.workflow = workflow
        self.security = security
        self.audit = audit
        self.name = name
        self.released = datetime.now(UTC).strftime("%Y-%m-%d")
        # told of every version written through this server, in its write unit (issue 31:
        # the subscriptions' matcher, added by the composition root)
        self.write_observers: list[WriteObserver] = []

    def dispatch(self, req: FhirRequest) -> FhirResponse:
        """Authorise, run and audit one interaction (also each Bundle entry)."""
        if req.resource_type is not None:  # 404 "not supported" before any 403
            require_supported(req.resource_type)
        access = access_for(req, self.store, self.limits)
        if access is None:
            return self._run(self, req)
        view = copy.copy(self)
        guarded = GuardedStore(self.store, access)
        view.store = guarded
        try:
            authorize(req, access, self.name)
            resp = self._run(view, req)
        except FhirError as exc:
            self._record(req, exc.status, exc.issues[0].diagnostics if exc.issues else None,
                         guarded.touched)
            raise
        self._record(req, resp.status, None, guarded.touched, resp.headers.get("Location"))
        return resp

    @staticmethod
    def _run(server: FhirServer, req: FhirRequest) -> FhirResponse:
        if req.interaction == Interaction.OPERATION:
            table = {**OPERATIONS, **server.workflow.operations} if server.workflow \
                else OPERATIONS
            handler = table.get((req.resource_type, req.operation or "")) or (
                table.get((None, req.operation or "")) if req.resource_type else None)
            if handler is None:
                raise FhirError(ErrorKind.NOT_FOUND, f"operation ${req.operation} is not "
                                f"supported on {req.resource_type or 'the system'}")
            return handler(server, req)
        if req.resource_type in CONFORMANCE_TYPES:
            return conformance.interaction(server, req)
        return HANDLERS[req.interaction](server, req)

    def handle(self, req: FhirRequest) -> FhirResponse:
        """The entry point of every transport: errors become OperationOutcomes.

        A request that changes data runs in one write unit with its AuditEvents where the
        store has savepoints: one commit, and never a write on disk without its audit
        (R-SEC-3; issue 32). A failed interaction rolls back its own savepoint only, so
        the audit of the refusal still commits."""
        if req.interaction == Interaction.CAPABILITIES:
            return self._guarded(req)
        if self.store.savepoints and (req.interaction in WRITES or (
                req.interaction == Interaction.OPERATION and req.method == "POST")):
            with self.store.write():
                return self._handle(req)
        return self._handle(req)

    def _handle(self, req: FhirRequest) -> FhirResponse:
        recorded = len(req.context.events)
        resp = self._guarded(req)
        applied_handling(req, resp)
        if len(req.context.events) == recorded and req.context.principal is None and \
                self.security is not None:
            # refused before dispatch (no or bad token): still audited (R-SEC-3)
            self._record(req, resp.status, _diagnostics(resp), None)
        if req.interaction == Interaction.BATCH and resp.status >= 400:
            for event in req.context.events[recorded:]:
                if event.get("outcome") == "0":
                    event["outcome"] = "4"
                    event["outcomeDesc"] = "rolled back: the transaction failed"
        self._flush(req)
        return resp

    def _guarded(self, req: FhirRequest) -> FhirResponse:
        try:
            if self.security is not None and req.context.principal is None and \
                    req.interaction != Interaction.CAPABILITIES:
                req.context.principal = self.security.authenticate(req)
            return self.dispatch(req)
        except FhirError as exc:
            return error_response(exc)
        except Exception as exc:  # the id may be client-chosen (an IPP): not logged
            log.error("unhandled error in %s %s: %s", req.interaction.value,
                      req.resource_type, logs.failure(exc))
            return error_response(FhirError(ErrorKind.INTERNAL, "internal server error"))

    def _record(self, req: FhirRequest, status: int, diagnostics: str | None,
                touched: dict[str, set[str]] | None, location: str | None = None) -> None:
        if self.audit is None:
            return
        target = location[len(req.base_url) + 1:] if location and \
            location.startswith(req.base_url + "/") else None
        req.context.events.extend(build(req, status, diagnostics, touched, self.name, target))

    def _flush(self, req: FhirRequest) -> None:
        events = req.context.events
        if self.audit is None or not events:
            return
        req.context.events = []
        # writes and refusals are committed before answering; successful reads batch
        # (and a declared break-the-glass: its alert must outlive a crash, R-SEC-2)
        durable = any(e["action"] in ("C", "U", "D") or e["outcome"] != "0" or
                      "purposeOfEvent" in e for e in events)
        self.audit.record(events, durable)

    def render(self, req: FhirRequest, resp: FhirResponse) -> Rendered:
        """Serialise the payload honouring _format/Accept, _pretty, _summary, _elements."""
        if resp.file is not None:  # an export file: NDJSON whatever the Accept
            return Rendered(resp.status, resp.headers, b"", export.NDJSON, resp.file)
        try:
            return self._render(req, resp)
        except FhirError as exc:
            return render_error(exc)
        except Exception as exc:
            log.error("cannot render %s response: %s", req.interaction.value,
                      logs.failure(exc))
            return render_error(FhirError(ErrorKind.INTERNAL, "cannot render the response"))

    def _render(self, req: FhirRequest, resp: FhirResponse) -> Rendered:
        if req.resource_type == "Binary" and resp.raw is not None and resp.status == 200 \
                and req.interaction in (Interaction.READ, Interaction.VREAD) \
                and not req.param("_format"):
            native = native_binary(resp.raw, req.header("accept"))
            if native is not None:
                return Rendered(resp.status, resp.headers, *native)
        try:
            mtype = media_type(req.param("_format"), req.header("accept"))
            if not mtype.startswith("application/fhir+"):  # application/json, /xml
                mtype += ";charset=utf-8"
        except FhirError as exc:
            # an unacceptable Accept never hides an answer already refused (a 401 stays a
            # 401: the client learns why, and the audit and the answer agree)
            if resp.status < 400:
                resp = error_response(exc)
            mtype = "application/fhir+json"
        if not resp.has_body:
            return Rendered(resp.status, resp.headers, b"", mtype)
        pretty = req.param("_pretty") == "true"
        summary = req.param("_summary")
        elements = req.param("_elements")
        needs_subset = req.interaction in SUBSETTABLE and resp.status < 300 and (
            summary in ("true", "text", "data") or elements)
        payload: Any = resp.raw if resp.raw is not None else resp.resource
        if not is_xml(mtype) and not needs_subset and not pretty:
            if resp.raw is not None:  # stored bytes, served as they are
                return Rendered(resp.status, resp.headers, bytes(resp.raw), mtype)
            return Rendered(resp.status, resp.headers, dumps(payload, pretty), mtype)
        data = materialize(payload)
        if needs_subset:
            element_list = [e.strip() for e in elements.split(",")] if elements else None
            if data.get("resourceType") == "Bundle":
                data = subset_bundle(data, summary, element_list)
            else:
                data = subset(data, summary, element_list)
        if is_xml(mtype):
            return Rendered(resp.status, resp.headers, to_xml(data), mtype)
        return Rendered(resp.status, resp.headers, dumps(data, pretty), mtype)


def _diagnostics(resp: FhirResponse) -> str | None:
    issues = (resp.resource or {}).get("issue") or [{}]
    text = issues[0].get("diagnostics")
    return text if isinstance(text, str) else None


def error_response(exc: FhirError) -> FhirResponse:
    return FhirResponse(exc.status, dict(exc.headers), resource=exc.operation_outcome())


def render_error(exc: FhirError) -> Rendered:
    return Rendered(exc.status, dict(exc.headers), dumps(exc.operation_outcome()),
                    "application/fhir+json")
