"""The terminology service (FHIR R4 terminology-service.html) over the shipped resources.

Everything is loaded once and indexed by canonical URL: a value set is expanded the first
time it is needed and kept as a set of (system, code), so a required-binding check on a
write is one dictionary lookup.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import orjson

RESOURCES = Path(__file__).parent / "resources"


class TerminologyError(Exception):
    """An unknown code system, code, value set or map: the operations answer 404."""


@dataclass(frozen=True)
class Concept:
    system: str
    code: str
    display: str | None
    properties: tuple[tuple[str, Any], ...] = ()

    def prop(self, name: str) -> Any:
        return next((v for k, v in self.properties if k == name), None)


@dataclass
class Expansion:
    url: str
    concepts: list[Concept] = field(default_factory=list)
    members: frozenset[tuple[str, str]] = frozenset()


def _prop_value(prop: dict[str, Any]) -> Any:
    for key, value in prop.items():
        if key.startswith("value"):
            return value
    return None


class Terminology:
    def __init__(self, directory: Path = RESOURCES) -> None:
        self.resources: list[dict[str, Any]] = [
            orjson.loads(p.read_bytes()) for p in sorted(directory.glob("*.json"))]
        self.code_systems: dict[str, dict[str, Any]] = {}
        self.concepts: dict[str, dict[str, Concept]] = {}
        self.value_sets: dict[str, dict[str, Any]] = {}
        self.concept_maps: dict[str, dict[str, Any]] = {}
        for res in self.resources:
            kind, url = res["resourceType"], res["url"]
            if kind == "CodeSystem":
                self.code_systems[url] = res
                self.concepts[url] = {c.code: c for c in _flatten(url, res.get("concept", []))}
            elif kind == "ValueSet":
                self.value_sets[url] = res
            elif kind == "ConceptMap":
                self.concept_maps[url] = res
        self._expansions: dict[str, Expansion] = {}

    # -- $lookup -----------------------------------------------------------------------
    def lookup(self, system: str, code: str) -> Concept:
        concepts = self.concepts.get(system)
        if concepts is None:
            raise TerminologyError(f"unknown code system {system}")
        found = concepts.get(code)
        if found is None:
            raise TerminologyError(f"code {code!r} is not in {system}")
        return found

    # -- $expand -----------------------------------------------------------------------
    def expansion(self, url: str) -> Expansion:
        url = url.split("|", 1)[0]
        cached = self._expansions.get(url)
        if cached is not None:
            return cached
        vs = self.value_sets.get(url)
        if vs is None:
            raise TerminologyError(f"unknown value set {url}")
        concepts: dict[tuple[str, str], Concept] = {}
        compose = vs.get("compose") or {}
        for inc in compose.get("include", []):
            for c in self._included(inc):
                concepts.setdefault((c.system, c.code), c)
        for exc in compose.get("exclude", []):
            for c in self._included(exc):
                concepts.pop((c.system, c.code), None)
        out = Expansion(url, list(concepts.values()), frozenset(concepts))
        self._expansions[url] = out
        return out

    def _included(self, inc: dict[str, Any]) -> list[Concept]:
        found: list[Concept] | None = None
        for other in inc.get("valueSet", []):
            expansion = self.expansion(other)
            found = expansion.concepts if found is None else \
                [c for c in found if (c.system, c.code) in expansion.members]
        system = inc.get("system")
        if system is not None:
            known = self.concepts.get(system, {})
            if inc.get("concept"):
                chosen = []
                for listed in inc["concept"]:
                    held = known.get(listed["code"])
                    # the value set's own display wins (it is the French label we ship)
                    chosen.append(Concept(system, listed["code"], listed.get("display") or (
                        held.display if held else None), held.properties if held else ()))
            else:
                if system not in self.concepts:
                    raise TerminologyError(f"value set includes all of {system}, a code "
                                           "system this server does not hold")
                chosen = list(known.values())
            for flt in inc.get("filter", []):
                chosen = [c for c in chosen if _matches(c, flt)]
            keys = {(c.system, c.code) for c in chosen}
            found = chosen if found is None else [c for c in found if (c.system, c.code) in keys]
        return found or []

    def expand(self, url: str, text: str | None = None, offset: int = 0,
               count: int | None = None) -> tuple[int, list[Concept]]:
        concepts = self.expansion(url).concepts
        if text:
            needle = text.casefold()
            concepts = [c for c in concepts if needle in (c.display or "").casefold()
                        or needle in c.code.casefold()]
        total = len(concepts)
        end = None if count is None else offset + count
        return total, concepts[offset:end]

    # -- $validate-code ----------------------------------------------------------------
    def in_value_set(self, url: str, system: str | None, code: str) -> bool:
        exp = self.expansion(url)
        if system is not None:
            return (system, code) in exp.members
        return any(c == code for _, c in exp.members)

    def display_of(self, system: str, code: str) -> str | None:
        found = self.concepts.get(system, {}).get(code)
        return found.display if found else None

    # -- $translate --------------------------------------------------------------------
    def translate(self, url: str | None, system: str, code: str,
                  target: str | None = None) -> list[dict[str, Any]]:
        maps = [self.concept_maps[url]] if url in self.concept_maps else \
            list(self.concept_maps.values()) if url is None else []
        if not maps:
            raise TerminologyError(f"unknown concept map {url}")
        matches: list[dict[str, Any]] = []
        for cm in maps:
            for group in cm.get("group", []):
                if group.get("source") not in (system, None) or \
                        (target and group.get("target") != target):
                    continue
                for element in group.get("element", []):
                    if element.get("code") != code:
                        continue
                    for t in element.get("target", []):
                        matches.append({"equivalence": t.get("equivalence", "equivalent"),
                                        "system": group.get("target"), "code": t["code"],
                                        "display": t.get("display") or self.display_of(
                                            group.get("target", ""), t["code"]),
                                        "source": cm["url"]})
        return matches


def _flatten(system: str, concepts: list[dict[str, Any]]) -> list[Concept]:
    out: list[Concept] = []
    for c in concepts:
        props = tuple((p["code"], _prop_value(p)) for p in c.get("property", []))
        out.append(Concept(system, c["code"], c.get("display"), props))
        out += _flatten(system, c.get("concept", []))
    return out


def _matches(concept: Concept, flt: dict[str, Any]) -> bool:
    op, prop, value = flt.get("op"), flt.get("property"), str(flt.get("value"))
    if op == "=":
        found = concept.prop(prop or "")
        text = str(found).lower() if isinstance(found, bool) else str(found)
        return found is not None and text == value
    if op == "is-a" and prop == "concept":
        return concept.code == value
    if op == "in":
        return str(concept.prop(prop or "")) in value.split(",")
    return False


@cache
def terminology() -> Terminology:
    """The shipped terminology, loaded once per process."""
    return Terminology()
