"""The console's browser harness (issue 30): a ``teleimagerie serve`` with stand-in peers
(RIS over MLLP, DMP over XDS.b, MSSanté over SMTP: ``tests/peers.py``), the demo
directory and a way in for seeding (``demo.loop.Loop``, public interfaces only), and a
headless Debian Chromium driven by Selenium. ``conftest.py`` turns these into fixtures."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from demo.loop import Loop, environment, listening
from tests import peers
from tests.e2e.harness import ROOT, free_port, start, stop

INSTALL = ROOT / "scripts" / "install-browser.sh"
SCREENSHOTS = ROOT / "docs" / "console"
# where Debian puts them (chromium, chromium-driver)
CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
DRIVER = "chromedriver"
WADO = "https://pacs.ch-proximite.invalid/dicom-web"  # the archive's WADO-RS base


def browser_paths() -> tuple[str, str] | str:
    """(chromium, chromedriver), installed by ``scripts/install-browser.sh`` when missing
    (``make install-test`` runs it too); the reason when they cannot be had."""
    def found() -> tuple[str, str] | None:
        binary = next((p for p in map(shutil.which, CHROMIUM) if p), None)
        driver = shutil.which(DRIVER)
        return (binary, driver) if binary and driver else None

    have = found()
    if have is None:
        done = subprocess.run(["sh", str(INSTALL)], capture_output=True, text=True,
                              timeout=900)
        have = found()
        if have is None:
            return f"chromium/chromedriver unavailable: {done.stderr.strip()[-300:]}"
    return have


def chrome(binary: str, driver: str, width: int = 1280, height: int = 800) -> Any:
    """A headless Chromium at ``width``×``height``, French first."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--lang=fr-FR", "--no-first-run",
                "--disable-extensions", "--password-store=basic"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"intl.accept_languages": "fr-FR,fr"})
    return webdriver.Chrome(service=Service(driver), options=options)


class Served:
    """``teleimagerie serve`` on free ports, its peers, the demo directory loaded."""

    def __init__(self, tmp: Path, **extra: str) -> None:
        self.ris = peers.MllpPeer(lambda m: peers.ack(m, "AA"))
        self.xds, self.smtp = peers.XdsPeer(), peers.SmtpPeer()
        cert, key = peers.certificate(tmp)
        self.data, self.log = tmp / "data", tmp / "server.log"
        http, mllp, dicom = free_port(), free_port(), free_port()
        self.env = environment(self.data, http, mllp, dicom, self.ris.port, self.xds.url,
                               self.smtp.port, cert, key,
                               TELEIMG_METRICS_PORT=str(free_port()),
                               TELEIMG_SCHEMATRON_WARM="off", TELEIMG_LOG_LEVEL="warning",
                               TELEIMG_CONSOLE_POLL_SECONDS="2",
                               TELEIMG_DICOM_WADO_URL=WADO, **extra)
        self.proc = start(self.env, ready=lambda: listening(mllp) and listening(dicom),
                          log=self.log)
        self.base = f"http://127.0.0.1:{http}"
        self.loop = Loop(self.base, mllp, dicom, self.data, self.env)
        self.refs = self.loop.directory()

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def close(self) -> None:
        stop(self.proc)
        for peer in (self.ris, self.xds, self.smtp):
            peer.close()


def screenshot(driver: Any, name: str, full: bool = True) -> None:
    """``docs/console/<name>.png`` when ``TELEIMG_SCREENSHOTS=1`` (the README's images are
    made by a browser test run, not by hand): the whole page (up to 2400 px) at the
    window's width, through the DevTools protocol, or the viewport."""
    if os.environ.get("TELEIMG_SCREENSHOTS") != "1":
        return
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    target = SCREENSHOTS / f"{name}.png"
    if not full:
        driver.save_screenshot(str(target))
        return
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    width = driver.execute_script("return window.innerWidth;")
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": min(size["height"], 2400),
                 "scale": 1}})
    target.write_bytes(base64.b64decode(shot["data"]))
