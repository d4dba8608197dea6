"""What the radiologist's pages make of the core's answers (issue 30): the transitions
offered (R-VAL-*: the state machine's table for the state, act kind and roles), late
requests (R-VAL-5), the identity's INS status (R-EXAM-1), the operations' Parameters and
the report the editor issues (R-REP-1, R-REP-3, R-CONS-5)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from adapters.console import requests as rq
from adapters.console.pages.request import parameters, report_resource, viewer
from fhir_server.security import masking
from fhir_server.workflow.machine import REFUSAL_SYSTEM, STATE_SYSTEM, TRANSITIONS


def _names(state: str, kind: str, *roles: str) -> set[str]:
    return {t.name for t in rq.allowed(state, kind, roles)}


def test_transitions_offered_are_the_machines() -> None:
    assert _names("recue", "telediagnostic", "remote-imager") == {"accept", "refuse", "cancel"}
    assert _names("recue", "telediagnostic", "requesting-physician") == {"cancel"}
    assert _names("validee", "teleexpertise", "remote-imager") == {"refuse", "cancel"}
    assert _names("planifiee", "telediagnostic", "radiographer") == {
        "schedule", "start", "images-available"}
    assert _names("cr-definitif", "telediagnostic", "remote-imager") == set()
    # never a transition the server fires itself (reports, consent)
    for state in ("images-disponibles", "cr-preliminaire"):
        assert all(TRANSITIONS[n].operation for n in _names(state, "telediagnostic", "ris"))


def _task(state: str, due: datetime) -> dict[str, object]:
    return {"businessStatus": {"coding": [{"system": STATE_SYSTEM, "code": state}]},
            "restriction": {"period": {"end": due.isoformat()}}}


def test_late_is_an_open_request_past_its_due_time() -> None:
    now = datetime.now(UTC)
    assert rq.late(_task("recue", now - timedelta(minutes=1)))
    assert not rq.late(_task("recue", now + timedelta(minutes=1)))
    assert not rq.late(_task("cr-definitif", now - timedelta(days=1)))  # closed


def test_identity_status_and_ins() -> None:
    patient = {"resourceType": "Patient", "name": [{"use": "official", "family": "Martin",
                                                    "given": ["Claire"]}],
               "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8",
                               "value": "279035121518989"}],
               "extension": [{"url": rq.FR_CORE + "fr-core-identity-reliability",
                              "extension": [{"url": "identityStatus", "valueCoding": {
                                  "code": "QUAL"}}]}]}
    who = rq.identity(patient)
    assert (who.name, who.ins, who.status) == ("MARTIN Claire", "279035121518989",
                                               "Identité qualifiée (INS)")
    assert rq.identity({"resourceType": "Patient"}).status.startswith("Statut")


def test_operation_parameters_from_forms() -> None:
    assert parameters("refuse", {"reason": "doublon", "text": " déjà faite ",
                                 "alternative": ""}) == [
        {"name": "reason", "valueCoding": {"system": REFUSAL_SYSTEM, "code": "doublon"}},
        {"name": "text", "valueString": "déjà faite"}]
    scheduled = parameters("schedule", {"occurrence": "2026-12-04T09:30"})
    assert scheduled == [{"name": "occurrence", "valueDateTime": "2026-12-04T09:30:00+01:00"}]
    assert parameters("accept", {"qualite-images": "1", "protocol": "TDM"}) == [
        {"name": "protocol", "valueString": "TDM"},
        {"name": "qualite-images", "valueBoolean": True}]
    assert parameters("unknown", {"text": "x"}) == []


def test_report_from_the_editor() -> None:
    sr = {"id": "sr1", "subject": {"reference": "Patient/p1"}}
    study = {"ref": "ImagingStudy/s1", "started": "2026-12-03T10:00:00+01:00",
             "doses": [{"ref": "Observation/d1"}]}
    report = report_resource(sr, {"text": "Ligne <1>\n\nDeux & trois", "conclusion": "RAS",
                                  "critical": "1", "masque-MASQUE_PS": "1"},
                             "final", "Practitioner/im", study, None)
    assert report["status"] == "final" and report["language"] == "fr-FR"
    assert report["text"]["div"] == ('<div xmlns="http://www.w3.org/1999/xhtml"><p>Ligne '
                                     '&lt;1&gt;</p><p>Deux &amp; trois</p></div>')
    assert report["result"] == [{"reference": "Observation/d1"}]
    assert report["conclusionCode"][0]["coding"][0]["code"] == "AA"
    assert masking.chosen(report) == ["MASQUE_PS"]
    # the next version keeps its id and drops what the editor no longer says
    again = report_resource(sr, {"conclusion": "RAS"}, "amended", "Practitioner/im", study,
                            {**report, "id": "r1", "meta": {"versionId": "2"}})
    assert again["id"] == "r1" and "conclusionCode" not in again and "text" not in again
    assert "extension" not in again


def test_viewer_link() -> None:
    wado = {"address": "https://pacs/dicom-web/", "connectionType": {"code": "dicom-wado-rs"}}
    assert viewer("", wado, "1.2.3") == "https://pacs/dicom-web/studies/1.2.3"
    assert viewer("https://drimbox/viewer?study={uid}", wado, "1.2.3") == \
        "https://drimbox/viewer?study=1.2.3"
