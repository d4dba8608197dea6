"""The transport-agnostic FHIR core: :class:`FhirServer` turns a FhirRequest into a FhirResponse.

``dispatch`` raises :class:`FhirError`; ``handle`` renders errors as OperationOutcome;
``render`` produces bytes and media type. The FastAPI app, Bundle entries and the
HL7/DICOM adapters all go through here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fhir_server.core.errors import ErrorKind, FhirError
from fhir_server.core.formats import (
    FHIR_XML,
    dumps,
    materialize,
    media_type,
    subset,
    subset_bundle,
    to_xml,
)
from fhir_server.core.limits import Limits
from fhir_server.core.model import FhirRequest, FhirResponse, Interaction
from fhir_server.interactions import (
    bundle,
    capabilities,
    create,
    delete,
    history,
    patch,
    read,
    search,
    update,
    vread,
)
from fhir_server.store.base import Store

log = logging.getLogger("teleimagerie.fhir")

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
    Interaction.BATCH: bundle.batch,
}
SUBSETTABLE = {Interaction.READ, Interaction.VREAD, Interaction.SEARCH_TYPE,
               Interaction.HISTORY_INSTANCE, Interaction.HISTORY_TYPE,
               Interaction.HISTORY_SYSTEM}


@dataclass
class Rendered:
    status: int
    headers: dict[str, str]
    body: bytes
    media_type: str


class FhirServer:
    def __init__(self, store: Store, limits: Limits | None = None) -> None:
        self.store = store
        self.limits = limits or Limits()
        self.released = datetime.now(UTC).strftime("%Y-%m-%d")

    def dispatch(self, req: FhirRequest) -> FhirResponse:
        return HANDLERS[req.interaction](self, req)

    def handle(self, req: FhirRequest) -> FhirResponse:
        try:
            return self.dispatch(req)
        except FhirError as exc:
            return error_response(exc)
        except Exception:
            log.exception("unhandled error in %s %s/%s", req.interaction.value,
                          req.resource_type, req.id)
            return error_response(FhirError(ErrorKind.INTERNAL, "internal server error"))

    def render(self, req: FhirRequest, resp: FhirResponse) -> Rendered:
        """Serialise the payload honouring _format/Accept, _pretty, _summary, _elements."""
        try:
            return self._render(req, resp)
        except FhirError as exc:
            return render_error(exc)
        except Exception:
            log.exception("cannot render %s response", req.interaction.value)
            return render_error(FhirError(ErrorKind.INTERNAL, "cannot render the response"))

    def _render(self, req: FhirRequest, resp: FhirResponse) -> Rendered:
        try:
            mtype = media_type(req.param("_format"), req.header("accept"))
        except FhirError as exc:
            resp, mtype = error_response(exc), "application/fhir+json"
        if not resp.has_body:
            return Rendered(resp.status, resp.headers, b"", mtype)
        pretty = req.param("_pretty") == "true"
        summary = req.param("_summary")
        elements = req.param("_elements")
        needs_subset = req.interaction in SUBSETTABLE and resp.status < 300 and (
            summary in ("true", "text", "data") or elements)
        payload: Any = resp.raw if resp.raw is not None else resp.resource
        if mtype == "application/fhir+json" and not needs_subset and not pretty:
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
        if mtype == FHIR_XML:
            return Rendered(resp.status, resp.headers, to_xml(data), mtype)
        return Rendered(resp.status, resp.headers, dumps(data, pretty), mtype)


def error_response(exc: FhirError) -> FhirResponse:
    return FhirResponse(exc.status, dict(exc.headers), resource=exc.operation_outcome())


def render_error(exc: FhirError) -> Rendered:
    return Rendered(exc.status, dict(exc.headers), dumps(exc.operation_outcome()),
                    "application/fhir+json")
