"""The report as a PDF (the N1 document's body, the MSSanté attachment; R-ACT-4: the
imager who interpreted the exam is named on it). Rendered with reportlab's platypus;
its standard fonts use WinAnsi encoding, which covers French (é, è, à, ç, œ, «»)."""

from __future__ import annotations

import io
from typing import Any
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from adapters.cda import codes
from adapters.cda.document import DOSE_DISPLAY, findings, identifier, modality_of, title
from adapters.cda.sources import Sources


def _name(resource: dict[str, Any] | None) -> str:
    name: dict[str, Any] = next(iter((resource or {}).get("name") or []), {})
    parts = [*(name.get("prefix") or []), *(name.get("given") or []), name.get("family") or ""]
    return " ".join(p for p in parts if p) or "—"


def _date(value: str | None) -> str:
    if not value:
        return "—"
    day = value[:10].split("-")
    text = "/".join(reversed(day)) if len(day) == 3 else value
    return text + (f" à {value[11:16]}" if len(value) > 15 else "")


def render(src: Sources) -> bytes:
    styles = getSampleStyleSheet()
    body = ParagraphStyle("body", parent=styles["BodyText"], fontSize=10, leading=13)
    heading = ParagraphStyle("h", parent=styles["Heading3"], spaceBefore=8, spaceAfter=3)
    out = io.BytesIO()
    doc = SimpleDocTemplate(out, pagesize=A4, leftMargin=18 * mm, rightMargin=18 * mm,
                            topMargin=16 * mm, bottomMargin=16 * mm, title=title(src),
                            author=_name(src.author), lang="fr-FR")
    report, request, patient = src.report, src.request or {}, src.patient
    story: list[Any] = [Paragraph(escape(title(src)), styles["Title"])]
    if src.version > 1:
        story.append(Paragraph(f"<b>Version {src.version}</b> — remplace la version "
                               "précédente de ce compte rendu.", body))
    ins = identifier(patient, *codes.INS_OIDS)
    identity = [["Patient", escape(_name(patient).upper())],
                ["Né(e) le", _date(patient.get("birthDate"))],
                ["Sexe", codes.GENDERS.get(patient.get("gender", "unknown"), ("", "—"))[1]],
                ["INS", ins or "non qualifié"]]
    site = (src.site or {}).get("name")
    if site:
        identity.append(["Site demandeur", escape(site)])
    table = Table(identity, colWidths=[38 * mm, 130 * mm])
    table.setStyle(TableStyle([("FONT", (0, 0), (0, -1), "Helvetica-Bold", 9),
                               ("FONT", (1, 0), (1, -1), "Helvetica", 9),
                               ("BOX", (0, 0), (-1, -1), 0.5, colors.grey)]))
    story += [Spacer(1, 4 * mm), table]

    def section(name: str, text: str) -> None:
        story.append(Paragraph(escape(name), heading))
        for line in [t for t in text.splitlines() if t.strip()] or ["—"]:
            story.append(Paragraph(escape(line), body))

    reasons = "\n".join(r.get("text") or "" for r in request.get("reasonCode") or [])
    section("Indication", reasons or "Non renseignée dans la demande.")
    modality = modality_of(src)
    act: dict[str, Any] = next(iter((request.get("code") or {}).get("coding") or []), {})
    started = next((s.get("started") for s in src.studies if s.get("started")), None)
    section("Technique", "\n".join(x for x in (
        f"Acte : {act.get('code')} {act.get('display') or ''}".strip() if act else "",
        f"Modalité : {codes.MODALITIES.get(modality or '', modality or '—')}",
        f"Examen réalisé le {_date(started)}" if started else "") if x))
    if src.doses:
        rows = [["Indicateur de dose", "Valeur"]]
        for obs in src.doses:
            code = next((c.get("code") for c in (obs.get("code") or {}).get("coding") or []),
                        "")
            q = obs.get("valueQuantity") or {}
            rows.append([DOSE_DISPLAY.get(code, code),
                         f"{q.get('value')} {q.get('code') or q.get('unit') or ''}"])
        story.append(Paragraph("Exposition aux rayonnements", heading))
        doses = Table(rows, colWidths=[110 * mm, 58 * mm])
        doses.setStyle(TableStyle([("FONT", (0, 0), (-1, 0), "Helvetica-Bold", 9),
                                   ("FONT", (0, 1), (-1, -1), "Helvetica", 9),
                                   ("GRID", (0, 0), (-1, -1), 0.25, colors.grey)]))
        story.append(doses)
    found = findings(report)
    if found:
        section("Résultats", found)
    section("Conclusion", report.get("conclusion") or "—")
    rpps = identifier(src.author, codes.RPPS)
    org = (src.author_org or {}).get("name")
    story += [Spacer(1, 6 * mm), Paragraph(
        f"Compte rendu validé le {_date(report.get('issued'))} par "
        f"<b>{escape(_name(src.author))}</b>"
        + (f" (RPPS {escape(rpps)})" if rpps else "")
        + (f", {escape(org)}" if org else "")
        + " — téléimagerie (acte réalisé à distance).", body)]
    doc.build(story)
    return out.getvalue()
