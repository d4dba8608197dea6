"""The interface, indicators and audit pages in a browser (issue 30): an interface user
reprocesses a message in error; the indicators page draws its plots and exports CSV;
each page per role, nothing shown to a role the API refuses."""

from __future__ import annotations

from typing import Any

import pytest
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By

from tests.browser.conftest import wait
from tests.browser.harness import Served, screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
OMI = "02-omi-o23-sr-scanner-thorax.hl7"  # before its order: answered AE, kept in error
ORM = "01-orm-o01-nw-scanner-thorax.hl7"


def _text(driver: Any, tag: str) -> str:
    """The text of ``tag``, '' while the page is being replaced (a form's answer)."""
    try:
        return str(driver.find_element(By.TAG_NAME, tag).text)
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def _plotted(driver: Any) -> bool:
    try:
        return driver.find_element(By.TAG_NAME, "body").get_attribute(
            "data-plots-ready") == "1"
    except (NoSuchElementException, StaleElementReferenceException):
        return False


def test_interface_user_reprocesses_a_message_in_error(sign_in: Any, served: Served) -> None:
    assert served.loop.send_hl7(OMI) == ["AE"]
    assert served.loop.send_hl7(ORM) == ["AA"]  # the order arrives: the OMI applies now
    driver = sign_in("admin")
    driver.get(served.url("/console/interface?etat=error"))
    rows = wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#messages tbody tr a"))
    screenshot(driver, "interfaces")
    rows[0].click()
    wait(driver, lambda d: d.find_elements(By.ID, "reprocess"))
    assert driver.find_element(By.ID, "record-status").text == "en erreur"
    named = driver.find_element(By.ID, "t-ack").find_element(By.XPATH, "..").text
    assert "MSA-1" in named and "acknowledgment code" in named  # fields named (hl7apy)
    screenshot(driver, "interfaces-message")
    driver.find_element(By.ID, "reprocess").click()
    wait(driver, lambda d: "retraité" in _text(d, "main"))
    assert driver.find_element(By.ID, "record-status").text == "traité"


def test_indicators_page_draws_its_plots_and_exports_csv(sign_in: Any,
                                                         served: Served) -> None:
    if served.loop.request_of("DEMO-0001") is None:  # run alone: one request to count
        assert served.loop.send_hl7(ORM) == ["AA"]
    driver = sign_in("auditor")
    driver.get(served.url("/console/indicateurs?interval=day"))
    wait(driver, _plotted)
    charts = driver.find_elements(By.CSS_SELECTOR, ".chart[data-figure]")
    assert {c.get_attribute("data-figure") for c in charts} >= {
        "volumes-kind", "volumes-site", "volumes-modality", "delais", "part-distance"}
    volumes = driver.find_element(By.ID, "chart-volumes-kind")
    assert int(volumes.get_attribute("data-points")) > 0
    # the canvas holds drawn pixels (the plot's line and points), not a blank area
    drawn = driver.execute_script(
        "const c = arguments[0].querySelector('canvas');"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "let n = 0; for (let i = 3; i < d.length; i += 4) { if (d[i]) n++; } return n;",
        volumes)
    assert drawn > 100
    screenshot(driver, "indicateurs")
    link = driver.find_element(By.CSS_SELECTOR, "a[href*='figure=volumes-kind']")
    text = driver.execute_async_script(
        "const done = arguments[1];"
        "fetch(arguments[0], {credentials: 'same-origin'}).then(r => r.text()).then(done);",
        link.get_attribute("href"))
    lines = text.strip().splitlines()
    assert lines[0].startswith("début,") and len(lines) >= 2


def test_pages_per_role(sign_in: Any, served: Served) -> None:
    """Each page opens for its roles only; a refused page says so and shows no data."""
    allowed = {"/console/interface": {"admin"}, "/console/audit": {"auditor"},
               "/console/indicateurs": {"admin", "auditor", "remote-imager"}}
    for role in ("admin", "auditor", "secretary", "radiographer", "remote-imager"):
        driver = sign_in(role)
        nav = driver.find_element(By.CSS_SELECTOR, "nav.nav").text
        for path, roles in allowed.items():
            driver.get(served.url(path))
            main = wait(driver, lambda d: _text(d, "main"))
            title = _text(driver, "h1")
            if role in roles:
                assert "Accès refusé" not in title, (role, path)
            else:
                assert "Accès refusé" in title, (role, path)
                assert "DEMO" not in main and "ORM" not in main
        if role == "auditor":
            assert "Audit" in nav and "Interfaces" not in nav
            driver.get(served.url("/console/audit"))
            wait(driver, lambda d: d.find_elements(By.ID, "head-hash"))
            screenshot(driver, "audit")
