"""The radiologist's pages in a browser (issue 30): the full flow clicked through the
console — sign in as the remote imager, find the request in the worklist, accept and
schedule it, see the study (series, dose, viewer link) once the modality sent it, write
and sign the final report, and see its deliveries sent (DMP, RIS, MSSanté) — and the
worklist's live update. Screenshots for docs/console (TELEIMG_SCREENSHOTS=1)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from demo.loop import wait as settle
from tests.browser.conftest import wait
from tests.browser.harness import Served, screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
PATIENT = {"family": "BERTHELOT", "given": "Zoé", "ins": "291077512345612",
           "ipp": "IPP-CONSOLE-1", "born": "19910704"}


def _request(served: Served, placer: str, family: str, ins: str) -> dict[str, Any]:
    """A request posted by an EHR (FHIR), its patient's consents recorded."""
    sr = served.loop.request_over_fhir(placer, served.refs, family, ins)
    served.loop.consent(sr["subject"]["reference"])
    return sr


def _row(driver: Any, sr: str) -> Any:
    found = driver.find_elements(By.CSS_SELECTOR, f'tr[data-request="{sr}"]')
    return found[0] if found else None


def test_imager_accepts_reads_and_signs(sign_in: Any, served: Served) -> None:
    sr = _request(served, "CONSOLE-0001", PATIENT["family"], PATIENT["ins"])
    driver = sign_in("remote-imager")
    assert driver.current_url.endswith("/console/demandes")
    row = wait(driver, lambda d: _row(d, sr["id"]))
    assert "BERTHELOT" in row.text and "Demande reçue" in row.text
    row.find_element(By.CSS_SELECTOR, "a").click()
    wait(driver, lambda d: f"/console/demande/{sr['id']}" in d.current_url)
    assert "Identité validée" in driver.find_element(By.ID, "ins-status").text
    assert "accordé" in driver.find_element(By.ID, "consentement").text
    # accept: the operations offered are exactly the state machine's for an imager
    offered = {b.get_attribute("data-op") for b in
               driver.find_elements(By.CSS_SELECTOR, "button[data-op]")}
    assert offered == {"accept", "refuse", "cancel"}, offered
    driver.find_element(By.CSS_SELECTOR, "#op-accept summary").click()
    driver.find_element(By.ID, "f-accept-protocol").send_keys("Scanner thoracique injecté")
    driver.find_element(By.CSS_SELECTOR, 'button[data-op="accept"]').click()
    wait(driver, lambda d: "Demande validée" in d.find_element(By.CSS_SELECTOR,
                                                                ".summary").text)
    assert "fait" in driver.find_element(By.CSS_SELECTOR, ".alert.ok").text
    # a refusal without its coded reason: the server's French message, on the page
    driver.find_element(By.CSS_SELECTOR, "#op-refuse summary").click()
    driver.find_element(By.CSS_SELECTOR, 'button[data-op="refuse"]').click()
    alert = wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, ".alert.erreur"))
    assert "motif codé est obligatoire" in alert.text
    driver.find_element(By.CSS_SELECTOR, "#op-schedule summary").click() \
        if not driver.find_element(By.ID, "op-schedule").get_attribute("open") else None
    driver.find_element(By.CSS_SELECTOR, 'button[data-op="schedule"]').click()
    wait(driver, lambda d: "Examen planifié" in d.find_element(By.CSS_SELECTOR,
                                                                ".summary").text)
    # the site performs the exam; the modality sends the images and the dose report
    served.loop.op(served.loop.ris, sr["id"], "start")
    uid = served.loop.images("CONSOLE-0001", PATIENT["ipp"],
                             f"{PATIENT['family']}^{PATIENT['given']}", PATIENT["born"])
    assert settle(lambda: (s := served.loop.study(uid)) and s.get("basedOn"), 30)
    assert settle(lambda: served.loop.state(sr["id"]) == "images-disponibles", 30)
    settle(lambda: served.loop.ris.get("/Observation", params={
        "part-of": f"ImagingStudy/{served.loop.study(uid)['id']}"}).json().get("entry"), 20)
    driver.refresh()
    study = driver.find_element(By.ID, "etude")
    assert uid in study.text and "CT" in study.text
    assert driver.find_elements(By.CSS_SELECTOR, "#doses li"), study.text
    assert driver.find_element(By.ID, "viewer").get_attribute("href").startswith("http")
    # the report: written, signed final
    editor = driver.find_element(By.ID, "editeur")
    if not editor.get_attribute("open"):
        editor.find_element(By.TAG_NAME, "summary").click()
    driver.find_element(By.ID, "f-cr-text").send_keys(
        "Pas d'embolie pulmonaire.\n\nParenchyme pulmonaire sans anomalie.")
    driver.find_element(By.ID, "f-cr-conclusion").send_keys("Examen normal.")
    screenshot(driver, "demande-compte-rendu")
    driver.execute_script("window.confirm = function () { return true; };")
    driver.find_element(By.CSS_SELECTOR, 'button[data-report="final"]').click()
    wait(driver, lambda d: "Compte rendu définitif" in d.find_element(
        By.CSS_SELECTOR, ".summary").text, 90)
    # its deliveries, planned in the report's write unit, then sent by the sender
    def delivered(d: Any) -> bool:
        d.refresh()
        states = [r.get_attribute("data-delivery") for r in
                  d.find_elements(By.CSS_SELECTOR, "tr[data-delivery]")]
        return len(states) >= 3 and all(s == "envoye" for s in states)

    wait(driver, delivered, 90)
    assert "envoyé" in driver.find_element(By.ID, "compte-rendu").text
    screenshot(driver, "demande")


def _late(served: Served, sr: dict[str, Any], placer: str) -> str:
    """Another request for the same patient, written two days ago in extreme urgency:
    its due time (R-VAL-5) has passed."""
    late = {k: v for k, v in sr.items() if k not in ("id", "meta")}
    late["meta"] = {"profile": sr["meta"]["profile"]}
    late["identifier"] = [{**sr["identifier"][0], "value": placer}]
    late["priority"] = "stat"
    late["authoredOn"] = (datetime.now(UTC) - timedelta(days=2)).isoformat(timespec="seconds")
    return served.loop.create(late).split("/")[1]


def test_worklist_updates_live_and_filters(sign_in: Any, served: Served) -> None:
    driver = sign_in("remote-imager")
    driver.execute_script("window.notReloaded = true;")
    sr = _request(served, "CONSOLE-0002", "LIVEUPDATE", "291077512345699")
    row = wait(driver, lambda d: _row(d, sr["id"]), 30)
    assert "LIVEUPDATE" in row.text
    assert driver.execute_script("return window.notReloaded === true;")
    late = _late(served, sr, "CONSOLE-0003")
    row = wait(driver, lambda d: _row(d, late), 30)
    assert "late" in row.get_attribute("class") and "En retard" in row.text
    # sorted by due time: the late one first
    first = driver.find_element(By.CSS_SELECTOR, "#demandes tbody tr")
    assert first.get_attribute("data-request") == late
    screenshot(driver, "demandes")
    # the modality filter swaps the list in place
    Select(driver.find_element(By.ID, "f-modalite")).select_by_value("MR")
    wait(driver, lambda d: _row(d, sr["id"]) is None)
    assert driver.execute_script("return window.notReloaded === true;")
    assert "Aucune demande" in driver.find_element(By.ID, "demandes").text


def test_tablet_width(sign_in: Any, served: Served, browser: Any) -> None:
    browser.set_window_size(820, 1180)
    try:
        driver = sign_in("remote-imager")
        table = driver.find_element(By.ID, "demandes")
        # the list fits: no horizontal scrolling of the page
        assert driver.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1;")
        assert table.is_displayed()
        screenshot(driver, "demandes-tablette")
    finally:
        browser.set_window_size(1280, 800)
