"""The adapters' queues as Prometheus gauges: what ``/metrics`` reads from the store at
scrape time for the delivery outbox and the HL7 outbound queue (issue 29 item 2). The
composition root (``teleimagerie serve``) hands :func:`measure` to
:mod:`fhir_server.metrics_server`, which does not import the adapters."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Any

from prometheus_client.core import GaugeMetricFamily

from adapters.delivery import outbox as delivery_outbox
from adapters.delivery.outbox import CODE, STATES, SYSTEM
from adapters.delivery.outbox import Outbox as Deliveries
from adapters.hl7v2 import records
from adapters.hl7v2.records import KIND_SYSTEM, OUTBOUND, MessageStore
from adapters.principals import QUEUE_GAUGES
from fhir_server.search.query import QueryParser
from fhir_server.security.system import as_system

DELIVERY_CHANNELS = ("dmp", "ris", "mssante")
HL7_STATES = ("pending", "sent", "failed", "dead")


def _age(instant: str) -> float:
    try:
        when = datetime.fromisoformat(instant.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (datetime.now(UTC) - when).total_seconds())


@cache
def _register() -> None:
    """The search parameters the counts use (once per process)."""
    records.register_all()
    delivery_outbox.register_all()


def measure(server: Any, items: GaugeMetricFamily, oldest: GaugeMetricFamily,
            dead: GaugeMetricFamily) -> None:
    """Depth by state, oldest pending age and dead letters of the delivery outbox and the
    HL7 outbound queue, counted in the store at scrape time."""
    _register()
    store = as_system(server, QUEUE_GAUGES)
    parser = QueryParser(server.limits)

    def count(rtype: str, params: list[tuple[str, str]]) -> int:
        return int(store.search(parser.parse(rtype, params), count_only=True).total or 0)

    deliveries = Deliveries(server)
    for channel in DELIVERY_CHANNELS:
        base = [("code", f"{SYSTEM}|{CODE}"), ("delivery-channel", channel)]
        for state in STATES:
            n = count("Task", [*base, ("business-status", f"{SYSTEM}|{state}")])
            items.add_metric(["delivery", channel, state], float(n))
            if state == "lettre-morte":
                dead.add_metric(["delivery", channel], float(n))
        first = deliveries.find([("delivery-channel", channel), ("status", "requested"),
                                 ("_sort", "authored-on")], limit=1)
        oldest.add_metric(["delivery", channel],
                          _age(first[0].created) if first else 0.0)
    outbound = [("code", f"{KIND_SYSTEM}|{OUTBOUND}")]
    for state in HL7_STATES:
        n = count("Basic", [*outbound, ("hl7-status", state)])
        items.add_metric(["hl7", "mllp", state], float(n))
        if state == "dead":
            dead.add_metric(["hl7", "mllp"], float(n))
    first_hl7 = MessageStore(server).find([*outbound, ("hl7-status", "pending"),
                                           ("_sort", "hl7-next")], limit=1)
    oldest.add_metric(["hl7", "mllp"], _age(first_hl7[0].created) if first_hl7 else 0.0)
