"""The real browsers the end-to-end tests drive.

``browser``: headless Chromium through Selenium and Debian's chromium-driver, one per module
(see :func:`tests.support.browser.start_browser`).
"""

from __future__ import annotations

import pytest

from tests.support.browser import start_browser


@pytest.fixture(scope="module")
def browser():
    driver = start_browser()
    yield driver
    driver.quit()
