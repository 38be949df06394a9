"""A headless Debian chromium driven by selenium through the system chromedriver (no browser
download), and screenshots written to a git-ignored folder (``ui-screenshots/`` at the
repository root, or ``$SAMPAN_UI_SCREENSHOTS``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOTS = Path(
    os.environ.get("SAMPAN_UI_SCREENSHOTS")
    or Path(__file__).resolve().parents[2] / "ui-screenshots"
)

__all__ = ["SCREENSHOTS", "chrome", "screenshot", "set_viewport"]


def chrome(width: int = 1280, height: int = 800) -> Any:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("chromium and chromium-driver are not installed (scripts/install.sh)")
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in CI containers
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--ignore-certificate-errors",  # the server CA is not in the browser's store
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # A browser's first start on a machine (profile, font cache) can outlast chromedriver's own
    # start-up wait on a loaded machine: try again rather than fail the test on it.
    for attempt in range(3):
        try:
            driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
            break
        except WebDriverException:
            if attempt == 2:
                raise
    set_viewport(driver, width, height)
    return driver


def set_viewport(driver: Any, width: int, height: int, mobile: bool = False) -> None:
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
    )


def screenshot(driver: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path
