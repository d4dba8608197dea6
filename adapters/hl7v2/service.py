"""The HL7 v2 service: the MLLP listener and the outbox sender on one event loop.

Frames are processed in a thread pool (the store is synchronous) — in order within a
connection, concurrently across connections; messages committed in enhanced mode are
processed by one worker thread, in order. Started by ``teleimagerie serve`` next to
the HTTP server, or alone by ``teleimagerie hl7 listen``. The port is bound first: when it
cannot be, the process says so in one line (to ``serve``, which stops, or on stderr) and
exits 1; once it listens it tells ``serve`` it is ready (issue 24).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from adapters.hl7v2.mllp import Frame, ServerLimits, serve
from adapters.hl7v2.outbox import Sender
from adapters.hl7v2.receiver import Receiver
from adapters.hl7v2.settings import Hl7Settings, SettingError
from fhir_server import health, logs, metrics
from fhir_server.config import Settings
from fhir_server.processes import cannot_listen, listener_failed, tell_parent
from fhir_server.runtime import CoreBuilder

log = logging.getLogger("teleimagerie.hl7")


async def run(settings: Settings, hl7: Hl7Settings, build: CoreBuilder,
              ready: asyncio.Event | None = None) -> None:
    server = build(settings)
    receiver = Receiver(server, hl7)
    pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="hl7")
    loop = asyncio.get_running_loop()

    async def handler(frame: Frame, peer: str) -> bytes | None:
        answer = await loop.run_in_executor(pool, receiver.receive, frame, peer)
        metrics.hl7_message(frame.payload, answer)  # type, event, ACK code (issue 29)
        return answer

    try:  # listen first: a port that cannot be had stops us before any work
        listener = await serve(handler, hl7.host, hl7.port,
                               ServerLimits(hl7.max_message_bytes, hl7.idle_timeout))
    except OSError as exc:
        pool.shutdown(wait=False)
        if server.audit is not None:
            server.audit.close()
        listener_failed(cannot_listen("MLLP", hl7.host, hl7.port, exc))
    log.info("HL7 v2 MLLP listener on %s:%s (MSH-5 %s, MSH-6 %s)", hl7.host, hl7.port,
             hl7.application, hl7.facility)
    stopping = threading.Event()
    worker = threading.Thread(target=_work, args=(receiver, stopping), daemon=True,
                              name="hl7-worker")
    worker.start()
    sender = Sender(server, hl7)
    outbox = asyncio.create_task(sender.run())
    watch = None
    parent = os.environ.get("TELEIMG_MLLP_PARENT")
    if parent:  # started by `teleimagerie serve`: do not outlive it (even if killed)
        main_task = asyncio.current_task()
        assert main_task is not None
        watch = asyncio.create_task(_orphan_watch(int(parent), main_task))
    beating = asyncio.create_task(_heartbeat(settings))  # readiness (issue 29)
    if ready is not None:
        ready.set()
    tell_parent("ready")  # `teleimagerie serve` waits for this before serving HTTP
    try:
        async with listener:
            await listener.serve_forever()
    finally:
        outbox.cancel()
        beating.cancel()
        if watch is not None:
            watch.cancel()
        pool.shutdown(wait=True)
        stopping.set()
        worker.join(timeout=30)
        if server.audit is not None:
            server.audit.close()


def _work(receiver: Receiver, stopping: threading.Event) -> None:
    """Processes the messages committed in enhanced mode, in arrival order: first every
    one a stop left unprocessed (however many, in batches; issue 27), then those
    committed since, as they come."""
    try:
        settled = receiver.recover(stopping.is_set)
    except Exception as exc:  # a store error: the queue still runs, the next start retries
        log.error("HL7 recovery of committed messages failed: %s", logs.failure(exc))
    else:
        if settled:
            log.info("HL7: %d message(s) committed before the last stop processed",
                     settled)
    while not stopping.is_set():
        receiver.work(timeout=0.5)


async def _heartbeat(settings: Settings) -> None:
    """Beats while this loop (the MLLP listener's) runs: ``/health/ready`` reads it."""
    while True:
        health.beat("mllp", settings.data_dir)
        await asyncio.sleep(1.0)


async def _orphan_watch(parent: int, main_task: asyncio.Task[None]) -> None:
    while os.getppid() == parent:
        await asyncio.sleep(1.0)
    log.warning("HL7 listener: the server process %s is gone, stopping", parent)
    main_task.cancel()


def main(build: CoreBuilder) -> None:
    """Runs the service on the core ``build`` makes (the composition root's)."""
    settings = Settings.from_env()
    logs.configure(settings.log_level)  # redacted (R-SEC-6)
    try:
        hl7 = Hl7Settings.from_env()
    except SettingError as exc:  # one line (to `serve`, or on stderr), exit 2
        if not tell_parent(f"fail {exc}"):
            print(exc, file=sys.stderr)
        raise SystemExit(2) from None
    try:
        asyncio.run(run(settings, hl7, build))
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass

