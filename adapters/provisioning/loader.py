"""Provision the directory from a file: structures, professionals, their roles (issue 24).

``load(server, path)`` reads a FHIR Bundle (JSON) or a CSV with one row per
professional-at-structure and writes Organization (by FINESS), Practitioner (by idNatPs),
PractitionerRole (by ``<idNatPs>@<FINESS>``) and, from a Bundle, Endpoint resources.

Everything goes through the core like any other write — profiles, workflow, audit — as
a named system principal (``cli:directory-load``, role ``admin``), in **one transaction
per file** (all or nothing). It is idempotent: each resource is looked up by its business
identifier first; a new one is a conditional create (``ifNoneExist``), a changed one a
conditional update on the identifier guarded by ``If-Match`` on the version read, an
unchanged one is not written at all. Loading the same file twice writes nothing the
second time.

What the file gives replaces the same elements of the stored resource; elements it does
not give are kept. Identifiers merge by system, telecoms by system (``email``,
``phone``…), qualifications by code system (all the specialty codes of
:data:`fhir_server.workflow.machine.SPECIALTY_SYSTEMS` count as one). Nothing is ever
deleted: a role ends with ``active`` = ``non``.

``docs/provisioning.md`` documents the CSV columns, the Bundle form and the command.
"""

from __future__ import annotations

import codecs
import copy
import csv
import io
import json
import re
import unicodedata
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from adapters.provisioning import r38
from adapters.transaction import Context
from fhir_server.core.canonical import url
from fhir_server.core.errors import FhirError
from fhir_server.core.formats import materialize
from fhir_server.core.model import FhirResponse, Interaction
from fhir_server.search.query import escape
from fhir_server.security.principal import FINESS_OID, RPPS_OID, RPPS_URL, Principal
from fhir_server.security.roles import ROLES
from fhir_server.security.scopes import parse_scopes
from fhir_server.server.dispatch import FhirServer
from fhir_server.validation.resource import validate_resource
from fhir_server.workflow.machine import QUALIFYING, SPECIALTY_SYSTEMS
from terminology.service import terminology

TYPES = ("Organization", "Endpoint", "Practitioner", "PractitionerRole")
ROLE_SYSTEM = "https://teleimagerie.fr/fhir/NamingSystem/practitioner-role"  # as HL7 ORM
ROLE_CODE_SYSTEM = url("CodeSystem", "teleimagerie-role")  # the roles, as the audit codes them
ORG_TYPE_SYSTEM = url("CodeSystem", "tlr-type-organisation")
FR_CORE_ID_TYPE = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203"
PROFILES = {"Organization": url("StructureDefinition", "tlm-organization"),
            "Practitioner": url("StructureDefinition", "tlm-practitioner"),
            "PractitionerRole": url("StructureDefinition", "tlm-practitioner-role")}
BUNDLE_TYPES = ("transaction", "batch", "collection", "searchset")
# the roles a professional holds in a structure (care reach); connectors are not people
PROFESSIONAL_ROLES = tuple(code for code, role in ROLES.items() if role.reach == "care")
IMAGING = frozenset().union(*QUALIFYING.values())
NUCLEAR = QUALIFYING["NM"]

FINESS_RE = re.compile(r"^(\d{2}|2[AB]|9[A-F])\d{7}$")
RPPS_RE = re.compile(r"^\d{11}$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
PHONE_RE = re.compile(r"^\+?[\d .\-()/]+$")
CONDITIONAL = re.compile(r"^([A-Z][A-Za-z]+)\?(.+)$")
ENTRY_RE = re.compile(r"Bundle\.entry\[(\d+)\]")

PRINCIPAL = Principal(
    sub="cli:directory-load", issuer="urn:teleimagerie:cli", roles=("admin",),
    scopes=parse_scopes(" ".join(f"system/{t}.crus" for t in TYPES)),
    name="teleimagerie directory load", client_id="teleimagerie-cli")


class LoadError(Exception):
    """The file cannot be loaded: ``usage`` (unreadable, unknown format) or its content
    (``errors``: one line each, naming file:line or the Bundle entry and the column)."""

    def __init__(self, errors: list[str], usage: bool = False,
                 warnings: list[str] | None = None) -> None:
        self.errors = errors
        self.usage = usage
        self.warnings = warnings or []
        super().__init__("; ".join(errors[:3]))


@dataclass
class Change:
    rtype: str
    key: str  # the business identifier value (FINESS, idNatPs, idNatPs@FINESS…)
    action: str  # created | updated | unchanged
    ref: str  # Type/id (for a dry-run creation: "")
    where: str  # file:line or file: Bundle.entry[i]
    elements: list[str] = field(default_factory=list)  # updated: the elements that changed


@dataclass
class Summary:
    path: str
    form: str  # csv | bundle
    dry_run: bool = False
    changes: list[Change] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def count(self, rtype: str, action: str) -> int:
        return sum(1 for c in self.changes if c.rtype == rtype and c.action == action)

    def counts(self) -> dict[str, dict[str, int]]:
        present = [t for t in TYPES if any(c.rtype == t for c in self.changes)]
        return {t: {a: self.count(t, a) for a in ("created", "updated", "unchanged")}
                for t in present}

    @property
    def written(self) -> int:
        return sum(1 for c in self.changes if c.action != "unchanged")

    def lines(self) -> list[str]:
        verb = {"created": "would create", "updated": "would update"} if self.dry_run else \
            {"created": "created", "updated": "updated"}
        out = [f"directory load {self.path} ({self.form})"
               + (" — dry run, nothing written" if self.dry_run else "")]
        for rtype, n in self.counts().items():
            out.append(f"  {rtype:<17} {verb['created']} {n['created']}, "
                       f"{verb['updated']} {n['updated']}, unchanged {n['unchanged']}")
        for c in self.changes:
            if c.action != "unchanged":
                what = f" ({', '.join(c.elements)})" if c.elements else ""
                out.append(f"  {verb[c.action]} {c.ref or c.rtype} [{c.key}]{what} <- {c.where}")
        if not self.written:
            out.append("  nothing to do: the directory already matches the file")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.path, "form": self.form, "dryRun": self.dry_run,
                "counts": self.counts(), "warnings": self.warnings,
                "changes": [{"type": c.rtype, "key": c.key, "action": c.action,
                             "reference": c.ref, "source": c.where, "elements": c.elements}
                            for c in self.changes]}


@dataclass
class Item:
    """One resource of the file, before and after planning."""

    rtype: str
    resource: dict[str, Any]
    where: str
    key: tuple[str, str] | None  # (system, value) of its business identifier
    aliases: list[str] = field(default_factory=list)  # fullUrl, Type/id in the file
    ref: str = ""  # Type/id when stored, urn:uuid:… when new
    stored: dict[str, Any] | None = None
    action: str = ""
    body: dict[str, Any] | None = None  # what is written
    elements: list[str] = field(default_factory=list)


class Problems:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def error(self, text: str) -> None:
        self.errors.append(text)

    def warn(self, text: str) -> None:
        self.warnings.append(text)

    def check(self) -> None:
        if self.errors:
            raise LoadError(self.errors, warnings=self.warnings)


# -- checks -----------------------------------------------------------------------------------

def luhn_ok(digits: str) -> bool:
    """The Luhn key (the last digit) that ends FINESS and RPPS numbers."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def check_finess(value: str, say: Callable[[str], None], warn: Callable[[str], None]) -> str:
    finess = re.sub(r"\s", "", value).upper()
    if not FINESS_RE.match(finess):
        say(f"FINESS {value!r} is not 9 characters (2 for the département — digits, 2A/2B "
            "or 9A–9F — then 7 digits)")
    elif finess.isdigit() and not luhn_ok(finess):
        warn(f"FINESS {finess}: the last digit is not its Luhn key — a typo?")
    return finess


def check_rpps(value: str, say: Callable[[str], None], warn: Callable[[str], None]) -> str:
    rpps = re.sub(r"\s", "", value)
    if len(rpps) == 12 and rpps.startswith("8") and rpps.isdigit():
        rpps = rpps[1:]  # an idNatPs given: 8 + RPPS
    if not RPPS_RE.match(rpps):
        say(f"RPPS {value!r} is not 11 digits (or an idNatPs: 8 followed by the 11-digit "
            "RPPS)")
    elif not luhn_ok(rpps):
        warn(f"RPPS {rpps}: the last digit is not its Luhn key — a typo?")
    return rpps


def specialty_hint() -> str:
    by_code: dict[str, list[str]] = {}
    for modality, codes in sorted(QUALIFYING.items()):
        for code in codes:
            by_code.setdefault(code, []).append(modality)
    imaging = ", ".join(f"{c} {r38.SPECIALTIES[c]} → {' '.join(m)}"
                        for c, m in sorted(by_code.items()))
    return (f"imaging specialties: {imaging}; the other TRE_R38 codes (SM01–SM95 "
            "médecins, SI01–SI08 infirmiers, SCD01–SCD03 chirurgiens-dentistes, e.g. SM54 "
            "Médecine générale) are listed in adapters/provisioning/r38.py")


def check_specialty(code: str, say: Callable[[str], None]) -> str:
    code = code.strip().upper().rsplit("/", 1)[-1]  # also G15_10/SM44 (CI-SIS form)
    if code not in r38.SPECIALTIES:
        say(f"unknown specialty {code!r}: not a TRE_R38 SpecialiteOrdinale code; "
            + specialty_hint())
    return code


def mss_secure(address: str, domains: tuple[str, ...]) -> bool:
    domain = address.rpartition("@")[2].lower()
    return any(domain == d or domain.endswith("." + d) for d in domains)


def specialty_coding(code: str) -> dict[str, Any]:
    return {"system": r38.SYSTEM, "code": code, "display": r38.SPECIALTIES[code]}


def _token(system: str, value: str) -> str:
    return f"{system}|{escape(value)}"


def _batched(values: list[str], size: int) -> Iterable[list[str]]:
    for i in range(0, len(values), size):
        yield values[i:i + size]


# -- reading the file ---------------------------------------------------------------------------

def read(path: Path) -> tuple[str, str, list[str]]:
    """(text, form ``csv`` | ``bundle``, warnings); unreadable → LoadError(usage)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise LoadError([f"{path}: cannot read the file: {exc.strerror or exc}"],
                        usage=True) from None
    if path.suffix.lower() in (".xlsx", ".xls", ".ods"):
        raise LoadError([f"{path}: a spreadsheet file; save it as CSV (.csv, UTF-8) first"],
                        usage=True)
    warnings = []
    # a byte-order mark says the encoding: Excel's "Unicode text" export is UTF-16 LE
    bom = next((enc for mark, enc in ((codecs.BOM_UTF32_LE, "utf-32"),
                                      (codecs.BOM_UTF32_BE, "utf-32"),
                                      (codecs.BOM_UTF16_LE, "utf-16"),
                                      (codecs.BOM_UTF16_BE, "utf-16"))
                if raw.startswith(mark)), None)
    try:
        text = raw.decode(bom or "utf-8-sig")
    except UnicodeDecodeError:
        if bom:
            raise LoadError([f"{path}: not valid {bom.upper()} despite its byte-order mark"],
                            usage=True) from None
        text = raw.decode("cp1252", errors="replace")
        warnings.append(f"{path}: not UTF-8, read as Windows-1252 (a spreadsheet export?)")
    suffix = path.suffix.lower()
    if suffix == ".json" or (suffix not in (".csv", ".txt", ".tsv") and
                             text.lstrip().startswith("{")):
        return text, "bundle", warnings
    if suffix in (".csv", ".txt", ".tsv") or "," in text or ";" in text:
        return text, "csv", warnings
    raise LoadError([f"{path}: neither a FHIR Bundle (.json) nor a CSV (.csv)"], usage=True)


# CSV columns: canonical name -> required
COLUMNS: dict[str, bool] = {
    "finess": True, "structure_name": True, "structure_type": False, "rpps": True,
    "family": True, "given": False, "specialty": False, "role": True, "mssante": False,
    "phone": False, "active": False}
ALIASES = {
    "raison_sociale": "structure_name", "structure": "structure_name",
    "nom_structure": "structure_name", "type_structure": "structure_type",
    "idnatps": "rpps", "nom": "family", "prenom": "given", "specialite": "specialty",
    "specialties": "specialty", "roles": "role", "bal_mssante": "mssante",
    "mss": "mssante", "email": "mssante", "telephone": "phone", "tel": "phone",
    "actif": "active"}
TRUE = {"", "oui", "o", "yes", "y", "true", "vrai", "1", "x"}
FALSE = {"non", "n", "no", "false", "faux", "0"}


def _column(name: str) -> str:
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    plain = re.sub(r"[\s\-]+", "_", plain.strip().lower())
    return ALIASES.get(plain, plain)


def _split(cell: str) -> list[str]:
    return [p for p in re.split(r"[\s,;|+]+", cell.strip()) if p]


@dataclass
class _Row:
    line: int
    finess: str
    rpps: str
    roles: list[str]
    mssante: str
    phone: str
    active: bool


@dataclass
class _Cells:
    """One CSV row's cells, checked: the values the directory is built from."""

    finess: str
    rpps: str
    kind: str
    specialties: list[str]
    roles: list[str]
    mssante: str
    phone: str
    active: str


Say = Callable[[str, str], None]  # (column, message)


def parse_csv(text: str, path: str, problems: Problems, mss_domains: tuple[str, ...]
              ) -> list[Item]:
    first = text.split("\n", 1)[0]
    delimiter = max((";", ",", "\t"), key=first.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    columns = _header(reader, path, problems)
    if columns is None:
        return []
    types = terminology().concepts.get(ORG_TYPE_SYSTEM, {})
    orgs: dict[str, dict[str, Any]] = {}
    pracs: dict[str, dict[str, Any]] = {}
    rows: list[_Row] = []
    seen: dict[tuple[str, str], int] = {}
    previous_end = reader.line_num
    for cells in reader:
        line, previous_end = previous_end + 1, reader.line_num
        if not any(c.strip() for c in cells):
            continue
        if len(cells) > len(columns):
            problems.error(f"{path}:{line}: {len(cells)} cells for {len(columns)} columns "
                           f"(a stray {delimiter!r}?)")
            continue
        row = {c: (cells[i].strip() if i < len(cells) else "")
               for i, c in enumerate(columns)}
        before = len(problems.errors)

        def say(column: str, text: str, line: int = line) -> None:
            problems.error(f"{path}:{line}: column {column}: {text}")

        def warn(column: str, text: str, line: int = line) -> None:
            problems.warn(f"{path}:{line}: column {column}: {text}")

        if not _required(row, say, problems, before):
            continue
        checked = _check_cells(row, say, warn, types, mss_domains)
        if len(problems.errors) > before:
            continue
        key = (checked.rpps, checked.finess)
        if key in seen:
            problems.error(f"{path}:{line}: RPPS {checked.rpps} at FINESS {checked.finess} "
                           f"already on line {seen[key]} (one row per professional and "
                           "structure)")
            continue
        seen[key] = line
        _record(orgs, pracs, row, checked, line, say)
        rows.append(_Row(line, checked.finess, checked.rpps, checked.roles, checked.mssante,
                         checked.phone, checked.active not in FALSE))
    _check_imaging_roles(path, rows, pracs, problems)
    return _csv_items(path, orgs, pracs, rows)


def _header(reader: Any, path: str, problems: Problems) -> list[str] | None:
    """The header's column names, or None (with the errors said) when it is unusable."""
    try:
        header = next(reader)
    except StopIteration:
        problems.error(f"{path}: empty file (expected a header line: "
                       f"{', '.join(COLUMNS)})")
        return None
    columns = [_column(h) for h in header]
    unknown = [h for h, c in zip(header, columns, strict=True) if c not in COLUMNS and c]
    if unknown:
        problems.error(f"{path}:1: unknown column(s) {', '.join(map(repr, unknown))}; "
                       f"known: {', '.join(COLUMNS)}")
    missing = [c for c, required in COLUMNS.items() if required and c not in columns]
    if missing:
        problems.error(f"{path}:1: missing column(s) {', '.join(missing)} (the header line "
                       f"names the columns: {', '.join(COLUMNS)})")
    return None if unknown or missing else columns


def _required(row: dict[str, str], say: Say, problems: Problems, before: int) -> bool:
    """Every required cell is filled (each empty one said)."""
    for c, required in COLUMNS.items():
        if required and not row.get(c):
            say(c, "required, empty")
    return len(problems.errors) == before


def _check_cells(row: dict[str, str], say: Say, warn: Say, types: dict[str, Any],
                 mss_domains: tuple[str, ...]) -> _Cells:
    """Each cell against its grammar or code list, in column order; errors are said."""
    finess = check_finess(row["finess"], lambda t: say("finess", t),
                          lambda t: warn("finess", t))
    rpps = check_rpps(row["rpps"], lambda t: say("rpps", t), lambda t: warn("rpps", t))
    kind = row.get("structure_type", "").upper().replace("-", "_").replace(" ", "_")
    if kind and kind not in types:
        say("structure_type", f"{row['structure_type']!r} is not one of "
            f"{', '.join(types)} ({ORG_TYPE_SYSTEM})")
    specialties = [check_specialty(s, lambda t: say("specialty", t))
                   for s in _split(row.get("specialty", ""))]
    roles = [r.lower() for r in _split(row["role"])]
    for r in roles:
        if r not in PROFESSIONAL_ROLES:
            say("role", f"unknown role {r!r}; one or more of "
                f"{', '.join(PROFESSIONAL_ROLES)}")
    mssante = _check_mssante(row.get("mssante", "").removeprefix("mailto:"), say, mss_domains)
    phone = row.get("phone", "")
    if phone and (not PHONE_RE.match(phone) or sum(ch.isdigit() for ch in phone) < 4):
        say("phone", f"{phone!r} is not a phone number")
    active = row.get("active", "").lower()
    if active not in TRUE | FALSE:
        say("active", f"{row['active']!r}: oui or non")
    return _Cells(finess, rpps, kind, specialties, roles, mssante, phone, active)


def _check_mssante(address: str, say: Say, mss_domains: tuple[str, ...]) -> str:
    if address and not EMAIL_RE.match(address):
        say("mssante", f"{address!r} is not an e-mail address")
    elif address and not mss_secure(address, mss_domains):
        say("mssante", f"{address!r} is not an MSSanté address (domain not in "
            f"TELEIMG_MSS_DOMAINS: {', '.join(mss_domains)}); reports never go to a "
            "personal mailbox (R-SEC-5)")
    return address


def _record(orgs: dict[str, dict[str, Any]], pracs: dict[str, dict[str, Any]],
            row: dict[str, str], checked: _Cells, line: int, say: Say) -> None:
    """The row's structure and professional, agreeing with earlier rows about them."""
    _agree(orgs, checked.finess, line, {"structure_name": row["structure_name"],
                                        "structure_type": checked.kind},
           ("structure_name",), say, f"FINESS {checked.finess}")
    _agree(pracs, checked.rpps, line, {"family": row["family"], "given": row.get("given", ""),
                                       "specialty": " ".join(sorted(set(checked.specialties)))},
           ("family", "given"), say, f"RPPS {checked.rpps}")
    if checked.mssante and checked.mssante not in pracs[checked.rpps].setdefault("emails", []):
        pracs[checked.rpps]["emails"].append(checked.mssante)


def _check_imaging_roles(path: str, rows: list[_Row], pracs: dict[str, dict[str, Any]],
                         problems: Problems) -> None:
    """R-ACT-2: an imager's specialty must qualify for some modality (R-SCOPE-4 for the
    nuclear physician on site)."""
    for parsed in rows:
        held = set(pracs[parsed.rpps]["specialty"].split())
        if "remote-imager" in parsed.roles and not held & IMAGING:
            problems.error(f"{path}:{parsed.line}: column specialty: role remote-imager needs "
                           "a specialty that qualifies for a modality (R-ACT-2); "
                           + specialty_hint())
        if "nuclear-physician" in parsed.roles and not held & NUCLEAR:
            problems.error(f"{path}:{parsed.line}: column specialty: role nuclear-physician "
                           f"needs {', '.join(sorted(NUCLEAR))} (médecine nucléaire, "
                           "R-SCOPE-4)")


def _agree(table: dict[str, dict[str, Any]], key: str, line: int, values: dict[str, str],
           always: tuple[str, ...], say: Callable[..., None], what: str) -> None:
    """Rows about one structure or professional must not contradict each other: a cell
    left empty on a later row takes the value given earlier."""
    known = table.get(key)
    if known is None:
        table[key] = {"line": line, **values}
        return
    for column, value in values.items():
        if not value and column not in always:
            continue
        if not known[column]:
            known[column] = value
        elif value != known[column]:
            say(column, f"{value!r} differs from {known[column]!r} given for {what} on line "
                f"{known['line']}")


def _csv_items(path: str, orgs: dict[str, dict[str, Any]], pracs: dict[str, dict[str, Any]],
               rows: list[_Row]) -> list[Item]:
    items: list[Item] = []
    concepts = terminology().concepts.get(ORG_TYPE_SYSTEM, {})
    for finess, org in orgs.items():
        resource: dict[str, Any] = {
            "resourceType": "Organization", "meta": {"profile": [PROFILES["Organization"]]},
            "identifier": [{"system": FINESS_OID, "value": finess}],
            "name": org["structure_name"]}
        if org["structure_type"]:
            concept = concepts[org["structure_type"]]
            resource["type"] = [{"coding": [{"system": ORG_TYPE_SYSTEM, "code": concept.code,
                                             "display": concept.display}]}]
        items.append(Item("Organization", resource, f"{path}:{org['line']}",
                          (FINESS_OID, finess)))
    for rpps, prac in pracs.items():
        name: dict[str, Any] = {"family": prac["family"]}
        if prac["given"]:
            name["given"] = prac["given"].split()
        resource = {
            "resourceType": "Practitioner", "meta": {"profile": [PROFILES["Practitioner"]]},
            "identifier": [
                {"type": {"coding": [{"system": FR_CORE_ID_TYPE, "code": "IDNPS"}]},
                 "system": RPPS_OID, "value": "8" + rpps},
                {"type": {"coding": [{"system": FR_CORE_ID_TYPE, "code": "RPPS"}]},
                 "system": RPPS_URL, "value": rpps}],
            "name": [name]}
        if prac["specialty"]:
            resource["qualification"] = [{"code": {"coding": [specialty_coding(code)]}}
                                         for code in prac["specialty"].split()]
        if prac.get("emails"):  # also on the Practitioner: reports sent to a request that
            # names the Practitioner (not a PractitionerRole) find the address too
            resource["telecom"] = [{"system": "email", "value": e, "use": "work"}
                                   for e in prac["emails"]]
        items.append(Item("Practitioner", resource, f"{path}:{prac['line']}",
                          (RPPS_OID, "8" + rpps)))
    for row in rows:
        nat = "8" + row.rpps
        role: dict[str, Any] = {
            "resourceType": "PractitionerRole",
            "meta": {"profile": [PROFILES["PractitionerRole"]]},
            "identifier": [{"system": ROLE_SYSTEM, "value": f"{nat}@{row.finess}"}],
            "active": row.active,
            "practitioner": {"reference": f"Practitioner?identifier={RPPS_OID}|{nat}"},
            "organization": {"reference": f"Organization?identifier={FINESS_OID}|{row.finess}"},
            "code": [{"coding": [{"system": ROLE_CODE_SYSTEM, "code": r,
                                  "display": ROLES[r].title}]} for r in row.roles]}
        specialties = pracs[row.rpps]["specialty"].split()
        if specialties:
            role["specialty"] = [{"coding": [specialty_coding(c)]} for c in specialties]
        telecom = []
        if row.mssante:
            telecom.append({"system": "email", "value": row.mssante, "use": "work"})
        if row.phone:
            telecom.append({"system": "phone", "value": row.phone, "use": "work"})
        if telecom:
            role["telecom"] = telecom
        items.append(Item("PractitionerRole", role, f"{path}:{row.line}",
                          (ROLE_SYSTEM, f"{nat}@{row.finess}")))
    return items


def parse_bundle(text: str, path: str, problems: Problems, mss_domains: tuple[str, ...]
                 ) -> list[Item]:
    entries = _bundle_entries(text, path, problems)
    items = (_bundle_item(f"{path}: Bundle.entry[{i}]", entry, problems, mss_domains)
             for i, entry in enumerate(entries))
    return [item for item in items if item is not None]


def _bundle_entries(text: str, path: str, problems: Problems) -> list[Any]:
    """The Bundle's entries ([] with the error said when the file is not one)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LoadError([f"{path}:{exc.lineno}: not valid JSON: {exc.msg}"],
                        usage=True) from None
    if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
        problems.error(f"{path}: not a FHIR Bundle (resourceType Bundle of type "
                       f"{', '.join(BUNDLE_TYPES)})")
        return []
    if data.get("type") not in BUNDLE_TYPES:
        problems.error(f"{path}: Bundle.type {data.get('type')!r}: expected one of "
                       f"{', '.join(BUNDLE_TYPES)}")
    entries = data.get("entry") or []
    if not isinstance(entries, list):
        problems.error(f"{path}: Bundle.entry must be an array")
        return []
    return entries


def _bundle_item(where: str, entry: Any, problems: Problems, mss_domains: tuple[str, ...]
                 ) -> Item | None:
    """One entry as an Item (None: skipped, or an error said)."""
    resource = entry.get("resource") if isinstance(entry, dict) else None
    if not isinstance(resource, dict):
        problems.error(f"{where}: no resource")
        return None
    rtype = resource.get("resourceType")
    if rtype == "OperationOutcome":
        return None
    if rtype not in TYPES:
        problems.error(f"{where}: {rtype} is not a directory resource "
                       f"({', '.join(TYPES)})")
        return None
    where = f"{where} ({rtype})"
    resource = copy.deepcopy(resource)
    aliases = [entry["fullUrl"]] if isinstance(entry.get("fullUrl"), str) else []
    if isinstance(resource.get("id"), str):  # a label in the file, not the server's id
        aliases.append(f"{rtype}/{resource.pop('id')}")
    _claim_profile(rtype, resource)

    def say(text: str) -> None:
        problems.error(f"{where}: {text}")

    def warn(text: str) -> None:
        problems.warn(f"{where}: {text}")

    key = _KEYS[rtype](resource, say, warn)
    _warn_personal_mail(resource, warn, mss_domains)
    return Item(rtype, resource, where, key, aliases)


def _claim_profile(rtype: str, resource: dict[str, Any]) -> None:
    """The server's meta dropped, our profile claimed."""
    meta = {k: v for k, v in (resource.get("meta") or {}).items()
            if k not in ("versionId", "lastUpdated")}
    if rtype in PROFILES and PROFILES[rtype] not in (meta.get("profile") or []):
        meta["profile"] = [*(meta.get("profile") or []), PROFILES[rtype]]
    if meta:
        resource["meta"] = meta


def _warn_personal_mail(resource: dict[str, Any], warn: Callable[[str], None],
                        mss_domains: tuple[str, ...]) -> None:
    for point in resource.get("telecom") or []:
        value = str((point or {}).get("value") or "").removeprefix("mailto:")
        if (point or {}).get("system") == "email" and not mss_secure(value, mss_domains):
            warn(f"e-mail {value!r} is not on an MSSanté domain "
                 f"({', '.join(mss_domains)}): reports will not be sent to it (R-SEC-5)")


def _identifier(resource: dict[str, Any], system: str) -> dict[str, Any] | None:
    return next((i for i in resource.get("identifier") or []
                 if isinstance(i, dict) and i.get("system") == system and i.get("value")), None)


Key = tuple[str, str] | None
Tell = Callable[[str], None]


def _organization_key(resource: dict[str, Any], say: Tell, warn: Tell) -> Key:
    ident = _identifier(resource, FINESS_OID)
    if ident is None:
        say(f"the structure needs its FINESS: identifier with system {FINESS_OID}")
        return None
    ident["value"] = check_finess(str(ident["value"]), say, warn)
    return FINESS_OID, ident["value"]


def _practitioner_key(resource: dict[str, Any], say: Tell, warn: Tell) -> Key:
    ident = _identifier(resource, RPPS_OID)
    rpps = _identifier(resource, RPPS_URL)
    if ident is None and rpps is not None:  # the RPPS alone: idNatPs = 8 + RPPS
        ident = {"system": RPPS_OID, "value": "8" + str(rpps["value"])}
        resource["identifier"] = [ident, *resource["identifier"]]
    if ident is None:
        say(f"the professional needs an idNatPs: identifier with system {RPPS_OID} "
            "(8 + RPPS)")
        return None
    nat = str(ident["value"])
    if nat.startswith("8") and len(nat) == 12:
        check_rpps(nat, say, warn)
    else:
        warn(f"idNatPs {nat!r} is not an RPPS one (8 + 11 digits)")
    for q in resource.get("qualification") or []:
        for c in ((q or {}).get("code") or {}).get("coding") or []:
            if c.get("system") in SPECIALTY_SYSTEMS and c.get("code"):
                check_specialty(str(c["code"]), say)
    return RPPS_OID, nat


def _role_key(resource: dict[str, Any], say: Tell, warn: Tell) -> Key:
    for element in ("practitioner", "organization"):
        if not ((resource.get(element) or {}).get("reference")):
            say(f"PractitionerRole.{element} is required (a reference to an entry of "
                "this file or to a resource already on the server)")
    ident = _identifier(resource, ROLE_SYSTEM)
    return (ROLE_SYSTEM, str(ident["value"])) if ident else None  # else derived later


def _endpoint_key(resource: dict[str, Any], say: Tell, warn: Tell) -> Key:
    ident = next((i for i in resource.get("identifier") or []
                  if isinstance(i, dict) and i.get("system") and i.get("value")), None)
    if ident is None:
        say("an Endpoint needs an identifier (system and value): it is how a second load "
            "finds it again")
        return None
    return str(ident["system"]), str(ident["value"])


# the business identifier each directory type is found again by (its checks on the way)
_KEYS: dict[str, Callable[[dict[str, Any], Tell, Tell], Key]] = {
    "Organization": _organization_key, "Practitioner": _practitioner_key,
    "PractitionerRole": _role_key, "Endpoint": _endpoint_key}


# -- merging --------------------------------------------------------------------------------------

def _qualification_key(q: Any) -> str:
    codings = ((q or {}).get("code") or {}).get("coding") or []
    if any(c.get("system") in SPECIALTY_SYSTEMS for c in codings):
        return "specialty"
    if codings:
        return str(codings[0].get("system"))
    return "text:" + str(((q or {}).get("code") or {}).get("text"))


def _merge_list(old: list[Any], new: list[Any], key: Callable[[Any], str],
                combine: bool = False) -> list[Any]:
    """``new`` replaces the entries of ``old`` with the same key, in place; ``combine``:
    a single entry on each side merges element by element (an identifier's type kept)."""
    groups: dict[str, list[Any]] = {}
    for x in new:
        groups.setdefault(key(x), []).append(copy.deepcopy(x))
    olds: dict[str, list[Any]] = {}
    for x in old:
        olds.setdefault(key(x), []).append(x)
    out: list[Any] = []
    done: set[str] = set()
    for x in old:
        k = key(x)
        if k not in groups:
            out.append(x)
        elif k not in done:
            done.add(k)
            if combine and len(groups[k]) == 1 and len(olds[k]) == 1 and isinstance(x, dict):
                out.append({**x, **groups[k][0]})
            else:
                out += groups[k]
    out += [x for k, xs in groups.items() if k not in done for x in xs]
    return out


def merge(stored: dict[str, Any], incoming: dict[str, Any]) -> dict[str, Any]:
    """The stored resource with what the file gives (see the module docstring)."""
    out = copy.deepcopy(stored)
    for k, v in incoming.items():
        if k in ("resourceType", "id"):
            continue
        if k == "meta":
            meta = dict(out.get("meta") or {})
            for part in ("profile", "tag"):
                have = list(meta.get(part) or [])
                have += [p for p in (v or {}).get(part) or [] if p not in have]
                if have:
                    meta[part] = have
            out["meta"] = meta
        elif k == "identifier":
            out[k] = _merge_list(out.get(k) or [], v, lambda x: str((x or {}).get("system")),
                                 combine=True)
        elif k == "telecom":
            out[k] = _merge_list(out.get(k) or [], v, lambda x: str((x or {}).get("system")))
        elif k == "qualification":
            out[k] = _merge_list(out.get(k) or [], v, _qualification_key)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _comparable(resource: dict[str, Any]) -> dict[str, Any]:
    out = dict(resource)
    meta = {k: v for k, v in (out.pop("meta", None) or {}).items()
            if k not in ("versionId", "lastUpdated")}
    if meta:
        out["meta"] = meta
    return out


# -- planning and writing through the core ------------------------------------------------------

def _decide(item: Item) -> None:
    """created, unchanged or updated (with the elements that change), from what is stored."""
    if item.stored is None:
        item.action, item.body = "created", item.resource
        return
    merged = merge(item.stored, item.resource)
    if _comparable(merged) == _comparable(item.stored):
        item.action = "unchanged"
        return
    item.action, item.body = "updated", merged
    item.elements = sorted(k for k in set(merged) | set(item.stored)
                           if k != "meta" and merged.get(k) != item.stored.get(k))
    if _comparable(merged).get("meta") != _comparable(item.stored).get("meta"):
        item.elements.append("meta.profile")


class Loader:
    def __init__(self, server: FhirServer, problems: Problems) -> None:
        self.ctx = Context(server, PRINCIPAL, source="cli")
        self.problems = problems
        self.index: dict[tuple[str, str, str], Item] = {}
        self.alias: dict[str, Item] = {}
        self.by_ref: dict[str, Item] = {}
        self._found: dict[tuple[str, str, str], list[dict[str, Any]]] = {}

    # reads through the core, as the loader's principal
    def _call(self, interaction: Interaction, **kw: Any) -> FhirResponse:
        resp = self.ctx.server.handle(self.ctx.request(interaction, **kw))
        if resp.status >= 400:
            raise LoadError([f"the server refused {interaction.value} "
                             f"{kw.get('resource_type', '')}: {_outcome_text(resp)}"])
        return resp

    def search(self, rtype: str, system: str, values: Iterable[str]
               ) -> dict[str, list[dict[str, Any]]]:
        wanted = sorted({v for v in values if (rtype, system, v) not in self._found})
        for chunk in _batched(wanted, 50):
            for v in chunk:
                self._found[rtype, system, v] = []
            resp = self._call(Interaction.SEARCH_TYPE, resource_type=rtype, params=[
                ("identifier", ",".join(_token(system, v) for v in chunk)),
                ("_count", str(self.ctx.server.limits.max_count))])
            bundle = materialize(resp.raw if resp.raw is not None else resp.resource) or {}
            for entry in bundle.get("entry") or []:
                res = entry.get("resource") or {}
                if res.get("resourceType") != rtype:
                    continue
                for ident in res.get("identifier") or []:
                    found = self._found.get((rtype, system, str(ident.get("value"))))
                    if ident.get("system") == system and found is not None and \
                            all(r["id"] != res["id"] for r in found):
                        found.append(res)
        return {v: self._found[rtype, system, v] for v in values}

    def read(self, ref: str) -> dict[str, Any] | None:
        rtype, _, rid = ref.partition("/")
        resp = self.ctx.server.handle(self.ctx.request(Interaction.READ, resource_type=rtype,
                                                       id=rid))
        if resp.status >= 400:
            return None
        found = materialize(resp.raw if resp.raw is not None else resp.resource)
        return found if isinstance(found, dict) else None

    # planning
    def plan(self, items: list[Item]) -> None:
        """What to do with each item: index it, find it on the server, resolve its
        references, compare with what is stored, validate what will be written."""
        for item in items:
            self._index(item)
        self._lookup([i for i in items if i.rtype != "PractitionerRole"])
        roles = [i for i in items if i.rtype == "PractitionerRole"]
        for role in roles:
            if role.key is None:
                self._derive_key(role)
        self._lookup(roles)
        for item in items:
            item.resource = self._rewrite(item.resource, item.where)
        for item in items:
            if item.key is not None:
                _decide(item)
        for item in items:
            if item.body is not None:
                self._validate(item)

    def _index(self, item: Item) -> None:
        """By each business identifier, and by the labels the file gives it."""
        for ident in item.resource.get("identifier") or []:
            if isinstance(ident, dict) and ident.get("system") and ident.get("value"):
                self._register(item, (item.rtype, str(ident["system"]), str(ident["value"])))
        for alias in item.aliases:
            self.alias[alias] = item

    def _register(self, item: Item, key: tuple[str, str, str]) -> None:
        other = self.index.get(key)
        if other is not None and other is not item and item.key and key[1:] == item.key:
            self.problems.error(f"{item.where}: {key[0]} {key[2]} is already given by "
                                f"{other.where}")
        self.index.setdefault(key, item)

    def _lookup(self, items: list[Item]) -> None:
        groups: dict[tuple[str, str], list[Item]] = {}
        for item in items:
            if item.key is not None:
                groups.setdefault((item.rtype, item.key[0]), []).append(item)
        for (rtype, system), group in groups.items():
            found = self.search(rtype, system, [i.key[1] for i in group if i.key])
            for item in group:
                assert item.key is not None
                matches = found[item.key[1]]
                if len(matches) > 1:
                    refs = ", ".join(f"{rtype}/{m['id']}" for m in matches)
                    self.problems.error(f"{item.where}: {item.key[1]} is already on the server "
                                        f"{len(matches)} times ({refs}): merge them first")
                    continue
                if matches:
                    item.stored = matches[0]
                    item.ref = f"{rtype}/{matches[0]['id']}"
                else:
                    item.ref = f"urn:uuid:{uuid.uuid4()}"
                self.by_ref[item.ref] = item

    def _derive_key(self, role: Item) -> None:
        """A PractitionerRole without our identifier gets ``<idNatPs>@<FINESS>``."""
        parts = []
        for element, rtype, system in (("practitioner", "Practitioner", RPPS_OID),
                                       ("organization", "Organization", FINESS_OID)):
            ref = self._resolve(str((role.resource.get(element) or {}).get("reference") or ""),
                                f"{role.where}: PractitionerRole.{element}")
            target = self.by_ref.get(ref)
            body = target.resource if target is not None else \
                (self.read(ref) if ref.startswith(rtype + "/") else None)
            ident = _identifier(body or {}, system)
            if ident is None:
                self.problems.error(f"{role.where}: PractitionerRole.{element} {ref!r}: no "
                                    f"{rtype} with a {system} identifier in this file or on "
                                    "the server, so no role identifier <idNatPs>@<FINESS> "
                                    f"(or give one with system {ROLE_SYSTEM})")
                return
            parts.append(str(ident["value"]))
        value = "@".join(parts)
        role.resource["identifier"] = [*(role.resource.get("identifier") or []),
                                       {"system": ROLE_SYSTEM, "value": value}]
        role.key = (ROLE_SYSTEM, value)
        self._register(role, ("PractitionerRole", ROLE_SYSTEM, value))

    def _resolve(self, ref: str, where: str) -> str:
        """A reference of the file: to an entry of the file (its fullUrl, ``Type/id`` or
        ``Type?identifier=system|value``) → that entry's reference; a conditional one to
        a resource on the server → ``Type/id``; anything else is left as it is."""
        if ref in self.alias:
            return self.alias[ref].ref or ref
        match = CONDITIONAL.match(ref)
        if match is None:
            return ref
        rtype, query = match.groups()
        params = parse_qsl(query, keep_blank_values=True)
        if len(params) != 1 or params[0][0] != "identifier" or "|" not in params[0][1]:
            return ref
        system, _, value = params[0][1].partition("|")
        item = self.index.get((rtype, system, value))
        if item is not None and item.ref:
            return item.ref
        found = self.search(rtype, system, [value])[value]
        if len(found) == 1:
            return f"{rtype}/{found[0]['id']}"
        self.problems.error(f"{where}: {ref} matches {len(found)} resources on the server and "
                            "no entry of this file (exactly one needed)")
        return ref

    def _rewrite(self, node: Any, where: str) -> Any:
        if isinstance(node, dict):
            return {k: (self._resolve(v, where) if k == "reference" and isinstance(v, str)
                        else self._rewrite(v, where)) for k, v in node.items()}
        if isinstance(node, list):
            return [self._rewrite(v, where) for v in node]
        return node

    def _validate(self, item: Item) -> None:
        """The checks the core will make, run first so that every problem of the file is
        reported at once, with its line."""
        assert item.body is not None
        try:
            validate_resource(copy.deepcopy(item.body), item.rtype)
        except FhirError as exc:
            for issue in exc.issues[:5]:
                self.problems.error(f"{item.where}: {issue.diagnostics}")
            return
        for issue in self.ctx.server.profiles.validate(item.body):
            if issue.severity in ("error", "fatal"):
                where = f" [{', '.join(issue.expression)}]" if issue.expression else ""
                self.problems.error(f"{item.where}: {issue.diagnostics}{where}")

    # writing
    def commit(self, items: list[Item]) -> None:
        """One transaction for the whole file."""
        todo = [i for i in items if i.body is not None and i.key is not None]
        if not todo:
            return
        entries = []
        for item in todo:
            assert item.body is not None and item.key is not None
            criteria = urlencode([("identifier", _token(*item.key))])
            if item.action == "created":
                entries.append({"fullUrl": item.ref, "resource": item.body, "request": {
                    "method": "POST", "url": item.rtype, "ifNoneExist": criteria}})
            else:
                assert item.stored is not None
                version = (item.stored.get("meta") or {}).get("versionId")
                request = {"method": "PUT", "url": f"{item.rtype}?{criteria}"}
                if version:  # a change made meanwhile is not overwritten: 412
                    request["ifMatch"] = f'W/"{version}"'
                entries.append({"resource": {**item.body, "id": item.stored["id"]},
                                "request": request})
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        resp = self.ctx.server.handle(self.ctx.request(Interaction.BATCH, body=bundle,
                                                       method="POST"))
        if resp.status >= 400:
            raise LoadError([f"the server refused the load ({resp.status}), nothing was "
                             f"written: {_outcome_text(resp, todo)}"]
                            + (["it changed since it was read: run the load again"]
                               if resp.status == 412 else []))
        result = materialize(resp.raw if resp.raw is not None else resp.resource) or {}
        for item, answer in zip(todo, result.get("entry") or [], strict=False):
            location = (answer.get("response") or {}).get("location") or ""
            if location:
                item.ref = "/".join(location.split("/_history/")[0].split("/")[-2:])


def _outcome_text(resp: FhirResponse, items: list[Item] | None = None) -> str:
    body = materialize(resp.raw if resp.raw is not None else resp.resource) or {}
    texts = []
    for issue in (body.get("issue") or [])[:5]:
        text = str(issue.get("diagnostics") or issue.get("code"))
        if items:  # Bundle.entry[i] of the transaction -> where it came from in the file
            text = ENTRY_RE.sub(lambda m: items[int(m.group(1))].where
                                if int(m.group(1)) < len(items) else m.group(0), text)
        texts.append(text)
    return "; ".join(texts) or f"HTTP {resp.status}"


def load(server: FhirServer, path: str | Path, *, dry_run: bool = False,
         mss_domains: tuple[str, ...] | None = None) -> Summary:
    """Load the directory file at ``path`` through ``server`` (see the module docstring).

    Raises :class:`LoadError` (nothing written) when the file cannot be read or any row or
    entry is wrong; ``dry_run`` checks and plans without writing."""
    if mss_domains is None:
        from adapters.delivery.settings import DeliverySettings

        mss_domains = DeliverySettings.from_env().mss_domains
    path = Path(path)
    text, form, read_warnings = read(path)
    problems = Problems()
    problems.warnings += read_warnings
    parse = parse_csv if form == "csv" else parse_bundle
    items = parse(text, str(path), problems, mss_domains)
    problems.check()
    loader = Loader(server, problems)
    loader.plan(items)
    problems.check()
    if not dry_run:
        loader.commit(items)
    return Summary(str(path), form, dry_run, [
        Change(i.rtype, i.key[1] if i.key else "", i.action,
               "" if i.ref.startswith("urn:uuid:") else i.ref, i.where, i.elements)
        for i in items], problems.warnings)
