"""A one-worker HTTP server for tests/reliability/test_body_limits.py (a subprocess, so
its memory is its own): ``python -m tests.reliability.body_server DATA_DIR PORT``.

The app as served (:func:`fhir_server.http.app.create_app` behind uvicorn, malloc bounded
as by ``create_asgi``) over a core without security, so no token is needed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import uvicorn

from fhir_server.config import Settings
from fhir_server.core.limits import Limits
from fhir_server.http.body import bound_malloc
from fhir_server.server.dispatch import FhirServer
from fhir_server.store import open_store
from teleimagerie.wiring import create_app


def main() -> None:
    data_dir, port = Path(sys.argv[1]), int(sys.argv[2])
    limit = int(sys.argv[3]) if len(sys.argv) > 3 else 16 * 1024 * 1024
    bound_malloc()
    core = FhirServer(open_store(None, data_dir), Limits(max_body_bytes=limit))
    app = create_app(Settings(data_dir=data_dir), server=core)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")


if __name__ == "__main__":
    main()
