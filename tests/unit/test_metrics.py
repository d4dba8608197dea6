"""Issue 29: metrics labels, the JSON log format, readiness checks (unit level; the whole
server is driven by tests/e2e/test_operability.py)."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from fhir_server import health, logs, metrics
from fhir_server.config import Settings
from tests.behaviour.hl7_world import orm, pid

INS = "283052312345678"


@pytest.mark.parametrize(("method", "path", "expected"), [
    ("GET", "/fhir/Patient/IPP0042", ("read", "Patient")),
    ("GET", "/fhir/Patient", ("search-type", "Patient")),
    ("POST", "/fhir/Patient/_search", ("search-type", "Patient")),
    ("POST", "/fhir/Patient", ("create", "Patient")),
    ("PUT", "/fhir/Patient/IPP0042", ("update", "Patient")),
    ("DELETE", "/fhir/Patient/IPP0042", ("delete", "Patient")),
    ("GET", "/fhir/Patient/IPP0042/_history/3", ("vread", "Patient")),
    ("GET", "/fhir/Patient/IPP0042/_history", ("history", "Patient")),
    ("POST", "/fhir/ServiceRequest/x/$accept", ("operation", "ServiceRequest")),
    ("POST", "/fhir", ("batch", "")),
    ("GET", "/fhir/metadata", ("capabilities", "")),
    ("GET", "/fhir/DUPONT-Claire/1", ("read", "other")),  # never a client's word
    ("GET", "/health/ready", ("health", "")),
    ("POST", "/dicomweb/studies", ("stow-rs", "ImagingStudy")),
])
def test_classify_labels_are_closed_sets(method: str, path: str,
                                         expected: tuple[str, str]) -> None:
    assert metrics.classify(method, path, False) == expected


def _count(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_hl7_message_counted_by_type_event_and_ack_never_by_content() -> None:
    message = orm(control="m1", patient=pid(ins=INS, family="DUPONT"))
    before = _count("teleimg_hl7_messages_total", message_type="ORM", event="O01",
                    ack_code="AA")
    metrics.hl7_message(message, b"MSH|^~\\&|A|B|C|D|2026||ACK^O01|1|P|2.5\rMSA|AA|m1\r")
    assert _count("teleimg_hl7_messages_total", message_type="ORM", event="O01",
                  ack_code="AA") == before + 1
    before = _count("teleimg_hl7_messages_total", message_type="other", event="other",
                    ack_code="none")
    metrics.hl7_message(b"MSH|^~\\&|X|Y|Z|W|2026||DUPONT^Claire|1", None)
    metrics.hl7_message(b"garbage", b"MSA|ZZ|1\r")  # an unknown ACK code: other
    assert _count("teleimg_hl7_messages_total", message_type="other", event="other",
                  ack_code="none") == before + 1
    assert _count("teleimg_hl7_messages_total", message_type="other", event="other",
                  ack_code="other") >= 1
    exposed = {v for m in REGISTRY.collect() for s in m.samples for v in s.labels.values()}
    assert not {"DUPONT", "Claire", INS} & exposed


def test_store_write_units_timed_once_when_nested_and_appends_counted(
        tmp_path: Path) -> None:
    from fhir_server.store import open_store

    store = metrics.instrument_store(open_store(None, tmp_path))
    try:
        before = _count("teleimg_store_write_duration_seconds_count")
        with store.write(), store.write():
            pass
        assert _count("teleimg_store_write_duration_seconds_count") == before + 1
    finally:
        store.close()


# -- JSON log format ------------------------------------------------------------------
@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    names = ("uvicorn", "uvicorn.access", "uvicorn.error", "teleimagerie.access", *logs.NOISY)
    levels = {n: logging.getLogger(n).level for n in names}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, value in levels.items():
        logging.getLogger(name).setLevel(value)


def _json_lines(level: str = "info") -> tuple[io.StringIO, logging.Logger]:
    cfg = logs.config(level, {}, fmt="json")
    cfg["handlers"]["default"]["stream"] = io.StringIO()
    logging.config.dictConfig(cfg)
    stream = logging.getLogger().handlers[0].stream  # type: ignore[attr-defined]
    return stream, logging.getLogger("teleimagerie.access")


def test_json_lines_carry_request_fields_and_stay_redacted(restore_logging: None) -> None:
    stream, access = _json_lines()
    access.info("read Patient 200", extra={"request_id": f"id-{INS}", "principal": "sub-1",
                                           "interaction": "read", "type": "Patient",
                                           "status": 200, "duration_ms": 1.5})
    logging.getLogger("teleimagerie.hl7").warning("patient %s refused", INS)
    try:
        raise ValueError(f"bad {INS}")
    except ValueError:
        logging.getLogger("teleimagerie").exception("failed")
    lines = [json.loads(x) for x in stream.getvalue().splitlines()]
    assert len(lines) == 3
    first = lines[0]
    assert {k: first[k] for k in ("level", "logger", "principal", "interaction", "type",
                                  "status", "duration_ms")} == {
        "level": "info", "logger": "teleimagerie.access", "principal": "sub-1",
        "interaction": "read", "type": "Patient", "status": 200, "duration_ms": 1.5}
    assert first["time"].endswith("Z") and first["request_id"].startswith("id-")
    assert INS not in stream.getvalue()  # message, request id and traceback alike
    assert "ValueError" in lines[2]["exception"]


def test_text_format_keeps_uvicorn_access_and_silences_ours(restore_logging: None) -> None:
    cfg = logs.config("info", {}, fmt="text")
    assert cfg["handlers"]["default"]["formatter"] == "plain"
    assert cfg["loggers"]["teleimagerie.access"]["level"] == "WARNING"
    assert cfg["loggers"]["uvicorn.access"]["level"] == "INFO"
    assert logs.config("info", {"TELEIMG_LOG_FORMAT": "json"})["handlers"]["default"][
        "formatter"] == "json"


def test_log_format_validated_like_the_level(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEIMG_LOG_FORMAT", "JSON")
    assert Settings.from_env().log_format == "json"
    monkeypatch.setenv("TELEIMG_LOG_FORMAT", "yaml")
    with pytest.raises(SystemExit, match="TELEIMG_LOG_FORMAT must be one of text, json"):
        Settings.from_env()


# -- readiness --------------------------------------------------------------------------
def _settings(data: Path) -> Settings:
    return Settings(data_dir=data, audit=False)


def test_store_missing_corrupt_or_not_migrated_is_down(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert health.check_store(settings, None) == {"state": "down",
                                                   "reason": "store file missing"}
    db = tmp_path / "teleimagerie.db"
    sqlite3.connect(db).execute("PRAGMA user_version = 3").connection.commit()
    assert health.check_store(settings, None)["reason"].startswith("schema version 3")
    db.write_bytes(b"x" * 4096)
    assert health.check_store(settings, None)["state"] == "down"
    db.unlink()
    from fhir_server.store import open_store

    open_store(None, tmp_path).close()  # migrated
    assert health.check_store(settings, None) == {"state": "up"}


def test_listener_heartbeat_fresh_stale_or_gone(tmp_path: Path) -> None:
    assert health.check_listener("mllp", tmp_path, 5)["reason"] == "no heartbeat"
    health.beat("mllp", tmp_path)
    assert health.check_listener("mllp", tmp_path, 5) == {"state": "up"}
    path = health.heartbeat_path("mllp", tmp_path)
    path.write_text(json.dumps({"pid": os.getpid(), "at": time.time() - 60}))
    assert health.check_listener("mllp", tmp_path, 5)["reason"] == "no heartbeat for 60 s"
    path.write_text(json.dumps({"pid": 2 ** 22 + 12345, "at": time.time()}))
    assert health.check_listener("mllp", tmp_path, 5)["reason"] == "process gone"


def test_readiness_503_names_each_component(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from fhir_server.store import open_store

    open_store(None, tmp_path).close()
    monkeypatch.setenv(health.LISTENERS_ENV, "hl7v2,delivery")
    health.beat("delivery", tmp_path)
    ok, body = health.readiness(_settings(tmp_path), None)
    assert not ok and body["status"] == "not-ready"
    assert {k: v["state"] for k, v in body["components"].items()} == {
        "store": "up", "audit": "disabled", "mllp": "down", "delivery": "up", "disk": "up"}
    health.beat("mllp", tmp_path)
    assert health.readiness(_settings(tmp_path), None)[0]
    monkeypatch.setenv("TELEIMG_MIN_FREE_DISK_MB", str(10 ** 12))  # an exabyte
    ok, body = health.readiness(_settings(tmp_path), None)
    assert not ok and body["components"]["disk"]["state"] == "down"


def test_bad_thresholds_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEIMG_MIN_FREE_DISK_MB", "lots")
    with pytest.raises(SystemExit, match="TELEIMG_MIN_FREE_DISK_MB"):
        health.check_env()
    from fhir_server import metrics_server

    monkeypatch.setenv("TELEIMG_METRICS_PORT", "nope")
    with pytest.raises(SystemExit, match="TELEIMG_METRICS_PORT"):
        metrics_server.metrics_address()
    monkeypatch.setenv("TELEIMG_METRICS_PORT", "off")
    assert metrics_server.metrics_address() is None
