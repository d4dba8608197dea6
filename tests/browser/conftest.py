"""Browser-test fixtures (issue 30; docs/console/README.md "Writing a browser test").

- ``served`` (module): ``teleimagerie serve`` + peers + the demo directory
  (:class:`tests.browser.harness.Served`; ``served.loop`` seeds through the public API).
- ``browser`` (module): a headless Chromium (Selenium WebDriver) at 1280×800; skipped
  with the reason only when chromium/chromedriver cannot be installed.
- ``sign_in(role)``: signs the browser in with the development identity of ``role``
  (the sign-in page's buttons) and returns the driver.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.browser.harness import Served, browser_paths, chrome

WAIT = 20  # seconds an element may take to appear (a page, an htmx swap)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    server = Served(tmp_path_factory.mktemp("console"))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    paths = browser_paths()
    if isinstance(paths, str):
        pytest.skip(paths)
    driver = chrome(*paths)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def sign_in(browser: Any, served: Served) -> Callable[[str], Any]:
    """Sign in as the development identity of ``role`` (first button with that role)."""
    from selenium.webdriver.common.by import By

    def go(role: str, then: str = "") -> Any:
        browser.delete_all_cookies()
        browser.get(served.url(f"/console/connexion{'?suite=' + then if then else ''}"))
        browser.find_element(By.CSS_SELECTOR, f'button[data-role="{role}"]').click()
        wait(browser, lambda d: "/connexion" not in d.current_url)
        return browser

    return go


def wait(driver: Any, condition: Callable[[Any], Any], seconds: float = WAIT) -> Any:
    """Selenium's explicit wait on ``condition(driver)``; an element missing or replaced
    meanwhile (a page loading, an htmx swap) is retried, not a failure."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds, poll_frequency=0.1, ignored_exceptions=(
        NoSuchElementException, StaleElementReferenceException)).until(condition)
