"""Application roles (R-ACT-1) and what each may do (R-SEC-2 "differentiated levels").

A role grants permission letters (SMART ``cruds``) per resource type and a *reach*:

- ``all``: every patient (system connectors, the auditor for AuditEvent);
- ``care``: only the patients of the requests the user is party to (R-SEC-2);
- ``self``: only the user's own compartment (patients, R-SEC-4).

Documents (DocumentReference and their Binary) may be masked (:mod:`masking`): a role
sees through the masking codes in ``unmasks`` only; a role that *shares* documents
outside the care team (``shares``: ``dmp`` or ``professionnels``) does not see the
documents of a patient who opposed that sharing (R-CONS-5).

A role is a *human* role or a *system* role (``system``: a connector, no person behind
it). Human vs system is a property of the role, never of the token's scope: a token's
roles are all human or all system, and a human role never carries a ``system/`` scope
(:mod:`tokens`, R-SEC-1). Only a human must be strongly authenticated (``acr``).

The effective right of a token is the intersection of its roles and its SMART
scopes. The table is documented in ``docs/security.md``; AuditEvent is never
writable through the API (append-only trail, R-SEC-3).
"""

from __future__ import annotations

from dataclasses import dataclass

from fhir_server.core.resource_types import DIRECTORY as DIRECTORY_CLASS
from fhir_server.core.resource_types import PATIENT_DATA as PATIENT_DATA_CLASS
from fhir_server.core.resource_types import classified
from fhir_server.security.masking import ALL as EVERY_LABEL
from fhir_server.security.masking import INVISIBLE_PATIENT

# from the one classification of the served types (core.resource_types, issue 27)
PATIENT_DATA = classified(PATIENT_DATA_CLASS)
DIRECTORY = classified(DIRECTORY_CLASS)


@dataclass(frozen=True)
class Role:
    code: str
    title: str
    reach: str  # all | care | self
    grants: dict[str, str]  # resource type -> letters
    unmasks: frozenset[str] = EVERY_LABEL  # masking codes this role sees through
    shares: str = ""  # the sharing an opposition withholds documents from (R-CONS-5)
    system: bool = False  # a connector, no person behind it: no acr needed (R-SEC-1)

    def letters(self, rtype: str) -> str:
        return self.grants.get(rtype, "")


def _grants(*parts: tuple[tuple[str, ...], str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for types, letters in parts:
        for t in types:
            out[t] = "".join(c for c in "cruds" if c in out.get(t, "") + letters)
    return out


_READ_DIRECTORY = (DIRECTORY, "rs")
# FHIR Subscriptions (issue 31): each principal sees and changes its own only (the guard
# narrows them to their owner); a notification carries what its owner may read
_SUBSCRIBE = (("Subscription",), "cruds")
ROLES: dict[str, Role] = {r.code: r for r in (
    Role("requesting-physician", "Médecin demandeur", "care", _grants(
        (PATIENT_DATA, "rs"), _READ_DIRECTORY, _SUBSCRIBE,
        (("Patient", "ServiceRequest", "Consent", "Communication", "Observation"), "cu"))),
    Role("radiographer", "Manipulateur en électroradiologie (MERM)", "care", _grants(
        (PATIENT_DATA, "rs"), _READ_DIRECTORY, _SUBSCRIBE,
        (("Patient", "ImagingStudy", "Observation", "Communication", "Consent"), "cu"),
        (("Task",), "u"))),
    Role("remote-imager", "Médecin téléradiologue", "care", _grants(
        (PATIENT_DATA, "rs"), _READ_DIRECTORY, _SUBSCRIBE,
        (("DiagnosticReport", "Observation", "ImagingStudy", "Communication", "Task",
          "DocumentReference", "Binary"), "cu"),
        (("ServiceRequest",), "u"), (("Provenance",), "c"))),
    Role("local-physician", "Médecin sur site (effets indésirables)", "care", _grants(
        (PATIENT_DATA, "rs"), _READ_DIRECTORY, _SUBSCRIBE,
        (("Observation", "Communication"), "cu"))),
    Role("nuclear-physician", "Médecin nucléaire sur site", "care", _grants(
        (PATIENT_DATA, "rs"), _READ_DIRECTORY, _SUBSCRIBE,
        (("Observation", "Communication", "ImagingStudy"), "cu"), (("Task",), "u"))),
    Role("secretary", "Secrétaire médicale", "care", _grants(
        _READ_DIRECTORY, _SUBSCRIBE,
        (("Patient", "ServiceRequest", "Consent", "Communication", "Task"), "crus"),
        (("DiagnosticReport", "DocumentReference", "Binary"), "rs"))),
    Role("admin", "Administrateur PACS / interfaces", "all", _grants(
        # the HL7 v2 message records, not the messages (Binary: patient data)
        (DIRECTORY, "cruds"), (("Basic",), "rs"))),
    Role("biomedical-engineer", "Ingénieur biomédical", "all", _grants(
        _READ_DIRECTORY, (("Device",), "cruds"))),
    Role("auditor", "Auditeur (DPO, RSSI)", "all", _grants(
        _READ_DIRECTORY, (("AuditEvent",), "rs"))),
    Role("ris", "Connecteur RIS (système)", "all", _grants(
        (PATIENT_DATA, "cruds"), (DIRECTORY, "cruds"), _SUBSCRIBE), system=True),
    Role("pacs", "Connecteur PACS (système)", "all", _grants(
        _READ_DIRECTORY, (("Endpoint",), "cu"), (("ImagingStudy",), "crus"),
        # d: header-derived doses give way to the RDSR that arrives later
        (("Observation",), "cruds"),
        # a study received before its request: a provisional Patient and its Flag
        (("Patient",), "crs"), (("Flag",), "c"), (("ServiceRequest",), "rs")), system=True),
    # publishes the documents with their masking codes: the DMP applies them
    Role("dmp-connector", "Connecteur DMP (système)", "all", _grants(
        _READ_DIRECTORY, _SUBSCRIBE,
        (("Patient", "Consent", "DiagnosticReport", "DocumentReference", "Binary",
          "ImagingStudy", "ServiceRequest", "Observation"), "rs")), shares="dmp",
         system=True),
    # an EHR of another structure pulling reports (IHE MHD consumer): shown only what
    # may be shared with professionals outside the care team
    Role("document-consumer", "Consommateur de documents MHD (DPI tiers, système)", "all",
         _grants(_READ_DIRECTORY, _SUBSCRIBE,
                 (("Patient", "DocumentReference", "Binary"), "rs")),
         unmasks=frozenset(), shares="professionnels", system=True),
    Role("patient", "Patient", "self", _grants(
        _READ_DIRECTORY, (tuple(t for t in PATIENT_DATA if t != "Provenance"), "rs"),
        (("Consent",), "cu")), unmasks=EVERY_LABEL - {INVISIBLE_PATIENT}),
)}

# the connectors' roles (R-SEC-1: the role, not the scope, says "no person behind it")
SYSTEM_ROLES = frozenset(code for code, role in ROLES.items() if role.system)
