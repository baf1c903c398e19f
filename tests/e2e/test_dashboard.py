"""The dashboard in headless Chromium, behind ``INTERNAL_SECRET``: with the secret as a
browser sends it after its login dialog (Basic, the secret as the password; here given in the
address, as a person may type it), the page draws live figures from ``/internal/stats``;
without it the browser gets the 401 and nothing of the page. Its screenshot is kept.

The screenshot goes to the test's scratch directory; with ``UPDATE_SCREENSHOTS=1`` also to
``docs/images/`` (``python3 docs/screenshots.py`` makes the one in the README).
"""

from __future__ import annotations

import pytest

from tests.support.backend import Answer
from tests.support.browser import in_browser
from tests.support.internal import error_code
from tests.support.screenshots import PNG_MAGIC
from tests.support.sse_client import SSEStream

AUTH = {"Authorization": "Bearer s3cret"}


@pytest.mark.gen_test(timeout=90)
async def test_dashboard_draws_live_figures_with_the_secret_as_a_browser_sends_it(
    gateway, backend, browser, tmp_path
):
    backend.answer_for = lambda body: Answer(
        status=403 if "denied" in body["request"]["url"] else 200,
        body=b'{"channels": ["feed"]}',
    )
    gw = gateway(internal_secret="s3cret", max_queued_bytes=256 * 1024)
    streams: list[SSEStream] = []
    browser.set_script_timeout(20)
    # Chromium answers the Basic challenge of the first request with the address's
    # credentials and keeps them for the page's fetches under /internal/.
    with_credentials = gw.internal_url.replace("http://", "http://dashboard:s3cret@")
    url = with_credentials + "/internal/dashboard#interval=250&points=30"
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
        " last: window.dashboard.last,"
        " paths: document.querySelectorAll('svg path').length};",
    )
    assert shown["status"] == "live"
    last = shown["last"]
    open_now = gw.gateway.registry.open_count
    assert last["open_streams"] == open_now and shown["open"] == str(open_now)
    assert last["connects"]["accepted"] >= 40 and last["connects"]["rejected"] == 6
    assert last["events"] > 1000
    assert last["slow_consumer_closes"] == 1
    assert shown["paths"] >= 6  # every chart has drawn a line
    png = tmp_path / "dashboard.png"
    browser.save_screenshot(str(png))
    assert png.read_bytes().startswith(PNG_MAGIC)
    for stream in streams:
        await stream.aclose()


@pytest.mark.gen_test(timeout=60)
async def test_dashboard_without_the_secret_shows_the_401_and_no_page(gateway, browser):
    gw = gateway(internal_secret="s3cret")
    # A new origin (the gateway's own port), no credentials. The 401's Basic challenge makes a
    # browser ask for them in its login dialog; headless Chromium has none to show and leaves
    # the tab blank. Either way nothing of the page, and no figure, reaches it.
    await in_browser(browser.get, gw.internal_url + "/internal/dashboard#interval=200")
    shown = await in_browser(
        browser.execute_script,
        "return {text: document.body.innerText, open: document.getElementById('open'),"
        " dashboard: window.dashboard === undefined ? null : 'loaded'};",
    )
    assert shown == {"text": "", "open": None, "dashboard": None}
    # Over HTTP, the same request gets the JSON 401 that names both ways to send the secret.
    refused = await gw.get("/internal/dashboard", internal=True)
    assert error_code(refused, 401) == "UNAUTHORIZED"
    assert refused.headers.get_list("WWW-Authenticate") == [
        'Bearer realm="tornado_sse internal API"',
        'Basic realm="tornado_sse internal API", charset="UTF-8"',
    ]
