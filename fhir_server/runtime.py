"""Assemble the core from :class:`Settings`: store, security policy, audit sink.

The core's half of the assembly: the composition root (:mod:`teleimagerie.wiring`) adds
the adapters and passes the builder (:data:`CoreBuilder`) to every process and command,
so all of them enforce the same rules on the same data (issue 28 item 1).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from fhir_server import logs
from fhir_server.audit.sink import AuditSink
from fhir_server.config import Settings
from fhir_server.metrics import instrument_store
from fhir_server.security.devissuer import DEV_ISSUER, DevIssuer
from fhir_server.security.jwks import KeySet
from fhir_server.security.policy import SecurityPolicy
from fhir_server.security.tokens import AuthSettings, Issuer, TokenValidator
from fhir_server.server.dispatch import FhirServer
from fhir_server.store import open_store
from fhir_server.validation.registry import ProfileRegistry
from fhir_server.workflow.engine import Workflow

log = logging.getLogger("teleimagerie")
# the composition root's core builder, handed to the adapters' commands and services
CoreBuilder = Callable[[Settings], FhirServer]
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


def build_server(settings: Settings, workflow: Workflow) -> FhirServer:
    """The core on its store, security policy and audit sink, with the ``workflow`` the
    composition root (:mod:`teleimagerie.wiring`) filled with the adapters' handlers."""
    store = open_store(settings.store_url, settings.data_dir)
    instrument_store(store)  # write latency, audit records appended (issue 29)
    policy = SecurityPolicy(TokenValidator(auth_settings(settings)))
    sink = AuditSink(store, settings.audit_interval, max_lag=settings.audit_index_lag) \
        if settings.audit else None
    if sink is None:
        log.warning("AUDIT DISABLED (TELEIMG_AUDIT=off): for benchmarking only")
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
