"""The mock backend: answers the gateway's callbacks and nchan's auth/unsubscribe hooks.

Run as ``python -m benchmarks.backend --port P`` (a process of its own). Routes:

- ``POST /callback``: the gateway's callbacks. ``connect`` answers 200 with
  ``{"channels": [...]}`` taken from the ``ch`` query parameter of the stream URL
  (comma-separated), else from ``--channels`` (neither: ``{}``), plus ``"user": U`` and
  ``"info": {"name": U}`` when the URL has a ``user=U`` parameter, and remembers
  ``url -> token``; ``disconnect`` is counted, with duplicates and unknown tokens counted
  apart, and by reason and by ``reason/detail``.
- With ``--hello-url URL`` (the gateway's ``/internal/send``), each connect is answered only
  after the new token was sent one event ``{"name": "hello", "data": TOKEN}`` there; the
  gateway's answers are counted (``buffered`` while the connect is in flight). Requests on
  one connection are then answered one after the other, in order.
- ``GET /nchan/auth``, ``GET /nchan/unsub``: nchan's ``nchan_authorize_request`` and
  ``nchan_unsubscribe_request`` hooks, counted as connects and disconnects.
- ``GET /tokens?prefix=P``: ``{url: token}`` of the connected streams whose URL starts with P
  (only the backend learns tokens; this is how the load generator finds them).
- ``GET /stats``: the counters. ``POST /reset``: clears them. ``GET /healthz``.

Raw asyncio protocol, HTTP/1.1 keep-alive, no framework: it must never be the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from collections import Counter
from urllib.parse import parse_qs, unquote, urlsplit

from . import eventloop
from .wire import HTTPConnection

#: How long a hello send may take before it counts as failed.
HELLO_TIMEOUT = 10.0


class Hello:
    """Sends a token one ``hello`` event through the gateway's send API, on keep-alive
    connections (one per send in flight, reused afterwards)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.path = parts.path or "/"
        self._idle: list[HTTPConnection] = []

    async def send(self, token: str) -> str:
        """Send ``token`` its hello. The gateway's answer as one word: the ``status`` of a 200
        answer (``buffered``, ``ok``), ``not_found`` (404), ``http_<code>``, ``bad_answer``
        (200 without a status), or ``error:<exception>`` when no answer came."""
        body = json.dumps({"token": token, "event": {"name": "hello", "data": token}}).encode()
        conn = self._idle.pop() if self._idle else HTTPConnection(self.host, self.port)
        try:
            status, answer = await asyncio.wait_for(
                conn.request("POST", self.path, body), HELLO_TIMEOUT
            )
        except (OSError, EOFError, TimeoutError, ValueError) as exc:
            conn.close()
            return "error:%s" % type(exc).__name__
        self._idle.append(conn)
        if status == 404:
            return "not_found"
        if status != 200:
            return "http_%d" % status
        try:
            return str(json.loads(answer)["status"])
        except (ValueError, KeyError, TypeError):
            return "bad_answer"

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()


class Settings:
    """What the command line set, fixed for the life of the process."""

    def __init__(self) -> None:
        self.channels: list[str] = []  # --channels
        self.hello: Hello | None = None  # --hello-url


SETTINGS = Settings()


class State:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.connects = 0
        self.disconnects = 0
        self.duplicate_disconnects = 0
        self.unknown_disconnects = 0
        self.reasons: Counter[str] = Counter()
        self.reason_details: Counter[str] = Counter()  # "reason/detail" ("-": no detail)
        self.hello: Counter[str] = Counter()  # the gateway's answer to each hello send
        self.live: dict[str, str] = {}  # token -> url
        self.by_url: dict[str, str] = {}  # url -> token (latest)
        self.gone: set[str] = set()
        self.nchan_connects = 0
        self.nchan_disconnects = 0

    def stats(self) -> dict[str, object]:
        return {
            "connects": self.connects,
            "disconnects": self.disconnects,
            "duplicate_disconnects": self.duplicate_disconnects,
            "unknown_disconnects": self.unknown_disconnects,
            "reasons": dict(self.reasons),
            "reason_details": dict(self.reason_details),
            "hello": dict(self.hello),
            "live": len(self.live),
            "nchan_connects": self.nchan_connects,
            "nchan_disconnects": self.nchan_disconnects,
        }


STATE = State()


def _answer(status: int, body: bytes, keep_alive: bool) -> bytes:
    reason = {200: b"OK", 400: b"Bad Request", 404: b"Not Found"}.get(status, b"X")
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n"
        % (
            status,
            reason,
            len(body),
            b"" if keep_alive else b"Connection: close\r\n",
        )
        + body
    )


def handle(method: str, target: str, body: bytes) -> tuple[int, bytes]:
    """Route one request: (status, JSON body)."""
    path, _, query = target.partition("?")
    if method == "POST" and path == "/callback":
        msg = json.loads(body)
        token = msg["token"]
        if msg["action"] == "connect":
            url = msg["request"]["url"]
            STATE.connects += 1
            STATE.live[token] = url
            STATE.by_url[url] = token
            query_args = parse_qs(urlsplit(url).query)
            answer: dict[str, object] = {}
            channels = query_args.get("ch")
            if channels:
                answer["channels"] = channels[0].split(",")
            elif SETTINGS.channels:
                answer["channels"] = SETTINGS.channels
            user = query_args.get("user")
            if user:
                answer["user"] = user[0]
                answer["info"] = {"name": user[0]}
            return 200, json.dumps(answer).encode()
        STATE.disconnects += 1
        STATE.reasons[msg.get("reason", "?")] += 1
        STATE.reason_details["%s/%s" % (msg.get("reason", "?"), msg.get("detail") or "-")] += 1
        if token in STATE.live:
            url = STATE.live.pop(token)
            if STATE.by_url.get(url) == token:
                del STATE.by_url[url]
            STATE.gone.add(token)
        elif token in STATE.gone:
            STATE.duplicate_disconnects += 1
        else:
            STATE.unknown_disconnects += 1
        return 200, b"{}"
    if path == "/nchan/auth":
        STATE.nchan_connects += 1
        return 200, b""
    if path == "/nchan/unsub":
        STATE.nchan_disconnects += 1
        return 200, b""
    if method == "GET" and path == "/tokens":
        prefix = unquote(parse_qs(query).get("prefix", [""])[0])
        found = {u: t for u, t in STATE.by_url.items() if u.startswith(prefix)}
        return 200, json.dumps(found).encode()
    if method == "GET" and path == "/stats":
        return 200, json.dumps(STATE.stats()).encode()
    if method == "POST" and path == "/reset":
        STATE.reset()
        return 200, b"{}"
    if path == "/healthz":
        return 200, b'{"status":"ok"}'
    return 404, b'{"error":"not found"}'


def respond(method: str, target: str, body: bytes) -> tuple[int, bytes]:
    """:func:`handle`, with a malformed request answered 400."""
    try:
        return handle(method, target, body)
    except (ValueError, KeyError, TypeError) as exc:
        return 400, json.dumps({"error": repr(exc)}).encode()


async def respond_after_hello(
    hello: Hello, method: str, target: str, body: bytes
) -> tuple[int, bytes]:
    """:func:`respond`, and for an accepted connect the token's hello, sent before the answer
    (the connect is counted first, so its disconnect can never look unknown)."""
    status, answer = respond(method, target, body)
    if status == 200 and method == "POST" and target.partition("?")[0] == "/callback":
        msg = json.loads(body)
        if msg["action"] == "connect":
            STATE.hello[await hello.send(msg["token"])] += 1
    return status, answer


class HTTPProtocol(asyncio.Protocol):
    """HTTP/1.1 server side: Content-Length bodies, keep-alive, ``Expect: 100-continue``.

    Answers are written as the requests arrive, or, when hellos are sent, by a task per request
    that waits for the previous one (``_last``) so that a connection's answers keep their order.
    """

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self._last: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        out = []
        close_after = False
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = bytes(buf[:end])
            lines = head.split(b"\r\n")
            method, target, _ = lines[0].decode("latin-1").split(" ", 2)
            length = 0
            keep_alive = True
            expect = False
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    keep_alive = False
                elif name == b"expect" and value.strip().lower() == b"100-continue":
                    expect = True
            if len(buf) < end + 4 + length:
                if expect and self.transport is not None:
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                break
            body = bytes(buf[end + 4 : end + 4 + length])
            del buf[: end + 4 + length]
            if SETTINGS.hello is not None:
                self._last = asyncio.get_running_loop().create_task(
                    self._answer_in_turn(self._last, method, target, body, keep_alive)
                )
            else:
                status, answer = respond(method, target, body)
                out.append(_answer(status, answer, keep_alive))
            if not keep_alive:
                close_after = True
                break
        if out and self.transport is not None:
            self.transport.write(b"".join(out))
            if close_after:
                self.transport.close()

    async def _answer_in_turn(
        self,
        previous: asyncio.Task[None] | None,
        method: str,
        target: str,
        body: bytes,
        keep_alive: bool,
    ) -> None:
        """Answer one request (with its hello), once ``previous`` has answered the one before."""
        if previous is not None:
            await previous
        assert SETTINGS.hello is not None
        status, answer = await respond_after_hello(SETTINGS.hello, method, target, body)
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(_answer(status, answer, keep_alive))
        if not keep_alive:
            self.transport.close()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(HTTPProtocol, host, port, backlog=4096)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready %d" % os.getpid(), flush=True)
    await stop.wait()
    server.close()
    if SETTINGS.hello is not None:
        SETTINGS.hello.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--no-uvloop", action="store_true")
    parser.add_argument(
        "--channels", default="", help="comma-separated channels of a connect whose URL has no ch"
    )
    parser.add_argument(
        "--hello-url", default=None, help="send each new token a hello event to this send URL"
    )
    args = parser.parse_args()
    SETTINGS.channels = [c for c in args.channels.split(",") if c]
    if args.hello_url:
        SETTINGS.hello = Hello(args.hello_url)
    eventloop.run(serve(args.host, args.port), "asyncio" if args.no_uvloop else "auto")


if __name__ == "__main__":
    main()
