"""The backend-side clients against a real HTTP server that plays the internal API (PROTOCOL 4).

Every client test runs twice: with the blocking :class:`Gateway` (called from a worker thread so
the IOLoop keeps serving the fake) and with :class:`AsyncGateway`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import deque
from dataclasses import dataclass
from typing import Any

import pytest
import tornado.web
from tornado.httpclient import AsyncHTTPClient
from tornado.testing import bind_unused_port

from tests.support.clients import KINDS, Clients, InThread
from tests.support.ports import unused_port
from tornado_sse.client import (
    AsyncGateway,
    BatchResult,
    BufferFull,
    Gateway,
    GatewayClientError,
    GatewayUnavailable,
    InvalidRequest,
    TokenNotFound,
    Unauthorized,
    error_for,
    send_item,
)


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


# --------------------------------------------------------------------------------------------
# The fake gateway


@dataclass
class Recorded:
    method: str
    uri: str
    headers: dict[str, str]
    body: bytes
    peer: Any = None  # the client's (address, port): one per TCP connection


@dataclass
class Scripted:
    """One scripted answer. ``then`` is what the fake does with the connection: ``"keep"`` it
    alive, ``"close"`` it after answering (as a gateway closes an idle connection, without a
    ``Connection: close`` header), or ``"drop"`` it without answering (after reading the
    request). ``chunked`` sends the body with chunked transfer coding."""

    status: int
    body: Any
    headers: dict[str, str]
    then: str = "keep"
    chunked: bool = False


class FakeGateway:
    """Records every request to ``/internal/*`` and answers from a script.

    Each request takes the next scripted answer; with none left it gets 200 ``{"status": "ok"}``.
    """

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._answers: deque[Scripted] = deque()

    def answer(
        self,
        status: int,
        body: Any,
        headers: dict[str, str] | None = None,
        *,
        then: str = "keep",
        chunked: bool = False,
    ) -> None:
        """Script the next answer: ``body`` is raw bytes or a value sent as JSON."""
        self._answers.append(Scripted(status, body, headers or {}, then, chunked))

    def next_answer(self) -> Scripted:
        return self._answers.popleft() if self._answers else Scripted(200, {"status": "ok"}, {})

    @property
    def peers(self) -> list[Any]:
        """The connection each request came on, in order."""
        return [r.peer for r in self.requests]

    @property
    def last(self) -> Recorded:
        assert self.requests, "no request reached the fake gateway"
        return self.requests[-1]


class InternalHandler(tornado.web.RequestHandler):
    def initialize(self, fake: FakeGateway) -> None:
        self.fake = fake

    async def get(self) -> None:
        await self._answer()

    async def post(self) -> None:
        await self._answer()

    async def _answer(self) -> None:
        request = self.request
        connection = request.connection
        peer = connection.context.address  # type: ignore[union-attr]
        self.fake.requests.append(
            Recorded(
                request.method or "", request.uri or "", dict(request.headers), request.body, peer
            )
        )
        script = self.fake.next_answer()
        if script.then == "drop":
            connection.close()  # type: ignore[union-attr]
            return
        self.set_status(script.status)
        for name, value in script.headers.items():
            self.set_header(name, value)
        if isinstance(script.body, bytes):
            self.set_header("Content-Type", "text/html; charset=UTF-8")
            raw = script.body
        else:
            self.set_header("Content-Type", "application/json")
            raw = json.dumps(script.body).encode()
        if script.chunked:
            for start in range(0, len(raw), 3):  # bounded by the body's size
                self.write(raw[start : start + 3])
                await self.flush()
            raw = b""
        self.finish(raw)
        if script.then == "close":
            connection.close()  # type: ignore[union-attr]


@pytest.fixture
def fake() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
def app(fake: FakeGateway) -> tornado.web.Application:
    return tornado.web.Application([(r"/internal/.*", InternalHandler, {"fake": fake})])


@pytest.fixture
def url(http_server: Any, http_port: int) -> str:
    return f"http://127.0.0.1:{http_port}"


# --------------------------------------------------------------------------------------------
# Both clients behind one awaitable face


@pytest.fixture(params=KINDS)
def make_client(request: pytest.FixtureRequest, clients: Clients) -> Any:
    """A factory ``(url, secret=None, timeout=5.0)`` of clients whose methods are awaited."""

    def make(url: str, secret: str | None = None, timeout: float = 5.0) -> Any:
        return clients(request.param, url, secret, timeout)

    return make


@pytest.fixture
def client(make_client: Any, url: str) -> Any:
    return make_client(url)


# --------------------------------------------------------------------------------------------
# What is sent


@pytest.mark.gen_test
async def test_send_posts_compact_json_without_authorization(client, fake):
    assert await client.send("t1", "hello") == "ok"
    sent = fake.last
    assert sent.method == "POST"
    assert sent.uri == "/internal/send"
    assert sent.body == b'{"token":"t1","event":{"data":"hello"}}'
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.headers["Accept"] == "application/json"
    assert "Authorization" not in sent.headers


@pytest.mark.gen_test
async def test_send_with_name_id_and_close_sends_every_field(client, fake):
    await client.send("t1", "line 1\nline 2", name="update", id="17", close=True)
    assert fake.last.body == (
        b'{"token":"t1","event":{"name":"update","data":"line 1\\nline 2","id":"17"},"close":true}'
    )


@pytest.mark.gen_test
async def test_send_writes_non_ascii_data_as_raw_utf8(client, fake):
    await client.send("t1", "caf\u00e9 \u2603")
    assert fake.last.body == '{"token":"t1","event":{"data":"caf\u00e9 \u2603"}}'.encode()


@pytest.mark.gen_test
async def test_send_returns_buffered_while_connect_is_in_flight(client, fake):
    fake.answer(200, {"status": "buffered"})
    assert await client.send("t1", "early") == "buffered"


@pytest.mark.gen_test
async def test_secret_is_sent_as_bearer_authorization(make_client, url, fake):
    client = make_client(url, secret="s3cret")
    await client.send("t1", "x")
    await client.connections()
    assert [r.headers["Authorization"] for r in fake.requests] == ["Bearer s3cret"] * 2


@pytest.mark.gen_test
async def test_base_url_with_trailing_slash_is_joined_once(make_client, url, fake):
    await make_client(url + "/").send("t1", "x")
    assert fake.last.uri == "/internal/send"


@pytest.mark.gen_test
async def test_publish_sends_a_channel_event(client, fake):
    assert await client.publish("news", "x", name="headline", id="9") is None
    assert fake.last.body == b'{"channel":"news","event":{"name":"headline","data":"x","id":"9"}}'


@pytest.mark.gen_test
async def test_close_sends_token_and_close_only(client, fake):
    assert await client.close("t1") is None
    assert fake.last.body == b'{"token":"t1","close":true}'


@pytest.mark.gen_test
async def test_batch_posts_an_array_and_returns_results_in_order(client, fake):
    not_found = error_body("TOKEN_NOT_FOUND", "no open stream has this token")
    fake.answer(
        200,
        {
            "results": [
                {"status": 200, "body": {"status": "ok"}},
                {"status": 404, "body": not_found},
                {"status": 200, "body": {"status": "buffered"}},
            ]
        },
    )
    items = [
        send_item("t1", data="a"),
        send_item("gone", close=True),
        send_item(channel="news", data="b"),
    ]
    results = await client.batch(items)
    assert fake.last.body == (
        b'[{"token":"t1","event":{"data":"a"}},{"token":"gone","close":true},'
        b'{"channel":"news","event":{"data":"b"}}]'
    )
    assert results == [
        BatchResult(200, {"status": "ok"}),
        BatchResult(404, not_found),
        BatchResult(200, {"status": "buffered"}),
    ]
    assert [r.ok for r in results] == [True, False, True]
    assert results[0].error is None
    error = results[1].error
    assert isinstance(error, TokenNotFound)
    assert (error.status, error.code) == (404, "TOKEN_NOT_FOUND")


@pytest.mark.gen_test
async def test_empty_batch_sends_an_empty_array(client, fake):
    fake.answer(200, {"results": []})
    assert await client.batch([]) == []
    assert fake.last.body == b"[]"


@pytest.mark.gen_test
async def test_batch_with_a_wrong_number_of_results_is_an_error(client, fake):
    fake.answer(200, {"results": [{"status": 200, "body": {"status": "ok"}}]})
    with pytest.raises(GatewayClientError, match="unexpected answer to a batch"):
        await client.batch([send_item("t1", data="a"), send_item("t2", data="b")])


@pytest.mark.gen_test
async def test_connections_gets_with_limit_and_no_body(client, fake):
    listing = {
        "count": 1,
        "connections": [
            {"token": "t1", "url": "/sse/x", "channels": ["news"], "connected_at": 1.5}
        ],
    }
    fake.answer(200, listing)
    assert await client.connections(limit=5) == listing
    sent = fake.last
    assert (sent.method, sent.uri, sent.body) == ("GET", "/internal/connections?limit=5", b"")
    assert "Content-Type" not in sent.headers
    assert "Authorization" not in sent.headers


@pytest.mark.gen_test
async def test_connections_limit_defaults_to_100(client, fake):
    fake.answer(200, {"count": 0, "connections": []})
    await client.connections()
    assert fake.last.uri == "/internal/connections?limit=100"


# --------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    ("status", "code", "error_class"),
    [
        (404, "TOKEN_NOT_FOUND", TokenNotFound),
        (401, "UNAUTHORIZED", Unauthorized),
        (429, "BUFFER_FULL", BufferFull),
        (400, "INVALID_JSON", InvalidRequest),
        (400, "INVALID_EVENT_DATA_MISSING", InvalidRequest),
        (400, "INVALID_CLOSE_TYPE", InvalidRequest),
        (503, "BROKER_UNAVAILABLE", GatewayUnavailable),
        (503, "SERVICE_UNAVAILABLE", GatewayUnavailable),
        (500, "INTERNAL_ERROR", GatewayUnavailable),
        (413, "PAYLOAD_TOO_LARGE", GatewayClientError),
    ],
)
@pytest.mark.gen_test
async def test_error_answer_raises_its_typed_error(client, fake, status, code, error_class):
    fake.answer(status, error_body(code, "the gateway says why"))
    with pytest.raises(GatewayClientError) as caught:
        await client.send("t1", "x")
    error = caught.value
    assert type(error) is error_class
    assert (error.status, error.code, error.message) == (status, code, "the gateway says why")
    assert str(error) == f"{status} {code}: the gateway says why"


@pytest.mark.gen_test
async def test_every_method_raises_typed_errors(client, fake):
    fake.answer(401, error_body("UNAUTHORIZED", "wrong secret"))
    fake.answer(401, error_body("UNAUTHORIZED", "wrong secret"))
    fake.answer(404, error_body("TOKEN_NOT_FOUND", "gone"))
    fake.answer(503, error_body("BROKER_UNAVAILABLE", "redis is down"))
    with pytest.raises(Unauthorized):
        await client.connections()
    with pytest.raises(Unauthorized):
        await client.batch([])
    with pytest.raises(TokenNotFound):
        await client.close("t1")
    with pytest.raises(GatewayUnavailable):
        await client.publish("news", "x")


@pytest.mark.gen_test
async def test_5xx_without_json_body_is_unavailable_with_its_text(client, fake):
    fake.answer(502, b"<html>Bad Gateway</html>")
    with pytest.raises(GatewayUnavailable) as caught:
        await client.send("t1", "x")
    assert (caught.value.status, caught.value.code) == (502, None)
    assert caught.value.message == "<html>Bad Gateway</html>"


@pytest.mark.gen_test
async def test_unknown_route_404_is_not_token_not_found(make_client, url, fake):
    client = make_client(url + "/not-the-gateway")
    with pytest.raises(GatewayClientError) as caught:
        await client.send("t1", "x")
    assert type(caught.value) is GatewayClientError
    assert (caught.value.status, caught.value.code) == (404, None)
    assert fake.requests == []


@pytest.mark.parametrize("status", [302, 307])
@pytest.mark.gen_test
async def test_redirect_is_not_followed(client, fake, status):
    fake.answer(status, b"", headers={"Location": "/internal/send"})
    with pytest.raises(GatewayClientError) as caught:
        await client.send("t1", "x")
    assert type(caught.value) is GatewayClientError
    assert caught.value.status == status
    assert len(fake.requests) == 1


@pytest.mark.gen_test
async def test_2xx_answer_that_is_not_json_is_an_error(client, fake):
    fake.answer(200, b"OK")
    with pytest.raises(GatewayClientError, match="answer is not JSON"):
        await client.send("t1", "x")


@pytest.mark.gen_test
async def test_2xx_answer_without_status_is_an_error(client, fake):
    fake.answer(200, {"nothing": "here"})
    with pytest.raises(GatewayClientError, match="unexpected answer to a send"):
        await client.send("t1", "x")


@pytest.mark.gen_test
async def test_connection_refused_is_unavailable(make_client):
    port = unused_port()
    with pytest.raises(GatewayUnavailable) as caught:
        await make_client(f"http://127.0.0.1:{port}").send("t1", "x")
    assert (caught.value.status, caught.value.code) == (None, None)
    assert caught.value.message


@pytest.mark.gen_test
async def test_no_answer_in_time_is_unavailable(make_client):
    sock, port = bind_unused_port()  # listens, never accepts, never answers
    try:
        with pytest.raises(GatewayUnavailable) as caught:
            await make_client(f"http://127.0.0.1:{port}", timeout=0.2).send("t1", "x")
        assert caught.value.status is None
    finally:
        sock.close()


# --------------------------------------------------------------------------------------------
# Kept-alive connections


@pytest.mark.gen_test
async def test_calls_reuse_one_kept_alive_connection(client, fake):
    for i in range(3):
        await client.send("t1", str(i))
    await client.connections()
    assert len(fake.requests) == 4
    assert len(set(fake.peers)) == 1


@pytest.mark.gen_test
async def test_a_connection_the_gateway_closed_while_idle_is_not_reused(client, fake):
    fake.answer(200, {"status": "ok"}, then="close")
    assert await client.send("t1", "first") == "ok"
    assert await client.send("t1", "second") == "ok"
    assert [r.body for r in fake.requests] == [
        b'{"token":"t1","event":{"data":"first"}}',
        b'{"token":"t1","event":{"data":"second"}}',
    ]
    assert len(set(fake.peers)) == 2


@pytest.mark.gen_test
async def test_a_connection_idle_past_keepalive_seconds_is_not_reused(clients, url, fake):
    sync = clients.keep(InThread(Gateway(url, keepalive_seconds=0)))
    asynchronous = clients.keep(AsyncGateway(url, keepalive_seconds=0))
    for client in (sync, asynchronous):
        await client.send("t1", "a")
        await client.send("t1", "b")
    assert len(fake.requests) == 4
    assert len(set(fake.peers)) == 4


@pytest.mark.gen_test
async def test_a_request_whose_connection_drops_unanswered_is_not_sent_again(client, fake):
    await client.send("t1", "warm up")  # the next call reuses this connection
    fake.answer(200, {"status": "ok"}, then="drop")
    with pytest.raises(GatewayUnavailable):
        await client.send("t1", "lost")
    assert [r.body for r in fake.requests].count(b'{"token":"t1","event":{"data":"lost"}}') == 1
    assert await client.send("t1", "after") == "ok"  # a fresh connection
    assert len(fake.requests) == 3


@pytest.mark.gen_test
async def test_a_chunked_answer_is_read_whole(client, fake):
    fake.answer(200, {"status": "buffered"}, chunked=True)
    assert await client.send("t1", "x") == "buffered"
    assert await client.send("t1", "y") == "ok"
    assert len(set(fake.peers)) == 1  # the chunked answer left the connection reusable


@pytest.mark.gen_test
async def test_an_answer_with_connection_close_ends_the_connection(client, fake):
    fake.answer(200, {"status": "ok"}, headers={"Connection": "close"})
    await client.send("t1", "x")
    await client.send("t1", "y")
    assert len(set(fake.peers)) == 2


@pytest.mark.gen_test
async def test_close_idle_closes_the_connections_and_the_client_stays_usable(client, fake):
    await client.send("t1", "x")
    await client.close_idle()
    await client.send("t1", "y")
    assert len(set(fake.peers)) == 2


# --------------------------------------------------------------------------------------------
# Specifics of each client


@pytest.mark.gen_test
async def test_blocking_client_ignores_proxy_environment(url, fake, monkeypatch, clients):
    port = unused_port()
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    assert await clients.keep(InThread(Gateway(url, secret="s"))).send("t1", "x") == "ok"
    assert fake.last.headers["Authorization"] == "Bearer s"


@pytest.mark.gen_test
async def test_async_gateway_uses_the_given_http_client(url, fake):
    http_client = AsyncHTTPClient(force_instance=True)
    fetched = []
    fetch = http_client.fetch

    def spy(request: Any, **kwargs: Any) -> Any:
        fetched.append(kwargs)
        return fetch(request, **kwargs)

    http_client.fetch = spy  # type: ignore[method-assign]
    try:
        assert await AsyncGateway(url, http_client=http_client).send("t1", "x") == "ok"
    finally:
        http_client.close()
    assert fetched == [{"raise_error": False}]
    assert len(fake.requests) == 1


# --------------------------------------------------------------------------------------------
# The shared pure helpers


def test_send_item_shapes():
    assert send_item("t1") == {"token": "t1"}
    assert send_item("t1", close=True) == {"token": "t1", "close": True}
    assert send_item("t1", data="") == {"token": "t1", "event": {"data": ""}}
    assert send_item(channel="c", data="d", id="1") == {
        "channel": "c",
        "event": {"data": "d", "id": "1"},
    }


def test_send_item_needs_exactly_one_of_token_and_channel():
    with pytest.raises(ValueError):
        send_item(data="x")
    with pytest.raises(ValueError):
        send_item("t1", channel="c", data="x")


def test_send_item_refuses_name_or_id_without_data():
    with pytest.raises(ValueError):
        send_item("t1", name="update")
    with pytest.raises(ValueError):
        send_item("t1", id="1")


def test_error_for_accepts_decoded_bodies_and_odd_shapes():
    error = error_for(400, {"error": {"code": "INVALID_JSON", "message": "bad"}})
    assert isinstance(error, InvalidRequest)
    assert (error.code, error.message) == ("INVALID_JSON", "bad")
    odd = error_for(418, {"error": "teapot"})
    assert type(odd) is GatewayClientError
    assert (odd.status, odd.code, odd.message) == (418, None, "I'm a Teapot")
    assert error_for(599, b"").message == "HTTP 599"


def test_invalid_code_with_another_status_is_still_invalid_request():
    assert isinstance(error_for(422, error_body("INVALID_CHANNEL", "bad")), InvalidRequest)


@pytest.mark.parametrize("cls", [Gateway, AsyncGateway])
def test_url_must_be_http(cls):
    with pytest.raises(ValueError):
        cls("file:///etc/passwd")
    with pytest.raises(ValueError):
        cls("127.0.0.1:3000")


@pytest.mark.parametrize("module", ["tornado_sse_client", "tornado_sse.client"])
def test_both_clients_import_and_work_without_tornado(module):
    code = (
        "import importlib, sys\n"
        "sys.modules['tornado'] = None\n"  # any import of tornado now fails
        f"client = importlib.import_module({module!r})\n"
        "client.Gateway('http://127.0.0.1:1')\n"
        "client.AsyncGateway('http://127.0.0.1:1')\n"
        "print(client.Gateway.__module__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], check=True, timeout=30, capture_output=True, text=True
    )
    assert done.stdout.strip() == "tornado_sse_client.sync"
