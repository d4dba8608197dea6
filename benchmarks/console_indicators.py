"""The indicators page on 100 000 requests, measured in a browser (issue 30):
``python -m benchmarks.console_indicators`` after ``make bench-indicators`` (its data).

Serves the benchmark's data directory (``benchmarks/.work/indicators-100000``) with
``teleimagerie serve``, signs a headless Chromium in as the auditor (development
identity), and times the page — from navigation to the plots drawn (the script sets
``data-plots-ready``) — for the year with monthly and daily series; prints milliseconds
(median of 5 after one warm-up)."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from benchmarks.indicators import WORK  # noqa: E402
from tests.browser.harness import browser_paths, chrome  # noqa: E402
from tests.e2e.harness import free_port, server_env, start, stop  # noqa: E402


def main() -> None:
    if not (WORK / "teleimagerie.db").exists():
        sys.exit("no data: run python -m benchmarks.indicators first")
    paths = browser_paths()
    if isinstance(paths, str):
        sys.exit(paths)
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    port = free_port()
    proc = start(server_env(WORK, port), log=WORK / "console-bench.log")
    driver = chrome(*paths)
    base = f"http://127.0.0.1:{port}"
    try:
        driver.get(f"{base}/console/connexion")
        driver.find_element(By.CSS_SELECTOR, 'button[data-role="auditor"]').click()
        WebDriverWait(driver, 60).until(lambda d: "/connexion" not in d.current_url)
        print("| indicators page, 100 000 requests (browser) | median ms | min ms |")
        print("|---|---:|---:|")
        for name, query in (("year, monthly series", "start=2026-01-01&end=2027-01-01"),
                            ("year, daily series", "start=2026-01-01&end=2027-01-01"
                                                   "&interval=day")):
            times = []
            for _ in range(6):
                began = time.perf_counter()
                driver.get(f"{base}/console/indicateurs?{query}")
                WebDriverWait(driver, 120, poll_frequency=0.02).until(
                    lambda d: d.find_element(By.TAG_NAME, "body").get_attribute(
                        "data-plots-ready") == "1")
                times.append((time.perf_counter() - began) * 1000)
            times = times[1:]  # the first warms the server's caches
            print(f"| {name} | {statistics.median(times):.0f} | {min(times):.0f} |",
                  flush=True)
    finally:
        driver.quit()
        stop(proc)


if __name__ == "__main__":
    main()
