"""DICOMweb STOW-RS on the HTTP app (PS3.18 §10.5, R-INT-2): ``POST /dicomweb/studies``
and ``/dicomweb/studies/{study}``, mounted by the composition root through the app's
``mounts`` (issue 28 item 1). The token is checked before the body is read; a refused
one goes through the core, which audits it like any other (R-SEC-3)."""

from __future__ import annotations

import json
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from adapters.dicom import stow as dicom_stow
from adapters.dicom.settings import DicomSettings
from fhir_server import metrics
from fhir_server.config import Settings
from fhir_server.core.errors import ErrorKind, FhirError
from fhir_server.core.formats import dumps
from fhir_server.core.model import FhirRequest, Interaction, RequestContext
from fhir_server.http.body import read_body
from fhir_server.server.dispatch import FhirServer, Rendered, render_error


def mount(app: FastAPI, core: FhirServer, settings: Settings) -> None:
    """Adds the STOW-RS routes to ``app`` (a :data:`fhir_server.http.app.Mount`)."""
    dicom = DicomSettings.from_env()

    async def stow(request: Request, study: str = "") -> Response:
        """DICOMweb STOW-RS (adapters.dicom.stow): headers -> ImagingStudy + doses."""
        request_id = request.headers.get("x-request-id") or str(uuid.uuid4())
        try:
            if core.security is None:
                raise FhirError(ErrorKind.FORBIDDEN, "STOW-RS needs the security policy")
            try:
                principal = core.security.validator.principal(
                    request.headers.get("authorization"))
            except FhirError:  # refused before the body is read, and audited (R-SEC-3)
                return _respond(await run_in_threadpool(
                    _refuse, core, _refusal(request, request_id, settings.base_url)),
                    request_id)
            raw = await read_body(request, dicom.max_upload_bytes,
                                  "TELEIMG_DICOM_MAX_UPLOAD_BYTES")
            try:
                status, dataset, reasons = await run_in_threadpool(
                    dicom_stow.store, core, principal, raw,
                    request.headers.get("content-type", ""), dicom,
                    request.client[0] if request.client else "", study)
            except dicom_stow.BadUpload as exc:
                raise FhirError(ErrorKind.UNSUPPORTED_MEDIA, str(exc)) from None
        except FhirError as exc:
            return _respond(render_error(exc), request_id)
        headers = {"X-Request-Id": request_id}
        if reasons:  # FailureReason codes say little: the operator needs the why
            # a quoted string in ASCII (RFC 9110 §5.5): accents and controls \u-escaped
            headers["Warning"] = "299 teleimagerie " + json.dumps("; ".join(reasons)[:1000])
        return Response(content=dumps(dataset), status_code=status, headers=headers,
                        media_type="application/dicom+json")

    app.add_api_route("/dicomweb/studies", stow, methods=["POST"])
    app.add_api_route("/dicomweb/studies/{study}", stow, methods=["POST"])


def _refusal(request: Request, request_id: str, base_url: str | None) -> FhirRequest:
    """The STOW request as the core sees it, to refuse its token through the core, which
    audits the refusal like any other (R-SEC-3, R-INT-2)."""
    headers = {k.lower(): v for k, v in request.headers.items()}
    address = request.client[0] if request.client else None
    context = metrics.attach(RequestContext(request_id=request_id, client_address=address,
                                            user_agent=headers.get("user-agent")))
    context.source = "dicom"
    return FhirRequest(Interaction.OPERATION, operation="stow-rs", headers=headers,
                       base_url=base_url or str(request.base_url).rstrip("/") + "/fhir",
                       context=context, method=request.method)


def _refuse(core: FhirServer, req: FhirRequest) -> Rendered:
    return core.render(req, core.handle(req))


def _respond(rendered: Rendered, request_id: str) -> Response:
    headers = {**rendered.headers, "X-Request-Id": request_id}
    if not rendered.body:
        return Response(status_code=rendered.status, headers=headers)
    return Response(content=rendered.body, status_code=rendered.status, headers=headers,
                    media_type=rendered.content_type)
