"""``make bench-dicom`` (also run by ``make bench``): folder import of generated DICOM
headers on the embedded store with the audit on — headers read per second alone, and
end to end (read + ImagingStudy merge + dose Observations committed).

BENCH_DICOM_N instances (default 2000) in BENCH_DICOM_STUDIES studies (default 20), each
study with a CT Radiation Dose SR; one request per study. Results go to
``benchmarks/results/dicom-*.md``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from pydicom.uid import generate_uid

from adapters.dicom.pipeline import Importer
from adapters.dicom.reader import expand, read
from adapters.transaction import Context, Transaction
from tests.behaviour.dicom_world import PLACER_SYSTEM, ct_images, ct_rdsr, write
from tests.behaviour.workflow_world import example

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
N = int(os.environ.get("BENCH_DICOM_N", "2000"))
STUDIES = int(os.environ.get("BENCH_DICOM_STUDIES", "20"))


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-dicom-"))
    os.environ["TELEIMG_DATA_DIR"] = str(work / "data")
    from fhir_server.config import Settings
    from fhir_server.security.principal import Principal
    from fhir_server.security.scopes import parse_scopes
    from teleimagerie.wiring import build_core

    server = build_core(Settings.from_env())
    ris = Principal(sub="bench:ris", issuer="bench", roles=("ris",),
                    scopes=parse_scopes("system/*.cruds"))
    try:
        per_study = max(1, N // STUDIES)
        folder = work / "media"
        for s in range(STUDIES):
            tx = Transaction()
            patient = tx.create({"resourceType": "Patient", "name": [{"family": f"NOM{s}"}],
                                 "gender": "female", "birthDate": "1980-05-17",
                                 "telecom": [{"system": "phone", "value": "0102030405"}]})
            # R-REQ-1: the requesting structure and the patient's contact are required
            site = tx.create({"resourceType": "Organization", "name": "CH DEMANDEUR",
                              "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.2",
                                              "value": "1" + f"{s:08d}"}]})
            doctor = tx.create({"resourceType": "Practitioner",
                                "name": [{"family": "DEMANDEUR"}]})
            requester = tx.create({"resourceType": "PractitionerRole", "active": True,
                                   "practitioner": {"reference": doctor},
                                   "organization": {"reference": site}})
            sr = example("tlm-service-request")
            sr.pop("id", None)
            sr.pop("performer", None)
            sr.update(subject={"reference": patient}, requester={"reference": requester},
                      identifier=[{"type": {"coding": [{
                          "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                          "code": "PLAC"}]}, "system": PLACER_SYSTEM, "value": f"B{s}"}])
            tx.create(sr)
            tx.run(Context(server, ris, source="bench"), "bench")
            uid = generate_uid()
            for ds in [*ct_images(uid, per_study - 1, placer=f"B{s}"),
                       ct_rdsr(uid, [(10.0, 400.0)], 400.0, placer=f"B{s}")]:
                write(ds, folder / f"study{s:03d}")
        files = list(expand([folder]))
        begin = time.perf_counter()
        for f in files:
            read(f)
        read_rate = len(files) / (time.perf_counter() - begin)
        begin = time.perf_counter()
        summary = Importer(server).import_paths([folder])
        elapsed = time.perf_counter() - begin
        assert not summary.failed, summary.failed[:3]
    finally:
        if server.audit is not None:
            server.audit.close()
        shutil.rmtree(work, ignore_errors=True)
    info = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
            "platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "instances": len(files), "studies": STUDIES,
            "headers_read_per_s": read_rate, "import_seconds": elapsed,
            "imported_per_s": len(files) / elapsed}
    RESULTS.mkdir(exist_ok=True)
    text = "\n".join([
        f"# make bench-dicom {info['date']}", "",
        f"{len(files)} instances (CT headers + one RDSR per study) in {STUDIES} studies, "
        "embedded store, audit on.", "",
        "| measure | per second |", "|---|---:|",
        f"| headers read (stop_before_pixels) | {read_rate:.0f} |",
        f"| folder import end to end (read + ImagingStudy + doses committed) | "
        f"{info['imported_per_s']:.0f} |", ""])
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"dicom-{stamp}.md").write_text(text + "\n```\n" + json.dumps(info, indent=1)
                                               + "\n```\n")
    print(text)


if __name__ == "__main__":
    main()
