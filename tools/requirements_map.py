"""``docs/requirements.md``: every requirement id of ``../shared/requirements/teleimagerie.md``
with the code and the tests that cite it (issue 28 item 7).

``python -m tools.requirements_map`` writes the file; ``--check`` exits 1 when the committed
file differs from what the sources give (a test runs the same comparison).

A citation is an id written ``R-SEC-3`` (or ``R_SEC_3`` in a test's name), a range
``R-REQ-1..4`` or a list ``R-CONS-2/3``; a wildcard (``R-VAL-*``) names no requirement in
particular and counts for none.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# the requirements live next to the repository, in the team's shared folder
REQUIREMENTS = REPO.parent / "shared" / "requirements" / "teleimagerie.md"
OUTPUT = REPO / "docs" / "requirements.md"
CODE_DIRS = ("fhir_server", "adapters", "profiles", "terminology")
TEST_DIR = "tests"
TEXT_SUFFIXES = {".py", ".json", ".md", ".sql"}
# the map's own test names ids as data (its allow-list, its examples): it tests none of them
SELF_TEST = "tests/unit/test_requirements_map.py"

_HEADING = re.compile(r"^## (.+)$")
_REQUIREMENT = re.compile(r"^- \*\*(R-[A-Z]+-\d+)\*\*\s*(.*)$")
# R-REQ-1, R_REQ_1, R-REQ-1..4, R-CONS-2/3; not R-REQ-10 for R-REQ-1, not XR-REQ-1
_SOURCE = re.compile(r"\s*\((?:\d{3}|CSP|004)[^()]*\)\s*$")
SUMMARY_LENGTH = 160
_CITATION = re.compile(
    r"(?<![A-Za-z0-9])R[-_]([A-Z]+)[-_](\d+)((?:\.\.\d+)|(?:/\d+)+)?(?!\d)")


@dataclass
class Requirement:
    """One numbered requirement, its section and its first sentence."""

    rid: str
    section: str
    summary: str
    code: set[str] = field(default_factory=set)
    tests: set[str] = field(default_factory=set)


def parse_requirements(text: str) -> list[Requirement]:
    """The ``- **R-xxx-n** …`` items of the requirements file, in file order."""
    found: list[Requirement] = []
    section, item = "", ""
    for line in [*text.splitlines(), ""]:
        if item and line.startswith("  "):
            item += " " + line.strip()  # the item goes on, indented
            continue
        if item:
            found.append(_requirement(item, section))
            item = ""
        if heading := _HEADING.match(line):
            section = heading.group(1).strip()
        elif _REQUIREMENT.match(line):
            item = line
    return found


def _requirement(item: str, section: str) -> Requirement:
    match = _REQUIREMENT.match(item)
    assert match is not None
    # what the sources say, up to the first full stop before a capital ("… incl. palpation"
    # goes on), without the source reference: "… (000 §3.1)"
    sentence = re.split(r"\.\s+(?=[A-Z(])", match.group(2), maxsplit=1)[0]
    summary = _SOURCE.sub("", sentence).rstrip(". ")
    if len(summary) > SUMMARY_LENGTH:
        summary = summary[:SUMMARY_LENGTH].rsplit(" ", 1)[0] + " …"
    return Requirement(match.group(1), section, summary)


def citations(text: str) -> set[str]:
    """Every requirement id a text names, ranges and lists expanded."""
    ids: set[str] = set()
    for match in _CITATION.finditer(text):
        prefix, first, tail = match.group(1), int(match.group(2)), match.group(3) or ""
        numbers = [first]
        if tail.startswith(".."):
            numbers = list(range(first, int(tail[2:]) + 1))
        elif tail:
            numbers += [int(n) for n in tail.split("/")[1:]]
        ids.update(f"R-{prefix}-{n}" for n in numbers)
    return ids


def _files(root: Path, top: str) -> Iterator[Path]:
    for path in sorted((root / top).rglob("*")):
        if path.is_file() and path.suffix in TEXT_SUFFIXES and "__pycache__" not in path.parts:
            yield path


def _test_functions(tree: ast.Module) -> Iterator[tuple[str, int, int]]:
    """``(qualified name, first line, last line)`` of each test, decorators included."""
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            for inner in node.body:
                if (isinstance(inner, ast.FunctionDef | ast.AsyncFunctionDef)
                        and inner.name.startswith("test")):
                    yield f"{node.name}::{inner.name}", _start(inner), inner.end_lineno or 0
        elif (isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
              and node.name.startswith("test")):
            yield node.name, _start(node), node.end_lineno or 0


def _start(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    return min([node.lineno, *(d.lineno for d in node.decorator_list)])


def cited_by_tests(relative: str, source: str) -> dict[str, set[str]]:
    """Requirement id → the tests of one test module that cite it.

    A test cites what its name, decorators, docstring or body name; what the module names
    outside any test (its docstring, section comments) is cited by ``<file> (module)``."""
    cited: dict[str, set[str]] = {}
    lines = source.splitlines()
    inside: set[int] = set()
    for name, first, last in _test_functions(ast.parse(source)):
        inside.update(range(first, last + 1))
        for rid in citations("\n".join(lines[first - 1:last])):
            cited.setdefault(rid, set()).add(f"{relative}::{name}")
    outside = "\n".join(line for number, line in enumerate(lines, 1) if number not in inside)
    for rid in citations(outside):
        cited.setdefault(rid, set()).add(f"{relative} (module)")
    return cited


def collect(root: Path = REPO, requirements: Path = REQUIREMENTS) -> list[Requirement]:
    """The requirements with the code files and the tests citing each."""
    found = parse_requirements(requirements.read_text(encoding="utf-8"))
    by_id = {r.rid: r for r in found}
    for top in CODE_DIRS:
        for path in _files(root, top):
            relative = path.relative_to(root).as_posix()
            for rid in citations(path.read_text(encoding="utf-8")) & by_id.keys():
                by_id[rid].code.add(relative)
    for path in _files(root, TEST_DIR):
        if path.suffix != ".py" or not path.name.startswith("test_"):
            continue  # worlds and fixtures are not tests
        relative = path.relative_to(root).as_posix()
        if relative == SELF_TEST:
            continue
        for rid, tests in cited_by_tests(relative, path.read_text(encoding="utf-8")).items():
            if rid in by_id:
                by_id[rid].tests.update(tests)
    return found


def render(found: list[Requirement]) -> str:
    """The Markdown page: a summary table, then each requirement's files and tests."""
    out = [
        "# Requirements → code and tests",
        "",
        "Generated by `python -m tools.requirements_map` from "
        "`../shared/requirements/teleimagerie.md` (issue 28); do not edit by hand — "
        "`python -m tools.requirements_map --check` and "
        "`tests/unit/test_requirements_map.py` fail when it drifts.",
        "",
        "A citation is an id (`R-SEC-3`, or `R_SEC_3` in a test's name), a range "
        "(`R-REQ-1..4`) or a list (`R-CONS-2/3`); a wildcard (`R-VAL-*`) counts for none. "
        "Code is searched in " + ", ".join(f"`{d}/`" for d in CODE_DIRS) + "; tests in "
        "`tests/test_*.py` files, by test function (`(module)`: the module's docstring or "
        "comments outside any test).",
        "",
        "| requirement | code files | tests |",
        "| --- | ---: | ---: |",
    ]
    out += [f"| [{r.rid}](#{r.rid.lower()}) | {len(r.code)} | {len(r.tests)} |"
            for r in found]
    section = None
    for r in found:
        if r.section != section:
            section = r.section
            out += ["", f"## {section}"]
        summary = r.summary if r.summary.endswith("…") else r.summary + "."
        out += ["", f"### {r.rid}", "", summary, "", "Code:"]
        out += [f"- `{path}`" for path in sorted(r.code)] or ["- none"]
        out += ["", "Tests:"]
        out += [f"- `{test}`" for test in sorted(r.tests)] or ["- none"]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if docs/requirements.md differs from the sources")
    args = parser.parse_args(argv)
    if not REQUIREMENTS.is_file():
        print(f"requirements file not found: {REQUIREMENTS}", file=sys.stderr)
        return 2
    text = render(collect())
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.is_file() else ""
        if current != text:
            print(f"{OUTPUT.relative_to(REPO)} is stale: run python -m tools.requirements_map",
                  file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
