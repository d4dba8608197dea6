"""Export the implementation guide as a FHIR NPM package (``package.tgz``) so other
systems can load our profiles and terminology (FHIR NPM Package spec: ``package/``
folder, ``package.json``, ``.index.json``)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

from fhir_server.core.canonical import BASE
from fhir_server.validation.registry import definitions
from profiles.spec import VERSION
from terminology.service import terminology

NAME = "fr.teleimagerie.ig"


def resources() -> list[dict[str, Any]]:
    return [*definitions().values(), *terminology().resources]


def manifest() -> dict[str, Any]:
    return {"name": NAME, "version": VERSION, "canonical": BASE,
            "title": "Téléimagerie — profils et terminologies",
            "description": "Profils FHIR R4 et terminologies de la téléimagerie française",
            "fhirVersions": ["4.0.1"], "type": "IG", "license": "CC0-1.0",
            "dependencies": {"hl7.fhir.r4.core": "4.0.1"}, "author": "teleimagerie"}


def build(out: Path) -> int:
    """Write the package; the number of resources it holds."""
    items = resources()
    index = {"index-version": 1, "files": []}
    files: list[tuple[str, bytes]] = [("package/package.json",
                                       json.dumps(manifest(), indent=1).encode())]
    for res in items:
        name = f"{res['resourceType']}-{res['id']}.json"
        entry = {"filename": name, "resourceType": res["resourceType"], "id": res["id"],
                 "url": res.get("url"), "version": res.get("version")}
        if res["resourceType"] == "StructureDefinition":
            entry.update(kind=res.get("kind"), type=res.get("type"))
        index["files"].append(entry)  # type: ignore[attr-defined]
        files.append((f"package/{name}", json.dumps(res, ensure_ascii=False).encode()))
    files.append(("package/.index.json", json.dumps(index, indent=1).encode()))
    with tarfile.open(out, "w:gz") as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return len(items)
