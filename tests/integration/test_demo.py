"""``tornado-sse demo``: its internal API on loopback (no warning, no secret needed, the
user's secret used when set), its backend's push and say routes, and its JWT mode, which opens
a stream that no connect callback authorised, as the user the token names."""

from __future__ import annotations

import json
import sys

import pytest
from tornado.httpclient import AsyncHTTPClient

from tests.support.ports import unused_port, unused_ports
from tests.support.process import start_process
from tests.support.sse_client import SSEStream, open_stream


@pytest.mark.gen_test(timeout=30)
async def test_demo_jwt_mode_streams_the_clock_without_a_connect_callback():
    port = unused_port()
    demo = await start_process(
        [sys.executable, "-m", "tornado_sse", "demo", "--jwt"],
        port=port,
        env={"PORT": str(port), "HOST": "127.0.0.1", "LOG_LEVEL": "info"},
        ready=lambda line: " listening " in line,  # the port is open
        what="the demo",
    )
    try:
        assert any("demo: open" in line and "/?mode=jwt" in line for line in demo.log), demo.log
        client = AsyncHTTPClient()
        page = await client.fetch(demo.base_url + "/?mode=jwt")
        assert b"/demo/token" in page.body
        url = demo.base_url + "/demo/token?name=ann"
        token = await client.fetch(url, method="POST", body=b"")
        stream = await open_stream(port, "/sse/demo?jwt=" + token.body.decode())
        assert stream.status == 200
        await stream.wait_until(lambda s: any(e.type == "tick" for e in s.events), timeout=5)
        joins = [json.loads(e.data) for e in stream.events if e.type == "presence_join"]
        assert joins == [{"user": "ann", "info": {"name": "ann"}}]  # the JWT's sub and info
        await stream.aclose()
    finally:
        await demo.stop()
    assert any("backend: disconnect" in line for line in demo.log), demo.log
    assert not any("backend: connect" in line for line in demo.log), demo.log


async def _welcomed(port: int, name: str) -> tuple[SSEStream, str]:
    """A demo stream as ``name`` and the token its ``welcome`` event names."""
    stream = await open_stream(port, "/sse/demo?name=" + name)
    assert stream.status == 200
    await stream.wait_until(lambda s: any(e.type == "welcome" for e in s.events))
    (welcome,) = [e for e in stream.events if e.type == "welcome"]
    hello = json.loads(welcome.data)
    assert hello["user"] == name
    return stream, hello["token"]


@pytest.mark.gen_test(timeout=30)
async def test_demo_serves_its_internal_api_on_loopback_at_port_plus_one_without_a_warning():
    port = unused_ports(2)
    demo = await start_process(
        [sys.executable, "-m", "tornado_sse", "demo"],
        port=port,
        env={"PORT": str(port), "HOST": "127.0.0.1", "LOG_LEVEL": "info"},
        ready=lambda line: " listening " in line,
        what="the demo",
    )
    try:
        assert not any("WARNING" in line for line in demo.log), demo.log
        assert any("internal_port=%d" % (port + 1) in line for line in demo.log), demo.log
        page = (await AsyncHTTPClient().fetch(demo.base_url + "/")).body.decode()
        assert '"http://127.0.0.1:%d"' % (port + 1) in page  # the address the curl line names
        stream, token = await _welcomed(port, "ann")
        # The internal API answers on loopback without a secret, not on the public port.
        internal = "http://127.0.0.1:%d/internal/send" % (port + 1)
        body = json.dumps({"token": token, "event": {"name": "note", "data": "direct"}})
        json_type = {"Content-Type": "application/json"}
        sent = await AsyncHTTPClient().fetch(internal, method="POST", body=body, headers=json_type)
        assert json.loads(sent.body) == {"status": "ok"}
        public = await AsyncHTTPClient().fetch(
            demo.base_url + "/internal/send",
            method="POST",
            body=body,
            headers=json_type,
            raise_error=False,
        )
        assert public.code == 404
        await stream.wait_until(lambda s: any(e.data == "direct" for e in s.events))
        await stream.aclose()
    finally:
        await demo.stop()


@pytest.mark.gen_test(timeout=30)
async def test_demo_with_an_internal_secret_pushes_with_it_and_the_page_says_so():
    port = unused_port()
    demo = await start_process(
        [sys.executable, "-m", "tornado_sse", "demo"],
        port=port,
        env={"PORT": str(port), "HOST": "127.0.0.1", "INTERNAL_SECRET": "s3cret"},
        ready=lambda line: " listening " in line,
        what="the demo",
    )
    try:
        page = (await AsyncHTTPClient().fetch(demo.base_url + "/")).body.decode()
        assert "const SECRET_SET = true;" in page and "s3cret" not in page
        stream, token = await _welcomed(port, "ann")
        pushed = await AsyncHTTPClient().fetch(
            demo.base_url + "/demo/push",
            method="POST",
            body=json.dumps({"token": token, "text": "through the backend"}),
        )
        assert json.loads(pushed.body) == {"status": "ok"}
        await stream.wait_until(
            lambda s: any(e.type == "note" and e.data == "through the backend" for e in s.events)
        )
        said = await AsyncHTTPClient().fetch(
            demo.base_url + "/demo/say",
            method="POST",
            body=json.dumps({"name": "ann", "text": "to everyone"}),
        )
        assert json.loads(said.body) == {"status": "ok"}
        await stream.wait_until(lambda s: any(e.type == "chat" for e in s.events))
        (chat,) = [e for e in stream.events if e.type == "chat"]
        assert json.loads(chat.data) == {"from": "ann", "text": "to everyone"}
        assert chat.last_event_id  # a channel event: it has an id
        await stream.aclose()
    finally:
        await demo.stop()
