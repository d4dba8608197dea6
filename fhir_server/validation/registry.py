"""Which profiles apply to a resource, and the ``$validate`` outcome (issue 4).

A resource is validated against every profile it declares in ``meta.profile`` that this
server knows, and against the profiles the policy makes mandatory for its type
(``TELEIMG_REQUIRED_PROFILES``; default: the téléimagerie ServiceRequest, Consent,
ImagingStudy and DiagnosticReport). Unknown declared profiles are reported as warnings.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import orjson

from fhir_server.core.canonical import url
from fhir_server.core.errors import ErrorKind, FhirError, Issue
from fhir_server.validation.profile import ProfileValidator
from terminology.service import Terminology, terminology

DEFINITIONS = Path(__file__).resolve().parents[2] / "profiles" / "definitions"
DEFAULT_REQUIRED: dict[str, tuple[str, ...]] = {
    "ServiceRequest": (url("StructureDefinition", "tlm-service-request"),),
    "Consent": (url("StructureDefinition", "tlm-consent"),),
    "ImagingStudy": (url("StructureDefinition", "tlm-imaging-study"),),
    "DiagnosticReport": (url("StructureDefinition", "tlm-diagnostic-report"),),
}


@cache
def definitions(directory: Path = DEFINITIONS) -> dict[str, dict[str, Any]]:
    """The shipped StructureDefinitions by canonical URL."""
    out = {}
    for path in sorted(directory.glob("StructureDefinition-*.json")):
        sd = orjson.loads(path.read_bytes())
        out[sd["url"]] = sd
    return out


class ProfileRegistry:
    def __init__(self, required: dict[str, tuple[str, ...]] | None = None,
                 terms: Terminology | None = None) -> None:
        self.definitions = definitions()
        self.terminology = terms or terminology()
        self.required = required or {}
        for rtype, urls in self.required.items():
            for u in urls:
                if u not in self.definitions:
                    raise ValueError(f"required profile {u} for {rtype} is not shipped")
        self._validators: dict[str, ProfileValidator] = {}

    def validator(self, profile_url: str) -> ProfileValidator | None:
        canonical = profile_url.split("|", 1)[0]
        found = self._validators.get(canonical)
        if found is None:
            sd = self.definitions.get(canonical)
            if sd is None or sd.get("kind") != "resource":
                return None
            found = self._validators[canonical] = ProfileValidator(sd, self.terminology)
        return found

    def applicable(self, resource: dict[str, Any]) -> tuple[list[str], list[str]]:
        """(profiles to validate against, declared profiles we do not know)."""
        declared = [p for p in ((resource.get("meta") or {}).get("profile") or [])
                    if isinstance(p, str)]
        known: list[str] = []
        unknown: list[str] = []
        for p in declared:
            (known if self.validator(p) is not None else unknown).append(p.split("|")[0])
        for p in self.required.get(resource.get("resourceType", ""), ()):
            if p not in known:
                known.append(p)
        return known, unknown

    def validate(self, resource: dict[str, Any], profiles: list[str] | None = None,
                 must_support: bool = False) -> list[Issue]:
        """Every issue found (errors, warnings; absent mustSupport elements as information
        when asked). ``profiles`` overrides the policy."""
        unknown: list[str] = []
        if profiles is None:
            profiles, unknown = self.applicable(resource)
        issues = [Issue(f"profil inconnu de ce serveur, non vérifié : {p}", code="not-supported",
                        severity="warning", expression=["meta.profile"]) for p in unknown]
        for p in profiles:
            validator = self.validator(p)
            if validator is None:
                raise FhirError(ErrorKind.NOT_FOUND, f"unknown profile {p}")
            if validator.type != resource.get("resourceType"):
                issues.append(Issue(f"le profil {p} s'applique à {validator.type}, pas à "
                                    f"{resource.get('resourceType')}", code="invalid",
                                    expression=["resourceType"]))
                continue
            issues += validator.validate(resource)
            if must_support:
                issues += validator.must_support_missing(resource)
        return issues

    def check_write(self, resource: dict[str, Any]) -> None:
        """Refuse (422) a resource that breaks a profile that applies to it."""
        errors = [i for i in self.validate(resource) if i.severity in ("error", "fatal")]
        if errors:
            raise FhirError(ErrorKind.UNPROCESSABLE, errors[0].diagnostics, issues=errors)


def parse_required(text: str) -> dict[str, tuple[str, ...]]:
    """``Type=url[,url];Type=url`` (TELEIMG_REQUIRED_PROFILES); empty: none."""
    out: dict[str, tuple[str, ...]] = {}
    for part in text.split(";"):
        if part.strip():
            rtype, _, urls = part.partition("=")
            out[rtype.strip()] = tuple(u.strip() for u in urls.split(",") if u.strip())
    return out
