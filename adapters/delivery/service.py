"""The delivery service: the sender working the outbox, in a process of its own (started
by ``teleimagerie serve`` unless ``TELEIMG_DELIVERY=off``, or alone by ``teleimagerie
delivery run``), so a slow DMP or relay never holds an HTTP worker."""

from __future__ import annotations

import asyncio
import logging
import os

from adapters.cda.check import delivery_check
from adapters.delivery.engine import Sender
from adapters.delivery.settings import DeliverySettings
from adapters.hl7v2.settings import Hl7Settings
from adapters.subscriptions.sender import Sender as SubscriptionSender
from fhir_server import health, logs
from fhir_server.config import Settings
from fhir_server.processes import tell_parent
from fhir_server.runtime import CoreBuilder

log = logging.getLogger("teleimagerie.delivery")


async def run(settings: Settings, delivery: DeliverySettings, hl7: Hl7Settings,
              build: CoreBuilder, interval: float = 2.0) -> None:
    server = build(settings)
    sender = Sender(server, delivery, hl7, check=delivery_check())  # issue 26
    for name, missing in (("DMP", delivery.dmp_ready), ("MSSanté", delivery.mss_ready)):
        if missing:
            log.warning("delivery: %s channel not configured (%s): its deliveries wait, "
                        "visibly, in state canal-non-configure", name, missing)
    log.info("delivery: channels %s", ", ".join(sorted(delivery.channels)))
    parent = os.environ.get("TELEIMG_DELIVERY_PARENT")
    work = asyncio.create_task(sender.run(interval))
    # the subscriptions' rest-hook notifications leave from the same process (issue 31)
    base = settings.base_url or f"http://localhost:{settings.http_port}/fhir"
    notify = asyncio.create_task(SubscriptionSender(server, base_url=base).run(interval / 2))
    health.beat("delivery", settings.data_dir)
    tell_parent("ready")  # `teleimagerie serve` waits for this before serving HTTP
    try:
        while not work.done():
            if parent and os.getppid() != int(parent):  # `serve` is gone, even if killed
                log.warning("delivery: the server process %s is gone, stopping", parent)
                break
            health.beat("delivery", settings.data_dir)  # readiness (issue 29)
            await asyncio.sleep(1.0)
    finally:
        work.cancel()
        notify.cancel()
        if server.audit is not None:
            server.audit.close()


def main(build: CoreBuilder) -> None:
    """Runs the sender on the core ``build`` makes (the composition root's)."""
    settings = Settings.from_env()
    logs.configure(settings.log_level)  # redacted (R-SEC-6)
    try:
        asyncio.run(run(settings, DeliverySettings.from_env(), Hl7Settings.from_env(), build))
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass

