"""IHE XDM *Distribute Document Set on Media* (ITI-32) as the ``IHE_XDM.ZIP`` attached to
MSSanté mails (IHE ITI TF-3 §4.1.1 zip layout; ANS *regles-gestion-mssante.md*):
``INDEX.HTM`` and ``README.TXT`` at the root, and ``IHE_XDM/SUBSET01/`` holding the
METADATA.XML (the same ebRIM as ITI-41, each entry naming its file in a URI slot) and
the documents. A replacement carries the extra metadata ``action`` = ``C``, a withdrawal
``D`` (the values of the transmission IG's OBX-11: C replaces, D deletes).
"""

from __future__ import annotations

import html
import io
import zipfile
from dataclasses import replace

from lxml import etree

from adapters.cda.metadata import Metadata
from adapters.delivery.ebrim import Submission, submit_objects_request

SUBSET = "IHE_XDM/SUBSET01"


def archive(sub: Submission, documents: list[bytes], sender: str, product: str) -> bytes:
    """The zip of ``sub`` (its documents in the same order as ``documents``)."""
    names = [f"DOC{i + 1:05d}.XML" for i in range(len(documents))]
    entries = [(meta, name) for (meta, _), name in zip(sub.documents, names, strict=True)]
    extra = dict(sub.extra)
    if any(meta.replaces for meta, _ in entries):
        extra.setdefault("action", "C")
    metadata = submit_objects_request(replace(sub, documents=entries, uri_slots=True,
                                              extra=extra))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("INDEX.HTM", _index(entries))
        z.writestr("README.TXT", _readme(sender, product))
        z.writestr(f"{SUBSET}/METADATA.XML",
                   etree.tostring(metadata, xml_declaration=True, encoding="UTF-8"))
        for name, data in zip(names, documents, strict=True):
            z.writestr(f"{SUBSET}/{name}", data)
    return buffer.getvalue()


def _index(entries: list[tuple[Metadata, str]]) -> str:
    rows = "".join(f'<li><a href="{SUBSET}/{name}">{html.escape(meta.title)}</a> '
                   f"({html.escape(meta.patient_name)}, version {meta.version})</li>"
                   for meta, name in entries)
    return (f'<!DOCTYPE html><html lang="fr"><head><meta charset="utf-8">'
            f"<title>Documents transmis</title></head><body><h1>Documents transmis</h1>"
            f"<ul>{rows}</ul></body></html>")


def _readme(sender: str, product: str) -> str:
    return (f"Émetteur : {sender}\r\nLogiciel : {product}\r\n"
            "Contenu : archive IHE XDM (ITI-32) — IHE_XDM/SUBSET01/METADATA.XML décrit "
            "les documents CDA R2 du sous-ensemble.\r\n")
