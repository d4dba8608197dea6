"""Write ``terminology/resources/*.json``: the CodeSystems, ValueSets and ConceptMaps our
profiles bind (issue 4). Run by hand when a source changes; the output is committed.

Facts come from ``../shared/references`` when present (ANS JDV value sets in IHE SVS
format, the ANS téléradiologie HL7v2 local tables); the rest are the tables below, each
with its source. The server never reads the references at run time.
"""

from __future__ import annotations

import html
import json
import re
import sys
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fhir_server.core.canonical import BASE  # noqa: E402

OUT = ROOT / "terminology" / "resources"
REFS = ROOT.parent / "shared" / "references"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
SCT = "http://snomed.info/sct"
LOINC = "http://loinc.org"
CCAM = "https://smt.esante.gouv.fr/terminologie-ccam"
# ANS NOS TRE_A07 StatutVisibiliteDocument (OID 1.2.250.1.213.1.1.4.13): the DMP's masking
# codes, carried in the XDS confidentialityCode beside the CDA's N (Guide d'intégration DMP;
# MetaDMPMSS OBX of the CI-SIS "Transmission de documents CDA en HL7v2")
TRE_A07 = ("https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/"
           "TRE-A07-StatutVisibiliteDocument")
VISIBILITY = [("MASQUE_PS", "Masqué aux professionnels de santé"),
              ("INVISIBLE_PATIENT", "Non visible par le patient"),
              ("INVISIBLE_REPRESENTANTS_LEGAUX",
               "Non visible par les représentants légaux du patient")]
SVS = "{urn:ihe:iti:svs:2008}"
OID_SYSTEMS = {"2.16.840.1.113883.6.96": SCT, "1.2.840.10008.2.16.4": DCM,
               "2.16.840.1.113883.6.1": LOINC}
VERSION = "0.1.0"

# CCAM imaging acts (OID 1.2.250.1.213.2.5). Only codes whose label was checked against a
# public source are listed; ``source`` says which. mammography=true marks the acts
# R-SCOPE-2 excludes from téléimagerie.
CCAM_ACTS: list[tuple[str, str, str, bool]] = [
    ("ACQK001", "Scanographie du crâne et de son contenu, sans injection de produit de "
     "contraste", "avenant-7-annexe-33-3", False),
    ("ACQH003", "Scanographie du crâne et de son contenu, avec injection intraveineuse de "
     "produit de contraste", "avenant-7-annexe-33-3", False),
    ("ACQH001", "Scanographie du crâne et de son contenu, avec injection intrathécale de "
     "produit de contraste [Cysternoscanner]", "avenant-7-annexe-33-3", False),
    ("ACQK003", "Scanographie du crâne et de son contenu et/ou du massif facial pour "
     "repérage stéréotaxique", "avenant-7-annexe-33-3", False),
    ("ACQH002", "Scanographie du crâne, de son contenu et du thorax, avec injection "
     "intraveineuse de produit de contraste", "avenant-7-annexe-33-3", False),
    ("ACQH004", "Scanographie du crâne, de son contenu et du tronc, avec injection "
     "intraveineuse de produit de contraste", "ans-cda-img-da-img", False),
    ("AEQH002", "Myélographie cervicale", "avenant-7-annexe-33-3", False),
    ("AEQH001", "Myélographie dorsale et/ou lombale", "avenant-7-annexe-33-3", False),
    ("AFQH003", "Myélographie avec scanographie de la colonne vertébrale [Myéloscanner]",
     "avenant-7-annexe-33-3", False),
    ("AFQH002", "Saccoradiculographie", "avenant-7-annexe-33-3", False),
    ("AFQH001", "Saccoradiculographie avec scanographie de la colonne vertébrale",
     "avenant-7-annexe-33-3", False),
    ("BBQH001", "Lacrymo-dacryo-cystographie unilatérale ou bilatérale",
     "avenant-7-annexe-33-3", False),
    ("ECQH010", "Scanographie des vaisseaux du thorax et/ou du cœur [Angioscanner "
     "thoracique]", "avenant-7-annexe-33-3", False),
    ("LCQH001", "Scanographie des tissus mous du cou, avec injection intraveineuse de "
     "produit de contraste", "ans-cda-img-da-img", False),
    ("NZQN001", "Remnographie [IRM] unilatérale ou bilatérale de segment du membre "
     "inférieur, sans injection de produit de contraste", "ans-cda-img-da-img", False),
    ("ZBQH001", "Scanographie du thorax, avec injection intraveineuse de produit de "
     "contraste", "ans-cda-img-da-img", False),
    ("QEQK004", "Mammographie de dépistage", "snds-screening-studies", True),
    ("ACQJ002", "Remnographie [IRM] du crâne et de son contenu, avec injection intraveineuse "
     "de produit de contraste", "ans-ig-terminologies-fsh", False),
    ("ACQN001", "Remnographie [IRM] du crâne et de son contenu, sans injection intraveineuse "
     "de produit de contraste", "ans-ig-terminologies", False),
    ("EBQH006", "Scanographie des vaisseaux cervicaux [Angioscanner cervical]",
     "ans-ig-terminologies", False),
    ("ZCQH001", "Scanographie de l'abdomen et du petit bassin, avec injection intraveineuse "
     "de produit de contraste", "clinical-references-seed", False),
    ("ZCQH002", "Scanographie de l'abdomen ou du petit bassin, avec injection intraveineuse "
     "de produit de contraste", "clinical-references-seed", False),
    ("ZCQK004", "Scanographie de l'abdomen et du petit bassin, sans injection intraveineuse "
     "de produit de contraste", "clinical-references-seed", False),
    ("ZCQK005", "Scanographie de l'abdomen ou du petit bassin, sans injection intraveineuse "
     "de produit de contraste", "clinical-references-seed", False),
    ("ELQH002", "Scanographie des vaisseaux de l'abdomen et/ou du petit bassin "
     "[Angioscanner abdominopelvien]", "clinical-references-seed", False),
    ("ZCQM005", "Échographie transcutanée de l'abdomen, avec échographie transcutanée du "
     "petit bassin [pelvis]", "clinical-references-seed", False),
    ("ZBQK002", "Radiographie du thorax", "ccam-sample-repositories", False),
    ("ZCQK002", "Radiographie de l'abdomen sans préparation", "ccam-sample-repositories",
     False),
    ("EAQH002", "Scanographie des vaisseaux encéphaliques [Angioscanner cérébral]",
     "ccam-sample-repositories", False),
    ("ZZQN002", "Restitution tridimensionnelle des images acquises par remnographie [IRM]",
     "ccam-sample-repositories", False),
    ("ACQN004", "Remnographie [IRM] du crâne et de son contenu avec étude de la viabilité du "
     "parenchyme cérébral (diffusion, perfusion)", "ccam-v80-imaging-table", False),
    ("AAQN004", "Remnographie [IRM] fonctionnelle du cerveau pour étude des fonctions "
     "motrices", "ccam-v80-imaging-table", False),
    ("LAQN001", "Remnographie [IRM] de la face, sans injection de produit de contraste",
     "ccam-v80-imaging-table", False),
    ("LAQJ001", "Remnographie [IRM] de la face, avec injection intraveineuse de produit de "
     "contraste", "ccam-v80-imaging-table", False),
    ("LCQN001", "Remnographie [IRM] des tissus mous du cou, sans injection de produit de "
     "contraste", "ccam-v80-imaging-table", False),
    ("LCQJ001", "Remnographie [IRM] des tissus mous du cou, avec injection intraveineuse de "
     "produit de contraste", "ccam-v80-imaging-table", False),
    ("LHQN001", "Remnographie [IRM] d'un ou deux segments de la colonne vertébrale, sans "
     "injection de produit de contraste", "ccam-v80-imaging-table", False),
    ("LHQJ001", "Remnographie [IRM] d'un ou deux segments de la colonne vertébrale, avec "
     "injection intraveineuse de produit de contraste", "ccam-v80-imaging-table", False),
    ("ZBQN001", "Remnographie [IRM] du thorax, sans injection de produit de contraste",
     "ccam-v80-imaging-table", False),
    ("ZBQJ001", "Remnographie [IRM] du thorax, avec injection intraveineuse de produit de "
     "contraste", "ccam-v80-imaging-table", False),
    ("ZCQN001", "Remnographie [IRM] de l'abdomen et du petit bassin, sans injection de "
     "produit de contraste", "ccam-v80-imaging-table", False),
    ("ZCQJ005", "Remnographie [IRM] de l'abdomen et du petit bassin, avec injection "
     "intraveineuse de produit de contraste", "ccam-v80-imaging-table", False),
    ("QEQN001", "Remnographie [IRM] du sein, sans injection de produit de contraste",
     "ccam-v80-imaging-table", False),
    ("QEQJ001", "Remnographie [IRM] du sein, avec injection intraveineuse de produit de "
     "contraste", "ccam-v80-imaging-table", False),
    ("DZQN001", "Remnographie [IRM] morphologique du cœur", "ccam-v80-imaging-table", False),
    ("DZQN002", "Remnographie [IRM] fonctionnelle du cœur, sans épreuve pharmacologique de "
     "stress", "ccam-v80-imaging-table", False),
    ("MZQN001", "Remnographie [IRM] unilatérale ou bilatérale de segment du membre "
     "supérieur, sans injection de produit de contraste", "ccam-v80-imaging-table", False),
    ("MZQJ001", "Remnographie [IRM] unilatérale ou bilatérale de segment du membre "
     "supérieur, avec injection intraveineuse de produit de contraste",
     "ccam-v80-imaging-table", False),
    ("NZQJ001", "Remnographie [IRM] unilatérale ou bilatérale de segment du membre "
     "inférieur, avec injection intraveineuse de produit de contraste",
     "ccam-v80-imaging-table", False),
    ("EAQJ001", "Remnographie [IRM] des vaisseaux encéphaliques [Angio-IRM cérébrale]",
     "ccam-v80-imaging-table", False),
    ("EBQJ001", "Remnographie [IRM] des vaisseaux cervicocéphaliques [Angio-IRM "
     "cervicocérébrale]", "ccam-v80-imaging-table", False),
    ("ECQJ001", "Remnographie [IRM] des vaisseaux du thorax [Angio-IRM thoracique]",
     "ccam-v80-imaging-table", False),
    ("ELQJ001", "Remnographie [IRM] des vaisseaux de l'abdomen et/ou du petit bassin "
     "[Angio-IRM abdominopelvienne]", "ccam-v80-imaging-table", False),
    ("EMQJ001", "Remnographie [IRM] des vaisseaux des membres inférieurs",
     "ccam-v80-imaging-table", False),
    ("ZZQN001", "Remnographie [IRM] comportant au moins 6 séquences",
     "ccam-v80-imaging-table", False),
    ("LAQK013", "Scanographie de la face", "ccam-v80-imaging-table", False),
    ("LAQK002", "Scanographie unilatérale ou bilatérale du rocher et de l'oreille moyenne",
     "ccam-v80-imaging-table", False),
    ("LCQK001", "Scanographie des tissus mous du cou, sans injection de produit de contraste",
     "ccam-v80-imaging-table", False),
    ("LHQK001", "Scanographie d'un segment de la colonne vertébrale, sans injection de "
     "produit de contraste", "ccam-v80-imaging-table", False),
    ("LHQH006", "Scanographie d'un segment de la colonne vertébrale, avec injection "
     "intraveineuse de produit de contraste", "ccam-v80-imaging-table", False),
    ("LHQK005", "Scanographie de plusieurs segments de la colonne vertébrale, sans "
     "injection de produit de contraste", "ccam-v80-imaging-table", False),
    ("ZBQK001", "Scanographie du thorax, sans injection de produit de contraste",
     "ccam-v80-imaging-table", False),
    ("EBQH004", "Scanographie des vaisseaux cervicocéphaliques [Angioscanner "
     "cervicocérébral]", "ccam-v80-imaging-table", False),
    ("EMQH001", "Scanographie des vaisseaux des membres inférieurs [Angioscanner des "
     "membres inférieurs]", "ccam-v80-imaging-table", False),
    ("MZQK002", "Scanographie unilatérale ou bilatérale de segment du membre supérieur, "
     "sans injection de produit de contraste", "ccam-v80-imaging-table", False),
    ("NZQK002", "Scanographie unilatérale ou bilatérale de segment du membre inférieur, "
     "sans injection de produit de contraste", "ccam-v80-imaging-table", False),
    ("ZCQK003", "Pelvimétrie par scanographie", "ccam-v80-imaging-table", False),
    ("ZZQK024", "Scanographie de 3 territoires anatomiques ou plus, sans injection de "
     "produit de contraste", "ccam-v80-imaging-table", False),
    ("ZZQH033", "Scanographie de 3 territoires anatomiques ou plus, avec injection "
     "intraveineuse de produit de contraste", "ccam-v80-imaging-table", False),
]
# where each code was checked (public sources; labels follow CCAM wording)
CCAM_SOURCES = {
    "avenant-7-annexe-33-3": "Arrêté du 14 août 2019, avenant 7, annexe 33-3 (liste des "
                             "actes éligibles au modificateur Z de radiologie)",
    "ans-cda-img-da-img": "ANS CI-SIS, exemples IMG-DA-IMG 2024.01 (displayName CCAM)",
    "ans-ig-terminologies": "ANS IG Terminologies de santé, JDV investigation réalisée",
    "ans-ig-terminologies-fsh": "ANS, codes CCAM de validation de cas de test (FSH)",
    "snds-screening-studies": "études SNDS : QEQK004 = mammographie de dépistage",
    "clinical-references-seed": "référentiel CCAM d'un logiciel clinique public",
    "ccam-sample-repositories": "plusieurs dépôts publics concordants",
    "ccam-v80-imaging-table": "table d'actes IRM/scanner, nomenclature CCAM v80.0 "
                              "(aideaucodage.fr, novembre 2025)",
}

CODE_SYSTEMS: list[dict[str, Any]] = [
    {"id": "teleimagerie-dose-source", "title": "Source d'une valeur de dose (R-REP-3)",
     "concepts": [("rdsr", "Rapport de dose structuré DICOM (RDSR)"),
                  ("image-header", "Attribut de dose d'un en-tête d'image DICOM (sans RDSR)")]},
    {"id": "teleimagerie-act-kind", "title": "Nature de l'acte de téléimagerie",
     "concepts": [("telediagnostic", "Téléradiologie : interprétation à distance (télé-"
                   "diagnostic)"), ("teleexpertise", "Télé-expertise : second avis d'un "
                   "imageur à distance")]},
    {"id": "teleimagerie-objective", "title": "Objectif de l'examen",
     "concepts": [("diagnostic", "Diagnostic"), ("suivi", "Suivi / surveillance"),
                  ("depistage", "Dépistage"), ("bilan-extension", "Bilan d'extension")]},
    {"id": "teleimagerie-risk-factor", "title": "Contre-indications et facteurs de risque",
     "concepts": [("allergie-produit-contraste", "Allergie aux produits de contraste"),
                  ("insuffisance-renale", "Insuffisance rénale"),
                  ("pacemaker", "Stimulateur cardiaque / défibrillateur implanté"),
                  ("materiel-metallique", "Matériel ou corps étranger métallique"),
                  ("claustrophobie", "Claustrophobie"), ("diabete-metformine",
                   "Diabète traité par metformine"),
                  ("allaitement", "Allaitement en cours")]},
    {"id": "teleimagerie-consent-category", "title": "Objet du consentement (R-CONS-1..5)",
     "concepts": [("acte", "Consentement à l'acte d'imagerie"),
                  ("teleimagerie", "Consentement à la réalisation à distance (téléimagerie)"),
                  ("partage-dmp", "Partage des résultats dans le DMP"),
                  ("partage-professionnels", "Partage avec des professionnels nommés"),
                  ("information-a-posteriori", "Information délivrée a posteriori (urgence)")]},
    {"id": "teleimagerie-consent-method", "title": "Mode de recueil du consentement",
     "concepts": [("oral", "Recueil oral, tracé dans le dossier"), ("ecrit", "Recueil écrit")]},
    {"id": "teleimagerie-refusal-reason", "title": "Motifs de refus ou d'annulation",
     "concepts": [("indication-non-justifiee", "Indication non justifiée"),
                  ("informations-insuffisantes", "Informations cliniques insuffisantes"),
                  ("hors-perimetre", "Acte hors du périmètre de la téléimagerie"),
                  ("contre-indication", "Contre-indication"),
                  ("refus-patient", "Refus du patient"),
                  ("indisponibilite", "Indisponibilité de l'imageur ou de l'équipement"),
                  ("doublon", "Demande en double"),
                  ("realisation-distance-impossible", "Réalisation à distance impossible "
                   "(R-VAL-4)"),
                  ("qualite-images", "Qualité des images insuffisante (R-REP-4)"),
                  ("autre", "Autre motif")]},
    # issue 5: the request workflow (ADR 0009)
    {"id": "teleimagerie-request-state", "title": "État d'une demande de téléimagerie "
     "(Task.businessStatus)",
     "concepts": [("recue", "Demande reçue"), ("validee", "Demande validée par l'imageur"),
                  ("planifiee", "Examen planifié"), ("en-cours", "Examen en cours de "
                                                                 "réalisation"),
                  ("images-disponibles", "Images transmises, en attente d'interprétation"),
                  ("cr-preliminaire", "Compte rendu préliminaire"),
                  ("cr-definitif", "Compte rendu définitif"),
                  ("cr-modifie", "Compte rendu modifié (remplace le précédent)"),
                  ("refusee", "Demande refusée"), ("annulee", "Demande annulée")]},
    {"id": "teleimagerie-task", "title": "Tâches et données du parcours de téléimagerie",
     "concepts": [("realisation-interpretation", "Réalisation et interprétation à distance"),
                  ("teleexpertise", "Télé-expertise (second avis)"),
                  ("information-a-posteriori", "Informer le patient a posteriori (urgence)"),
                  ("modalite", "Modalité de l'examen"), ("site", "Site demandeur"),
                  ("medecin-nucleaire-sur-site", "Médecin nucléaire présent sur site"),
                  ("echange-video", "Échange vidéo avec le patient prévu"),
                  ("eligibilite-qualite-images", "Qualité des images vérifiée"),
                  ("eligibilite-images-anterieures", "Images antérieures disponibles"),
                  ("eligibilite-donnees-identification", "Données d'identification complètes"),
                  ("eligibilite-donnees-medicales", "Données médicales complètes"),
                  ("prise-en-charge-adaptee", "Prise en charge adaptée proposée"),
                  ("compte-rendu", "Compte rendu définitif"),
                  ("protocole-imagerie", "Protocole d'imagerie défini par l'imageur "
                   "(flux 3, OBX PROTOCOLE_IMAGERIE)"),
                  ("destinataire-medecin-traitant", "Destinataire : médecin traitant"),
                  ("destinataire-professionnel-designe", "Destinataire : professionnel "
                   "désigné par le patient"),
                  ("destinataire-patient", "Destinataire : le patient"),
                  ("destinataire-demandeur", "Destinataire : le médecin demandeur")]},
    {"id": "teleimagerie-alternative-path", "title": "Prise en charge adaptée quand la "
     "réalisation à distance est impossible (R-VAL-4)",
     "concepts": [("deplacement-imageur", "Déplacement de l'imageur sur site"),
                  ("mode-degrade", "Procédure en mode dégradé"),
                  ("orientation-autre-site", "Orientation vers un autre site d'imagerie")]},
    {"id": "teleimagerie-flag", "title": "Signalements posés par le serveur (meta.tag, Flag)",
     "concepts": [("pediatrique", "Enfant : examen irradiant, radioprotection renforcée "
                   "(R-VAL-6)"),
                  ("hors-perimetre", "Hors périmètre de la téléimagerie (R-SCOPE-2)"),
                  ("teleimagerie", "Acte de téléimagerie"),
                  ("identite-a-verifier", "Identité discordante ou provisoire reçue (HL7 v2, "
                   "DICOM) : vérification d'identité requise (R-EXAM-1)"),
                  ("demande-a-rattacher", "Étude reçue sans demande connue : en attente de "
                   "rattachement à sa demande (R-REP-7)")]},
    {"id": "hl7v2-message", "title": "Messages HL7 v2 conservés (Basic.code)",
     "concepts": [("hl7v2-inbound", "Message HL7 v2 reçu"),
                  ("hl7v2-outbound", "Message HL7 v2 émis")]},
]


def _concept(code: str, display: str, **props: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"code": code, "display": display}
    if props:
        out["property"] = [{"code": k, ("valueBoolean" if isinstance(v, bool) else
                                        "valueString"): v} for k, v in props.items()]
    return out


def code_system(cid: str, title: str, url: str, concepts: list[dict[str, Any]],
                content: str = "complete", properties: list[dict[str, str]] | None = None,
                description: str | None = None) -> dict[str, Any]:
    cs: dict[str, Any] = {
        "resourceType": "CodeSystem", "id": cid, "url": url, "version": VERSION,
        "name": re.sub(r"[^A-Za-z0-9]", "", cid.title()), "title": title, "status": "active",
        "experimental": False, "publisher": "teleimagerie", "caseSensitive": True,
        "content": content, "count": len(concepts), "concept": concepts}
    if description:
        cs["description"] = description
    if properties:
        cs["property"] = properties
    return cs


def value_set(vid: str, title: str, includes: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "ValueSet", "id": vid, "url": f"{BASE}/ValueSet/{vid}",
            "version": VERSION, "name": re.sub(r"[^A-Za-z0-9]", "", vid.title()),
            "title": title, "status": "active", "experimental": False,
            "publisher": "teleimagerie", "compose": {"include": includes}}


def svs(name: str) -> tuple[str, list[tuple[str, str, str]]]:
    root = ElementTree.parse(REFS / "ans-cda" / "jeuxDeValeurs" / name).getroot()
    vs = root.find(f"{SVS}ValueSet")
    assert vs is not None
    concepts = [(OID_SYSTEMS.get(c.get("codeSystem", ""), "urn:oid:" + c.get("codeSystem", "")),
                 c.get("code", ""), c.get("displayName", ""))
                for c in vs.iter(f"{SVS}Concept")]
    return vs.get("id", ""), concepts


def tlr_table(name: str) -> list[tuple[str, str]]:
    text = (REFS / "ans-ig-hl7v2-teleradiologie" / name).read_text()
    out = []
    for row in re.findall(r"<tr>(.*?)</tr>", text, re.S):
        cells = [html.unescape(re.sub(r"<[^>]+>", "", c)).strip()
                 for c in re.findall(r"<td>(.*?)</td>", row, re.S)]
        if cells:
            out.append((cells[0], cells[1] or cells[0].replace("_", " ").capitalize()))
    return out


def write(resource: dict[str, Any]) -> None:
    path = OUT / f"{resource['resourceType']}-{resource['id']}.json"
    path.write_text(json.dumps(resource, ensure_ascii=False, indent=1) + "\n")


def main() -> None:
    if not REFS.is_dir():
        sys.exit(f"needs the reference material in {REFS}")
    OUT.mkdir(parents=True, exist_ok=True)
    for cs in CODE_SYSTEMS:
        write(code_system(cs["id"], cs["title"], f"{BASE}/CodeSystem/{cs['id']}",
                          [_concept(c, d) for c, d in cs["concepts"]]))
        write(value_set(cs["id"], cs["title"], [{"system": f"{BASE}/CodeSystem/{cs['id']}"}]))
    write(code_system(
        "ccam-imagerie", "CCAM — actes d'imagerie (extrait vérifié)", CCAM,
        [_concept(c, d, source=s, mammographie=m) for c, d, s, m in CCAM_ACTS],
        content="fragment", description="Extrait de la CCAM (OID 1.2.250.1.213.2.5) : actes "
        "d'imagerie dont le code a été vérifié sur une source publique (propriété source) : "
        + "; ".join(f"{k} = {v}" for k, v in CCAM_SOURCES.items()),
        properties=[{"code": "mammographie", "type": "boolean",
                     "description": "Acte de mammographie (exclu de la téléimagerie, R-SCOPE-2)"},
                    {"code": "source", "type": "string",
                     "description": "Où le code et son libellé ont été vérifiés"}]))
    write(value_set("ccam-imagerie", "Actes CCAM d'imagerie", [{"system": CCAM}]))
    tre_a07 = code_system("tre-a07-statut-visibilite-document", "TRE_A07 — statut de "
                          "visibilité d'un document (extrait : masquage DMP)", TRE_A07,
                          [_concept(c, d) for c, d in VISIBILITY], content="fragment")
    tre_a07["identifier"] = [{"system": "urn:ietf:rfc:3986",
                              "value": "urn:oid:1.2.250.1.213.1.1.4.13"}]
    write(tre_a07)
    write(value_set("visibilite-document", "Masquage et visibilité d'un document dans le "
                    "DMP (TRE_A07)", [{"system": TRE_A07}]))
    write(value_set("ccam-mammographie", "Actes CCAM de mammographie (R-SCOPE-2)", [
        {"system": CCAM, "filter": [{"property": "mammographie", "op": "=", "value": "true"}]}]))
    for jdv, vid, title in (
            ("JDV_ModaliteAcquisition_CISIS.xml", "modalite-acquisition",
             "Modalités d'acquisition DICOM (JDV ANS)"),
            ("JDV_Modalite_demandeActeImagerie_CISIS.xml", "modalite-demande",
             "Modalités d'une demande d'acte d'imagerie (JDV ANS)"),
            ("JDV_RegionAnatomique_CISIS.xml", "region-anatomique",
             "Régions anatomiques (JDV ANS, SNOMED CT)")):
        oid, concepts = svs(jdv)
        systems: dict[str, list[dict[str, str]]] = {}
        for system, code, display in concepts:
            systems.setdefault(system, []).append({"code": code, "display": display})
        vs = value_set(vid, title, [{"system": s, "concept": c} for s, c in systems.items()])
        vs["identifier"] = [{"system": "urn:ietf:rfc:3986", "value": f"urn:oid:{oid}"}]
        write(vs)
    dcm_codes = sorted({(c, d) for jdv in ("JDV_ModaliteAcquisition_CISIS.xml",
                                            "JDV_Modalite_demandeActeImagerie_CISIS.xml")
                        for s, c, d in svs(jdv)[1] if s == DCM})
    dose = [("113813", "CT Dose Length Product Total"), ("113830", "Mean CTDIvol"),
            ("113838", "DLP"),
            ("111637", "Accumulated Dose Area Product"), ("113722", "Dose Area Product Total"),
            ("113725", "Dose (RP) Total"), ("113726", "Fluoro Dose Area Product Total"),
            ("113727", "Acquisition Dose Area Product Total"),
            ("113728", "Fluoro Dose (RP) Total"), ("113729", "Acquisition Dose (RP) Total"),
            ("113730", "Total Fluoro Time"), ("113507", "Administered activity")]
    # components of a CT acquisition's dose (TID 10013) and non-image series (PS3.16 CID 33)
    dose_parts = [("113835", "CTDIw Phantom Type"), ("113690", "IEC Head Dosimetry Phantom"),
                  ("113691", "IEC Body Dosimetry Phantom")]
    other_series = [("SR", "SR Document"), ("KO", "Key Object Selection"),
                    ("PR", "Presentation State"), ("DOC", "Document")]
    write(code_system("dcm", "DICOM DCM (extrait : modalités et doses)", DCM,
                      [_concept(c, d) for c, d in [*dcm_codes, *other_series, *dose,
                                                   *dose_parts]], content="fragment"))
    acquisition = [{"code": c, "display": d} for s, c, d in
                   svs("JDV_ModaliteAcquisition_CISIS.xml")[1] if s == DCM]
    write(value_set("modalite-serie", "Modalités d'une série DICOM (acquisition, SR, KO, PR, "
                    "DOC)", [{"system": DCM, "concept": acquisition + [
                        {"code": c, "display": d} for c, d in other_series]}]))
    write(value_set("dose-rayonnement", "Indicateurs de dose (R-REP-3)",
                    [{"system": DCM, "concept": [{"code": c, "display": d} for c, d in dose]}]))
    laterality = [("24028007", "côté droit"), ("7771000", "côté gauche"),
                  ("51440002", "bilatéral")]
    write(value_set("lateralite", "Latéralité (SNOMED CT)", [
        {"system": SCT, "concept": [{"code": c, "display": d} for c, d in laterality]}]))
    pregnancy = [("77386006", "Enceinte"), ("60001007", "Non enceinte"),
                 ("261665006", "Inconnu")]
    regions = [(c, d) for s, c, d in svs("JDV_RegionAnatomique_CISIS.xml")[1] if s == SCT]
    write(code_system("sct-teleimagerie", "SNOMED CT (extrait : régions, latéralité, "
                      "grossesse)", SCT,
                      [_concept(c, d) for c, d in [*regions, *laterality, *pregnancy]],
                      content="fragment"))
    write(value_set("statut-grossesse", "Statut de grossesse (R-REQ-3, R-VAL-6)", [
        {"system": SCT, "concept": [{"code": c, "display": d} for c, d in pregnancy]}]))
    loinc = [("18748-4", "Diagnostic imaging study"), ("19005-8", "Radiology Imaging study "
             "[Impression] (narrative)"), ("55111-9", "Current imaging procedure descriptions"),
             ("73569-6", "Radiation exposure and protection information"),
             ("55752-0", "Clinical information"), ("55115-0", "Requested imaging studies "
             "information"), ("11329-0", "History general Narrative - Reported"),
             ("59776-5", "Procedure findings Narrative"), ("18834-2", "Radiology Comparison "
             "study (narrative)"), ("55107-7", "Addendum Document"),
             ("82810-3", "Pregnancy status")]
    write(code_system("loinc-imagerie", "LOINC (extrait : compte rendu d'imagerie)", LOINC,
                      [_concept(c, d) for c, d in loinc], content="fragment"))
    write(value_set("loinc-compte-rendu", "Codes LOINC du compte rendu d'imagerie",
                    [{"system": LOINC, "concept": [{"code": "18748-4",
                                                    "display": loinc[0][1]}]}]))
    for table, cid, title in (("table_obr.md", "tlr-obr-procedure", "TLR_OBR_PROCEDURE"),
                              ("table_obs.md", "tlr-observation", "TLR_OBSERVATION"),
                              ("table_orga.md", "tlr-type-organisation",
                               "TLR_TYPE_ORGANISATION")):
        url = f"{BASE}/CodeSystem/{cid}"
        cs = code_system(cid, f"Table locale ANS téléradiologie {title}", url,
                         [_concept(c, d) for c, d in tlr_table(table)])
        cs["identifier"] = [{"system": "urn:ietf:rfc:3986", "value": title}]
        write(cs)
        write(value_set(cid, title, [{"system": url}]))
    reliability = json.loads((REFS / "fr-core" / "package" /
                              "CodeSystem-fr-core-cs-v2-0445.json").read_text())
    write(code_system("fr-core-cs-v2-0445", "Statut de l'identité (FR Core, table 0445)",
                      reliability["url"], [_concept(c["code"], c["display"])
                                           for c in reliability["concept"]]))
    write(value_set("fiabilite-identite", "Fiabilité de l'identité (R-EXAM-1)",
                    [{"system": reliability["url"]}]))
    hl7_modality = {"CT": "CT", "MR": "MR", "US": "US", "CR": "CR", "DX": "DX", "MG": "MG",
                    "NM": "NM", "PT": "PT", "XA": "XA", "RF": "RF"}
    write({"resourceType": "ConceptMap", "id": "hl7v2-modalite-vers-dcm",
           "url": f"{BASE}/ConceptMap/hl7v2-modalite-vers-dcm", "version": VERSION,
           "name": "Hl7v2ModaliteVersDcm", "title": "Modalité HL7v2 (OBX MODALITE_IMAGERIE) "
           "vers DICOM DCM", "status": "active", "publisher": "teleimagerie",
           "sourceUri": f"{BASE}/ValueSet/modalite-demande",
           "targetUri": f"{BASE}/ValueSet/modalite-acquisition",
           "group": [{"source": "DCM", "target": DCM, "element": [
               {"code": k, "target": [{"code": v, "equivalence": "equivalent"}]}
               for k, v in hl7_modality.items()]}]})
    print(f"wrote {len(list(OUT.glob('*.json')))} resources to {OUT}")


if __name__ == "__main__":
    main()
