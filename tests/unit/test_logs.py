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


@pytest.mark.parametrize(("text", "secret"), [
    (f"fin de phrase {INS}.", INS),
    (f"identifier=urn:oid:1.2.250.1.213.1.4.8%7C{INS}&x=1", INS),
    ("né en Corse 183052A123456 78", "2A123456"), ("NIA 7830523123456", "7830523123456"),
    ("NIA 883052312345678", "883052312345678"),
    ("forme imprimée 2 83 05 23 123 456 78", "123 456"), (f"({INS})", INS),
    (f"'{INS}'", INS), ("sans clé 2830523123456", "2830523123456"),
])
def test_nir_forms_a_person_can_write_are_masked(text: str, secret: str) -> None:
    """R-SEC-6: sentence end, URL-encoded pipe, Corsica (2A/2B), NIA (7/8), spaced."""
    out = logs.redact(text)
    assert secret not in out and logs.MASK in out, out


@pytest.mark.parametrize("text", [
    "MSH|^~\\&|RIS|750000001|||20261122093000||ORM^O01",
    "study 1.2.250.1.999.283052312345678.7", "port 2575 after 12000 ms",
    "uid 1.2.826.0.1.3680043.8.498.12345678901234567890",
])
def test_what_is_not_a_nir_is_kept(text: str) -> None:
    assert logs.redact(text) == text


@pytest.mark.parametrize("path", [
    "/fhir/Patient?_sort=DUPONT", "/fhir/Patient?_count=283052312345678",
    "/fhir/Patient?_elements=Jean,name", "/fhir/Patient?_since=Dupont",
    "/fhir/Patient?_format=Dupont", "/fhir/Patient?_include=Patient:Dupont",
])
def test_a_name_typed_into_a_shaping_parameter_is_masked(path: str) -> None:
    out = logs.redact_path(path)
    assert "Dupont" not in out and "DUPONT" not in out and "Jean" not in out
    assert "283052312345678" not in out


def test_shaping_parameters_made_of_api_words_are_kept() -> None:
    path = ("/fhir/ServiceRequest?_sort=-_lastUpdated,authored&_count=50&_elements=status,"
            "subject&_include=ServiceRequest:subject:Patient&_since=2026-01-01T00:00:00Z"
            "&_format=application/fhir+json&_summary=count&_revinclude:iterate=Task:focus")
    out = logs.redact_path(path)
    assert logs.MASK not in out, out


def test_a_client_chosen_patient_id_is_masked_a_server_one_kept() -> None:
    """An RIS may PUT Patient/<IPP>: the id is then a patient identifier (R-SEC-6)."""
    assert "IPP12345" not in logs.redact_path("/fhir/Patient/IPP12345/_history/2")
    assert "IPP12345" not in logs.redact_path("/fhir/Patient/IPP12345/$everything")
    server_id = "0b8f5a52-6f0e-4bd4-a1d5-0d6a6cb1b1f4"
    assert logs.redact_path(f"/fhir/Patient/{server_id}") == f"/fhir/Patient/{server_id}"
    assert logs.redact_path("/fhir/Patient/$match") == "/fhir/Patient/$match"


def test_warnings_go_through_the_filter() -> None:
    import warnings

    _, stream = _capture({})
    logging.captureWarnings(True)
    try:
        warnings.warn(f"bad value {INS}", UserWarning, stacklevel=1)
    finally:
        logging.captureWarnings(False)
    assert "bad value" in stream.getvalue() and INS not in stream.getvalue()


def test_trace_level_is_accepted() -> None:
    cfg = logs.config("trace", {})
    assert cfg["root"]["level"] == "DEBUG"


def test_an_unexpected_failure_is_logged_by_type_and_place_not_by_message() -> None:
    """A pydantic or KeyError message quotes the data that broke (R-SEC-6)."""
    try:
        {}["DUPONT Jean"]
    except KeyError as exc:
        text = logs.failure(exc, {})
        assert "DUPONT" not in text and text.startswith("KeyError at test_logs.py:")
        assert "DUPONT" in logs.failure(exc, {"TELEIMG_LOG_SENSITIVE": "on"})
