"""Prometheus metrics of every process of the server (issue 29, item 2).

Counters and histograms are incremented where things happen (HTTP requests, HL7
messages, MLLP connections, DICOM associations and instances, audit records appended,
store write units); queue depths, the oldest pending delivery, dead letters, the audit
indexing backlog and readiness are computed from the store when Prometheus scrapes
(:class:`StoreCollector`), in the ``serve`` process that serves ``/metrics``.

``teleimagerie serve`` runs several processes (uvicorn workers, the MLLP, DICOM and
delivery listeners): it points ``PROMETHEUS_MULTIPROC_DIR`` at ``<data dir>/metrics``
(emptied at each start) before any of them starts, so each writes its own files and the
metrics server adds them up (prometheus-client's multiprocess mode). Without it (a test,
``hl7 listen`` alone) the values live in this process's default registry.

``TELEIMG_METRICS_PORT=off`` turns every recording function here into a no-op (and
``serve`` starts no metrics server): the benchmark measures the cost that way.

R-SEC-6: label values are types, codes and states from closed sets — never an id, a
name or anything a client chose freely (an unknown resource type is ``other``).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Histogram

if TYPE_CHECKING:
    from fhir_server.core.model import RequestContext
    from fhir_server.store.base import Store

ENABLED = os.environ.get("TELEIMG_METRICS_PORT", "").lower() != "off"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0)
HTTP_REQUESTS = Counter("teleimg_http_requests", "HTTP requests answered",
                        ["interaction", "type", "status"])
HTTP_DURATION = Histogram("teleimg_http_request_duration_seconds",
                          "HTTP request latency, from the first byte in to the last out",
                          ["interaction", "type"], buckets=LATENCY_BUCKETS)
HL7_MESSAGES = Counter("teleimg_hl7_messages", "HL7 v2 messages received over MLLP",
                       ["message_type", "event", "ack_code"])
MLLP_CONNECTIONS = Counter("teleimg_mllp_connections", "MLLP connections accepted")
DICOM_ASSOCIATIONS = Counter("teleimg_dicom_associations", "DICOM associations",
                             ["event"])
DICOM_INSTANCES = Counter("teleimg_dicom_instances", "DICOM instances received by C-STORE",
                          ["outcome"])
AUDIT_APPENDED = Counter("teleimg_audit_records_appended",
                         "AuditEvent records appended to the audit journal")
STORE_WRITE = Histogram("teleimg_store_write_duration_seconds",
                        "Duration of a store write unit (commit included)",
                        buckets=LATENCY_BUCKETS)

_HL7_CODE = re.compile(r"[A-Z0-9]{3}")
ACK_CODES = frozenset({"AA", "AE", "AR", "CA", "CE", "CR"})


# -- HTTP ---------------------------------------------------------------------------------
@dataclass
class _Slot:
    context: RequestContext | None = None


_CURRENT: ContextVar[_Slot | None] = ContextVar("teleimg_request", default=None)


def attach(context: RequestContext) -> RequestContext:
    """Called by the HTTP adapter when it makes a request's context: the middleware then
    logs its request id and principal (see :class:`Observe`). Returns ``context``."""
    slot = _CURRENT.get()
    if slot is not None:
        slot.context = context
    return context


_OUTSIDE_FHIR = {"health": ("health", ""), "dicomweb": ("stow-rs", "ImagingStudy")}
_WRITES = {"PUT": "update", "PATCH": "patch", "DELETE": "delete"}
_ON_INSTANCE = {"GET": "read", "HEAD": "read", **_WRITES}


def classify(method: str, path: str, query: bool) -> tuple[str, str]:
    """(interaction, resource type) of a request, from its method and path alone — closed
    label sets: an unsupported type is ``other``, an id never appears."""
    parts = [p for p in path.split("/") if p]
    if not parts:
        return "other", ""
    if parts[0] != "fhir":
        return _OUTSIDE_FHIR.get(parts[0], ("other", ""))
    return _fhir(method, parts[1:])


def _fhir(method: str, rest: list[str]) -> tuple[str, str]:
    """Under ``/fhir``: the system level, else the type named first."""
    from fhir_server.core.resource_types import is_supported

    if not rest:
        return ("batch" if method == "POST" else "other"), ""
    first = rest[0]
    if first == "metadata":
        return "capabilities", ""
    if first.startswith("$"):
        return "operation", ""
    if first in ("_history", "_search") or first.startswith("."):
        return ("history" if first == "_history" else "search-system"), ""
    return _on_type(method, rest, first if is_supported(first) else "other")


def _on_type(method: str, rest: list[str], rtype: str) -> tuple[str, str]:
    """``[type]``, ``[type]/[id]`` and what follows them."""
    if len(rest) == 1 or (len(rest) == 2 and rest[1] == "_search"):
        if method == "POST" and len(rest) == 1:
            return "create", rtype
        return _WRITES.get(method, "search-type"), rtype
    if rest[1].startswith("$") or (len(rest) > 2 and rest[2].startswith("$")):
        return "operation", rtype
    if rest[1] == "_history":
        return "history", rtype
    if len(rest) >= 3 and rest[2] == "_history":
        return ("vread" if len(rest) == 4 else "history"), rtype
    if len(rest) >= 3:
        return "search-compartment", rtype
    return _ON_INSTANCE.get(method, "other"), rtype


class Observe:
    """ASGI middleware outermost around the served app: counts and times every HTTP
    request (labels from :func:`classify`) and, when ``log`` is true, writes one access
    line to ``teleimagerie.access`` with the request id, the principal's ``sub``, the
    interaction, type, status and duration (the JSON log format's fields; R-SEC-6: the
    path is not logged here, no query value either)."""

    def __init__(self, app: Any, log: bool = False) -> None:
        import logging

        self.app = app
        self.log = log
        self.logger = logging.getLogger("teleimagerie.access")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]
        request_id = [""]
        slot = _Slot()
        token = _CURRENT.set(slot)

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                for key, value in message.get("headers") or ():
                    if key.lower() == b"x-request-id":
                        request_id[0] = value.decode("latin-1")
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            _CURRENT.reset(token)
            elapsed = time.perf_counter() - start
            interaction, rtype = classify(scope["method"], scope["path"],
                                          bool(scope.get("query_string")))
            if ENABLED:
                HTTP_REQUESTS.labels(interaction, rtype, str(status[0])).inc()
                HTTP_DURATION.labels(interaction, rtype).observe(elapsed)
            if self.log and self.logger.isEnabledFor(20):
                context = slot.context
                principal = getattr(context, "principal", None) if context else None
                self.logger.info(
                    "%s %s %s %.1f ms", interaction, rtype or "-", status[0],
                    elapsed * 1000, extra={
                        "request_id": (context.request_id if context else request_id[0])
                        or None,
                        "principal": getattr(principal, "sub", None),
                        "interaction": interaction, "type": rtype or None,
                        "status": status[0], "duration_ms": round(elapsed * 1000, 2)})


# -- HL7, DICOM ---------------------------------------------------------------------------
def _msh_field(payload: bytes, index: int) -> str:
    """MSH-``index`` of a raw message (MSH-1 is the field separator itself)."""
    head = payload[:512].split(b"\r", 1)[0]
    if not head.startswith(b"MSH") or len(head) < 4:
        return ""
    fields = head.split(head[3:4])
    try:
        return fields[index - 1].decode("ascii", "replace")
    except IndexError:
        return ""


def hl7_message(payload: bytes, ack: bytes | None) -> None:
    """Count one received message: MSH-9 type and event (when HL7-shaped, else
    ``other``), and the ACK's MSA-1 (``none`` when no ACK was sent)."""
    if not ENABLED:
        return
    kind = _msh_field(payload, 9).split("^")
    mtype = kind[0] if _HL7_CODE.fullmatch(kind[0]) else "other"
    event = kind[1] if len(kind) > 1 and _HL7_CODE.fullmatch(kind[1]) else "other"
    code = "none"
    if ack:
        for segment in ack.split(b"\r"):
            if segment.startswith(b"MSA") and len(segment) > 4:
                value = segment.split(segment[3:4])[1].decode("ascii", "replace")
                code = value if value in ACK_CODES else "other"
                break
    HL7_MESSAGES.labels(mtype, event, code).inc()


def mllp_connection() -> None:
    if ENABLED:
        MLLP_CONNECTIONS.inc()


def dicom_association(event: Any) -> None:
    """A pynetdicom association event handler: counts accepted, released, aborted."""
    if ENABLED:
        name = str(getattr(getattr(event, "event", None), "name", "other"))
        DICOM_ASSOCIATIONS.labels(name.removeprefix("EVT_").lower()).inc()


def dicom_store(handler: Callable[[Any], int]) -> Callable[[Any], int]:
    """Wrap the C-STORE handler: counts each instance by outcome (stored or refused)."""

    def counted(event: Any) -> int:
        status = handler(event)
        if ENABLED:
            DICOM_INSTANCES.labels("stored" if status == 0 else "refused").inc()
        return status

    return counted


# -- store --------------------------------------------------------------------------------
def instrument_store(store: Store) -> Store:
    """Time ``store.write()`` units and count ``journal_append`` records on this store
    object (wrapping its bound methods: the store modules are left alone)."""
    if not ENABLED:
        return store
    write: Callable[..., AbstractContextManager[None]] = store.write
    append: Callable[[list[Any]], None] = store.journal_append

    depth = threading.local()  # write units nest: only the outermost one is timed

    @contextmanager
    def timed_write(*args: Any, **kwargs: Any) -> Iterator[None]:
        level = getattr(depth, "n", 0)
        depth.n = level + 1
        start = time.perf_counter()
        try:
            with write(*args, **kwargs):
                yield
        finally:
            depth.n = level
            if level == 0:
                STORE_WRITE.observe(time.perf_counter() - start)

    def counted_append(records: list[Any]) -> None:
        append(records)
        AUDIT_APPENDED.inc(len(records))

    store.write = timed_write  # type: ignore[method-assign]
    store.journal_append = counted_append  # type: ignore[method-assign]
    return store


def wrap(app: Any, log_format: str) -> Any:
    """The served ASGI app behind :class:`Observe` when metrics are on or the JSON access
    line is wanted (``serve --no-access-log`` sets ``TELEIMG_ACCESS_LOG=off``); ``app``
    itself otherwise (no cost at all)."""
    access = log_format == "json" and os.environ.get("TELEIMG_ACCESS_LOG", "on") != "off"
    return Observe(app, log=access) if ENABLED or access else app
