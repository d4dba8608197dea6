"""Assemble the running core from :class:`Settings`: store, security policy, audit sink.

Shared by the HTTP server, the CLI and (later) the adapters, so all of them enforce the
same rules on the same data.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from fhir_server import logs
from fhir_server.audit.sink import AuditSink
from fhir_server.config import Settings
from fhir_server.security.devissuer import DEV_ISSUER, DevIssuer
from fhir_server.security.jwks import KeySet
from fhir_server.security.policy import SecurityPolicy
from fhir_server.security.tokens import AuthSettings, Issuer, TokenValidator
from fhir_server.server.dispatch import FhirServer
from fhir_server.store import open_store
from fhir_server.validation.registry import ProfileRegistry
from fhir_server.workflow.engine import Workflow

log = logging.getLogger("teleimagerie")
# set by `serve` once it has given the development-mode warning: the processes it starts
# (listeners, uvicorn workers) inherit it and do not repeat it (issue 29)
DEV_NOTICE_GIVEN = "TELEIMG_DEV_NOTICE_GIVEN"
DEV_NOTICE = ("DEVELOPMENT MODE: tokens from the local development issuer are accepted "
              "(teleimagerie token …); set TELEIMG_ENV=production to refuse them")


def dev_mode_notice(settings: Settings, say: bool = True) -> bool:
    """The development-mode warning, once for a process and the ones it starts (with
    ``say`` False the caller says it later, e.g. once ``serve`` runs); whether it was
    due."""
    due = settings.auth.dev_issuer and os.environ.get(DEV_NOTICE_GIVEN) != "1"
    if due:
        os.environ[DEV_NOTICE_GIVEN] = "1"
        if say:
            log.warning(DEV_NOTICE)
    return bool(due)


def auth_settings(settings: Settings) -> AuthSettings:
    cfg = settings.auth
    registered = frozenset(cfg.system_clients) or None  # TELEIMG_AUTH_SYSTEM_CLIENTS
    issuers = [Issuer(iss, KeySet(jwks), cfg.audience if not cfg.clients else None,
                      cfg.clients, registered) for iss, jwks in cfg.issuers]
    if cfg.dev_issuer:
        dev = DevIssuer(settings.data_dir, cfg.audience)
        if dev.ensure():
            log.warning("DEVELOPMENT MODE: generated development issuer keys in %s", dev.dir)
        issuers.append(Issuer(DEV_ISSUER, KeySet(str(dev.jwks_path)), cfg.audience))
        if os.environ.get(DEV_NOTICE_GIVEN) != "1":  # `serve` said it already
            log.warning(DEV_NOTICE)
    return AuthSettings(issuers=tuple(issuers), strong_acr=frozenset(cfg.strong_acr),
                        leeway=cfg.leeway, max_token_bytes=cfg.max_token_bytes,
                        role_claim=cfg.role_claim)


def build_core(settings: Settings) -> FhirServer:
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
    store = open_store(settings.store_url, settings.data_dir)
    from fhir_server.metrics import instrument_store

    instrument_store(store)  # write latency, audit records appended (issue 29)
    policy = SecurityPolicy(TokenValidator(auth_settings(settings)))
    sink = AuditSink(store, settings.audit_interval, max_lag=settings.audit_index_lag) \
        if settings.audit else None
    if sink is None:
        log.warning("AUDIT DISABLED (TELEIMG_AUDIT=off): for benchmarking only")
    workflow = Workflow(settings.workflow)
    hl7 = Hl7Settings.from_env()
    # a decision on a request received over HL7 queues its ORU^R01 (ANS TLR flux 3)
    workflow.listeners.append(Outbox(hl7).on_transition)
    # a final or amended report gets its CDA documents (N3, N1) and their deliveries
    # (DMP, RIS, MSSanté) in the same write unit
    workflow.listeners.append(Publisher(Planner(DeliverySettings.from_env(), hl7)
                                        ).on_transition)
    # a final report whose CDA documents fail the XSD or an ANS schematron rule is refused
    # (issue 26, R-REP-6): the check is the adapters', the hook the core's
    documents = report_check()
    if documents is not None:
        workflow.report_checks.append(documents)
    return FhirServer(store, settings.limits, security=policy, audit=sink,
                      profiles=ProfileRegistry(settings.required_profiles),
                      workflow=workflow)


def warm(core: FhirServer) -> None:
    """Prepare, in the background, what the first request of a kind would otherwise wait
    for: the report checks' compiled schematrons (Saxon, 20-30 s per process: ADR 0021).
    ``TELEIMG_SCHEMATRON_WARM=off`` skips it (short-lived test servers)."""
    import threading

    if os.environ.get("TELEIMG_SCHEMATRON_WARM", "on").lower() in ("off", "0", "false", "no"):
        return
    for check in core.workflow.report_checks if core.workflow else []:
        prepare = getattr(check, "warm", None)
        if callable(prepare):
            threading.Thread(target=_quietly, args=(prepare,), name="warm", daemon=True
                             ).start()


def _quietly(prepare: Any) -> None:
    try:
        prepare()
    except Exception as exc:  # the check compiles again on first use; say why, once
        log.warning("préparation des contrôles de compte rendu : %s", logs.failure(exc))
