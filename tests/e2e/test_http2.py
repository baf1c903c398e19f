"""HTTP/2 through nginx lifts the browser's limit of 6 connections per origin.

Headless Chromium opens 10 EventSources on one page. Directly against the gateway (HTTP/1.1)
6 open and the others wait for a free connection; through ``conf/nginx.conf`` with its HTTP/2
TLS listener uncommented (a self-signed certificate made here with ``openssl``) all 10 open on
one connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port
from tornado.web import Application, RequestHandler

from tests.integration.test_nginx import NGINX_CONF, nginx_binary, render_conf, start_nginx
from tests.support.backend import FakeBackend
from tests.support.ports import unused_port
from tests.support.process import ChildProcess, start_gateway

STREAMS = 10

#: A page that opens ``?n=`` EventSources and lets the test await how many have opened.
PAGE = """<!doctype html><meta charset="utf-8"><title>many streams</title><script>
const count = Number(new URLSearchParams(location.search).get("n"));
window.opened = 0;
const waiters = [];
window.sources = [];
for (let i = 0; i < count; i++) {
  const source = new EventSource("/sse/many-" + i);
  source.onopen = () => { window.opened++; waiters.forEach((check) => check()); };
  window.sources.push(source);
}
window.waitOpened = (n) => new Promise((resolve) => {
  const check = () => { if (window.opened >= n) resolve(window.opened); };
  waiters.push(check);
  check();
});
</script>"""


class PageHandler(RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(PAGE)


async def in_browser(driver: Any, call: Any, *args: Any) -> Any:
    """Run a blocking Selenium call in a worker thread, so the IOLoop keeps serving."""
    return await asyncio.get_running_loop().run_in_executor(None, call, *args)


async def wait_opened(driver: Any, count: int) -> int:
    """Wait (at most the script timeout) until ``count`` EventSources of the page are open."""
    script = "waitOpened(arguments[0]).then(arguments[1]);"
    return int(await in_browser(driver, driver.execute_async_script, script, count))


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made with ``openssl``."""
    cert, key = directory / "tls.crt", directory / "tls.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    return cert, key


def render_http2_conf(
    *,
    upstream_port: int,
    plain_port: int,
    tls_port: int,
    page_port: int,
    scratch: Path,
    cert: Path,
    key: Path,
) -> str:
    """conf/nginx.conf with its HTTP/2 lines uncommented, and the test page at /page.html
    (from the test's page server on ``page_port``: nginx's workers may not read the test's
    scratch directory)."""
    text = render_conf(
        NGINX_CONF.read_text(), upstream_port=upstream_port, listen_port=plain_port, scratch=scratch
    )
    replacements = [
        ("# listen 8443 ssl http2;", "listen 127.0.0.1:%d ssl http2;" % tls_port),
        (
            "# ssl_certificate     /etc/nginx/tls/tornado-sse.crt;",
            "ssl_certificate %s;" % cert,
        ),
        (
            "# ssl_certificate_key /etc/nginx/tls/tornado-sse.key;",
            "ssl_certificate_key %s;" % key,
        ),
        (
            "        location / {\n",
            "        location = /page.html { proxy_pass http://127.0.0.1:%d; }\n"
            "        location / {\n" % page_port,
        ),
    ]
    for old, new in replacements:
        assert old in text, "conf/nginx.conf no longer contains %r" % old
        text = text.replace(old, new, 1)
    return text


@contextlib.asynccontextmanager
async def nginx_http2(backend: FakeBackend, tmp_path: Path) -> AsyncIterator[int]:
    """A gateway process behind nginx with HTTP/2 on TLS; yields nginx's TLS port."""
    binary = nginx_binary()
    gateway: ChildProcess = await start_gateway({"CALLBACK_URL": backend.url})
    try:
        cert, key = self_signed_certificate(tmp_path)
        page_socket, page_port = bind_unused_port()
        pages = HTTPServer(Application([(r"/page.html", PageHandler)]))
        pages.add_sockets([page_socket])
        plain_port, tls_port = unused_port(), unused_port()
        conf = tmp_path / "nginx.conf"
        conf.write_text(
            render_http2_conf(
                upstream_port=gateway.port,
                plain_port=plain_port,
                tls_port=tls_port,
                page_port=page_port,
                scratch=tmp_path,
                cert=cert,
                key=key,
            )
        )
        nginx = await start_nginx(binary, conf, tmp_path, plain_port)
        try:
            yield tls_port
        finally:
            await nginx.stop()
            pages.stop()
    finally:
        await gateway.stop()


@pytest.mark.gen_test(timeout=60)
async def test_direct_http11_opens_only_6_of_10_event_sources_until_one_closes(
    gateway, backend, browser
):
    gw = gateway()
    gw.app.add_handlers(r".*", [(r"/page", PageHandler)])
    browser.set_script_timeout(15)
    await in_browser(browser, browser.get, gw.base_url + "/page?n=%d" % STREAMS)
    assert await wait_opened(browser, 6) == 6
    await backend.wait_for_calls("connect", count=6)
    # The other 4 wait for a free connection: no 7th connect arrives while all 6 stay open.
    with pytest.raises(TimeoutError):
        await backend.wait_for_calls("connect", count=7, timeout=1.0)
    await in_browser(browser, browser.execute_script, "window.sources[0].close();")
    assert await wait_opened(browser, 7) >= 7  # closing one lets the next one in
    await in_browser(browser, browser.get, "about:blank")


@pytest.mark.gen_test(timeout=90)
async def test_nginx_http2_opens_all_10_event_sources_on_one_connection(backend, browser, tmp_path):
    async with nginx_http2(backend, tmp_path) as tls_port:
        browser.set_script_timeout(15)
        origin = "https://127.0.0.1:%d" % tls_port
        await in_browser(browser, browser.get, origin + "/page.html?n=%d" % STREAMS)
        protocol = await in_browser(
            browser,
            browser.execute_script,
            "return performance.getEntriesByType('navigation')[0].nextHopProtocol;",
        )
        assert protocol == "h2"
        assert await wait_opened(browser, STREAMS) == STREAMS
        connects = await backend.wait_for_calls("connect", count=STREAMS)
        urls = sorted(c.body["request"]["url"] for c in connects)
        assert urls == sorted("/sse/many-%d" % i for i in range(STREAMS))
        # $http_host: the :authority the browser sent, port included.
        assert {c.body["request"]["headers"]["host"] for c in connects} == {
            "127.0.0.1:%d" % tls_port
        }
        await in_browser(browser, browser.get, "about:blank")
