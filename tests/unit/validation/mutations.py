"""Examples and their mutations for the equivalence tests of ADR 0027 (the compiled
invariants against fhirpathpy, the model skip against the model): the official R4
examples and our profiles' examples, mutated where a shortcut could go wrong."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from tests.conftest import REFERENCES

ROOT = Path(__file__).resolve().parents[3]
R4_EXAMPLES = REFERENCES / "fhir-r4" / "examples"


def examples(keep: Callable[[str], bool]) -> list[dict[str, Any]]:
    """Our profiles' examples, then the R4 examples, of the types ``keep`` accepts."""
    paths = sorted((ROOT / "profiles" / "examples").glob("*.json"))
    if R4_EXAMPLES.is_dir():
        paths += sorted(R4_EXAMPLES.glob("*.json"))
    out = [json.loads(p.read_text()) for p in paths]
    return [r for r in out if keep(r.get("resourceType", ""))]


def _sites(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path] if path else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _sites(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _sites(v, (*path, i))
    return out


def mutated(corpus: list[dict[str, Any]], tricky: list[Any],
            siblings: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """An example with one to three mutations: an element deleted, set to a ``tricky``
    value, or given a sibling (one of ``siblings``, or its own ``_`` primitive extension)
    holding a tricky value."""

    @st.composite
    def strategy(draw: st.DrawFn) -> dict[str, Any]:
        body = copy.deepcopy(draw(st.sampled_from(corpus)))
        for _ in range(draw(st.integers(1, 3))):
            sites = [s for s in _sites(body) if s[0] != "resourceType"]
            if not sites:
                break
            site = draw(st.sampled_from(sites))
            parent: Any = body
            for step in site[:-1]:
                parent = parent[step]
            key = site[-1]
            action = draw(st.sampled_from(["delete", "set", "sibling", "underscore"]))
            if action == "delete":
                del parent[key]
            elif action == "set":
                parent[key] = copy.deepcopy(draw(st.sampled_from(tricky)))
            elif isinstance(parent, dict) and isinstance(key, str):
                name = ("_" + key.lstrip("_") if action == "underscore"
                        else draw(st.sampled_from(siblings)))
                parent[name] = copy.deepcopy(draw(st.sampled_from(tricky)))
        return body

    return strategy()
