"""``tornado-sse demo``: its JWT mode opens a stream that no connect callback authorised, as
the user the token names."""

from __future__ import annotations

import json
import sys

import pytest
from tornado.httpclient import AsyncHTTPClient

from tests.support.ports import unused_port
from tests.support.process import start_process
from tests.support.sse_client import open_stream


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
