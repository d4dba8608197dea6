"""Who is asking: the identity taken from a validated access token (R-SEC-1).

Claims follow Pro Santé Connect where it defines them (``SubjectNameID`` = idNatPs,
``SubjectRole``, ``acr``, ``authMode``); application roles come from a configurable claim
(default ``roles``), SMART scopes from ``scope``, the launch patient from ``patient``.
"""

from __future__ import annotations

from dataclasses import dataclass

from fhir_server.security.roles import ROLES
from fhir_server.security.scopes import Scope
from profiles.spec import FINESS, RPPS

RPPS_OID = RPPS  # idNatPs (FR Core Practitioner; the OIDs are defined once, profiles.spec)
RPPS_URL = "https://rpps.esante.gouv.fr"  # RPPS number (FR Core Practitioner)
FINESS_OID = FINESS
FINESS_URL = "https://finess.esante.gouv.fr"


@dataclass(frozen=True)
class Principal:
    sub: str
    issuer: str
    roles: tuple[str, ...] = ()
    scopes: tuple[Scope, ...] = ()
    id_nat_ps: str | None = None  # PSC SubjectNameID: "8" + RPPS for RPPS professionals
    name: str | None = None
    acr: str | None = None
    auth_mode: str | None = None
    strong: bool = False  # authentication level at or above the configured minimum
    patient: str | None = None  # launch/patient context (SMART ``patient`` claim)
    client_id: str | None = None
    organizations: tuple[str, ...] = ()  # FINESS numbers of the user's structures
    professions: tuple[str, ...] = ()  # PSC SubjectRole codes

    @property
    def rpps(self) -> str | None:
        """The 11-digit RPPS number behind an idNatPs ``8`` + RPPS."""
        nat = self.id_nat_ps
        if nat and len(nat) == 12 and nat.startswith("8"):
            return nat[1:]
        return nat

    @property
    def is_system(self) -> bool:
        """A connector, decided by the role table, never by the scope (R-SEC-1): every
        known role of the token is a system role. The token validator refuses a token
        mixing human and system roles, so a human is never taken for a connector."""
        known = [ROLES[r] for r in self.roles if r in ROLES]
        return bool(known) and all(r.system for r in known)

    @property
    def display(self) -> str:
        return self.name or self.id_nat_ps or self.sub

    def identifiers(self) -> list[tuple[str, str]]:
        """(system, value) pairs that identify this professional's Practitioner."""
        out: list[tuple[str, str]] = []
        if self.id_nat_ps:
            nat = self.id_nat_ps
            out.append((RPPS_OID, nat))
            if self.rpps and self.rpps != nat:
                out.append((RPPS_URL, self.rpps))
            elif len(nat) == 11 and nat.isdigit():
                out.append((RPPS_OID, "8" + nat))
                out.append((RPPS_URL, nat))
        return out
