"""The documents of a report are checked before they exist (issue 26; R-REP-6, R-INT-1;
ADR 0021): a final or amended report whose N3 or N1 would fail the CDA XSD or a rule of
the ANS schematrons is refused (422, the rule named), and a stored document that fails
them is never sent (its delivery waits in ``document-invalide``).

:class:`ReportDocuments` is the workflow's *report check* (``Workflow.report_checks``,
filled by the composition root, :mod:`fhir_server.runtime`): the core never imports the
adapters. :func:`delivery_check` gives the sender the same verdicts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from adapters.cda import pdf, validate
from adapters.cda.document import build
from adapters.cda.schematron import BY_LEVEL, Unavailable
from adapters.cda.sources import MissingSource, gather
from adapters.principals import CDA_PUBLISHER
from fhir_server.core.errors import Issue
from fhir_server.security.system import as_system
from fhir_server.workflow.records import body
from fhir_server.workflow.reports import FINAL

if TYPE_CHECKING:
    from fhir_server.server.dispatch import FhirServer
    from fhir_server.workflow.engine import Case

log = logging.getLogger("teleimagerie.cda")
LEVELS = ("N3", "N1")
MAX_ISSUES = 20  # an OperationOutcome a person can read; the first rules suffice


def version_of(server: FhirServer, report: dict[str, Any], before: dict[str, Any] | None
               ) -> int:
    """The document version a write of ``report`` would produce (ADR 0012 §3): 1 for the
    first final report, 1 + the earlier final/amended versions for an amendment."""
    if before is None or before.get("status") not in FINAL or not report.get("id"):
        return 1
    # inside the report's write unit, guarded for its author: the versions are facts
    history = as_system(server, CDA_PUBLISHER).history("DiagnosticReport", str(report["id"]), None,
                                             1000, None, counted=False)
    return 1 + sum(1 for item in history.items if (body(item) or {}).get("status") in FINAL)


class ReportDocuments:
    """A report check: the documents a final/amended report would produce, through the
    XSD and every schematron rule (:func:`validate.checker`)."""

    def __init__(self, checker: validate.Checker) -> None:
        self.checker = checker

    def warm(self) -> None:
        """Compile the schematrons of both levels now — Saxon takes 20-30 s per process
        (ADR 0021) — so that the first final report after a start does not wait for it.
        Run by the served app in a background thread."""
        self.checker.validator.warm(sorted({n for names in BY_LEVEL.values() for n in names}))

    def __call__(self, server: FhirServer, case: Case, report: dict[str, Any],
                 before: dict[str, Any] | None) -> list[Issue]:
        if report.get("status") not in FINAL:
            return []
        draft = {**report, "id": report.get("id") or "en-cours-de-creation"}
        try:
            src = gather(server, draft, version_of(server, draft, before))
        except MissingSource:
            return []  # the publisher logs it; the report's own rules said what is missing
        rendered = pdf.render(src)
        issues: list[Issue] = []
        for level in LEVELS:
            doc = build(src, level, rendered if level == "N1" else None)
            verdict = self.checker.check(doc.xml)
            for line in [*(f"schéma CDA : {e}" for e in verdict.xsd),
                         *(f"{f.schematron} [{f.pattern}] {f.message} ({f.location})"
                           for f in verdict.failures),
                         *(f"métadonnées XDS : {p}" for p in verdict.xds)]:
                issues.append(Issue(
                    f"document CDA {level} non conforme (R-REP-6, R-INT-1 ; le DMP le "
                    f"refuserait) : {line}", code="business-rule",
                    expression=["DiagnosticReport"]))
        return issues[:MAX_ISSUES]


def report_check() -> ReportDocuments | None:
    """The check for the composition root, or None (logged) when the ANS kit or saxonche is
    missing here: documents are then produced and sent unchecked."""
    try:
        checker = validate.checker()
    except Unavailable as exc:
        log.warning("documents CDA non vérifiés par les schématrons ANS : %s", exc)
        return None
    return ReportDocuments(checker)


def delivery_check() -> Callable[[bytes], str | None] | None:
    """For the sender: the first failed rule of a stored document (None: conformant), or
    None when the validator cannot run here (logged)."""
    try:
        checker = validate.checker()
    except Unavailable as exc:
        log.warning("diffusions : documents non vérifiés par les schématrons ANS : %s", exc)
        return None

    def problem(xml: bytes) -> str | None:
        verdict = checker.check(xml)
        return None if verdict.valid else verdict.first()

    return problem
