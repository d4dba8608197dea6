"""The running core with its adapters (issue 28 item 1): what the adapters add to the
core goes through the interfaces the core defines — the workflow's listeners and report
checks, the HTTP app's extra routes, the resource search parameters' registry."""

from __future__ import annotations

from typing import Any

from fhir_server.config import Settings
from fhir_server.runtime import build_server
from fhir_server.server.dispatch import FhirServer
from fhir_server.workflow.engine import Workflow


def build_core(settings: Settings) -> FhirServer:
    """The core on its store, with every adapter's part of the workflow wired in."""
    from adapters.cda.check import report_check
    from adapters.cda.publish import Publisher
    from adapters.delivery import outbox as deliveries
    from adapters.delivery.engine import Planner
    from adapters.delivery.settings import DeliverySettings
    from adapters.hl7v2 import records
    from adapters.hl7v2.outbox import Outbox
    from adapters.hl7v2.settings import Hl7Settings

    records.register_all()  # the HL7 message store's search parameters (Basic)
    deliveries.register_all()  # the delivery outbox's (Task)
    workflow = Workflow(settings.workflow)
    hl7 = Hl7Settings.from_env()
    # the workflow's events and their handlers, run in the write unit (ADR 0022):
    # a decision on a request received over HL7 queues its ORU^R01 (ANS TLR flux 3)
    Outbox(hl7).subscribe(workflow.events)
    # a final or amended report gets its CDA documents (N3, N1), and they their
    # deliveries (DMP, RIS, MSSanté) in the same write unit
    Publisher().subscribe(workflow.events)
    Planner(DeliverySettings.from_env(), hl7).subscribe(workflow.events)
    # a final report whose CDA documents fail the XSD or an ANS schematron rule is refused
    # (issue 26, R-REP-6): the check is the adapters', the hook the core's
    documents = report_check()
    if documents is not None:
        workflow.report_checks.append(documents)
    return build_server(settings, workflow)


def create_asgi() -> Any:
    """The served ASGI application (uvicorn's factory): the core built here, with the
    DICOMweb STOW-RS route (R-INT-2) and the web console (issue 30) mounted on the HTTP app."""
    from adapters.console import web as console
    from adapters.dicom import web
    from fhir_server.http.app import create_asgi as asgi

    settings = Settings.from_env()
    return asgi(settings, server=build_core(settings), mounts=[web.mount, console.mount])


def create_app(settings: Settings | None = None, *, server: FhirServer) -> Any:
    """The FastAPI app on ``server`` with the adapters' routes (the app tests drive)."""
    from adapters.console import web as console
    from adapters.dicom import web
    from fhir_server.http.app import create_app as app

    return app(settings, server=server, mounts=[web.mount, console.mount])
