"""The téléimagerie profiles, written as FHIR differentials (issue 4).

``tools/build_profiles.py`` turns these into StructureDefinitions with a snapshot
(``definitions/``); the validator reads only those. Messages a clinician sees come from
each element's ``short`` (French) and each invariant's ``human``.
"""

from __future__ import annotations

from typing import Any

from fhir_server.core.canonical import BASE

VERSION = "0.1.0"
INS_NIR = "urn:oid:1.2.250.1.213.1.4.8"
INS_NIA = "urn:oid:1.2.250.1.213.1.4.9"
INS_NIR_TEST = "urn:oid:1.2.250.1.213.1.4.10"
RPPS = "urn:oid:1.2.250.1.71.4.2.1"
FINESS = "urn:oid:1.2.250.1.71.4.2.2"
IDENTITY_RELIABILITY = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-identity-reliability"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
IONISING = "('CT' | 'CR' | 'DX' | 'MG' | 'NM' | 'PT' | 'XA' | 'RF' | 'RG' | 'IO' | 'PX')"
Element = dict[str, Any]


def sd_url(name: str) -> str:
    return f"{BASE}/StructureDefinition/{name}"


def vs_url(name: str) -> str:
    return f"{BASE}/ValueSet/{name}"


def el(eid: str, short: str | None = None, **rules: Any) -> Element:
    out: Element = {"id": eid}
    if short:
        out["short"] = short
    out.update(rules)
    return out


def required(vs: str, description: str | None = None) -> dict[str, Any]:
    out = {"strength": "required", "valueSet": vs_url(vs)}
    if description:
        out["description"] = description
    return out


def extensible(vs: str) -> dict[str, Any]:
    return {"strength": "extensible", "valueSet": vs_url(vs)}


def by_system(path: str) -> Element:
    return el(path, slicing={"discriminator": [{"type": "value", "path": "system"}],
                             "rules": "open"})


def by_type(path: str, *others: str) -> Element:
    """Identifiers told apart by their type (PLAC, ACSN…) and possibly their system."""
    return el(path, slicing={"discriminator": [{"type": "pattern", "path": "type"},
                                               *({"type": "value", "path": o} for o in others)],
                             "rules": "open"})


def by_url(path: str) -> Element:
    return el(path, slicing={"discriminator": [{"type": "value", "path": "url"}],
                             "rules": "open"})


def identifier_slice(path: str, name: str, system: str, short: str, mn: int = 0,
                     mx: str = "1") -> list[Element]:
    return [el(f"{path}:{name}", short, min=mn, max=mx, mustSupport=True),
            el(f"{path}:{name}.system", min=1, fixedUri=system),
            el(f"{path}:{name}.value", f"{short} (valeur)", min=1)]


def extension_slice(path: str, name: str, url: str, short: str, value_type: str,
                    mn: int = 0, mx: str = "1", binding: dict[str, Any] | None = None
                    ) -> list[Element]:
    value = el(f"{path}:{name}.value[x]", short, min=1, type=[{"code": value_type}])
    if binding:
        value["binding"] = binding
    return [el(f"{path}:{name}", short, min=mn, max=mx, mustSupport=True,
               type=[{"code": "Extension", "profile": [url]}]),
            el(f"{path}:{name}.url", min=1, fixedUri=url), value]


def invariant(key: str, human: str, expression: str, severity: str = "error") -> dict[str, Any]:
    return {"key": key, "severity": severity, "human": human, "expression": expression,
            "source": BASE}


# -- extensions we define (simple: one value each) ---------------------------------------
EXTENSIONS: list[dict[str, Any]] = []


def extension(name: str, title: str, value_type: str, context: str,
              binding: dict[str, Any] | None = None) -> str:
    url = sd_url(name)
    value = el("Extension.value[x]", title, min=1, type=[{"code": value_type}])
    if binding:
        value["binding"] = binding
    EXTENSIONS.append({
        "id": name, "url": url, "name": "".join(p.title() for p in name.split("-")),
        "title": title, "description": title,
        "context": [{"type": "element", "expression": context}],
        "differential": [el("Extension", title, max="1"),
                         el("Extension.url", min=1, fixedUri=url), value]})
    return url


EXT_ACT_KIND = extension("tlm-act-kind", "Nature de l'acte (téléradiologie / télé-expertise)",
                         "CodeableConcept", "ServiceRequest", required("teleimagerie-act-kind"))
EXT_OBJECTIVE = extension("tlm-objective", "Objectif de l'examen (diagnostic, suivi…)",
                          "CodeableConcept", "ServiceRequest", required("teleimagerie-objective"))
EXT_MODALITY = extension("tlm-modality", "Modalité d'imagerie prévue (DICOM)", "Coding",
                         "ServiceRequest", required("modalite-acquisition"))
EXT_LATERALITY = extension("tlm-laterality", "Latéralité de la région examinée",
                           "CodeableConcept", "ServiceRequest", required("lateralite"))
EXT_PREGNANCY = extension("tlm-pregnancy-status", "Statut de grossesse (examen irradiant)",
                          "CodeableConcept", "ServiceRequest", required("statut-grossesse"))
EXT_RISK = extension("tlm-risk-factor", "Contre-indication ou facteur de risque",
                     "CodeableConcept", "ServiceRequest", extensible("teleimagerie-risk-factor"))
EXT_DELAY = extension("tlm-desired-delay", "Délai souhaité de réalisation", "Quantity",
                      "ServiceRequest")
EXT_CONSENT_METHOD = extension("tlm-consent-method", "Mode de recueil (oral / écrit)",
                               "CodeableConcept", "Consent",
                               required("teleimagerie-consent-method"))
EXT_EMERGENCY = extension("tlm-emergency", "Urgence : information du patient a posteriori "
                          "(R-CONS-3)", "boolean", "ServiceRequest | Consent")
EXT_DOSE_UNAVAILABLE = extension("tlm-dose-unavailable", "Dose non disponible : raison "
                                 "(R-REP-3)", "string", "DiagnosticReport")
EXT_VISIBILITY = extension("tlm-document-visibility", "Masquage du document dans le DMP "
                           "(MASQUE_PS, INVISIBLE_PATIENT, INVISIBLE_REPRESENTANTS_LEGAUX)",
                           "Coding", "DiagnosticReport", required("visibilite-document"))
EXT_INCIDENT = extension("tlm-technical-incident", "Incident technique ou effet indésirable "
                         "(R-EXAM-3)", "string", "DiagnosticReport | ImagingStudy")


def profile(pid: str, rtype: str, title: str, description: str,
            differential: list[Element]) -> dict[str, Any]:
    return {"id": pid, "url": sd_url(pid), "type": rtype, "title": title,
            "name": "".join(p.title() for p in pid.split("-")), "description": description,
            "differential": [el(rtype, title), *differential]}


PATIENT = profile("tlm-patient", "Patient", "Patient (téléimagerie, INS)",
                  "Patient aligné sur FR Core fr-core-patient-ins : INS et traits d'identité "
                  "(R-EXAM-1).", [
    by_url("Patient.extension"),
    el("Patient.extension:identityReliability", "la fiabilité de l'identité (FR Core)",
       max="1", mustSupport=True,
       type=[{"code": "Extension", "profile": [IDENTITY_RELIABILITY]}]),
    el("Patient.extension:identityReliability.url", min=1, fixedUri=IDENTITY_RELIABILITY),
    by_url("Patient.extension:identityReliability.extension"),
    el("Patient.extension:identityReliability.extension:identityStatus",
       "le statut de l'identité (VALI, PROV…)", min=1, max="1"),
    el("Patient.extension:identityReliability.extension:identityStatus.url", min=1,
       fixedUri="identityStatus"),
    el("Patient.extension:identityReliability.extension:identityStatus.value[x]",
       "le statut de l'identité", min=1, type=[{"code": "Coding"}],
       binding=required("fiabilite-identite")),
    *extension_slice("Patient.extension", "birthPlace",
                     "http://hl7.org/fhir/StructureDefinition/patient-birthPlace",
                     "le lieu de naissance (code INSEE)", "Address"),
    {**by_system("Patient.identifier"), "min": 1,
     "short": "l'identifiant du patient (INS ou IPP)"},
    *identifier_slice("Patient.identifier", "INS-NIR", INS_NIR, "l'INS (NIR)"),
    *identifier_slice("Patient.identifier", "INS-NIA", INS_NIA, "l'INS (NIA)"),
    *identifier_slice("Patient.identifier", "INS-NIR-TEST", INS_NIR_TEST, "l'INS de test"),
    el("Patient.name", "le nom de naissance et les prénoms", min=1, mustSupport=True),
    el("Patient.gender", "le sexe", min=1, mustSupport=True),
    el("Patient.birthDate", "la date de naissance", min=1, mustSupport=True),
    el("Patient.telecom", "les coordonnées du patient", mustSupport=True),
    el("Patient.address", "l'adresse du patient", mustSupport=True),
    el("Patient", constraint=[
        invariant("tlm-pat-1", "un INS ne peut être transmis qu'avec le statut de fiabilité "
                  "de l'identité (R-EXAM-1)",
                  f"identifier.where(system = '{INS_NIR}' or system = '{INS_NIA}' or "
                  f"system = '{INS_NIR_TEST}').exists() implies "
                  f"extension('{IDENTITY_RELIABILITY}').exists()"),
        invariant("tlm-pat-2", "un INS (NIR/NIA) comporte 15 caractères",
                  f"identifier.where(system = '{INS_NIR}' or system = '{INS_NIA}')"
                  ".all(value.matches('^[0-9][0-9AB]{14}$'))")]),
])

PRACTITIONER = profile("tlm-practitioner", "Practitioner", "Professionnel (RPPS)",
                       "Professionnel de santé identifié par son RPPS / idNatPs (R-ACT-2).", [
    {**by_system("Practitioner.identifier"), "min": 1},
    *identifier_slice("Practitioner.identifier", "idNatPs", RPPS,
                      "l'identifiant national du professionnel (idNatPs / RPPS)", 1),
    el("Practitioner.name", "le nom d'exercice du professionnel", min=1, mustSupport=True),
    el("Practitioner.qualification", "la spécialité (radiologie, médecine nucléaire) et "
       "les formations (radioprotection)", mustSupport=True),
])

PRACTITIONER_ROLE = profile("tlm-practitioner-role", "PractitionerRole",
                            "Rôle du professionnel dans une structure",
                            "Professionnel exerçant pour une structure : spécialité et "
                            "disponibilités (R-ACT-3).", [
    el("PractitionerRole.practitioner", "le professionnel", min=1, mustSupport=True,
       type=[{"code": "Reference", "targetProfile": [sd_url("tlm-practitioner")]}]),
    el("PractitionerRole.organization", "la structure d'exercice", min=1, mustSupport=True),
    el("PractitionerRole.specialty", "la spécialité", mustSupport=True),
    el("PractitionerRole.telecom", "les coordonnées professionnelles", mustSupport=True),
    el("PractitionerRole.availableTime", "les disponibilités", mustSupport=True),
])

ORGANIZATION = profile("tlm-organization", "Organization", "Structure (FINESS)",
                       "Structure demandeuse ou plateforme de téléimagerie, identifiée par "
                       "son FINESS.", [
    {**by_system("Organization.identifier"), "min": 1},
    *identifier_slice("Organization.identifier", "finess", FINESS,
                      "le numéro FINESS de la structure", 1),
    el("Organization.name", "le nom de la structure", min=1, mustSupport=True),
    el("Organization.type", "le type de structure (TLR_TYPE_ORGANISATION)", mustSupport=True,
       binding=extensible("tlr-type-organisation")),
])

SERVICE_REQUEST = profile("tlm-service-request", "ServiceRequest",
                          "Demande d'examen d'imagerie (téléimagerie)",
                          "Demande d'examen d'imagerie réalisé ou interprété à distance : "
                          "contenu administratif et clinique R-REQ-1..4, R-SCOPE-3.", [
    by_url("ServiceRequest.extension"),
    *extension_slice("ServiceRequest.extension", "actKind", EXT_ACT_KIND,
                     "la nature de l'acte (téléradiologie ou télé-expertise)",
                     "CodeableConcept", 1, "1", required("teleimagerie-act-kind")),
    *extension_slice("ServiceRequest.extension", "objective", EXT_OBJECTIVE,
                     "l'objectif de l'examen (diagnostic ou suivi)", "CodeableConcept", 1,
                     "1", required("teleimagerie-objective")),
    *extension_slice("ServiceRequest.extension", "modality", EXT_MODALITY,
                     "la modalité d'imagerie", "Coding", 1, "1",
                     required("modalite-acquisition")),
    *extension_slice("ServiceRequest.extension", "laterality", EXT_LATERALITY,
                     "la latéralité", "CodeableConcept", 0, "1", required("lateralite")),
    *extension_slice("ServiceRequest.extension", "pregnancyStatus", EXT_PREGNANCY,
                     "le statut de grossesse", "CodeableConcept", 0, "1",
                     required("statut-grossesse")),
    *extension_slice("ServiceRequest.extension", "riskFactor", EXT_RISK,
                     "les contre-indications et facteurs de risque", "CodeableConcept", 0,
                     "*", extensible("teleimagerie-risk-factor")),
    *extension_slice("ServiceRequest.extension", "desiredDelay", EXT_DELAY,
                     "le délai souhaité", "Quantity"),
    *extension_slice("ServiceRequest.extension", "emergency", EXT_EMERGENCY,
                     "l'urgence (information a posteriori)", "boolean"),
    {**by_type("ServiceRequest.identifier"), "min": 1,
     "short": "le numéro de demande (placer order number)"},
    el("ServiceRequest.identifier:placer", "le numéro de demande du demandeur (placer order "
       "number, OID de l'autorité d'affectation)", min=1, max="1", mustSupport=True,
       patternIdentifier={"type": {"coding": [{"system": V2_0203, "code": "PLAC"}]}}),
    el("ServiceRequest.identifier:placer.system", "l'OID de l'autorité d'affectation", min=1),
    el("ServiceRequest.identifier:placer.value", "le numéro de demande", min=1),
    el("ServiceRequest.identifier:accession", "le numéro d'examen (accession number)",
       max="1", mustSupport=True,
       patternIdentifier={"type": {"coding": [{"system": V2_0203, "code": "ACSN"}]}}),
    el("ServiceRequest.status", "le statut de la demande"),
    el("ServiceRequest.intent", "l'intention (order)", fixedCode="order"),
    el("ServiceRequest.priority", "la priorité", min=1, mustSupport=True),
    el("ServiceRequest.code", "le type d'examen ou la technique souhaitée (acte CCAM)",
       min=1, mustSupport=True, binding=extensible("ccam-imagerie")),
    el("ServiceRequest.subject", "le patient", mustSupport=True,
       type=[{"code": "Reference", "targetProfile": [sd_url("tlm-patient")]}]),
    el("ServiceRequest.authoredOn", "la date et l'heure de la demande", min=1,
       mustSupport=True),
    el("ServiceRequest.requester", "le médecin demandeur", min=1, mustSupport=True),
    el("ServiceRequest.reasonCode", "le contexte clinique et le motif de l'examen", min=1,
       mustSupport=True),
    el("ServiceRequest.bodySite", "la région anatomique examinée", min=1, mustSupport=True,
       binding=extensible("region-anatomique")),
    el("ServiceRequest.supportingInfo", "les antécédents, examens antérieurs, résultats "
       "biologiques et consentements recueillis (Consent)", mustSupport=True),
    el("ServiceRequest.note", "les informations complémentaires", mustSupport=True),
    el("ServiceRequest", constraint=[
        invariant("tlm-sr-1", "la demande d'examen doit préciser le statut de grossesse "
                  "pour un examen irradiant (R-REQ-3, R-VAL-6)",
                  f"extension('{EXT_MODALITY}').value.code.where($this in {IONISING})"
                  f".exists() implies extension('{EXT_PREGNANCY}').exists()"),
        invariant("tlm-sr-2", "la mammographie ne peut pas être réalisée en téléimagerie "
                  "(R-SCOPE-2)",
                  f"extension('{EXT_MODALITY}').value.code != 'MG'"),
        invariant("tlm-sr-3", "le numéro de demande porte l'OID de l'autorité d'affectation "
                  "(urn:oid:…)", "identifier.where(type.coding.code = 'PLAC')"
                  ".all(system.startsWith('urn:oid:'))")]),
])

CONSENT = profile("tlm-consent", "Consent", "Consentement (téléimagerie)",
                  "Consentement à l'acte, à sa réalisation à distance, au partage ; refus "
                  "et opposition ; information a posteriori (R-CONS-1..5).", [
    by_url("Consent.extension"),
    *extension_slice("Consent.extension", "method", EXT_CONSENT_METHOD,
                     "le mode de recueil (oral ou écrit)", "CodeableConcept", 1, "1",
                     required("teleimagerie-consent-method")),
    *extension_slice("Consent.extension", "emergency", EXT_EMERGENCY,
                     "l'information a posteriori (urgence)", "boolean"),
    el("Consent.scope", "la portée du consentement"),
    el("Consent.category", "l'objet du consentement (acte, téléimagerie, partage)",
       min=1, mustSupport=True, binding=required("teleimagerie-consent-category")),
    el("Consent.patient", "le patient", min=1, mustSupport=True),
    el("Consent.dateTime", "la date du recueil", min=1, mustSupport=True),
    el("Consent.performer", "la personne qui consent (patient ou représentant légal)",
       min=1, mustSupport=True),
    el("Consent.organization", "la structure qui a recueilli le consentement",
       mustSupport=True),
    el("Consent.provision", "l'acceptation ou le refus (provision.type permit / deny)",
       min=1, mustSupport=True),
    el("Consent.provision.type", "permit (consentement) ou deny (refus, opposition)", min=1),
    el("Consent.provision.actor", "les professionnels nommés (partage)", mustSupport=True),
    el("Consent.provision.data", "la demande concernée", mustSupport=True),
])

IMAGING_STUDY = profile("tlm-imaging-study", "ImagingStudy", "Examen d'imagerie (étude DICOM)",
                        "Étude DICOM : Study Instance UID, numéro d'examen, modalités, "
                        "séries, accès à l'archive (R-REP-7).", [
    {**by_type("ImagingStudy.identifier", "system"), "min": 1},
    *identifier_slice("ImagingStudy.identifier", "studyInstanceUid", "urn:dicom:uid",
                      "le Study Instance UID", 1),
    el("ImagingStudy.identifier:accession", "le numéro d'examen (accession number)",
       max="1", mustSupport=True,
       patternIdentifier={"type": {"coding": [{"system": V2_0203, "code": "ACSN"}]}}),
    el("ImagingStudy.modality", "les modalités DICOM de l'étude", min=1, mustSupport=True,
       binding=required("modalite-acquisition")),
    el("ImagingStudy.subject", "le patient", mustSupport=True),
    el("ImagingStudy.started", "la date de réalisation", min=1, mustSupport=True),
    el("ImagingStudy.basedOn", "la demande d'examen (absente seulement tant qu'une étude reçue "
       "avant sa demande attend son rattachement)", mustSupport=True),
    el("ImagingStudy.endpoint", "l'accès à l'archive ou à la visionneuse", mustSupport=True),
    el("ImagingStudy.series", "les séries", mustSupport=True),
    el("ImagingStudy.series.modality", "la modalité de la série (une série de rapport de "
       "dose est SR)", binding=required("modalite-serie")),
    el("ImagingStudy", constraint=[
        invariant("tlm-is-1", "une étude sans demande (basedOn) est marquée « demande à "
                  "rattacher » (meta.tag) jusqu'à son rattachement (R-REP-7)",
                  "basedOn.exists() or meta.tag.where(system = "
                  "'https://teleimagerie.fr/fhir/CodeSystem/teleimagerie-flag' and "
                  "code = 'demande-a-rattacher').exists()")]),
])

DOSE_OBSERVATION = profile("tlm-dose-observation", "Observation",
                           "Dose de rayonnement reçue", "Indicateur de dose d'un acte "
                           "irradiant (PDL, IDSV, PDS…) en unités UCUM (R-REP-3).", [
    el("Observation.status", "le statut"),
    el("Observation.code", "l'indicateur de dose (DCM)", binding=required("dose-rayonnement")),
    el("Observation.subject", "le patient", min=1),
    el("Observation.partOf", "l'examen concerné", mustSupport=True),
    el("Observation.value[x]", "la valeur de dose", min=1, type=[{"code": "Quantity"}]),
    el("Observation", constraint=[
        invariant("tlm-dose-1", "la dose est exprimée en unités UCUM",
                  "value.ofType(Quantity).system = 'http://unitsofmeasure.org' and "
                  "value.ofType(Quantity).code.exists()")]),
])

DIAGNOSTIC_REPORT = profile("tlm-diagnostic-report", "DiagnosticReport",
                            "Compte rendu d'imagerie", "Compte rendu d'imagerie en français : "
                            "imageur, date, conclusion, examen, dose (R-REP-1..4, R-ACT-4).", [
    by_url("DiagnosticReport.extension"),
    *extension_slice("DiagnosticReport.extension", "technicalIncident", EXT_INCIDENT,
                     "les incidents techniques", "string", 0, "*"),
    *extension_slice("DiagnosticReport.extension", "doseUnavailable", EXT_DOSE_UNAVAILABLE,
                     "la raison pour laquelle la dose n'est pas disponible", "string", 0, "1"),
    *extension_slice("DiagnosticReport.extension", "visibility", EXT_VISIBILITY,
                     "le masquage de ses documents (DMP, MHD) choisi par l'auteur ; le "
                     "changer après publication demande une version modifiée (amended)",
                     "Coding", 0, "*"),
    el("DiagnosticReport.basedOn", "la demande d'examen", min=1, mustSupport=True),
    el("DiagnosticReport.code", "le type de compte rendu (LOINC 18748-4)",
       patternCodeableConcept={"coding": [{"system": "http://loinc.org",
                                           "code": "18748-4"}]}),
    el("DiagnosticReport.subject", "le patient", min=1, mustSupport=True),
    el("DiagnosticReport.effective[x]", "la date et l'heure de l'examen", mustSupport=True),
    el("DiagnosticReport.performer", "l'imageur qui interprète (identité visible du "
       "patient)", mustSupport=True),
    el("DiagnosticReport.result", "les résultats, dont la dose reçue", mustSupport=True),
    el("DiagnosticReport.imagingStudy", "l'examen d'imagerie", min=1, mustSupport=True),
    el("DiagnosticReport.conclusion", "la conclusion", mustSupport=True),
    el("DiagnosticReport", constraint=[
        invariant("tlm-dr-1", "un compte rendu définitif doit indiquer l'imageur qui "
                  "l'a rédigé (R-REP-3, R-ACT-4)",
                  "status in ('final' | 'amended' | 'corrected') implies performer.exists()"),
        invariant("tlm-dr-2", "un compte rendu définitif doit indiquer la date et l'heure "
                  "de l'examen (R-REP-3)",
                  "status in ('final' | 'amended' | 'corrected') implies effective.exists()"),
        invariant("tlm-dr-3", "un compte rendu définitif doit comporter une conclusion "
                  "(R-REP-1)", "status in ('final' | 'amended' | 'corrected') implies "
                  "(conclusion.exists() or presentedForm.exists())"),
        invariant("tlm-dr-4", "le compte rendu est rédigé en français (R-REP-1)",
                  "language.exists() implies language.startsWith('fr')")]),
])

AUDIT_EVENT = profile("tlm-audit-event", "AuditEvent", "Trace d'accès (IHE BALP)",
                      "Trace d'une interaction REST selon IHE BALP (R-SEC-3).", [
    el("AuditEvent.type", "le type d'événement (rest)",
       patternCoding={"system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
                      "code": "rest"}),
    el("AuditEvent.subtype", "l'interaction (restful-interaction)", min=1, max="1"),
    el("AuditEvent.action", "l'action (C, R, U, D, E)", min=1),
    el("AuditEvent.outcome", "le résultat", min=1),
    el("AuditEvent.agent", "les acteurs (utilisateur, application, serveur)", min=2),
    el("AuditEvent.agent.requestor", "le demandeur"),
    el("AuditEvent.entity", "les objets concernés (ressource, patient, requête)", min=1),
    el("AuditEvent", constraint=[
        invariant("tlm-ae-1", "une trace désigne exactement un demandeur",
                  "agent.where(requestor = true).count() = 1")]),
])

PROFILES = [PATIENT, PRACTITIONER, PRACTITIONER_ROLE, ORGANIZATION, SERVICE_REQUEST, CONSENT,
            IMAGING_STUDY, DOSE_OBSERVATION, DIAGNOSTIC_REPORT, AUDIT_EVENT]
