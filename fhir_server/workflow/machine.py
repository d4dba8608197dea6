"""The imaging-request state machine as data (R-VAL-*, R-SCOPE-3, ADR 0009).

A téléimagerie request is a ServiceRequest carrying the act-kind extension. Its
fulfilment state lives on one server-owned Task (``Task.businessStatus``); each state
also fixes ``Task.status`` and ``ServiceRequest.status`` so that a client that only
knows core FHIR still reads a consistent picture. Transitions are rows of a table:
which states they leave, where they go, who may fire them, for which kind of act.
"""

from __future__ import annotations

from dataclasses import dataclass

from fhir_server.core.canonical import url

STATE_SYSTEM = url("CodeSystem", "teleimagerie-request-state")
TASK_SYSTEM = url("CodeSystem", "teleimagerie-task")
REFUSAL_SYSTEM = url("CodeSystem", "teleimagerie-refusal-reason")
ALTERNATIVE_SYSTEM = url("CodeSystem", "teleimagerie-alternative-path")
FLAG_SYSTEM = url("CodeSystem", "teleimagerie-flag")
ACT_KIND_SYSTEM = url("CodeSystem", "teleimagerie-act-kind")

EXT_ACT_KIND = url("StructureDefinition", "tlm-act-kind")
EXT_MODALITY = url("StructureDefinition", "tlm-modality")
EXT_EMERGENCY = url("StructureDefinition", "tlm-emergency")
EXT_DELAY = url("StructureDefinition", "tlm-desired-delay")
EXT_INCIDENT = url("StructureDefinition", "tlm-technical-incident")
EXT_DOSE_UNAVAILABLE = url("StructureDefinition", "tlm-dose-unavailable")
EXT_STEP = url("StructureDefinition", "tlm-step-times")
EXT_TURNAROUND = url("StructureDefinition", "tlm-turnaround")
EXT_LATE = url("StructureDefinition", "tlm-late")

TELEDIAGNOSTIC = "telediagnostic"
TELEEXPERTISE = "teleexpertise"
KINDS = frozenset({TELEDIAGNOSTIC, TELEEXPERTISE})

# Task.code of the server-owned tasks
FULFILMENT = {TELEDIAGNOSTIC: "realisation-interpretation", TELEEXPERTISE: "teleexpertise"}
INFORMATION = "information-a-posteriori"  # R-CONS-3


@dataclass(frozen=True)
class State:
    code: str
    display: str
    task_status: str  # Task.status (R4 task-status)
    request_status: str  # ServiceRequest.status (R4 request-status)
    open: bool = True  # the request can still be cancelled


STATES: dict[str, State] = {s.code: s for s in (
    State("recue", "Demande reçue", "requested", "active"),
    State("validee", "Demande validée par l'imageur", "accepted", "active"),
    State("planifiee", "Examen planifié", "ready", "active"),
    State("en-cours", "Examen en cours de réalisation", "in-progress", "active"),
    State("images-disponibles", "Images transmises, en attente d'interprétation",
          "in-progress", "active"),
    State("cr-preliminaire", "Compte rendu préliminaire", "in-progress", "active"),
    State("cr-definitif", "Compte rendu définitif", "completed", "completed", open=False),
    State("cr-modifie", "Compte rendu modifié (remplace le précédent)", "completed",
          "completed", open=False),
    State("refusee", "Demande refusée", "rejected", "revoked", open=False),
    State("annulee", "Demande annulée", "cancelled", "revoked", open=False),
)}
OPEN_STATES = frozenset(s.code for s in STATES.values() if s.open)

IMAGER = "remote-imager"
BOTH = KINDS
DIAG = frozenset({TELEDIAGNOSTIC})


@dataclass(frozen=True)
class Transition:
    """One edge. ``operation`` is the FHIR operation that fires it (None: fired by the
    server itself when a report, study or consent is written)."""

    name: str
    sources: frozenset[str]
    target: str
    roles: frozenset[str]
    kinds: frozenset[str] = BOTH
    operation: bool = True
    display: str = ""


def _t(name: str, sources: set[str] | frozenset[str], target: str, roles: set[str],
       display: str, kinds: frozenset[str] = BOTH, operation: bool = True) -> Transition:
    return Transition(name, frozenset(sources), target, frozenset(roles), kinds, operation,
                      display)


_REPORTERS = {IMAGER, "ris"}
TRANSITIONS: dict[str, Transition] = {t.name: t for t in (
    _t("accept", {"recue"}, "validee", {IMAGER, "ris"},
       "validation de la demande par l'imageur (R-VAL-1)"),
    _t("refuse", {"recue", "validee", "planifiee"}, "refusee", {IMAGER, "ris"},
       "refus motivé de la demande (R-VAL-3, R-TLE-1)"),
    _t("schedule", {"validee", "planifiee"}, "planifiee",
       {IMAGER, "secretary", "radiographer", "ris"}, "planification de l'examen (R-VAL-5)",
       DIAG),
    _t("start", {"planifiee"}, "en-cours", {"radiographer", IMAGER, "nuclear-physician", "ris"},
       "début de réalisation de l'examen (R-SCOPE-4)", DIAG),
    # from validee too: the HL7 flows (ANS TLR) signal no scheduling, only flux 4
    _t("images-available", {"validee", "planifiee", "en-cours"}, "images-disponibles",
       {"radiographer", "pacs", "ris"}, "images transmises à l'imageur (R-EXAM-3)", DIAG),
    _t("refuse-quality", {"images-disponibles", "cr-preliminaire"}, "validee", {IMAGER, "ris"},
       "refus d'interpréter pour qualité d'image insuffisante (R-REP-4)", DIAG),
    _t("cancel", OPEN_STATES, "annulee", {"requesting-physician", "secretary", IMAGER, "ris"},
       "annulation de la demande"),
    # fired by the server when a report / consent is written
    _t("preliminary-report", {"images-disponibles", "cr-preliminaire", "validee"},
       "cr-preliminaire", _REPORTERS, "compte rendu préliminaire", operation=False),
    _t("final-report", {"images-disponibles", "cr-preliminaire", "validee"}, "cr-definitif",
       _REPORTERS, "compte rendu définitif (R-REP-1, R-REP-3)", operation=False),
    _t("amend-report", {"cr-definitif", "cr-modifie"}, "cr-modifie", _REPORTERS,
       "modification du compte rendu définitif", operation=False),
    _t("patient-refusal", OPEN_STATES, "refusee", set(),
       "refus du patient : arrêt du parcours à distance (R-CONS-4)", operation=False),
)}
# a téléexpertise has no exam to perform: the report follows validation directly
REPORT_SOURCES = {TELEDIAGNOSTIC: frozenset({"images-disponibles", "cr-preliminaire"}),
                  TELEEXPERTISE: frozenset({"validee", "cr-preliminaire"})}

# R-ACT-2: the specialty (TRE_R38 SpecialiteOrdinale, URL on the pattern of the TRE_G15
# one FR Core uses; also sent as ``G15_10/SMxx`` under the CI-SIS OID 1.2.250.1.213.1.1.4.5
# as in the ANS CDA examples) that qualifies an imager for each modality.
RADIOLOGY = frozenset({"SM44", "SM55", "SM74", "SM94"})  # radio-diagnostic, radiologie
NUCLEAR = frozenset({"SM28"})  # médecine nucléaire
QUALIFYING: dict[str, frozenset[str]] = {
    **{m: RADIOLOGY for m in ("CR", "DX", "CT", "MR", "XA", "RF")},
    **{m: NUCLEAR for m in ("NM", "PT")},
}
SPECIALTY_SYSTEMS = frozenset({
    "https://mos.esante.gouv.fr/NOS/TRE_R38-SpecialiteOrdinale/FHIR/TRE-R38-SpecialiteOrdinale",
    "urn:oid:1.2.250.1.213.1.1.4.5",  # CI-SIS profession/specialty (G15_10/SMxx)
})
NUCLEAR_MODALITIES = frozenset({"NM", "PT"})
# R-REP-3: modalities whose report must carry the dose received
DOSE_MODALITIES = frozenset({"CT", "CR", "DX", "XA", "RF", "NM", "PT"})
IONISING = frozenset({"CT", "CR", "DX", "MG", "NM", "PT", "XA", "RF", "RG", "IO", "PX"})
# R-SCOPE-2: out of téléimagerie — refused (mammography) or flagged (ultrasound)
MAMMOGRAPHY = "MG"
OUT_OF_SCOPE = frozenset({"US"})
