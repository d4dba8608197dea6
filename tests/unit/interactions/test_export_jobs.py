"""Bulk Data export pieces without a server (issue 31): the retention setting, the job
directory's names (no path outside it), the _typeFilter split, the manifest."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhir_server.interactions import export
from fhir_server.interactions.bulk.jobs import ExportSettings, Jobs, parse_retention


def test_retention_accepts_seconds_and_units() -> None:
    assert parse_retention(None) == 24 * 3600
    assert parse_retention("90") == 90
    assert parse_retention("30m") == 1800
    assert parse_retention("24h") == parse_retention("1d") == 86400
    for bad in ("soon", "-1", "0", "3w"):
        with pytest.raises(ValueError):
            parse_retention(bad)


def test_job_ids_and_file_names_stay_in_the_export_directory(tmp_path: Path) -> None:
    box = Jobs(ExportSettings(tmp_path))
    job = box.new_id()
    box.create({"id": job, "status": "completed", "created": 1e12, "ended": 1e12})
    (box.path(job) / "Patient-1.ndjson").write_bytes(b"{}\n")
    assert box.file(job, "Patient-1.ndjson") is not None
    for name in ("../job.json", "job.json", "/etc/passwd", "Patient-1.ndjson/.."):
        assert box.file(job, name) is None
    assert box.load("../" + job) is None and box.load("x") is None
    assert box.remove(job) and not box.path(job).exists()
    assert box.load(job) is None


def test_type_filters_split_at_the_next_type_only() -> None:
    assert export._filter_items("Observation?code=a,b,Patient?gender=male") == [
        "Observation?code=a,b", "Patient?gender=male"]
    assert export._filter_items("Observation?status=final") == ["Observation?status=final"]


def test_manifest_urls_name_the_job_and_file() -> None:
    record = {"id": "ab" * 16, "base": "https://x/fhir", "transactionTime": "t",
              "request": "https://x/fhir/$export", "output": [
                  {"type": "Patient", "file": "Patient-1.ndjson", "count": 2}], "error": []}
    manifest = export.manifest(record)
    url = manifest["output"][0]["url"]
    assert url.startswith("https://x/fhir/$export-file?")
    assert "_jobId=" + "ab" * 16 in url and "_file=Patient-1.ndjson" in url
    assert manifest["requiresAccessToken"] is True and manifest["error"] == []
