"""A real Firefox: headless Firefox ESR's own EventSource against the gateway.

geckodriver is not packaged in Debian, so Firefox is not driven: it is started on the page
(``firefox-esr --headless --no-remote --profile <tmp> <url>``), and the page of
``test_browser.py`` reports every ``open``, ``error`` and event back to the test server with
``fetch``. The test ends Firefox by its PID.

The profile keeps Firefox on loopback: every request to another host goes to a proxy address
nothing listens on (Firefox never proxies loopback), and its background services are off.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port
from tornado.web import Application

from tests.e2e.test_browser import PageHandler, ReportHandler, Reports
from tests.support.backend import Answer
from tests.support.ports import unused_port

PREFS = {
    # Nothing leaves the machine: other hosts go to a dead proxy; loopback is never proxied.
    "network.proxy.type": 1,
    "network.proxy.http": "127.0.0.1",
    "network.proxy.ssl": "127.0.0.1",
    "network.proxy.allow_hijacking_localhost": False,
    "network.proxy.no_proxies_on": "",
    # No first-run pages, updates, telemetry, remote settings or safe-browsing downloads.
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "browser.aboutwelcome.enabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "datareporting.healthreport.uploadEnabled": False,
    "toolkit.telemetry.enabled": False,
    "app.update.disabledForTesting": True,
    "app.normandy.enabled": False,
    "extensions.update.enabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.update.enabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "network.dns.disablePrefetch": True,
    "network.prefetch-next": False,
    "browser.newtabpage.enabled": False,
}


def firefox_binary() -> str:
    """The Firefox ESR executable; fails the test (never a skip) when it is missing."""
    found = shutil.which("firefox-esr") or shutil.which("firefox")
    if found is None:
        pytest.fail(
            "Firefox is not installed: install the Debian package 'firefox-esr' "
            "(tests/run.py installs it).",
            pytrace=False,
        )
    return found


def write_profile(directory: Path) -> None:
    """A fresh profile with :data:`PREFS` in its ``user.js``."""
    directory.mkdir()
    prefs = dict(PREFS, **{"network.proxy.http_port": unused_port()})
    prefs["network.proxy.ssl_port"] = prefs["network.proxy.http_port"]
    lines = []
    for name, value in prefs.items():
        text = ("true" if value else "false") if isinstance(value, bool) else repr(value)
        if isinstance(value, str):
            text = '"%s"' % value
        lines.append("user_pref(%s, %s);" % ('"%s"' % name, text))
    (directory / "user.js").write_text("\n".join(lines) + "\n")


@pytest.fixture
def firefox(io_loop: Any, tmp_path: Path) -> Iterator[Callable[[str], Awaitable[None]]]:
    """``await firefox(url)`` starts headless Firefox on ``url``; it is ended after the test."""
    binary = firefox_binary()
    processes: list[asyncio.subprocess.Process] = []

    async def start(url: str) -> None:
        profile = tmp_path / ("profile-%d" % len(processes))
        write_profile(profile)
        process = await asyncio.create_subprocess_exec(
            binary,
            "--headless",
            "--no-remote",
            "--profile",
            str(profile),
            url,
            env=dict(os.environ, HOME=str(tmp_path), MOZ_CRASHREPORTER_DISABLE="1"),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        processes.append(process)

    yield start

    async def stop_all() -> None:
        for process in processes:  # by PID: only the Firefox processes this test started
            if process.returncode is None:
                process.terminate()
                try:
                    await asyncio.wait_for(process.wait(), 10)
                except TimeoutError:
                    process.kill()
                    await process.wait()

    io_loop.run_sync(stop_all)


@pytest.fixture
def pages(io_loop: Any) -> Iterator[tuple[Reports, str]]:
    """The reporting page on a server of its own (so it keeps answering when a test closes
    the gateway's port): its reports and its base URL. Its EventSource goes to the gateway
    cross-origin (the gateway's default CORS allows it)."""
    reports = Reports()
    sock, port = bind_unused_port()
    server = HTTPServer(
        Application([(r"/page", PageHandler), (r"/report", ReportHandler, {"reports": reports})])
    )
    server.add_sockets([sock])
    yield reports, "http://127.0.0.1:%d" % port
    server.stop()


#: Firefox takes a few seconds to start on a busy 2-core machine.
FIRST_REPORT_TIMEOUT = 45.0


@pytest.mark.gen_test(timeout=90)
async def test_firefox_receives_named_unnamed_multiline_utf8_events_exactly(
    gateway, backend, firefox, pages
):
    gw = gateway()
    reports, page = pages
    await firefox(page + "/page?stream=" + gw.base_url + "/sse/firefox")
    (connect,) = await backend.wait_for_calls("connect", timeout=FIRST_REPORT_TIMEOUT)
    # Firefox fires `open` only with the first bytes of the body, not with the head.
    await gw.send({"token": connect.token, "event": {"name": "hello", "data": "x"}})
    await reports.wait_for(lambda r: r.of("open"))
    assert "Firefox" in connect.body["request"]["headers"]["user-agent"]
    sent = [
        {"data": "plain"},
        {"name": "update", "data": "line one\nline two\n\nline four"},
        {"name": "update", "data": "héllo wörld ✓ 🎉 — 日本語"},
        {"data": "crlf\r\nand\rcr", "id": "42"},
        {"data": ""},
    ]
    for event in sent:
        status, _ = await gw.send({"token": connect.token, "event": event})
        assert status == 200
    await reports.wait_for(lambda r: len(r.of("event")) >= len(sent))
    assert [(e["type"], e["data"]) for e in reports.of("event")] == [
        ("message", "plain"),
        ("update", "line one\nline two\n\nline four"),
        ("update", "héllo wörld ✓ 🎉 — 日本語"),
        ("message", "crlf\nand\ncr"),
        ("message", ""),
    ]
    assert reports.of("event")[3]["lastEventId"] == "42"


@pytest.mark.gen_test(timeout=90)
async def test_firefox_reconnects_after_close_with_its_last_event_id(
    gateway, backend, firefox, pages
):
    backend.connect_answer = Answer(body=b'{"channels": ["feed"]}')
    gw = gateway()
    reports, page = pages
    await firefox(page + "/page?stream=" + gw.base_url + "/sse/feed")
    await backend.wait_for_calls("connect", timeout=FIRST_REPORT_TIMEOUT)
    status, _ = await gw.send({"channel": "feed", "event": {"data": "before"}})
    assert status == 200
    await reports.wait_for(lambda r: r.of("open") and r.of("event"))
    (first,) = backend.of("connect")
    status, _ = await gw.send({"token": first.token, "close": True})
    assert status == 200
    await backend.wait_for_calls("disconnect", token=first.token)
    status, _ = await gw.send({"channel": "feed", "event": {"data": "missed"}})
    assert status == 200
    second = (await backend.wait_for_calls("connect", count=2, timeout=20))[1]
    last_id = reports.of("event")[0]["lastEventId"]
    assert second.body["request"]["headers"]["last-event-id"] == last_id
    await reports.wait_for(lambda r: len(r.of("event")) >= 2)
    assert [e["data"] for e in reports.of("event")] == ["before", "missed"]
