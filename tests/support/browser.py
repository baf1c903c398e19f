"""Starting a real browser for the end-to-end tests."""

from __future__ import annotations

import asyncio
import shutil
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service


def start_browser() -> webdriver.Chrome:
    """A headless Chromium driven through Debian's chromium-driver; the caller quits it. It
    accepts any certificate (``--ignore-certificate-errors``), for the self-signed one of the
    HTTP/2 test; every other test talks plain HTTP to loopback."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    assert chromium and driver_path, "Chromium and chromedriver are needed (tests/run.py installs)"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--ignore-certificate-errors",
        "--window-size=1280,900",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=options)


async def in_browser(call: Any, *args: Any) -> Any:
    """Run a blocking Selenium call in a worker thread, so that the IOLoop keeps serving."""
    return await asyncio.get_running_loop().run_in_executor(None, call, *args)
