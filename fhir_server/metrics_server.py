"""The ``/metrics`` server ``teleimagerie serve`` starts on ``TELEIMG_METRICS_HOST``:
``TELEIMG_METRICS_PORT`` (default 127.0.0.1:9464 — never the public FHIR port; ``off``
disables it): the counters of every process (prometheus-client multiprocess mode, see
:mod:`fhir_server.metrics`) plus what the store says at scrape time (issue 29, item 2).

Scrape-time gauges (:class:`StoreCollector`), all labelled by closed sets only:

* ``teleimg_queue_items{queue, channel, state}`` — the delivery outbox (``delivery``,
  channel dmp/ris/mssante, state its businessStatus code) and the HL7 outbound queue
  (``hl7``, channel ``mllp``, state pending/sent/failed/dead);
* ``teleimg_queue_oldest_pending_age_seconds{queue, channel}`` — age of the oldest item
  still to send (0 when none);
* ``teleimg_dead_letters{queue, channel}`` — given up after the retry budget;
* ``teleimg_audit_index_backlog`` — AuditEvents appended but not yet indexed (ADR 0007);
* ``teleimg_ready{component}`` — 1 when the readiness component is up (see
  :mod:`fhir_server.health`), ``teleimg_ready_all`` — 1 when ``/health/ready`` is 200.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from fhir_server import logs
from fhir_server.config import Settings

log = logging.getLogger("teleimagerie.metrics")
DEFAULT_PORT = 9464
# what measures the adapters' queues (adapters.queues.measure, given by ``serve``, the
# composition root: this layer does not import the adapters)
Queues = Callable[[Any, GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily], None]


class StoreCollector(Collector):
    """Queue depths, oldest pending age, dead letters, audit backlog and readiness,
    read from the store when Prometheus scrapes (one count query per state)."""

    def __init__(self, settings: Settings, queues: Queues | None = None) -> None:
        self.settings = settings
        self.queues = queues
        self._server: Any = None

    def _core(self) -> Any:
        """The store and limits, as the outbox helpers read them (not a whole core: no
        audit sink, no issuer keys for a read-only scrape)."""
        if self._server is None:
            from types import SimpleNamespace

            from fhir_server.store import open_store

            self._server = SimpleNamespace(
                store=open_store(self.settings.store_url, self.settings.data_dir),
                limits=self.settings.limits)
        return self._server

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from fhir_server.health import readiness

        items = GaugeMetricFamily("teleimg_queue_items", "Outbox items by queue, channel "
                                  "and state", labels=["queue", "channel", "state"])
        oldest = GaugeMetricFamily("teleimg_queue_oldest_pending_age_seconds",
                                   "Age of the oldest item still to send",
                                   labels=["queue", "channel"])
        dead = GaugeMetricFamily("teleimg_dead_letters", "Items given up after the retry "
                                 "budget", labels=["queue", "channel"])
        backlog = GaugeMetricFamily("teleimg_audit_index_backlog",
                                    "AuditEvents appended to the journal, not yet indexed")
        ready = GaugeMetricFamily("teleimg_ready", "Readiness component up (1) or not",
                                  labels=["component"])
        ready_all = GaugeMetricFamily("teleimg_ready_all", "1 when /health/ready is 200")
        server = None
        try:
            server = self._core()
            if self.queues is not None:
                self.queues(server, items, oldest, dead)
            backlog.add_metric([], float(server.store.journal_backlog()))
        except Exception as exc:  # a scrape never fails: readiness says what is wrong
            log.warning("metrics: the store could not be read at scrape time: %s",
                        logs.failure(exc))
        ok, body = readiness(self.settings, server.store if server is not None else None)
        for name, component in body["components"].items():
            ready.add_metric([name], 1.0 if component["state"] in ("up", "disabled",
                                                                     "not-managed") else 0.0)
        ready_all.add_metric([], 1.0 if ok else 0.0)
        yield from (items, oldest, dead, backlog, ready, ready_all)


def prepare_multiprocess(data_dir: Path) -> Path:
    """Empty ``<data dir>/metrics`` and point ``PROMETHEUS_MULTIPROC_DIR`` at it, before
    any process that records metrics starts (they inherit the variable)."""
    path = (data_dir / "metrics").resolve()
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    # prometheus_client picks its value store when first imported — here, before the
    # variable was set — and ``serve`` with one worker runs the HTTP app in this very
    # process: metrics created from now on must write their files too
    from prometheus_client import values

    # prometheus_client is untyped here: the call typed for mypy --strict
    values.ValueClass = cast(Callable[[], type], values.get_value_class)()
    return path


def metrics_address() -> tuple[str, int] | None:
    """(host, port) of the metrics server, None when ``TELEIMG_METRICS_PORT=off``."""
    value = (os.environ.get("TELEIMG_METRICS_PORT") or str(DEFAULT_PORT)).lower()
    if value == "off":
        return None
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise SystemExit(f"TELEIMG_METRICS_PORT must be a TCP port (1-65535) or off, "
                         f"got {value!r}")
    return os.environ.get("TELEIMG_METRICS_HOST") or "127.0.0.1", int(value)


def start(settings: Settings, host: str, port: int, queues: Queues | None = None) -> Any:
    """Serve ``/metrics`` in a daemon thread; raises OSError when the port is taken."""
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        cast(Callable[[CollectorRegistry], object],
             multiprocess.MultiProcessCollector)(registry)
    registry.register(StoreCollector(settings, queues))
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server


def setup(settings: Settings, listener_modules: list[str], access_log: bool,
          queues: Queues | None = None) -> Any:
    """What ``serve`` does for issue 29 before its listeners and workers start: check the
    health thresholds, tell the workers which listeners to expect (readiness) and whether
    the access line is on, and — unless ``TELEIMG_METRICS_PORT=off`` — empty the
    multiprocess directory and serve ``/metrics``. Returns the metrics server (or None);
    OSError when its port cannot be bound."""
    from fhir_server.health import LISTENERS_ENV, check_env

    check_env()
    os.environ[LISTENERS_ENV] = ",".join(m.split(".")[1] for m in listener_modules)
    os.environ["TELEIMG_ACCESS_LOG"] = "on" if access_log else "off"
    address = metrics_address()
    if address is None:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        return None
    prepare_multiprocess(settings.data_dir)
    server = start(settings, *address, queues)
    log.info("metrics on http://%s:%s/metrics", *address)
    return server
