"""examples/flask_backend end to end: the Flask app and a gateway, each in a process of its own.

The gateway signs its callbacks (``CALLBACK_SECRET``) and wants a bearer secret on its internal
API (``INTERNAL_SECRET``); the Flask app is given both, so every stream that opens proves the
signature check passed, and every event that arrives proves the bearer secret was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPResponse

from tests.support.ports import unused_port
from tests.support.process import (
    ChildProcess,
    GatewayProcess,
    start_gateway,
    start_process,
)
from tests.support.sse_client import SSEStream, open_stream
from tornado_sse.signing import sign

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "flask_backend" / "app.py"
CALLBACK_SECRET = "callback-secret-for-the-test"
INTERNAL_SECRET = "internal-secret-for-the-test"


async def start_flask(port: int, env: dict[str, str], timeout: float = 15.0) -> ChildProcess:
    """``python examples/flask_backend/app.py`` on ``port``; returns once it answers."""
    if importlib.util.find_spec("flask") is None:
        pytest.fail(
            "flask is not installed: examples/flask_backend needs it (add it to the [test] "
            "extra of setup.py)",
            pytrace=False,
        )
    flask = await start_process(
        [sys.executable, str(EXAMPLE)],
        port=port,
        env={**env, "PORT": str(port), "HOST": "127.0.0.1"},
        # the development server logs this line once it is bound
        ready=lambda line: "Running on" in line,
        what="the Flask example",
        timeout=timeout,
    )
    health = await AsyncHTTPClient().fetch(flask.base_url + "/healthz", raise_error=False)
    assert health.code == 200, (health.code, "\n".join(flask.log))
    return flask


@dataclass
class Deployment:
    """The Flask example and a gateway that calls it back."""

    flask: ChildProcess
    gateway: GatewayProcess
    streams: list[SSEStream] = field(default_factory=list)

    async def stream(self, path: str, headers: dict[str, str] | None = None) -> SSEStream:
        """Open a stream on the gateway, as a browser would; closed at the end of the test."""
        stream = await open_stream(self.gateway.port, path, headers)
        self.streams.append(stream)
        return stream

    async def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
        """POST JSON to the Flask app; returns the response."""
        return await AsyncHTTPClient().fetch(
            self.flask.base_url + path,
            method="POST",
            body=json.dumps(body),
            headers={"Content-Type": "application/json", **(headers or {})},
            raise_error=False,
        )

    async def tokens(self) -> dict[str, str]:
        response = await AsyncHTTPClient().fetch(self.flask.base_url + "/tokens")
        answer = json.loads(response.body)
        assert answer["count"] == len(answer["tokens"]), answer
        return dict(answer["tokens"])


@contextlib.asynccontextmanager
async def deployment() -> AsyncIterator[Deployment]:
    flask_port = unused_port()
    gateway = await start_gateway(
        {
            "CALLBACK_URL": "http://127.0.0.1:%d/sse/callback" % flask_port,
            "CALLBACK_SECRET": CALLBACK_SECRET,
            "INTERNAL_SECRET": INTERNAL_SECRET,
        }
    )
    try:
        flask = await start_flask(
            flask_port,
            {
                "SSE_GATEWAY_URL": gateway.base_url,
                "SSE_CALLBACK_SECRET": CALLBACK_SECRET,
                "SSE_INTERNAL_SECRET": INTERNAL_SECRET,
                "SSE_PUBLIC_URL": gateway.base_url,  # where its page opens streams
            },
        )
        deployed = Deployment(flask, gateway)
        try:
            yield deployed
        finally:
            for stream in deployed.streams:
                await stream.aclose()
            await flask.stop()
    finally:
        await gateway.stop()


def assert_ok(response: HTTPResponse) -> None:
    assert response.code == 200, (response.code, response.body)
    assert json.loads(response.body)["status"] == "ok"


# ------------------------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=60)
async def test_notify_reaches_only_that_user_and_broadcast_reaches_everyone():
    async with deployment() as app:
        alice = await app.stream("/sse/demo?user=alice")  # the demo's query-string login
        bob = await app.stream("/sse/demo", {"Cookie": "theme=dark; user=bob"})  # or a cookie
        assert (alice.status, bob.status) == (200, 200)
        assert sorted((await app.tokens()).values()) == ["alice", "bob"]

        assert_ok(await app.post("/notify/alice", {"data": "for alice", "name": "note"}))
        (event,) = await alice.wait_events(1)
        assert (event.type, event.data) == ("note", "for alice")
        assert event.last_event_id  # a channel event: the gateway gave it an id

        assert_ok(await app.post("/broadcast", {"data": "for everyone"}))
        # Published after alice's note on the same gateway: had bob received the note, it
        # would come first.
        (bob_event,) = await bob.wait_events(1)
        assert bob_event.data == "for everyone"
        events = await alice.wait_events(2)
        assert [e.data for e in events] == ["for alice", "for everyone"]


@pytest.mark.gen_test(timeout=60)
async def test_closing_the_stream_makes_the_backend_forget_its_token():
    async with deployment() as app:
        alice = await app.stream("/sse/demo?user=alice")
        bob = await app.stream("/sse/demo?user=bob")
        assert (alice.status, bob.status) == (200, 200)
        tokens = await app.tokens()
        assert sorted(tokens.values()) == ["alice", "bob"]

        await alice.aclose()
        # The disconnect callback reaches Flask after the stream ended; poll, bounded.
        deadline = time.monotonic() + 5
        while "alice" in (remaining := await app.tokens()).values():
            assert time.monotonic() < deadline, remaining
            await asyncio.sleep(0.02)
        assert list(remaining.values()) == ["bob"]
        assert set(remaining) < set(tokens)


@pytest.mark.gen_test(timeout=60)
async def test_unsigned_callbacks_anonymous_streams_and_secretless_sends_are_refused():
    async with deployment() as app:
        callback = {
            "action": "connect",
            "token": "00000000-0000-4000-8000-000000000000",
            "request": {"url": "/sse/demo?user=mallory", "headers": {}},
        }
        raw = json.dumps(callback).encode()
        unsigned = await app.post("/sse/callback", callback)
        assert unsigned.code == 401
        forged = await app.post(
            "/sse/callback", callback, {"X-SSE-Signature": sign(raw, "not-the-secret")}
        )
        assert forged.code == 401
        assert await app.tokens() == {}

        # A stream without a user: the backend answers 401, the browser gets it.
        anonymous = await app.stream("/sse/demo")
        assert anonymous.status == 401
        assert json.loads(await anonymous.read_to_end())["error"]["code"] == "BACKEND_AUTH_FAILED"

        # The gateway really wants the bearer secret that the Flask app sends.
        direct = await AsyncHTTPClient().fetch(
            app.gateway.base_url + "/internal/send",
            method="POST",
            body=json.dumps({"channel": "broadcast", "event": {"data": "x"}}),
            headers={"Content-Type": "application/json"},
            raise_error=False,
        )
        assert direct.code == 401


def test_the_example_needs_neither_tornado_nor_pycurl_nor_the_gateway():
    code = (
        "import runpy, sys\n"
        "sys.modules['tornado'] = sys.modules['pycurl'] = None\n"  # importing either fails
        f"runpy.run_path({str(EXAMPLE)!r}, run_name='example')['create_app']()\n"
        "print(sorted(name for name, module in sys.modules.items() if module is not None\n"
        "             and name.split('.')[0] in ('tornado', 'pycurl', 'tornado_sse')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], check=True, timeout=30, capture_output=True, text=True
    )
    assert done.stdout.strip() == "[]", done.stdout


@pytest.mark.gen_test(timeout=60)
async def test_the_page_listens_to_the_named_event_that_its_notify_button_makes_the_backend_send():
    async with deployment() as app:
        page = await AsyncHTTPClient().fetch(app.flask.base_url + "/?user=alice")
        body = page.body.decode()
        assert 'source.addEventListener("note"' in body and "source.onmessage" in body
        assert 'post("/notify/alice", {data: "hello, just you", name: "note"})' in body

        # What the button posts, the backend sends as a named event: "event: note" on the wire.
        alice = await app.stream("/sse/demo?user=alice")
        assert alice.status == 200
        assert_ok(await app.post("/notify/alice", {"data": "hello, just you", "name": "note"}))
        (event,) = await alice.wait_events(1)
        assert (event.type, event.data) == ("note", "hello, just you")
        assert b"event: note\ndata: hello, just you\n\n" in bytes(alice.raw)
