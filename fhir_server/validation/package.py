"""Export the implementation guide as a FHIR NPM package (``package.tgz``) so other
systems can load our profiles and terminology (FHIR NPM Package spec, packages.html:
``package/`` folder, ``package.json``, ``.index.json`` naming every resource file).

The package holds an ImplementationGuide resource listing every resource, and declares
its dependencies in ``package.json`` and in the IG's ``dependsOn`` (issue 29 item 6):
the FHIR core, FR Core (whose extensions and code systems our profiles use) and IHE MHD
(whose Document Responder the server instantiates). A dependency is declared when a
resource of the package refers to its canonical base, or the server claims it (MHD).
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fhir_server.core.canonical import BASE
from fhir_server.validation.registry import definitions
from profiles.spec import VERSION
from terminology.service import terminology

NAME = "fr.teleimagerie.ig"
FHIR_VERSION = "4.0.1"


@dataclass(frozen=True)
class Dependency:
    """An IG we build on: its package id and version, its canonical base (a resource of
    ours referring to it makes it a dependency) and its ImplementationGuide's URL."""

    package: str
    version: str
    canonical: str
    guide: str
    always: bool = False  # declared whether or not a resource refers to it


DEPENDENCIES = [
    Dependency("hl7.fhir.r4.core", FHIR_VERSION, "http://hl7.org/fhir",
               "http://hl7.org/fhir/ImplementationGuide/fhir", always=True),
    Dependency("hl7.fhir.fr.core", "2.1.0", "https://hl7.fr/ig/fhir/core",
               "https://hl7.fr/ig/fhir/core/ImplementationGuide/hl7.fhir.fr.core"),
    # the server is an MHD Document Responder (CapabilityStatement.instantiates)
    Dependency("ihe.iti.mhd", "4.2.2", "https://profiles.ihe.net/ITI/MHD",
               "https://profiles.ihe.net/ITI/MHD/ImplementationGuide/ihe.iti.mhd",
               always=True),
]


def resources() -> list[dict[str, Any]]:
    return [*definitions().values(), *terminology().resources]


def dependencies(items: list[dict[str, Any]]) -> list[Dependency]:
    """The IGs ``items`` build on: those whose canonical base one of them names."""
    text = json.dumps(items)
    return [d for d in DEPENDENCIES if d.always or f"{d.canonical}/" in text]


def manifest(items: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """``package.json``."""
    deps = dependencies(resources() if items is None else items)
    return {"name": NAME, "version": VERSION, "canonical": BASE,
            "url": f"{BASE}/ImplementationGuide/{NAME}",
            "title": "Téléimagerie — profils et terminologies",
            "description": "Profils FHIR R4 et terminologies de la téléimagerie française",
            "fhirVersions": [FHIR_VERSION], "type": "IG", "license": "CC0-1.0",
            "dependencies": {d.package: d.version for d in deps}, "author": "teleimagerie"}


def guide(items: list[dict[str, Any]]) -> dict[str, Any]:
    """The ImplementationGuide resource: its dependencies and every resource it holds."""
    return {
        "resourceType": "ImplementationGuide", "id": NAME,
        "url": f"{BASE}/ImplementationGuide/{NAME}", "version": VERSION,
        "name": "TeleimagerieIG", "title": "Téléimagerie — profils et terminologies",
        "status": "active", "publisher": "Téléimagerie", "packageId": NAME,
        "license": "CC0-1.0", "fhirVersion": [FHIR_VERSION],
        "description": "Profils FHIR R4 et terminologies de la téléimagerie française",
        "dependsOn": [{"id": d.package.replace(".", "_"), "uri": d.guide,
                       "packageId": d.package, "version": d.version}
                      for d in dependencies(items) if d.package != "hl7.fhir.r4.core"],
        "definition": {"resource": [
            {"reference": {"reference": f"{r['resourceType']}/{r['id']}"},
             "name": r.get("title") or r.get("name") or r["id"], "exampleBoolean": False}
            for r in items]},
    }


def build(out: Path) -> int:
    """Write the package; the number of resources it holds."""
    items = resources()
    items = [*items, guide(items)]
    index = {"index-version": 1, "files": []}
    files: list[tuple[str, bytes]] = [("package/package.json",
                                       json.dumps(manifest(items), indent=1).encode())]
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
