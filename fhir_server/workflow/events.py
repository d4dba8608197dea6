"""The workflow's consequences as typed events (issue 28 item 6, ADR 0022).

A write that changes a request's state, makes a report final or amended, withdraws a
report or makes its documents available *publishes* an event; the handlers that the
composition root (:mod:`teleimagerie.wiring`) subscribed — the HL7 outbox (ANS TLR
flux 3), the CDA publisher (R-REP-5), the delivery planner (R-INT-1) and, later, FHIR
Subscriptions — consume it. Handlers run at once, in subscription order, inside the
publishing write unit: what they write (an ORU row, the documents, the deliveries) is
committed with the change that caused it or not at all, and nothing is acknowledged
before it is stored. The core never names a handler."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from fhir_server.core.model import FhirRequest
    from fhir_server.server.dispatch import FhirServer
    from fhir_server.workflow.engine import Case


@dataclass(frozen=True)
class Event:
    """Something the write unit of ``req`` did; ``req`` is None on a replay (no client)."""

    req: FhirRequest | None


@dataclass(frozen=True)
class RequestStateChanged(Event):
    """The request moved along ``transition`` (a name of ``machine.TRANSITIONS``) to the
    state of ``case`` (R-VAL-*)."""

    case: Case
    transition: str


@dataclass(frozen=True)
class ReportIssued(Event):
    """The request's report was made final (``amended`` False) or amended (R-REP-5,
    R-REP-6): its documents are due."""

    case: Case
    amended: bool


@dataclass(frozen=True)
class ReportWithdrawn(Event):
    """A final report was set to entered-in-error: it is withdrawn wherever it went."""

    case: Case
    report_id: str


@dataclass(frozen=True)
class DocumentsAvailable(Event):
    """A report version's documents are stored (``documents``: level -> DocumentReference,
    ``sources``: what they were built from, :class:`adapters.cda.sources.Sources`)."""

    sources: Any
    documents: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class DocumentsWithdrawn(Event):
    """The documents of ``report`` (of ``request``) were set to entered-in-error."""

    report: str
    request: str


E = TypeVar("E", bound=Event)
Handler = Callable[["FhirServer", E], object]  # what it returns is ignored


class Events:
    """The handlers of each event type, in subscription order (the composition root's)."""

    def __init__(self) -> None:
        self._handlers: dict[type[Event], list[Callable[[FhirServer, Any], object]]] = {}

    def subscribe(self, kind: type[E], handler: Handler[E]) -> None:
        self._handlers.setdefault(kind, []).append(handler)

    def publish(self, server: FhirServer, event: Event) -> None:
        """Runs the handlers of ``event``'s type in the caller's write unit: an error
        fails the write, which rolls back (nothing half done)."""
        for handler in self._handlers.get(type(event), ()):
            handler(server, event)


def publish(server: FhirServer, event: Event) -> None:
    """Publishes ``event`` to the handlers of the server's workflow (none without one)."""
    if server.workflow is not None:
        server.workflow.events.publish(server, event)
