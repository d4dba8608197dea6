"""A served app with data and tokens for the fuzzers (issue 27 item 10).

One sqlite store per process (xdist workers import the modules separately); the core
is the served one — token validation, audit trail and the téléimagerie workflow — so
operations, Bundles and the MHD reads run their real code.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from fhir_server.config import Settings
from fhir_server.http.app import ReadFastPath
from fhir_server.server.dispatch import FhirServer
from fhir_server.workflow.engine import Workflow
from teleimagerie.wiring import create_app
from tests.conftest import make_store, mint, secured_core

RPPS = "urn:oid:1.2.250.1.71.4.2.1"
DOCTOR = "810000000001"


class Served:
    """The app, its core, seeded ids and a token per kind of caller."""

    def __init__(self, backend: str = "sqlite") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="teleimg-fuzz-"))
        self.core: FhirServer = secured_core(make_store(backend, self.dir), self.dir / "data")
        self.core.workflow = Workflow()
        self.app = ReadFastPath(create_app(Settings(data_dir=self.dir / "data"),
                                           server=self.core), self.core, None)
        self.http = TestClient(self.app, raise_server_exceptions=False)
        data = self.dir / "data"
        self.tokens: dict[str, str] = {
            "ris": mint(data, ["ris"]),
            "imager": mint(data, ["remote-imager"], ["user/*.cruds"], id_nat_ps=DOCTOR,
                           sub="fuzz:imager"),
            "consumer": mint(data, ["document-consumer"], [
                "system/DocumentReference.rs", "system/Binary.r", "system/Patient.rs"],
                sub="fuzz:consumer"),
            "auditor": mint(data, ["auditor"], ["user/AuditEvent.rs"], sub="fuzz:auditor"),
        }
        self.ids: dict[str, str] = {}
        self._seed()

    def _create(self, resource: dict[str, Any]) -> str:
        r = self.http.post(f"/fhir/{resource['resourceType']}", json=resource,
                           headers=self.auth("ris"))
        assert r.status_code == 201, r.text
        rid: str = r.json()["id"]
        self.ids.setdefault(resource["resourceType"], rid)
        return rid

    def _seed(self) -> None:
        doctor = self._create({"resourceType": "Practitioner",
                               "identifier": [{"system": RPPS, "value": DOCTOR}]})
        patient = self._create({"resourceType": "Patient", "name": [{"family": "FUZZ"}],
                                "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8",
                                                "value": "123456789012345"}]})
        self._create({"resourceType": "ServiceRequest", "status": "active", "intent": "order",
                      "code": {"text": "scanner"}, "subject": {"reference": f"Patient/{patient}"},
                      "requester": {"reference": f"Practitioner/{doctor}"}})
        self._create({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                      "subject": {"reference": f"Patient/{patient}"}})
        binary = self._create({"resourceType": "Binary", "contentType": "text/plain",
                               "data": "Y29tcHRlLXJlbmR1"})
        self._create({"resourceType": "DocumentReference", "status": "current",
                      "subject": {"reference": f"Patient/{patient}"},
                      "content": [{"attachment": {"contentType": "text/plain",
                                                  "url": f"Binary/{binary}"}}]})

    def auth(self, who: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}

    def audited(self, request_id: str) -> bool:
        """Whether a refusal AuditEvent names this request (R-SEC-3)."""
        assert self.core.audit is not None
        self.core.audit.flush()
        r = self.http.get("/fhir/AuditEvent?outcome=4&_sort=-date&_count=10",
                          headers=self.auth("auditor"))
        assert r.status_code == 200, r.text
        return any(any(x.get("what", {}).get("identifier", {}).get("value") == request_id
                       for x in e["resource"].get("entity", []))
                   for e in r.json().get("entry", []))

    def close(self) -> None:
        if self.core.audit is not None:
            self.core.audit.close()
        self.core.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def request_id() -> str:
    return str(uuid.uuid4())
