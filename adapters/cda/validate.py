"""Conformance of a generated document, as one verdict: the CDA R2 XSD (lxml) and every
rule of the official ANS schematrons (:mod:`adapters.cda.schematron`, SaxonC-HE), for
the operator's ``teleimagerie cda validate`` and the check before a report is accepted
and its documents delivered (issue 26; R-REP-6, R-INT-1; ADR 0021).

Both need the ANS test kit (``../shared/references/ans-cda`` or ``TELEIMG_ANS_CDA``),
which is reference material, not part of the product: :func:`references` says where it
is, or None.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from lxml import etree

from adapters.cda import metadata, schematron, xds_check
from adapters.cda.schematron import Failure, Unavailable
from adapters.cda.service import Shared

references = schematron.references


@cache
def _schema(kit: Path) -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(kit / "xsd" / "CDA_extended.xsd")))


def xsd_errors(xml: bytes, kit: Path) -> list[str]:
    """The CDA R2 XSD's complaints about ``xml`` (the kit's CDA_extended.xsd)."""
    schema = _schema(kit)
    if schema.validate(etree.fromstring(xml)):
        return []
    return [f"ligne {e.line} : {e.message}" for e in schema.error_log]


@dataclass
class Verdict:
    """A document against the XSD and the schematrons of its level."""

    xsd: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    unverifiable: list[Failure] = field(default_factory=list)
    xds: list[str] = field(default_factory=list)  # the XDS metadata (xds_check)

    @property
    def valid(self) -> bool:
        return not self.xsd and not self.failures and not self.xds

    def lines(self) -> list[str]:
        """One line per failed check (XSD error, failed assertion, XDS metadata rule)."""
        return [f"CDA_extended.xsd {e}" for e in self.xsd] + \
            [f.line() for f in self.failures] + [f"XDS {p}" for p in self.xds]

    def first(self) -> str:
        """The first failed rule, named for a person (pattern and message)."""
        if self.xsd:
            return f"schéma CDA (CDA_extended.xsd) : {self.xsd[0]}"
        if self.failures:
            return f"{self.failures[0].schematron} [{self.failures[0].pattern}] " \
                f"{self.failures[0].message}"
        return f"métadonnées XDS : {self.xds[0]}" if self.xds else ""


class Checker:
    """The XSD and the schematrons over a kit, with the verdicts of the last documents
    kept (the report's check and the delivery's see the same bytes: one evaluation)."""

    def __init__(self, kit: Path,
                 validator: schematron.Validator | schematron.Isolated | None = None,
                 remember: int = 64) -> None:
        self.kit = kit
        self.validator = validator or schematron.Validator(kit)
        self._seen: OrderedDict[str, Verdict] = OrderedDict()
        self._remember = remember
        self._lock = threading.Lock()

    def check(self, xml: bytes) -> Verdict:
        key = hashlib.sha256(xml).hexdigest()
        with self._lock:
            if key in self._seen:
                self._seen.move_to_end(key)
                return self._seen[key]
        report = self.validator.validate(xml)
        xds = xds_check.problems(metadata.read(xml), schematron.level_of(xml), self.kit)
        verdict = Verdict(xsd_errors(xml, self.kit), report.failures, report.unverifiable, xds)
        with self._lock:
            self._seen[key] = verdict
            while len(self._seen) > self._remember:
                self._seen.popitem(last=False)
        return verdict


_checker: Checker | None = None
_checker_lock = threading.Lock()


def checker() -> Checker:
    """The process's checker over the kit :func:`references` finds (raises
    :class:`Unavailable` when the kit or saxonche is missing)."""
    global _checker
    with _checker_lock:
        if _checker is None:
            default = schematron.default()  # says why it cannot run here (Unavailable)
            # a server validates out of process (SaxonC holds the GIL: ADR 0021): in the
            # host's service (TELEIMG_SCHEMATRON_SERVICE) or else a process of its own;
            # TELEIMG_SCHEMATRON_ISOLATED=off keeps it in this one (tests, the CLI)
            isolated = os.environ.get("TELEIMG_SCHEMATRON_ISOLATED", "on").lower() not in (
                "off", "0", "false", "no")
            _checker = Checker(default.kit, default if isinstance(default, Shared) or not
                               isolated else schematron.Isolated(default.kit))
        return _checker


def main(argv: list[str]) -> int:
    """``teleimagerie cda validate FILE``: 0 valid, 1 invalid (the failed assertions, one
    per line), 2 usage or the validator cannot run here."""
    if len(argv) != 1:
        print("usage : teleimagerie cda validate FICHIER.xml", file=sys.stderr)
        return 2
    path = Path(argv[0])
    try:
        xml = path.read_bytes()
        etree.fromstring(xml)
    except OSError as exc:
        print(f"{path} : illisible ({exc.strerror})", file=sys.stderr)
        return 2
    except etree.XMLSyntaxError as exc:
        print(f"{path} : XML mal formé ({exc})", file=sys.stderr)
        return 1
    try:
        verdict = checker().check(xml)
    except Unavailable as exc:
        print(f"validation impossible : {exc}", file=sys.stderr)
        return 2
    for failure in verdict.unverifiable:
        print(f"non vérifiable (jeu de valeurs absent du kit) : {failure.line()}",
              file=sys.stderr)
    if verdict.valid:
        print(f"{path} : conforme ({schematron.level_of(xml)} : XSD et "
              f"{len(schematron.BY_LEVEL[schematron.level_of(xml)])} schématrons ANS)")
        return 0
    for line in verdict.lines():
        print(line)
    return 1
