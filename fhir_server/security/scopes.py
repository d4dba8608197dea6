"""SMART App Launch scopes (v2 ``context/Type.cruds``, v1 ``.read``/``.write``/``.*``).

Each interaction needs one permission letter on the resource type
(SMART v2 "scopes-and-launch-context"): c create, r read/vread/instance history,
u update/patch, d delete, s search/type and system history.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fhir_server.core.model import Interaction

CONTEXTS = ("patient", "user", "system")
LETTERS = "cruds"
_SCOPE = re.compile(r"^(patient|user|system)/([A-Za-z]+|\*)\.([a-z*]+)(\?.*)?$")
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}

LETTER_OF: dict[Interaction, str] = {
    Interaction.READ: "r",
    Interaction.VREAD: "r",
    Interaction.HISTORY_INSTANCE: "r",
    Interaction.SEARCH_TYPE: "s",
    Interaction.HISTORY_TYPE: "s",
    Interaction.HISTORY_SYSTEM: "s",
    Interaction.CREATE: "c",
    Interaction.UPDATE: "u",
    Interaction.PATCH: "u",
    Interaction.DELETE: "d",
}


@dataclass(frozen=True)
class Scope:
    context: str  # patient | user | system
    type: str  # resource type or "*"
    letters: str

    def grants(self, rtype: str, letter: str) -> bool:
        return (self.type == "*" or self.type == rtype) and letter in self.letters


def parse_scope(text: str) -> Scope | None:
    """One scope string, or None when it is not a resource scope (openid, launch, …).

    Granular v2 scopes (``?category=…``) are not honoured: they would need a filter on
    every read and search, so they grant nothing rather than too much.
    """
    match = _SCOPE.match(text)
    if match is None or match.group(4):
        return None
    context, rtype, perms = match.group(1), match.group(2), match.group(3)
    if perms in _V1:
        letters = _V1[perms]
    elif perms and all(c in LETTERS for c in perms) and \
            list(perms) == sorted(perms, key=LETTERS.index) and len(set(perms)) == len(perms):
        letters = perms
    else:
        return None
    return Scope(context, rtype, letters)


def parse_scopes(value: object) -> tuple[Scope, ...]:
    items = value.split() if isinstance(value, str) else value if isinstance(value, list) else []
    out = []
    for item in items:
        if isinstance(item, str):
            scope = parse_scope(item)
            if scope is not None:
                out.append(scope)
    return tuple(out)
