"""The Flask example's page in headless Chromium: its named-event listener shows the ``note``
that "notify me" makes the backend send, and its ``onmessage`` the unnamed broadcast."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.test_flask_example import deployment
from tests.support.browser import in_browser

#: Resolves with the page's log once a line contains the text (checked at each new line).
WAIT_FOR_LINE = """
const [text, done] = arguments;
const log = document.getElementById("log");
const check = () => log.innerText.includes(text) && (done(log.innerText), true);
if (!check()) new MutationObserver((_, observer) => check() && observer.disconnect())
  .observe(log, {childList: true});
"""


def _click(driver: Any, button: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, button).click()


@pytest.mark.gen_test(timeout=60)
async def test_flask_page_shows_the_named_note_and_the_unnamed_broadcast(browser):
    async with deployment() as app:
        browser.set_script_timeout(20)
        await in_browser(browser.get, app.flask.base_url + "/?user=alice")
        await in_browser(browser.execute_async_script, WAIT_FOR_LINE, "stream open")
        await in_browser(_click, browser, "me")
        log = await in_browser(browser.execute_async_script, WAIT_FOR_LINE, ": hello, just you")
        assert "note #" in log  # the named listener got it, with the channel event's id
        assert "message: hello, just you" not in log  # onmessage never sees a named event
        await in_browser(_click, browser, "all")
        log = await in_browser(browser.execute_async_script, WAIT_FOR_LINE, "hello, everyone")
        assert "message: hello, everyone" in log
