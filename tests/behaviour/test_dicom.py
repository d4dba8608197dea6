"""The DICOM adapter's pipeline on both stores: Part 10 headers -> ImagingStudy, Radiation
Dose SRs -> dose Observations (issue 7; R-REP-3, R-REP-7, R-EXAM-1)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.data import get_charset_files, get_testdata_file
from pydicom.uid import generate_uid

from adapters.dicom.pipeline import Importer
from adapters.dicom.settings import DicomSettings
from fhir_server.server.dispatch import FhirServer
from tests.behaviour.dicom_world import (
    PLACER_SYSTEM,
    ct_images,
    ct_rdsr,
    nm_rdsr,
    projection_rdsr,
    write,
)
from tests.behaviour.workflow_world import World

DCM = "http://dicom.nema.org/resources/ontology/DCM"
WADO = "https://pacs.example.fr/dicom-web"


class DicomWorld(World):
    def __init__(self, core: FhirServer, data_dir: Path) -> None:
        super().__init__(core, data_dir)
        self.importer = Importer(core, DicomSettings(wado_url=WADO))
        self.pacs = self.user(["pacs"], scopes=["system/*.cruds"])

    def ordered(self, placer: str, scheduled: bool = True, **kw: Any) -> str:
        """A request (validated and scheduled) with placer order number ``placer``."""
        return (self.ready if scheduled else self.request)(identifier=[{
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                 "code": "PLAC"}]},
            "system": PLACER_SYSTEM, "value": placer}], **kw)

    def files(self, *datasets: Any) -> list[Path]:
        return [write(ds, self.dir / "in") for ds in datasets]

    def get(self, query: str) -> list[dict[str, Any]]:
        r = self.ris.get(f"/fhir/{query}")
        assert r.status_code == 200, r.text
        return [e["resource"] for e in r.json().get("entry", [])
                if e.get("search", {}).get("mode") == "match"]

    def study_of(self, uid: str) -> dict[str, Any]:
        [study] = self.get(f"ImagingStudy?identifier=urn:dicom:uid|urn:oid:{uid}")
        return study

    def doses(self, study: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for o in self.get(f"Observation?part-of=ImagingStudy/{study['id']}"):
            out.setdefault(o["code"]["coding"][0]["code"], []).append(o)
        return out


@pytest.fixture
def world(secured: FhirServer, tmp_path: Path) -> DicomWorld:
    return DicomWorld(secured, tmp_path)


def test_ct_series_becomes_imaging_study_of_its_request(world: DicomWorld) -> None:
    """R-REP-7: study identifiers, started with its offset, series and instances, the
    archive endpoint, basedOn the request found by placer order number; the request
    moves to images available."""
    sr = world.ordered("DEM-CT-1")
    uid = generate_uid()
    summary = world.importer.import_paths(world.files(*ct_images(
        uid, 3, placer="DEM-CT-1", accession="ACC-1")))
    assert summary.failed == [] and summary.imported == 3
    study = world.study_of(uid)
    assert {"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"} in study["identifier"]
    acsn = [i for i in study["identifier"] if i.get("type")]
    assert acsn[0]["value"] == "ACC-1"
    assert study["started"] == "2026-11-22T10:15:00+01:00"
    assert study["basedOn"] == [{"reference": f"ServiceRequest/{sr}"}]
    assert study["subject"] == {"reference": world.refs["patient"]}
    assert study["modality"] == [{"system": DCM, "code": "CT"}]
    assert (study["numberOfSeries"], study["numberOfInstances"]) == (1, 3)
    [series] = study["series"]
    assert series["bodySite"]["code"] == "43799004"  # CHEST, PS3.16 Annex L
    assert series["description"] == "Thorax sans injection"
    assert [i["number"] for i in series["instance"]] == [1, 2, 3]
    assert series["instance"][0]["sopClass"] == {
        "system": "urn:ietf:rfc:3986", "code": "urn:oid:1.2.840.10008.5.1.4.1.1.2"}
    endpoint = world.get(study["endpoint"][0]["reference"].replace("/", "?_id="))[0]
    assert endpoint["address"] == WADO
    assert endpoint["connectionType"]["code"] == "dicom-wado-rs"
    assert world.state(sr) == "images-disponibles"


def test_reimport_is_idempotent_and_new_instances_merge(world: DicomWorld) -> None:
    world.ordered("DEM-CT-2")
    uid, series = generate_uid(), generate_uid()
    first = world.files(*ct_images(uid, 2, series_uid=series, placer="DEM-CT-2"))
    world.importer.import_paths(first)
    assert world.study_of(uid)["meta"]["versionId"] == "1"
    again = world.importer.import_paths(first)
    assert again.failed == [] and again.studies[0].new_instances == 0
    assert world.study_of(uid)["meta"]["versionId"] == "1"  # nothing new: no version
    more = world.files(*ct_images(uid, 3, placer="DEM-CT-2"),
                       *ct_images(uid, 1, series_uid=series, placer="DEM-CT-2"))
    world.importer.import_paths(more)
    study = world.study_of(uid)
    assert study["meta"]["versionId"] == "2"  # one version for the whole batch
    assert (study["numberOfSeries"], study["numberOfInstances"]) == (2, 6)


def test_ct_rdsr_gives_dlp_total_and_ctdivol_per_acquisition(world: DicomWorld) -> None:
    """TID 10011 walked by concept codes: 113813, and per 113819 acquisition 113830 with
    its 113838 DLP and 113835 phantom (R-REP-3)."""
    world.ordered("DEM-CT-3")
    uid = generate_uid()
    rdsr = ct_rdsr(uid, [(12.5, 450.0), (8.25, 310.5)], 760.5, placer="DEM-CT-3")
    summary = world.importer.import_paths(world.files(*ct_images(uid, 2, placer="DEM-CT-3"),
                                                      rdsr))
    assert summary.failed == [] and summary.studies[0].doses == 3
    study = world.study_of(uid)
    assert study["modality"] == [{"system": DCM, "code": "CT"}]  # the SR series is no modality
    assert {s["modality"]["code"] for s in study["series"]} == {"CT", "SR"}
    doses = world.doses(study)
    [dlp] = doses["113813"]
    assert dlp["valueQuantity"] == {"value": 760.5, "unit": "mGy.cm",
                                    "system": "http://unitsofmeasure.org", "code": "mGy.cm"}
    assert dlp["subject"] == {"reference": world.refs["patient"]}
    assert dlp["method"]["coding"][0]["code"] == "rdsr"
    assert dlp["effectiveDateTime"].startswith("2026-11-22T10:30:00")
    ctdi = sorted(doses["113830"], key=lambda o: o["valueQuantity"]["value"])
    assert [o["valueQuantity"]["value"] for o in ctdi] == [8.25, 12.5]
    components = {c["code"]["coding"][0]["code"]: c for c in ctdi[1]["component"]}
    assert components["113838"]["valueQuantity"]["value"] == 450
    assert components["113835"]["valueCodeableConcept"]["coding"][0]["code"] == "113691"
    # the same report again writes nothing new
    world.importer.import_paths([world.dir / "in" / f"{rdsr.SOPInstanceUID}.dcm"])
    assert sum(len(v) for v in world.doses(world.study_of(uid)).values()) == 3


def test_projection_rdsr_units_converted_to_the_profile_units(world: DicomWorld) -> None:
    """Gy.m2 -> Gy.cm2, Gy -> mGy, min -> s, from each NUM's measurement units."""
    world.ordered("DEM-RX-1", modality="DX")
    uid = generate_uid()
    summary = world.importer.import_paths(world.files(projection_rdsr(
        uid, 0.00125, 0.0042, 1.5, placer="DEM-RX-1")))
    assert summary.failed == []
    doses = world.doses(world.study_of(uid))
    assert doses["113722"][0]["valueQuantity"]["value"] == 12.5
    assert doses["113722"][0]["valueQuantity"]["code"] == "Gy.cm2"
    assert doses["113725"][0]["valueQuantity"] == {
        "value": 4.2, "unit": "mGy", "system": "http://unitsofmeasure.org", "code": "mGy"}
    assert doses["113726"][0]["valueQuantity"]["value"] == 6.25
    assert doses["113730"][0]["valueQuantity"]["value"] == 90
    # an RDSR-only study takes the requested modality
    assert world.study_of(uid)["modality"][0]["code"] == "DX"


def test_radiopharmaceutical_activity(world: DicomWorld) -> None:
    world.ordered("DEM-NM-1", scheduled=False, modality="PT")
    uid = generate_uid()
    world.importer.import_paths(world.files(nm_rdsr(uid, 245.0, placer="DEM-NM-1")))
    [activity] = world.doses(world.study_of(uid))["113507"]
    assert activity["valueQuantity"]["value"] == 245
    assert activity["valueQuantity"]["unit"] == "MBq"


def test_without_rdsr_ctdivol_from_image_headers_marked(world: DicomWorld) -> None:
    world.ordered("DEM-CT-4")
    uid = generate_uid()
    world.importer.import_paths(world.files(*ct_images(uid, 2, ctdi=9.5,
                                                       placer="DEM-CT-4")))
    [ctdi] = world.doses(world.study_of(uid))["113830"]
    assert ctdi["valueQuantity"]["value"] == 9.5
    assert ctdi["method"]["coding"][0]["code"] == "image-header"


def test_rdsr_arriving_after_the_images_supersedes_header_doses(world: DicomWorld) -> None:
    """R-REP-3: the header's CTDIvol stood in for the missing RDSR; once the RDSR comes,
    only its values remain (the superseded ones stay in the history)."""
    world.ordered("DEM-CT-4B")
    uid = generate_uid()
    world.importer.import_paths(world.files(*ct_images(uid, 2, ctdi=9.5,
                                                       placer="DEM-CT-4B")))
    [header] = world.doses(world.study_of(uid))["113830"]
    summary = world.importer.import_paths(world.files(ct_rdsr(
        uid, [(12.0, 400.0)], 400.0, placer="DEM-CT-4B")))
    assert summary.failed == []
    doses = world.doses(world.study_of(uid))
    assert {o["method"]["coding"][0]["code"] for v in doses.values() for o in v} == {"rdsr"}
    assert doses["113830"][0]["valueQuantity"]["value"] == 12
    assert world.ris.get(f"/fhir/Observation/{header['id']}").status_code == 410


WAITING = ("https://teleimagerie.fr/fhir/CodeSystem/teleimagerie-flag", "demande-a-rattacher")
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"


def numbers(accession: str, placer: str = "") -> list[dict[str, Any]]:
    """A request's placer order number and accession number identifiers."""
    return [{"type": {"coding": [{"system": V2_0203, "code": "PLAC"}]},
             "system": PLACER_SYSTEM, "value": placer or f"DEM-{accession}"},
            {"type": {"coding": [{"system": V2_0203, "code": "ACSN"}]},
             "system": "urn:oid:1.2.250.1.999.3", "value": accession}]


def early(uid: str, accession: str, sex: str = "F", born: str = "19800517",
          **kw: Any) -> list[Any]:
    """A CT and its RDSR whose header names a patient but no request we know."""
    datasets = [*ct_images(uid, 2, accession=accession, **kw),
                ct_rdsr(uid, [(10.0, 300.0)], 300.0, accession=accession, **kw)]
    for ds in datasets:
        ds.PatientSex, ds.PatientBirthDate = sex, born
    return datasets


def tags(resource: dict[str, Any]) -> set[tuple[str, str]]:
    return {(t["system"], t["code"]) for t in resource.get("meta", {}).get("tag", [])}


def test_study_before_its_request_waits_on_a_provisional_patient_then_attaches(
        world: DicomWorld) -> None:
    """R-EXAM-1, R-REP-7: images that arrive first are kept, on a provisional identity
    flagged for review; the request with their accession number attaches them, its
    patient replaces the provisional one (recorded, not silent) and, once validated, the
    request has its images."""
    uid = generate_uid()
    summary = world.importer.import_paths(world.files(*early(uid, "ACC-TOT")))
    assert summary.failed == [] and summary.imported == 3
    assert summary.studies[0].waiting
    study = world.study_of(uid)
    assert "basedOn" not in study and WAITING in tags(study)
    provisional = world.get(study["subject"]["reference"].replace("/", "?_id="))[0]
    status = provisional["extension"][0]["extension"][0]["valueCoding"]
    assert status["code"] == "PROV"
    assert provisional["name"] == [{"family": "DUPONT", "given": ["Claire"]}]
    assert (provisional["gender"], provisional["birthDate"]) == ("female", "1980-05-17")
    assert provisional["identifier"][0]["value"] == "IPP001"  # no issuer: kept, unmatched
    [flag] = world.get(f"Flag?patient=Patient/{provisional['id']}")
    assert flag["code"]["coding"][0]["code"] == "identite-a-verifier"
    assert "ACC-TOT" in flag["code"]["text"]
    doses = world.doses(study)
    assert doses["113813"][0]["subject"] == study["subject"]
    assert "basedOn" not in doses["113813"][0]

    sr = world.request(identifier=numbers("ACC-TOT"))
    study = world.study_of(uid)
    assert study["basedOn"] == [{"reference": f"ServiceRequest/{sr}"}]
    assert study["subject"] == {"reference": world.refs["patient"]}
    assert WAITING not in tags(study)
    assert world.doses(study)["113813"][0]["basedOn"] == [
        {"reference": f"ServiceRequest/{sr}"}]
    assert world.doses(study)["113813"][0]["subject"] == study["subject"]
    closed = world.get(f"Patient?_id={provisional['id']}")[0]
    assert closed["active"] is False
    assert closed["link"] == [{"other": {"reference": world.refs["patient"]},
                               "type": "replaced-by"}]
    [flag] = world.get(f"Flag?patient=Patient/{provisional['id']}")
    assert flag["status"] == "active"  # the identity-vigilance cell still reviews it
    assert world.state(sr) == "recue"
    world.consent("acte", "teleimagerie")
    assert world.op(world.imager, sr, "accept").status_code == 200
    assert world.state(sr) == "images-disponibles"  # validated: its images are there


def test_waiting_study_of_a_contradicting_identity_is_not_attached(world: DicomWorld
                                                                   ) -> None:
    """R-EXAM-1: same accession number, but the header's patient is a man born in 1950:
    the study keeps waiting and the request's patient is flagged, never merged."""
    uid = generate_uid()
    world.importer.import_paths(world.files(*early(uid, "ACC-DIFF", "M", "19500101")))
    sr = world.request(identifier=numbers("ACC-DIFF"))
    study = world.study_of(uid)
    assert "basedOn" not in study and WAITING in tags(study)
    assert study["subject"] != {"reference": world.refs["patient"]}
    flags = world.get(f"Flag?patient={world.refs['patient']}")
    [flag] = flags
    assert "1950-01-01" in flag["code"]["text"] and sr in flag["code"]["text"]


def test_study_without_request_of_a_known_patient_waits_on_that_patient(
        world: DicomWorld) -> None:
    """The header's Patient ID and issuer designate one known patient: no provisional
    identity is created; a request for another patient does not take the study."""
    known = world._create({"resourceType": "Patient", "name": [{"family": "CONNU"}],
                           "gender": "female", "birthDate": "1980-05-17",
                           "telecom": [{"system": "phone", "value": "+33238000003"}],
                           "identifier": [{"system": "urn:oid:1.2.250.1.999.2",
                                           "value": "IPP-CONNU"}]})
    uid = generate_uid()
    world.importer.import_paths(world.files(*early(
        uid, "ACC-CONNU", patient_id="IPP-CONNU", issuer="1.2.250.1.999.2")))
    assert world.study_of(uid)["subject"] == {"reference": known}
    assert not world.get("Patient?name=DUPONT")
    world.request(identifier=numbers("ACC-CONNU"))
    study = world.study_of(uid)
    assert "basedOn" not in study and study["subject"] == {"reference": known}
    sr = world.request(patient=known, identifier=numbers("ACC-CONNU"))
    assert world.study_of(uid)["basedOn"] == [{"reference": f"ServiceRequest/{sr}"}]


def test_report_only_study_for_no_request_is_refused(world: DicomWorld) -> None:
    """Without an image nor a request, the exam's modality is unknown: refused, and
    nothing written."""
    uid = generate_uid()
    summary = world.importer.import_paths(world.files(
        ct_rdsr(uid, [(10.0, 300.0)], 300.0, accession="ACC-SR")))
    assert summary.imported == 0 and "modalité" in summary.failed[0][1]
    assert not world.get(f"ImagingStudy?identifier=urn:dicom:uid|urn:oid:{uid}")
    assert not world.get("Patient?name=DUPONT")


def test_header_naming_another_patient_is_flagged_not_merged(world: DicomWorld) -> None:
    """R-EXAM-1: the DICOM PatientID (with its issuer) is another patient's IPP."""
    other = world._create({"resourceType": "Patient", "name": [{"family": "AUTRE"}],
                           "gender": "male", "birthDate": "1950-01-01",
                           "identifier": [{"system": "urn:oid:1.2.250.1.999.2",
                                           "value": "IPP-AUTRE"}]})
    world.ordered("DEM-CT-5")
    uid = generate_uid()
    summary = world.importer.import_paths(world.files(*ct_images(
        uid, 1, placer="DEM-CT-5", patient_id="IPP-AUTRE", issuer="1.2.250.1.999.2")))
    assert summary.imported == 0
    assert other in summary.failed[0][1]
    flags = world.get(f"Flag?patient={world.refs['patient']}")
    assert flags and flags[0]["code"]["coding"][0]["code"] == "identite-a-verifier"


def test_corrupt_and_foreign_files_reported_rest_imported(world: DicomWorld) -> None:
    world.ordered("DEM-CT-6")
    uid = generate_uid()
    good = world.files(*ct_images(uid, 2, placer="DEM-CT-6"))
    truncated = world.dir / "in" / "tronque.dcm"
    truncated.write_bytes(good[0].read_bytes()[:300])
    text = world.dir / "in" / "notes.txt"
    text.write_text("pas du DICOM")
    summary = world.importer.import_paths([world.dir / "in"])
    assert summary.files == 4 and summary.imported == 2
    reasons = dict(summary.failed)
    assert set(reasons) == {str(truncated), str(text)}
    assert "pas un fichier DICOM" in reasons[str(text)]


def test_dicomdir_imports_the_files_it_references(world: DicomWorld, tmp_path: Path
                                                  ) -> None:
    source = Path(get_testdata_file("CT_small.dcm")).parent / "dicomdirtests"
    copy = tmp_path / "media"
    shutil.copytree(source, copy)
    for number in ("2", "134", "428"):  # the accession numbers of the media's studies
        world.ordered(number)
    summary = world.importer.import_paths([copy / "DICOMDIR"])
    assert summary.failed == []
    assert summary.files == 31 and len(summary.studies) == 6


def test_french_characters_decoded_from_the_character_set(world: DicomWorld) -> None:
    """ISO_IR 100 ``Buc^Jérôme`` (pydicom's chrFren.dcm, given the study date and a modality
    it lacks): decoded into the provisional patient's name, never mangled."""
    ds = dcmread(get_charset_files("chrFren.dcm")[0])
    assert ds.SpecificCharacterSet == "ISO_IR 100"
    ds.StudyDate, ds.StudyTime, ds.Modality = "20261122", "101500", "CT"
    path = world.dir / "chrFren.dcm"
    ds.save_as(path)
    summary = world.importer.import_paths([path])
    assert summary.failed == []
    study = world.study_of(ds.StudyInstanceUID)
    patient = world.get(study["subject"]["reference"].replace("/", "?_id="))[0]
    assert patient["name"] == [{"family": "Buc", "given": ["Jérôme"]}]


def test_pydicom_mr_and_non_dose_sr_files(world: DicomWorld) -> None:
    """pydicom's MR_small.dcm and test-SR.dcm (a Comprehensive SR that reports no dose):
    the MR study gets its modality; the SR is an instance of an SR series, no Observation."""
    from pydicom import dcmread

    world.ordered("DEM-MR-1", modality="MR")
    mr = dcmread(get_testdata_file("MR_small.dcm"), stop_before_pixels=True)
    sr = dcmread(get_testdata_file("test-SR.dcm"))
    for ds in (mr, sr):
        ds.PlacerOrderNumberImagingServiceRequest = "DEM-MR-1"
    sr.StudyInstanceUID = mr.StudyInstanceUID
    summary = world.importer.import_paths(world.files(mr, sr))
    assert summary.failed == [] and summary.imported == 2
    study = world.study_of(str(mr.StudyInstanceUID))
    assert study["modality"] == [{"system": DCM, "code": "MR"}]
    assert study["started"] == "2004-08-26T18:50:59-04:00"
    assert {s["modality"]["code"] for s in study["series"]} == {"MR", "SR"}
    assert world.doses(study) == {}
