"""The mock backend: answers the gateway's callbacks and nchan's auth/unsubscribe hooks.

Run as ``python -m benchmarks.backend --port P`` (a process of its own). Routes:

- ``POST /callback``: the gateway's callbacks. ``connect`` answers 200 with
  ``{"channels": [...]}`` taken from the ``ch`` query parameter of the stream URL
  (comma-separated; none: ``{}``) and remembers ``url -> token``; ``disconnect`` is counted,
  with duplicates and unknown tokens counted apart.
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


class State:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.connects = 0
        self.disconnects = 0
        self.duplicate_disconnects = 0
        self.unknown_disconnects = 0
        self.reasons: Counter[str] = Counter()
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
            channels = parse_qs(urlsplit(url).query).get("ch")
            if channels:
                return 200, json.dumps({"channels": channels[0].split(",")}).encode()
            return 200, b"{}"
        STATE.disconnects += 1
        STATE.reasons[msg.get("reason", "?")] += 1
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


class HTTPProtocol(asyncio.Protocol):
    """HTTP/1.1 server side: Content-Length bodies, keep-alive, ``Expect: 100-continue``."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

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
            try:
                status, answer = handle(method, target, body)
            except (ValueError, KeyError, TypeError) as exc:
                status, answer = 400, json.dumps({"error": repr(exc)}).encode()
            out.append(_answer(status, answer, keep_alive))
            if not keep_alive:
                close_after = True
                break
        if out and self.transport is not None:
            self.transport.write(b"".join(out))
            if close_after:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args()
    eventloop.run(serve(args.host, args.port), "asyncio" if args.no_uvloop else "auto")


if __name__ == "__main__":
    main()
