"""Identifiers a peer sends, checked against their grammar before they name anything, and
paths checked to stay in their directory (issue 27 item 1; R-SEC-2, R-INT-2).

A value received from a peer (a DICOM UID, an AE title, a message id) never becomes a
path as it is: it is first checked against the grammar of its type, and the path built
from it is then resolved and must stay under the directory it was meant for. Either
check alone would do for today's callers; both together keep the next caller safe.

* UID (DICOM PS3.5 §9.1, VR UI §6.2): components of digits separated by ``.``, no
  component with a leading zero unless it is ``0``, at most 64 characters.
* AE title (PS3.5 §6.2, VR AE): at most 16 characters of the default repertoire (ISO 646
  G0, printable), no backslash, no control character, not only spaces; leading and
  trailing spaces are not significant.
* A file name component (:func:`file_name`): letters, digits, ``.``, ``_``, ``-``; not
  ``.``/``..``, no separator, no NUL.
"""

from __future__ import annotations

import re
from pathlib import Path

UID_MAX = 64
AE_MAX = 16
NAME_MAX = 128
_UID = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")
_AE = re.compile(r"[\x20-\x5b\x5d-\x7e]{1,16}")  # printable ISO 646 G0 except "\"
_NAME = re.compile(r"[A-Za-z0-9._-]+")


class UnsafeIdentifier(ValueError):
    """A value that does not follow its type's grammar, or a path that would leave its
    directory; the text names the value escaped and shortened (it may hold anything)."""


def shown(value: object, limit: int = 80) -> str:
    """A value fit for a log line, an error text or a header: ASCII, escaped (no control
    character or newline reaches a log; R-SEC-6) and shortened."""
    text = ascii(value)
    return text if len(text) <= limit else text[:limit] + "..."


def is_uid(value: object) -> bool:
    """True for a conformant DICOM UID (PS3.5 §9.1)."""
    return isinstance(value, str) and 0 < len(value) <= UID_MAX and \
        _UID.fullmatch(value) is not None


def check_uid(value: object, what: str = "UID") -> str:
    """The UID itself, or :class:`UnsafeIdentifier` saying which rule it breaks."""
    if is_uid(value):
        return str(value)
    if not isinstance(value, str):
        why = "pas une valeur unique"
    elif not value:
        why = "vide"
    elif len(value) > UID_MAX:
        why = f"{len(value)} caractères (64 au plus)"
    elif not re.fullmatch(r"[0-9.]+", value):
        why = "caractères autres que chiffres et points"
    else:
        why = "composant vide ou commençant par 0"
    raise UnsafeIdentifier(f"{what} {shown(value)} non conforme (PS3.5 §9.1) : {why}")


def check_ae_title(value: object, what: str = "AE title") -> str:
    """The AE title without its non-significant spaces, or :class:`UnsafeIdentifier`."""
    if isinstance(value, str) and _AE.fullmatch(value) and value.strip():
        return value.strip()
    raise UnsafeIdentifier(f"{what} {shown(value)} non conforme (PS3.5 §6.2, AE : 16 "
                           "caractères imprimables au plus, sans barre oblique inverse)")


def file_name(value: object, what: str = "nom de fichier") -> str:
    """``value`` if it is one harmless file name component."""
    if isinstance(value, str) and len(value) <= NAME_MAX and _NAME.fullmatch(value) \
            and value not in (".", ".."):
        return value
    raise UnsafeIdentifier(f"{what} {shown(value)} refusé : un seul composant de lettres, "
                           "chiffres, « . », « _ », « - »")


def inside(directory: Path, *names: str) -> Path:
    """``directory / name / …`` once each name is a plain component (:func:`file_name`)
    and the path stays under ``directory`` (:func:`within`)."""
    path = directory
    for name in names:
        path = path / file_name(name)
    return within(directory, path)


def within(directory: Path, path: Path) -> Path:
    """``path`` if, resolved (symbolic links followed), it is under the resolved
    ``directory``; for paths another file names (a DICOMDIR's Referenced File IDs)."""
    root = directory.resolve()
    if "\0" in str(path) or not path.resolve().is_relative_to(root):
        raise UnsafeIdentifier(f"{shown(str(path))} sort de {shown(str(root))}")
    return path
