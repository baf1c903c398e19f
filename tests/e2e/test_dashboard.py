"""The dashboard in headless Chromium: it takes the secret from its URL fragment, draws live
figures from ``/internal/stats``, and its screenshot is kept.

The screenshot goes to the test's scratch directory; with ``UPDATE_SCREENSHOTS=1`` also to
``docs/images/`` (the one in the README).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.support.backend import Answer
from tests.support.sse_client import SSEStream

DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
AUTH = {"Authorization": "Bearer s3cret"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


async def in_browser(call: Any, *args: Any) -> Any:
    """Run a blocking Selenium call in a worker thread, so the IOLoop keeps serving."""
    return await asyncio.get_running_loop().run_in_executor(None, call, *args)


def keep_screenshot(driver: Any, scratch: Path, name: str) -> Path:
    """Save a PNG of the window in ``scratch`` (and in docs/images with UPDATE_SCREENSHOTS=1)."""
    path = scratch / name
    driver.save_screenshot(str(path))
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        DOCS_IMAGES.mkdir(exist_ok=True)
        shutil.copyfile(path, DOCS_IMAGES / name)
    return path


@pytest.mark.gen_test(timeout=90)
async def test_dashboard_draws_live_figures_with_the_secret_from_its_fragment(
    gateway, backend, browser, tmp_path
):
    backend.answer_for = lambda body: Answer(
        status=403 if "denied" in body["request"]["url"] else 200,
        body=b'{"channels": ["feed"]}',
    )
    gw = gateway(internal_secret="s3cret", max_queued_bytes=256 * 1024)
    streams: list[SSEStream] = []
    browser.set_script_timeout(20)
    url = gw.internal_url + "/internal/dashboard#secret=s3cret&interval=250&points=30"
    await in_browser(browser.get, url)
    after = "window.dashboard.after(arguments[0]).then(arguments[1]);"
    await in_browser(browser.execute_async_script, after, 1)

    # A few seconds of traffic, in step with the dashboard's updates: streams come and go,
    # some are refused, events flow, one client stops reading.
    stalled = await gw.open("/sse/stalled")
    (stalled_connect,) = await backend.wait_for_calls("connect")
    for step in range(24):
        for _ in range(1 + step % 3):
            streams.append(await gw.open("/sse/live-%d" % step))
        if step % 4 == 1:
            refused = await gw.stream("/sse/denied")
            assert refused.status == 403
        if step % 3 == 2 and len(streams) > 4:
            await streams.pop(0).aclose()
        for _ in range(10 + 8 * (step % 5)):
            status, _ = await gw.send(
                {"channel": "feed", "event": {"data": "x" * 200}}, headers=AUTH
            )
            assert status == 200
        if step == 12:  # the stalled client falls behind by more than MAX_QUEUED_BYTES
            batch = [{"token": stalled_connect.token, "event": {"data": "y" * 8192}}] * 100
            for _ in range(20):  # at most 16 MB, far more than the kernel buffers hold
                await gw.send(batch, headers=AUTH)
                if backend.of("disconnect", token=stalled_connect.token):
                    break
            (gone,) = await backend.wait_for_calls("disconnect", token=stalled_connect.token)
            assert gone.body.get("detail") == "slow_consumer"
        await in_browser(browser.execute_async_script, after, 1)
    stalled.close()

    shown = await in_browser(
        browser.execute_script,
        "return {status: document.getElementById('status').textContent,"
        " open: document.getElementById('open').textContent,"
        " hash: location.hash, last: window.dashboard.last,"
        " paths: document.querySelectorAll('svg path').length};",
    )
    assert shown["status"] == "live"
    assert shown["hash"] == ""  # the secret left the address bar
    last = shown["last"]
    open_now = gw.gateway.registry.open_count
    assert last["open_streams"] == open_now and shown["open"] == str(open_now)
    assert last["connects"]["accepted"] >= 40 and last["connects"]["rejected"] == 6
    assert last["events"] > 1000
    assert last["slow_consumer_closes"] == 1
    assert shown["paths"] >= 6  # every chart has drawn a line
    png = keep_screenshot(browser, tmp_path, "dashboard.png")
    assert png.read_bytes().startswith(PNG_MAGIC)
    for stream in streams:
        await stream.aclose()


@pytest.mark.gen_test(timeout=60)
async def test_dashboard_without_the_secret_says_so_and_shows_no_figures(gateway, browser):
    gw = gateway(internal_secret="s3cret")
    # A new origin (the gateway's own port): no secret is kept in its sessionStorage. The page
    # asks for the secret with prompt(); the test answers nothing (dismisses it).
    await in_browser(browser.get, gw.internal_url + "/internal/dashboard#interval=200")
    alert = await in_browser(lambda: _wait_for_alert(browser))
    await in_browser(alert.dismiss)
    status = await in_browser(
        browser.execute_script, "return document.getElementById('status').textContent;"
    )
    assert status == "needs INTERNAL_SECRET"
    figures = await in_browser(
        browser.execute_script, "return document.getElementById('open').textContent;"
    )
    assert figures == "-"


def _wait_for_alert(driver: Any) -> Any:
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, 10).until(expected_conditions.alert_is_present())
