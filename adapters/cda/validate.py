"""Conformance of a generated document: the CDA R2 XSD (lxml) and the official ANS
schematrons (CI-SIS IMG-CR-IMG 2024.01, structuration minimale, IHE and ANS header
models), run with node-schematron (XSLT2 query binding) from ``tools/node``.

Both need the ANS test kit (``../shared/references/ans-cda``), which is reference
material, not part of the product: :func:`references` says where it is, or None.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

from lxml import etree

ROOT = Path(__file__).resolve().parents[2]
NODE_TOOLS = ROOT / "tools" / "node"
SCHEMATRON_JS = NODE_TOOLS / "node_modules" / "node-schematron" / "bin" / "schematron.js"
SCHEMATRONS = ("CI-SIS_IMG-CR-IMG_2024.01.sch",
               "profils/structurationMinimale/ASIP-STRUCT-MIN-StrucMin.sch",
               "profils/CI-SIS_ModelesDeContenusCDA.sch",
               "profils/CI-SIS_Modeles_ANS.sch", "profils/IHE.sch")


def references() -> Path | None:
    """The ANS CDA kit: ``TELEIMG_ANS_CDA`` or ``../shared/references/ans-cda``."""
    candidates = [os.environ.get("TELEIMG_ANS_CDA", ""),
                  str(ROOT.parent / "shared" / "references" / "ans-cda")]
    for candidate in candidates:
        if candidate and (Path(candidate) / "xsd" / "CDA_extended.xsd").exists():
            return Path(candidate)
    return None


@cache
def _schema(kit: Path) -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(kit / "xsd" / "CDA_extended.xsd")))


def xsd_errors(xml: bytes, kit: Path) -> list[str]:
    schema = _schema(kit)
    if schema.validate(etree.fromstring(xml)):
        return []
    return [f"ligne {e.line} : {e.message}" for e in schema.error_log]


def schematron_available() -> bool:
    return SCHEMATRON_JS.exists() and shutil.which("node") is not None


def schematron_errors(xml: bytes | list[bytes], kit: Path,
                      schematrons: tuple[str, ...] = SCHEMATRONS) -> list[str]:
    """Failed assertions of each schematron over one or several documents (empty: they
    all conform); one node run per schematron for the whole set."""
    documents = [xml] if isinstance(xml, bytes) else xml
    with tempfile.TemporaryDirectory() as tmp:
        for n, content in enumerate(documents):
            (Path(tmp) / f"document-{n}.xml").write_bytes(content)
        errors: list[str] = []
        for name in schematrons:
            run = subprocess.run(["node", str(SCHEMATRON_JS), str(kit / "schematrons" / name),
                                  f"{tmp}/*.xml"], capture_output=True, text=True,
                                 timeout=300, check=False)
            output = run.stdout + run.stderr
            if run.returncode != 0 or f"{len(documents)} documents passed" not in output:
                failed = [line.strip() for line in output.splitlines()
                          if "rreur" in line or line.startswith("fail")]
                errors.append(f"{name} : " + (" | ".join(failed[:8]) or output[-800:]))
        return errors
