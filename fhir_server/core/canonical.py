"""The project's canonical base for the extensions, code systems and profiles we define.

One place, so every URL we mint agrees (``profiles/`` uses the same base).
"""

from __future__ import annotations

BASE = "https://teleimagerie.fr/fhir"


def url(kind: str, name: str) -> str:
    """``url("StructureDefinition", "audit-chain")`` -> canonical URL."""
    return f"{BASE}/{kind}/{name}"
