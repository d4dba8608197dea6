"""R-SEC-6: nothing identifying in a log line (fhir_server/logs.py; issue 24 item 6)."""

from __future__ import annotations

import io
import logging
import logging.config
from collections.abc import Iterator

import pytest

from fhir_server import logs

INS = "283052312345678"
JWT = "eyJhbGciOiJFUzI1NiIsImtpZCI6IjEifQ.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXZhbHVl"


def test_access_log_keeps_parameter_names_not_values() -> None:
    path = (f"/fhir/Patient?identifier=urn:oid:1.2.250.1.213.1.4.8%7C{INS}"
            "&name=DUPONT&birthdate=1983-05-22&_count=5&_sort=-_lastUpdated")
    out = logs.redact_path(path)
    assert INS not in out and "DUPONT" not in out and "1983" not in out
    assert out.startswith("/fhir/Patient?identifier=…&name=…&birthdate=…")
    assert "_count=5" in out and "_sort=-_lastUpdated" in out


def test_chained_and_modified_parameters_are_masked_too() -> None:
    out = logs.redact_path(f"/fhir/ServiceRequest?patient.identifier={INS}"
                           "&subject:Patient.name:exact=Dupont")
    assert INS not in out and "Dupont" not in out


def test_nir_and_tokens_are_masked_in_any_message_but_uids_are_kept() -> None:
    text = logs.redact(f"patient {INS} token Bearer {JWT} study 1.2.250.1.999.{INS}.7 "
                       "at 20261122093000")
    assert INS + " " not in text and "eyJzdWIi" not in text
    assert f"1.2.250.1.999.{INS}.7" in text  # inside a dotted UID: not a NIR
    assert "20261122093000" in text  # an HL7 timestamp (14 digits) is not a NIR


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """dictConfig changes the process's root logger: put back what pytest had."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {n: logging.getLogger(n).level for n in ("uvicorn", "uvicorn.access",
                                                       "uvicorn.error", *logs.NOISY)}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, value in levels.items():
        logging.getLogger(name).setLevel(value)


def _capture(env: dict[str, str], level: str = "debug") -> tuple[logging.Logger, io.StringIO]:
    cfg = logs.config(level, env)
    cfg["handlers"]["default"]["stream"] = io.StringIO()
    logging.config.dictConfig(cfg)
    stream = logging.getLogger().handlers[0].stream  # type: ignore[attr-defined]
    return logging.getLogger("teleimagerie.test"), stream


def test_every_handler_line_is_redacted_even_at_debug_and_in_tracebacks() -> None:
    log, stream = _capture({})
    log.debug("matching INS %s", INS)
    try:
        raise ValueError(f"bad identifier {INS}")
    except ValueError:
        log.exception("failed")
    logging.getLogger("uvicorn.access").info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:1",
                                             "GET", f"/fhir/Patient?identifier={INS}",
                                             "1.1", 200)
    assert INS not in stream.getvalue()
    assert "identifier=…" in stream.getvalue()
    assert logging.getLogger("pynetdicom").getEffectiveLevel() == logging.INFO


def test_redaction_is_lifted_only_by_the_explicit_setting() -> None:
    log, stream = _capture({"TELEIMG_LOG_SENSITIVE": "on"})
    log.debug("matching INS %s", INS)
    assert INS in stream.getvalue()
