"""The console's foundation in a browser (issue 30): sign-in with a development identity,
the layout (navigation per role, sign-out), the vendored assets loaded (no CDN), the CSRF
token sent by htmx, and the 1280×800 and tablet layouts."""

from __future__ import annotations

from typing import Any

import pytest
from selenium.webdriver.common.by import By

from tests.browser.conftest import wait
from tests.browser.harness import Served, screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


def test_sign_in_page_offers_development_identities(browser: Any, served: Served) -> None:
    browser.delete_all_cookies()
    browser.get(served.url("/console/"))
    wait(browser, lambda d: "/console/connexion" in d.current_url)
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "fr"
    roles = {b.get_attribute("data-role") for b in
             browser.find_elements(By.CSS_SELECTOR, "button[data-role]")}
    assert {"remote-imager", "requesting-physician", "secretary", "radiographer", "admin",
            "auditor"} <= roles
    # the vendored htmx ran (no CDN: the page's only scripts are ours)
    assert browser.execute_script("return typeof window.htmx") == "object"
    sources = [s.get_attribute("src") for s in browser.find_elements(By.TAG_NAME, "script")]
    assert all(s.startswith(served.base + "/console/static/") for s in sources), sources
    screenshot(browser, "connexion")


def test_sign_in_and_out(sign_in: Any, served: Served) -> None:
    driver = sign_in("auditor")
    driver.get(served.url("/console/profil"))
    assert "Auditeur" in driver.find_element(By.CSS_SELECTOR, ".who").text
    driver.find_element(By.CSS_SELECTOR, "form[action='/console/deconnexion'] button").click()
    wait(driver, lambda d: "/console/connexion" in d.current_url)
    driver.get(served.url("/console/profil"))
    wait(driver, lambda d: "/console/connexion" in d.current_url)
