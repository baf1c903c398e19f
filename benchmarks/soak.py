"""Churn soak test of the gateway: short-lived streams, a steady channel publisher, and checks
that no event is lost or duplicated and that every connect is matched by one disconnect.

Run from the repository root::

    python -m benchmarks.soak --duration 60               # 200 slots, 200 channel events/s
    python -m benchmarks.soak --smoke                     # 5 s, 20 slots (CI)
    python -m benchmarks.soak --duration 60 --json soak.json

Three processes, all on 127.0.0.1:

* **the mock backend**, this module again (``--role backend``), a small Tornado app. It accepts
  every connect with ``{"channels": ["soak"]}``; before answering, it sends the new token one
  event ``{"token": T, "event": {"name": "hello", "data": T}}`` through ``/internal/send``
  (answered ``buffered``, so it is written first when the stream opens). It counts connect and
  disconnect callbacks per token, and serves the counts at ``GET /counts``.
* **the gateway**, ``python -m tornado_sse``, on a free port, with the default settings except
  ``PORT``, ``HOST=127.0.0.1``, ``CALLBACK_URL`` and ``LOG_LEVEL=warning`` (``INTERNAL_SECRET``
  and the other gateway variables are removed from its environment; ``--env`` adds some back).
* **the load**, in this process, on raw asyncio streams. ``--slots`` client slots each open
  ``GET /sse/soak/<slot>``, read events for a random 0.05-1 s and close the socket, over and
  over. A publisher POSTs ``{"channel": "soak", "event": {"data": "<seq>"}}`` to
  ``/internal/send`` at ``--rate`` events per second, one request at a time (a batch of the
  overdue ones when it falls behind), so sequence numbers follow the gateway's publish order.

For each stream the client checks:

* exactly one ``hello`` event, carrying a UUID token never seen on another stream, and before
  any channel event;
* channel events: gateway ids strictly increasing, no sequence number twice, none out of order,
  and no sequence number missing between the first and the last one received (*lost*);
* when the stream lived its whole read time, also every event published after the stream's
  headers arrived and acknowledged before it closed (the stream waits up to 5 s for them):
  events *missed in the window*.

After ``--duration`` seconds the load stops and every client closes; the soak waits (at most
``--drain-timeout`` seconds) until the backend has as many disconnect callbacks as connects, reads
the gateway's resident memory (after a ``--settle`` pause; the first reading is taken after a
``--warmup`` with the slots connected), stops the gateway with SIGTERM (it must exit 0), then the
backend. It prints a table, optionally writes the figures as JSON (``--json``), and exits 1 if any
invariant failed. Besides the per-stream checks above, the invariants are: one disconnect callback
per connect (none twice, none for an unknown token, none left for the shutdown), no stream left
open in the gateway once the clients closed, every hello send answered ``buffered`` (or 404 for
a client that left during its connect callback as the load stopped), every publish answered
``ok``, every stream request answered 200, no stream ended by the gateway, no gateway log line
above WARNING (the access log aside), and exit status 0 for the gateway and the backend.

The load and the backend run on uvloop when it is installed (``--loop`` chooses); the gateway
runs on the loop ``python -m tornado_sse`` picks. ``--seed`` replays the same random read times,
``--gateway-log FILE`` keeps the gateway's log.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import tornado
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application, RequestHandler

try:  # pragma: no cover - depends on the install
    from tornado.curl_httpclient import CurlAsyncHTTPClient

    HAVE_CURL = True
except ImportError:  # pragma: no cover - depends on the install
    HAVE_CURL = False

LOOPBACK = "127.0.0.1"
CHANNEL = "soak"
MIB = 1024 * 1024
REPO_ROOT = Path(__file__).resolve().parent.parent

#: How long a client waits for the response head of a stream.
HEAD_TIMEOUT = 10.0
#: Timeout of one request of the publisher or of the orchestration.
REQUEST_TIMEOUT = 10.0
#: After its read time, how long a stream waits for its hello and for the last acknowledged event.
GRACE = 5.0
#: Largest batch the publisher sends when it is behind its rate.
MAX_BATCH = 200
#: How long the gateway may take to exit after SIGTERM (its default shutdown timeout is 25 s).
GATEWAY_EXIT_TIMEOUT = 40.0

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")

#: Gateway settings removed from the gateway's environment, so that it runs with its defaults.
GATEWAY_ENV = (
    "PORT",
    "HOST",
    "CALLBACK_URL",
    "HEARTBEAT_INTERVAL_SECONDS",
    "CALLBACK_TIMEOUT_SECONDS",
    "CALLBACK_MAX_CLIENTS",
    "CALLBACK_SECRET",
    "SSE_PATH_PREFIX",
    "CORS_ORIGINS",
    "INTERNAL_PORT",
    "INTERNAL_SECRET",
    "MAX_PENDING_EVENTS",
    "MAX_BODY_BYTES",
    "MAX_HEADER_BYTES",
    "MAX_CONNECTIONS",
    "MAX_QUEUED_BYTES",
    "HISTORY_SIZE",
    "HISTORY_TTL_SECONDS",
    "SHUTDOWN_TIMEOUT_SECONDS",
    "RETRY_ON_UNAVAILABLE",
    "REDIS_URL",
    "PROCESSES",
    "WEB_CONCURRENCY",
    "LOG_FORMAT",
    "LOG_LEVEL",
)

#: The gateway's start-up warning about an internal API without a secret: expected here.
EXPOSURE_WARNING = "the internal API is served on the public port"
#: The gateway's access logger (one line per failed request).
ACCESS_LOGGER = "tornado_sse.access"


class SoakError(Exception):
    """The soak could not run (a process did not start, a request failed)."""


# ------------------------------------------------------------------------------------------------
# Event loop, processes, /proc


def loop_name(choice: str = "auto") -> str:
    """The event loop :func:`run` uses for ``choice`` (``auto``: uvloop when it is installed)."""
    if choice != "auto":
        return choice
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def run(main: Coroutine[Any, Any, int], loop: str = "auto") -> int:
    """Run ``main`` on the event loop ``loop`` (``asyncio``, ``uvloop``, or ``auto``)."""
    if loop_name(loop) == "asyncio":
        return asyncio.run(main)
    import uvloop  # type: ignore[import-not-found,unused-ignore]

    if hasattr(uvloop, "run"):
        return int(uvloop.run(main))
    uvloop.install()
    return asyncio.run(main)


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def proc_status_kib(pid: int, key: str) -> int:
    """A ``kB`` field (``VmRSS``, ``VmHWM``...) of ``/proc/<pid>/status``."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise SoakError("no %s for pid %d" % (key, pid))


def rss_mib(pid: int) -> float:
    """Resident set size of process ``pid``, in MiB."""
    return proc_status_kib(pid, "VmRSS") / 1024


def peak_rss_mib(pid: int) -> float:
    """Largest resident set size process ``pid`` has had, in MiB."""
    return proc_status_kib(pid, "VmHWM") / 1024


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far, from ``/proc/<pid>/stat``."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def busy_cpu_seconds() -> float:
    """CPU time spent by the whole machine outside idle and iowait, from ``/proc/stat``."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is already in user)
    busy = sum(fields[:8]) - fields[3] - fields[4]
    return busy / os.sysconf("SC_CLK_TCK")


def load_average() -> float:
    """The machine's one-minute load average."""
    return os.getloadavg()[0]


def machine(loop: str) -> dict[str, Any]:
    """The machine and software the soak ran on."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": platform.python_version(),
        "tornado": tornado.version,
        "kernel": platform.release(),
        "event_loop": loop_name(loop),
        "callback_client": "curl" if HAVE_CURL else "simple",
    }


@dataclass
class Child:
    """A process started by the soak: the backend or the gateway."""

    name: str
    process: asyncio.subprocess.Process
    log: IO[bytes]
    port: int

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    async def terminate(self, timeout: float) -> int | None:
        """SIGTERM (if it still runs), then wait; SIGKILL after ``timeout``. The exit status,
        or ``None`` if it had to be killed."""
        if self.running:
            os.kill(self.pid, signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            os.kill(self.pid, signal.SIGKILL)
            await self.process.wait()
            return None

    def log_lines(self) -> list[str]:
        """Everything the process wrote to stderr so far."""
        self.log.flush()
        self.log.seek(0)
        text = self.log.read().decode("utf-8", "replace")
        return text.splitlines()


async def cancel_all(tasks: list[asyncio.Task[None]], what: str, timeout: float = 30.0) -> None:
    """Cancel ``tasks`` and wait until every one has ended.

    Cancels again every second: before Python 3.12, ``asyncio.wait_for`` drops a cancellation
    that arrives just as the awaited operation completes. The tasks also check a stop flag, so a
    task that missed its cancellation still ends at its next iteration.
    """
    deadline = time.monotonic() + timeout
    pending = {task for task in tasks if not task.done()}
    while pending:
        if time.monotonic() > deadline:
            raise SoakError("%d %s did not stop within %g s" % (len(pending), what, timeout))
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=1.0)


# ------------------------------------------------------------------------------------------------
# HTTP/1.1 on raw asyncio streams


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """Status and headers (names lower-cased) of a response head ending with a blank line."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ValueError("bad status line %r" % lines[0])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


class ChunkedDecoder:
    """Incremental decoder of a ``Transfer-Encoding: chunked`` body."""

    __slots__ = ("_buf", "_need", "done")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._need = -1  # bytes of chunk data still expected; -1 while reading a size line
        self.done = False  # the last (empty) chunk arrived

    def feed(self, data: bytes) -> bytes:
        """The body bytes that ``data`` completes."""
        buf = self._buf
        buf += data
        out = bytearray()
        while not self.done:
            if self._need < 0:
                end = buf.find(b"\r\n")
                if end < 0:
                    break
                size = int(bytes(buf[:end]).split(b";", 1)[0], 16)
                del buf[: end + 2]
                if size == 0:
                    self.done = True
                    break
                self._need = size
            else:
                if len(buf) < self._need + 2:
                    break
                out += buf[: self._need]
                del buf[: self._need + 2]
                self._need = -1
        return bytes(out)


class HttpConnection:
    """One keep-alive HTTP/1.1 client connection to 127.0.0.1 (requests one at a time)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int):
        self.reader = reader
        self.writer = writer
        self.port = port
        self.reusable = True

    @classmethod
    async def open(cls, port: int) -> HttpConnection:
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        return cls(reader, writer, port)

    async def request(
        self, method: str, path: str, body: bytes | None = None, *, close: bool = False
    ) -> tuple[int, bytes]:
        """Send one request and read its whole response: ``(status, body)``."""
        lines = ["%s %s HTTP/1.1" % (method, path), "Host: %s:%d" % (LOOPBACK, self.port)]
        if body is not None:
            lines += ["Content-Type: application/json", "Content-Length: %d" % len(body)]
        if close:
            lines.append("Connection: close")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))
        status, headers = parse_head(await self.reader.readuntil(b"\r\n\r\n"))
        if status in (204, 304) or status < 200:
            return status, b""
        if headers.get("transfer-encoding", "").lower() == "chunked":
            self.reusable = False  # the decoder keeps what follows the last chunk
            decoder, out = ChunkedDecoder(), bytearray()
            while not decoder.done:
                data = await self.reader.read(65536)
                if not data:
                    raise asyncio.IncompleteReadError(bytes(out), None)
                out += decoder.feed(data)
            return status, bytes(out)
        if "content-length" in headers:
            return status, await self.reader.readexactly(int(headers["content-length"]))
        self.reusable = False
        return status, await self.reader.read()

    def close(self) -> None:
        self.writer.close()


async def fetch(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    """One request on a connection of its own: ``(status, body)``."""
    conn = await asyncio.wait_for(HttpConnection.open(port), REQUEST_TIMEOUT)
    try:
        return await asyncio.wait_for(conn.request(method, path, body, close=True), REQUEST_TIMEOUT)
    finally:
        conn.close()


async def fetch_json(port: int, path: str) -> Any:
    """``GET path``, which must answer 200 with JSON."""
    status, body = await fetch(port, "GET", path)
    if status != 200:
        raise SoakError("GET %s on port %d answered %d: %r" % (path, port, status, body[:200]))
    return json.loads(body)


# ------------------------------------------------------------------------------------------------
# The mock backend (``--role backend``)


class BackendCounts:
    """What the mock backend has seen: callbacks per token, and the answers to its hellos."""

    def __init__(self) -> None:
        self.connects = 0
        self.disconnects = 0
        self.duplicate_disconnects = 0  # a second disconnect for the same token
        self.unknown_disconnects = 0  # a disconnect for a token that never connected
        self.other_callbacks = 0
        self.reasons: Counter[str] = Counter()  # "reason/detail" of each disconnect
        self.hello: Counter[str] = Counter()  # the gateway's answer to each hello send
        self.disconnected: dict[str, bool] = {}  # token -> disconnect received

    def as_dict(self) -> dict[str, Any]:
        return {
            "connects": self.connects,
            "disconnects": self.disconnects,
            "duplicate_disconnects": self.duplicate_disconnects,
            "unknown_disconnects": self.unknown_disconnects,
            "other_callbacks": self.other_callbacks,
            "still_connected": sum(1 for done in self.disconnected.values() if not done),
            "reasons": dict(self.reasons),
            "hello": dict(self.hello),
        }


class CallbackHandler(RequestHandler):
    """``POST /callback``: counts callbacks; a connect gets a hello event, then is accepted."""

    CONNECT_ANSWER = json.dumps({"channels": [CHANNEL]}).encode()

    def initialize(self, counts: BackendCounts, client: AsyncHTTPClient, send_url: str) -> None:
        self.counts = counts
        self.client = client
        self.send_url = send_url

    async def post(self) -> None:
        counts = self.counts
        try:
            body = json.loads(self.request.body)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            counts.other_callbacks += 1
            self.set_status(400)
            return
        action, token = body.get("action"), str(body.get("token"))
        if action == "connect":
            counts.connects += 1
            counts.disconnected[token] = False
            counts.hello[await self._hello(token)] += 1
            self.set_header("Content-Type", "application/json")
            self.finish(self.CONNECT_ANSWER)
        elif action == "disconnect":
            counts.disconnects += 1
            counts.reasons["%s/%s" % (body.get("reason"), body.get("detail") or "-")] += 1
            state = counts.disconnected.get(token)
            if state is None:
                counts.unknown_disconnects += 1
            elif state:
                counts.duplicate_disconnects += 1
            else:
                counts.disconnected[token] = True
            self.set_status(204)
        else:
            counts.other_callbacks += 1
            self.set_status(400)

    async def _hello(self, token: str) -> str:
        """Send ``token`` its hello event; the gateway's answer as one word."""
        body = json.dumps({"token": token, "event": {"name": "hello", "data": token}})
        request = HTTPRequest(
            self.send_url,
            method="POST",
            body=body,
            headers={"Content-Type": "application/json"},
            request_timeout=REQUEST_TIMEOUT,
        )
        try:
            response = await self.client.fetch(request, raise_error=False)
        except Exception as exc:  # the client reports transport errors by raising
            return "error:%s" % type(exc).__name__
        if response.code == 200:
            try:
                return str(json.loads(response.body)["status"])
            except (ValueError, KeyError, TypeError):
                return "bad_answer"
        if response.code == 404:
            return "not_found"
        return "http_%d" % response.code


class CountsHandler(RequestHandler):
    """``GET /counts``: the backend's counters as JSON."""

    def initialize(self, counts: BackendCounts) -> None:
        self.counts = counts

    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(self.counts.as_dict()))


async def backend_main(port: int, gateway_port: int) -> int:
    """Serve the mock backend until SIGTERM; print ``listening <port>`` once ready."""
    counts = BackendCounts()
    client: AsyncHTTPClient
    if HAVE_CURL:
        client = CurlAsyncHTTPClient(force_instance=True, max_clients=256)
    else:
        client = AsyncHTTPClient(force_instance=True, max_clients=256)
    send_url = "http://%s:%d/internal/send" % (LOOPBACK, gateway_port)
    app = Application(
        [
            (
                r"/callback",
                CallbackHandler,
                {"counts": counts, "client": client, "send_url": send_url},
            ),
            (r"/counts", CountsHandler, {"counts": counts}),
        ]
    )
    sockets = bind_sockets(port, LOOPBACK)
    server = HTTPServer(app)
    server.add_sockets(sockets)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("listening %d" % sockets[0].getsockname()[1], flush=True)
    await stop.wait()
    server.stop()
    client.close()
    return 0


# ------------------------------------------------------------------------------------------------
# The publisher


class Publisher:
    """Publishes ``seq`` = 1, 2, 3... to the channel at ``rate`` events per second.

    One request at a time on one keep-alive connection, so the gateway applies the events in
    sequence order; when it falls behind, the overdue events go as one batch (applied in order).
    ``issued`` is the last sequence number written to the socket, ``acked`` the last one
    answered; ``failed`` holds those whose answer was not 200 ``ok`` (they may or may not have
    been published).
    """

    def __init__(self, port: int, rate: float) -> None:
        self.port = port
        self.rate = rate
        self.issued = 0
        self.acked = 0
        self.ok = 0
        self.requests = 0
        self.failed: set[int] = set()
        self.errors: Counter[str] = Counter()
        self.started = 0.0
        self.stopped = 0.0
        self.stopping = False

    def required_upto(self, after: int) -> int | None:
        """The last acknowledged sequence number above ``after`` that did not fail, if any."""
        top = self.acked
        while top > after and top in self.failed:
            top -= 1
        return top if top > after else None

    @staticmethod
    def _item(seq: int) -> dict[str, Any]:
        return {"channel": CHANNEL, "event": {"data": str(seq)}}

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.started = loop.time()
        conn: HttpConnection | None = None
        next_seq = 1
        try:
            while not self.stopping:
                elapsed = loop.time() - self.started
                due = int(elapsed * self.rate)
                if due < next_seq:
                    await asyncio.sleep(next_seq / self.rate - elapsed)
                    continue
                last = min(due, next_seq + MAX_BATCH - 1)
                seqs = range(next_seq, last + 1)
                if len(seqs) == 1:
                    body = json.dumps(self._item(next_seq))
                else:
                    body = json.dumps([self._item(seq) for seq in seqs])
                self.requests += 1
                try:
                    if conn is None:
                        conn = await asyncio.wait_for(HttpConnection.open(self.port), 5)
                    self.issued = last
                    status, answer = await asyncio.wait_for(
                        conn.request("POST", "/internal/send", body.encode()), REQUEST_TIMEOUT
                    )
                    if not conn.reusable:
                        conn.close()
                        conn = None
                    self._settle(seqs, status, answer)
                except (TimeoutError, OSError, EOFError, ValueError) as exc:
                    self.errors[type(exc).__name__] += len(seqs)
                    self.failed.update(seqs)
                    if conn is not None:
                        conn.close()
                        conn = None
                self.issued = last
                self.acked = last
                next_seq = last + 1
        finally:
            self.stopped = loop.time()
            if conn is not None:
                conn.close()

    def _settle(self, seqs: range, status: int, answer: bytes) -> None:
        """Record the outcome of each sequence number of one answered request."""
        if status != 200:
            self.errors["http_%d" % status] += len(seqs)
            self.failed.update(seqs)
            return
        body = json.loads(answer)
        results: Any = [{"status": status, "body": body}]
        if len(seqs) > 1:
            results = body.get("results") if isinstance(body, dict) else None
            if not isinstance(results, list) or len(results) != len(seqs):
                self.errors["bad_batch_answer"] += len(seqs)
                self.failed.update(seqs)
                return
        for seq, result in zip(seqs, results, strict=True):
            if result.get("status") == 200 and result.get("body") == {"status": "ok"}:
                self.ok += 1
            else:
                self.errors["item_%s" % result.get("status")] += 1
                self.failed.add(seq)


# ------------------------------------------------------------------------------------------------
# The load: client slots


class EventStream:
    """Incremental parser of a stream body: de-chunks it, then splits it into SSE events.

    :meth:`feed` returns ``(name, data, id)`` for each complete event (comments are skipped).
    """

    __slots__ = ("_decoder", "_buf", "ended")

    def __init__(self, chunked: bool) -> None:
        self._decoder = ChunkedDecoder() if chunked else None
        self._buf = b""
        self.ended = False  # the response body ended

    def feed(self, data: bytes) -> list[tuple[str, str, str | None]]:
        if self._decoder is not None:
            data = self._decoder.feed(data)
            self.ended = self._decoder.done
        buf = self._buf + data
        end = buf.rfind(b"\n\n")
        if end < 0:
            self._buf = buf
            return []
        self._buf = buf[end + 2 :]
        events: list[tuple[str, str, str | None]] = []
        for block in buf[:end].split(b"\n\n"):
            name, event_id, lines = "message", None, []
            for line in block.split(b"\n"):
                if not line or line[0] == 0x3A:  # ":" starts a comment (heartbeats)
                    continue
                key, _, value = line.partition(b":")
                if value[:1] == b" ":
                    value = value[1:]
                if key == b"data":
                    lines.append(value)
                elif key == b"event":
                    name = value.decode()
                elif key == b"id":
                    event_id = value.decode()
            if lines:
                events.append((name, b"\n".join(lines).decode(), event_id))
        return events


class Stream:
    """One client connection of a slot and what it received."""

    __slots__ = (
        "slot",
        "status",
        "error",
        "cut_short",
        "window_done",
        "ended_by_server",
        "issued_at_head",
        "need_seq",
        "hello",
        "hello_late",
        "ids",
        "seqs",
        "max_seq",
        "unexpected",
        "waiter",
    )

    def __init__(self, slot: int) -> None:
        self.slot = slot
        self.status: int | None = None  # HTTP status of the response, once its head arrived
        self.error: str | None = None
        self.cut_short = False  # closed by the end of the soak, not by its own timer
        self.window_done = False  # read for its whole time (and grace)
        self.ended_by_server = False  # the gateway ended the response while the client read
        self.issued_at_head = 0  # publisher's last written seq when the headers arrived
        self.need_seq: int | None = None  # last acknowledged seq when the read time ended
        self.hello: list[str] = []
        self.hello_late = False  # a hello arrived after a channel event
        self.ids: list[int] = []
        self.seqs: list[int] = []
        self.max_seq = 0
        self.unexpected = 0
        self.waiter: asyncio.Future[None] | None = None

    def satisfied(self) -> bool:
        """Whether the hello and every event this stream must wait for have arrived."""
        return bool(self.hello) and (self.need_seq is None or self.max_seq >= self.need_seq)


@dataclass
class LoadTotals:
    """Counters of the load, over every stream."""

    requests: int = 0
    opened: int = 0
    refused: Counter[int] = field(default_factory=Counter)  # non-200 status -> streams
    errors: Counter[str] = field(default_factory=Counter)  # exception -> streams
    cut_before_head: int = 0
    ended_by_server: int = 0
    unexpected_events: int = 0
    hello_received: int = 0
    hello_missing: int = 0
    hello_duplicates: int = 0
    hello_late: int = 0
    hello_bad_token: int = 0
    hello_token_reused: int = 0
    events_received: int = 0
    streams_checked: int = 0
    lost: int = 0
    missed_in_window: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    id_mismatches: int = 0


class Load:
    """``slots`` client slots, each opening a stream, reading it for a random time, closing it."""

    def __init__(
        self,
        port: int,
        slots: int,
        read_time: tuple[float, float],
        publisher: Publisher,
        rng: random.Random,
    ) -> None:
        self.port = port
        self.slots = slots
        self.read_time = read_time
        self.publisher = publisher
        self.rng = rng
        self.totals = LoadTotals()
        self._tasks: list[asyncio.Task[None]] = []
        self.stopping = False
        self._id_of_seq: dict[int, int] = {}
        self._tokens: set[str] = set()

    def _request(self, slot: int) -> bytes:
        return (
            "GET /sse/%s/%d HTTP/1.1\r\nHost: %s:%d\r\nAccept: text/event-stream\r\n"
            "Cache-Control: no-cache\r\n\r\n" % (CHANNEL, slot, LOOPBACK, self.port)
        ).encode("latin-1")

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._slot(i)) for i in range(self.slots)]

    async def stop(self) -> None:
        """Close every client, wherever it is (connecting, reading or waiting)."""
        self.stopping = True
        await cancel_all(self._tasks, "client slots")
        for task in self._tasks:
            if not task.cancelled() and task.exception() is not None:
                self.totals.errors["slot crashed: %r" % task.exception()] += 1

    async def _slot(self, slot: int) -> None:
        await asyncio.sleep(self.rng.uniform(0, 0.5))  # spread the first connects
        while not self.stopping:
            stream = Stream(slot)
            self.totals.requests += 1
            try:
                await self._once(stream)
            except asyncio.CancelledError:
                stream.cut_short = True
                raise
            except Exception as exc:  # recorded per stream; the slot goes on
                stream.error = type(exc).__name__
            finally:
                self._account(stream)
            if stream.status != 200:
                await asyncio.sleep(0.1)

    async def _once(self, stream: Stream) -> None:
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection(LOOPBACK, self.port)
        reading: asyncio.Task[None] | None = None
        try:
            writer.write(self._request(stream.slot))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
            stream.status, headers = parse_head(head)
            if stream.status != 200:
                return
            stream.issued_at_head = self.publisher.issued
            chunked = headers.get("transfer-encoding", "").lower() == "chunked"
            reading = loop.create_task(self._read(reader, EventStream(chunked), stream))
            await asyncio.sleep(self.rng.uniform(*self.read_time))
            stream.need_seq = self.publisher.required_upto(stream.issued_at_head)
            if not stream.satisfied() and not reading.done():
                stream.waiter = loop.create_future()
                try:
                    await asyncio.wait_for(stream.waiter, GRACE)
                except TimeoutError:
                    pass
            stream.window_done = True
        finally:
            if reading is not None:
                reading.cancel()
            writer.close()

    async def _read(self, reader: asyncio.StreamReader, parser: EventStream, s: Stream) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    s.ended_by_server = True
                    return
                for name, text, event_id in parser.feed(data):
                    if name == "message" and event_id is not None:
                        seq = int(text)
                        s.ids.append(int(event_id))
                        s.seqs.append(seq)
                        if seq > s.max_seq:
                            s.max_seq = seq
                    elif name == "hello":
                        s.hello.append(text)
                        if s.seqs:
                            s.hello_late = True
                    else:
                        s.unexpected += 1
                if parser.ended:
                    s.ended_by_server = True
                    return
                if s.waiter is not None and not s.waiter.done() and s.satisfied():
                    s.waiter.set_result(None)
        except (OSError, ValueError) as exc:
            s.error = "read %s" % type(exc).__name__
        finally:
            if s.waiter is not None and not s.waiter.done():
                s.waiter.set_result(None)

    def _account(self, s: Stream) -> None:
        """Check one finished stream and add it to the totals."""
        t = self.totals
        if s.status is None:
            if s.cut_short and s.error is None:
                t.cut_before_head += 1
            else:
                t.errors[s.error or "no answer"] += 1
            return
        if s.status != 200:
            t.refused[s.status] += 1
            return
        t.opened += 1
        if s.error is not None:
            t.errors[s.error] += 1
        if s.ended_by_server:
            t.ended_by_server += 1
        t.unexpected_events += s.unexpected

        # The hello: exactly one, a fresh UUID, before any channel event.
        t.hello_received += len(s.hello)
        if s.hello:
            t.hello_duplicates += len(s.hello) - 1
            for token in set(s.hello):
                if not UUID_RE.fullmatch(token):
                    t.hello_bad_token += 1
                if token in self._tokens:
                    t.hello_token_reused += 1
                self._tokens.add(token)
        elif s.window_done or s.seqs:
            t.hello_missing += 1
        if s.hello_late:
            t.hello_late += 1

        # Channel events: ids strictly increasing, each seq once and in order, no gap.
        t.events_received += len(s.seqs)
        seen: set[int] = set()
        prev_id = -1
        top = 0
        for event_id, seq in zip(s.ids, s.seqs, strict=True):
            if self._id_of_seq.setdefault(seq, event_id) != event_id:
                t.id_mismatches += 1
            if seq in seen:
                t.duplicates += 1
            else:
                if seq < top or event_id <= prev_id:
                    t.out_of_order += 1
                seen.add(seq)
            top = max(top, seq)
            prev_id = max(prev_id, event_id)
        if not seen:
            low, high = 0, -1
        else:
            low, high = min(seen), max(seen)
            if len(seen) >= 2:
                t.streams_checked += 1
        failed = self.publisher.failed
        for seq in range(low, high + 1):
            if seq not in seen and seq not in failed:
                t.lost += 1
        if s.window_done and s.need_seq is not None:
            for seq in range(s.issued_at_head + 1, s.need_seq + 1):
                if not low <= seq <= high and seq not in seen and seq not in failed:
                    t.missed_in_window += 1


# ------------------------------------------------------------------------------------------------
# Orchestration


def gateway_env(callback_url: str, port: int, extra: dict[str, str]) -> dict[str, str]:
    """The gateway's environment: ours without any gateway setting, plus the soak's."""
    env = {k: v for k, v in os.environ.items() if k not in GATEWAY_ENV}
    env.update(
        PORT=str(port),
        HOST=LOOPBACK,
        CALLBACK_URL=callback_url,
        LOG_LEVEL="warning",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


async def start_backend(gateway_port: int, loop: str) -> Child:
    """Start the mock backend and wait for the port it listens on."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    log = tempfile.TemporaryFile()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.soak",
        "--role",
        "backend",
        "--port",
        "0",
        "--gateway-port",
        str(gateway_port),
        "--loop",
        loop,
        cwd=str(REPO_ROOT),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
    )
    child = Child("backend", process, log, 0)
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 15)
    except TimeoutError:
        line = b""
    words = line.split()
    if len(words) != 2 or words[0] != b"listening":
        await child.terminate(5)
        raise SoakError("the backend did not start:\n" + "\n".join(child.log_lines()[-20:]))
    child.port = int(words[1])
    return child


async def start_gateway(port: int, backend_port: int, extra: dict[str, str]) -> Child:
    """Start ``python -m tornado_sse`` and wait until ``/readyz`` answers 200."""
    callback_url = "http://%s:%d/callback" % (LOOPBACK, backend_port)
    log = tempfile.TemporaryFile()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tornado_sse",
        cwd=str(REPO_ROOT),
        env=gateway_env(callback_url, port, extra),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=log,
    )
    child = Child("gateway", process, log, port)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and child.running:
        try:
            status, _ = await fetch(port, "GET", "/readyz")
            if status == 200:
                return child
        except (TimeoutError, OSError, EOFError, ValueError):
            pass
        await asyncio.sleep(0.05)
    await child.terminate(5)
    raise SoakError("the gateway did not start:\n" + "\n".join(child.log_lines()[-20:]))


async def wait_for_disconnects(backend_port: int, timeout: float) -> tuple[dict[str, Any], float]:
    """Poll the backend until it has as many disconnects as connects (at most ``timeout`` s).

    Returns its last counts and how long the wait took.
    """
    started = time.monotonic()
    while True:
        counts = await fetch_json(backend_port, "/counts")
        waited = time.monotonic() - started
        if counts["disconnects"] >= counts["connects"] or waited >= timeout:
            return counts, waited
        await asyncio.sleep(0.05)


def gateway_log_summary(lines: list[str]) -> tuple[Counter[str], Counter[str], list[str]]:
    """The gateway's log: lines per level (the expected start-up warning and the access log
    left out), access log lines per status, and the lines worth showing.

    The access log is counted apart: its 4xx/5xx lines at the end of the load are the requests
    of clients that left while their connect callback was in flight, which the invariants on
    callbacks already cover.
    """
    levels: Counter[str] = Counter()
    access: Counter[str] = Counter()
    worse: list[str] = []
    others: list[str] = []
    for line in lines:
        if EXPOSURE_WARNING in line:
            continue
        words = line.split(" ", 4)
        if len(words) > 3 and words[2] == ACCESS_LOGGER:
            status = re.search(r"status=(\d+)", line)
            access[status.group(1) if status else "?"] += 1
            others.append(line)
            continue
        level = words[1] if len(words) > 2 and words[1].isupper() else "other"
        levels[level] += 1
        (others if level in ("DEBUG", "INFO", "WARNING") else worse).append(line)
    return levels, access, worse[:15] + others[:5]


@dataclass
class Options:
    """The soak's parameters (see :func:`parse_args`)."""

    duration: float
    slots: int
    rate: float
    read_time: tuple[float, float]
    warmup: float
    settle: float
    drain_timeout: float
    seed: int
    env: dict[str, str]
    smoke: bool
    loop: str
    gateway_log: str | None


async def soak(opts: Options) -> dict[str, Any]:
    """Run the soak; returns the report (see :func:`invariants` for what must hold)."""
    loop = asyncio.get_running_loop()
    rng = random.Random(opts.seed)
    gateway_port = free_port()
    backend = await start_backend(gateway_port, opts.loop)
    gateway: Child | None = None
    try:
        gateway = await start_gateway(gateway_port, backend.port, opts.env)
        publisher = Publisher(gateway_port, opts.rate)
        load = Load(gateway_port, opts.slots, opts.read_time, publisher, rng)
        load_before = load_average()
        cpu_before = {
            "gateway": cpu_seconds(gateway.pid),
            "backend": cpu_seconds(backend.pid),
            "soak": time.process_time(),
            "machine": busy_cpu_seconds(),
        }
        started = loop.time()
        publishing = loop.create_task(publisher.run())
        load.start()
        samples: list[tuple[float, float]] = []

        async def sample() -> None:
            assert gateway is not None
            while True:
                samples.append((round(loop.time() - started, 1), round(rss_mib(gateway.pid), 1)))
                await asyncio.sleep(5)

        sampling = loop.create_task(sample())
        await asyncio.sleep(opts.warmup)
        rss_start = rss_mib(gateway.pid)
        await asyncio.sleep(max(0.0, started + opts.duration - loop.time()))
        await load.stop()
        publisher.stopping = True
        await cancel_all([publishing, sampling], "publisher")
        load_seconds = loop.time() - started
        cpu = {
            "gateway": cpu_seconds(gateway.pid) - cpu_before["gateway"],
            "backend": cpu_seconds(backend.pid) - cpu_before["backend"],
            "soak": time.process_time() - cpu_before["soak"],
            "machine": busy_cpu_seconds() - cpu_before["machine"],
        }
        cpu["other processes"] = max(
            0.0, cpu["machine"] - cpu["gateway"] - cpu["backend"] - cpu["soak"]
        )
        load_after = load_average()

        counts, drain_seconds = await wait_for_disconnects(backend.port, opts.drain_timeout)
        gateway_streams = (await fetch_json(gateway_port, "/internal/connections?limit=0"))["count"]
        await asyncio.sleep(opts.settle)
        rss_end = rss_mib(gateway.pid)
        rss_peak = peak_rss_mib(gateway.pid)
        gateway_exit = await gateway.terminate(GATEWAY_EXIT_TIMEOUT)
        final_counts = await fetch_json(backend.port, "/counts")
        gateway_lines = gateway.log_lines()
        levels, access, notable = gateway_log_summary(gateway_lines)
        if opts.gateway_log:
            Path(opts.gateway_log).write_text("".join(line + "\n" for line in gateway_lines))
    finally:
        if gateway is not None and gateway.running:
            await gateway.terminate(10)
        backend_exit = await backend.terminate(10)

    t = load.totals
    published = publisher.ok
    publish_seconds = max(publisher.stopped - publisher.started, 1e-9)
    shutdown_disconnects = final_counts["disconnects"] - counts["disconnects"]
    results: dict[str, Any] = {
        "duration_s": round(load_seconds, 2),
        "connects": counts["connects"],
        "disconnect_callbacks": counts["disconnects"],
        "hello_missing": t.hello_missing,
        "channel_events_lost": t.lost,
        "duplicates": t.duplicates,
        "rss_start_mib": round(rss_start, 1),
        "rss_end_mib": round(rss_end, 1),
        "connects_per_s": round(counts["connects"] / load_seconds, 1),
        # Details.
        "disconnect_wait_s": round(drain_seconds, 2),
        "disconnect_reasons": counts["reasons"],
        "duplicate_disconnects": final_counts["duplicate_disconnects"],
        "unknown_disconnects": final_counts["unknown_disconnects"],
        "disconnects_at_shutdown": shutdown_disconnects,
        "gateway_open_streams_after_close": gateway_streams,
        "stream_requests": t.requests,
        "streams_opened": t.opened,
        "streams_refused": {str(k): v for k, v in sorted(t.refused.items())},
        "stream_errors": dict(t.errors),
        "streams_closed_while_connecting": t.cut_before_head,
        "streams_ended_by_gateway": t.ended_by_server,
        "hello_received": t.hello_received,
        "hello_duplicates": t.hello_duplicates,
        "hello_after_channel_event": t.hello_late,
        "hello_bad_token": t.hello_bad_token,
        "hello_token_reused": t.hello_token_reused,
        "hello_send_answers": final_counts["hello"],
        "channel_events_published": published,
        "publish_rate_per_s": round(published / publish_seconds, 1),
        "publish_requests": publisher.requests,
        "publish_failures": len(publisher.failed),
        "publish_errors": dict(publisher.errors),
        "channel_events_received": t.events_received,
        "channel_events_received_per_s": round(t.events_received / load_seconds, 1),
        "streams_checked": t.streams_checked,
        "channel_events_missed_in_window": t.missed_in_window,
        "out_of_order": t.out_of_order,
        "id_mismatches": t.id_mismatches,
        "unexpected_events": t.unexpected_events,
        "rss_peak_mib": round(rss_peak, 1),
        "rss_samples_mib": samples,
        "cpu_seconds": {k: round(v, 1) for k, v in cpu.items()},
        "load_average_1min": [round(load_before, 2), round(load_after, 2)],
        "gateway_exit_status": gateway_exit,
        "backend_exit_status": backend_exit,
        "gateway_log_lines": dict(levels),
        "gateway_access_log_lines": dict(access),
        "gateway_log_excerpt": notable,
    }
    checks = invariants(results)
    return {
        "ok": all(c["ok"] for c in checks),
        "failed": [c["name"] for c in checks if not c["ok"]],
        "config": {
            "duration_s": opts.duration,
            "slots": opts.slots,
            "publish_rate_per_s": opts.rate,
            "read_time_s": list(opts.read_time),
            "warmup_s": opts.warmup,
            "settle_s": opts.settle,
            "seed": opts.seed,
            "smoke": opts.smoke,
            "gateway_env": opts.env,
        },
        "machine": machine(opts.loop),
        "results": results,
        "invariants": checks,
    }


def invariants(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Every check of the soak: ``name``, ``ok`` and what was measured."""

    def check(name: str, ok: bool, detail: str) -> dict[str, Any]:
        return {"name": name, "ok": bool(ok), "detail": detail}

    def zero(name: str, key: str) -> dict[str, Any]:
        return check(name, r[key] == 0, "%s = %s" % (key, r[key]))

    errors = sum(r["stream_errors"].values()) + sum(r["streams_refused"].values())
    error_lines = sum(
        n
        for level, n in r["gateway_log_lines"].items()
        if level not in ("DEBUG", "INFO", "WARNING")
    )
    hello_other = {
        k: v for k, v in r["hello_send_answers"].items() if k not in ("buffered", "not_found")
    }
    return [
        check(
            "one disconnect per connect",
            r["disconnect_callbacks"] == r["connects"],
            "connects = %d, disconnect callbacks = %d" % (r["connects"], r["disconnect_callbacks"]),
        ),
        zero("no duplicate disconnect", "duplicate_disconnects"),
        zero("no disconnect for an unknown token", "unknown_disconnects"),
        zero("no stream left open after the clients closed", "gateway_open_streams_after_close"),
        zero("no disconnect left for shutdown", "disconnects_at_shutdown"),
        zero("every stream got its hello", "hello_missing"),
        check(
            "one hello per stream, first, with a fresh token",
            r["hello_duplicates"]
            + r["hello_after_channel_event"]
            + r["hello_bad_token"]
            + r["hello_token_reused"]
            == 0,
            "duplicates = %d, after a channel event = %d, bad token = %d, token reused = %d"
            % (
                r["hello_duplicates"],
                r["hello_after_channel_event"],
                r["hello_bad_token"],
                r["hello_token_reused"],
            ),
        ),
        check(
            "every hello send buffered",
            not hello_other,
            "answers = %s" % json.dumps(r["hello_send_answers"], sort_keys=True),
        ),
        zero("no channel event lost", "channel_events_lost"),
        zero("no channel event missed in a stream's window", "channel_events_missed_in_window"),
        zero("no duplicate channel event", "duplicates"),
        zero("channel events in order", "out_of_order"),
        zero("one id per channel event", "id_mismatches"),
        zero("no unexpected event", "unexpected_events"),
        zero("every publish answered ok", "publish_failures"),
        check(
            "every stream request answered 200",
            errors == 0,
            "refused = %s, errors = %s"
            % (json.dumps(r["streams_refused"]), json.dumps(r["stream_errors"])),
        ),
        zero("no stream ended by the gateway", "streams_ended_by_gateway"),
        check(
            "nothing logged above WARNING by the gateway",
            error_lines == 0,
            "log lines by level (start-up warning and access log excluded) = %s"
            % json.dumps(r["gateway_log_lines"], sort_keys=True),
        ),
        check(
            "gateway exits 0 on SIGTERM",
            r["gateway_exit_status"] == 0,
            "exit status = %s" % r["gateway_exit_status"],
        ),
        check(
            "backend exits 0 on SIGTERM",
            r["backend_exit_status"] == 0,
            "exit status = %s" % r["backend_exit_status"],
        ),
    ]


def table(report: dict[str, Any]) -> Iterator[str]:
    """The report as text lines: the figures, then each invariant."""
    r, cfg, m = report["results"], report["config"], report["machine"]
    yield "tornado_sse churn soak: %gs, %d slots, %g channel events/s, reads of %g-%g s" % (
        cfg["duration_s"],
        cfg["slots"],
        cfg["publish_rate_per_s"],
        *cfg["read_time_s"],
    )
    yield "machine: %d CPUs (%s), Python %s, Tornado %s, %s loop" % (
        m["nproc"],
        m["cpu_model"],
        m["python"],
        m["tornado"],
        m["event_loop"],
    )
    rows = [
        ("duration (s)", r["duration_s"]),
        ("connects (backend callbacks)", r["connects"]),
        ("disconnect callbacks", r["disconnect_callbacks"]),
        ("  time for them to arrive (s)", r["disconnect_wait_s"]),
        ("  reasons", ", ".join("%s %d" % kv for kv in sorted(r["disconnect_reasons"].items()))),
        ("connects/s", r["connects_per_s"]),
        ("streams opened by clients", r["streams_opened"]),
        ("  closed while connecting (at stop)", r["streams_closed_while_connecting"]),
        ("hello events missing", r["hello_missing"]),
        ("channel events published", r["channel_events_published"]),
        ("  rate achieved (/s)", r["publish_rate_per_s"]),
        ("channel events received", r["channel_events_received"]),
        ("  per second", r["channel_events_received_per_s"]),
        ("streams checked (>= 2 events)", r["streams_checked"]),
        ("channel events lost", r["channel_events_lost"]),
        ("  missed in a stream's window", r["channel_events_missed_in_window"]),
        ("duplicates", r["duplicates"]),
        ("out of order", r["out_of_order"]),
        ("gateway RSS start (MiB)", r["rss_start_mib"]),
        ("gateway RSS end (MiB)", r["rss_end_mib"]),
        ("gateway RSS peak (MiB)", r["rss_peak_mib"]),
        (
            "CPU s (gateway/backend/soak/others)",
            "%(gateway)s / %(backend)s / %(soak)s / %(other processes)s" % r["cpu_seconds"],
        ),
        ("gateway exit status", r["gateway_exit_status"]),
        (
            "gateway access log (status: lines)",
            ", ".join("%s: %d" % kv for kv in sorted(r["gateway_access_log_lines"].items())),
        ),
    ]
    width = max(len(name) for name, _ in rows)
    yield ""
    for name, value in rows:
        yield "%-*s  %s" % (width, name, value)
    yield ""
    for c in report["invariants"]:
        yield "[%s] %s: %s" % ("ok" if c["ok"] else "FAIL", c["name"], c["detail"])
    if r["gateway_log_excerpt"] and not report["ok"]:
        yield ""
        yield "gateway log (first lines):"
        yield from ("  " + line for line in r["gateway_log_excerpt"])
    yield ""
    yield "PASS" if report["ok"] else "FAIL: " + "; ".join(report["failed"])


# ------------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak",
        description="Churn soak test of tornado_sse on 127.0.0.1 (see the module docstring).",
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load [60]")
    parser.add_argument("--slots", type=int, default=200, help="concurrent client slots [200]")
    parser.add_argument("--rate", type=float, default=200.0, help="channel events/s [200]")
    parser.add_argument("--min-read", type=float, default=0.05, help="shortest read, s [0.05]")
    parser.add_argument("--max-read", type=float, default=1.0, help="longest read, s [1.0]")
    parser.add_argument("--warmup", type=float, default=2.0, help="s before the first RSS [2]")
    parser.add_argument("--settle", type=float, default=2.0, help="s before the last RSS [2]")
    parser.add_argument(
        "--drain-timeout", type=float, default=10.0, help="s to wait for disconnects [10]"
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed [random]")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra gateway environment variable (repeatable)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    parser.add_argument("--gateway-log", metavar="FILE", help="write the gateway's log there")
    parser.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="event loop of the load and the backend [auto: uvloop if installed]",
    )
    parser.add_argument("--smoke", action="store_true", help="5 s, 20 slots (for CI)")
    parser.add_argument(
        "--role", choices=("soak", "backend"), default="soak", help=argparse.SUPPRESS
    )
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--gateway-port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.duration, args.slots = 5.0, 20
    if args.role == "soak":
        if args.slots < 1 or args.rate <= 0:
            parser.error("--slots and --rate must be positive")
        if not 0 < args.min_read <= args.max_read:
            parser.error("need 0 < --min-read <= --max-read")
        if not 0 < args.warmup < args.duration:
            parser.error("need 0 < --warmup < --duration")
        for item in args.env:
            if "=" not in item:
                parser.error("--env takes NAME=VALUE, not %r" % item)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role == "backend":
        return run(backend_main(args.port, args.gateway_port), args.loop)
    opts = Options(
        duration=args.duration,
        slots=args.slots,
        rate=args.rate,
        read_time=(args.min_read, args.max_read),
        warmup=args.warmup,
        settle=args.settle,
        drain_timeout=args.drain_timeout,
        seed=args.seed if args.seed is not None else random.SystemRandom().randrange(2**32),
        env=dict(item.split("=", 1) for item in args.env),
        smoke=args.smoke,
        loop=args.loop,
        gateway_log=args.gateway_log,
    )
    try:
        report = run_report(opts)
    except SoakError as exc:
        print("soak: error: %s" % exc, file=sys.stderr)
        return 1
    for line in table(report):
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    return 0 if report["ok"] else 1


def run_report(opts: Options) -> dict[str, Any]:
    """Run :func:`soak` on the chosen event loop and return its report."""
    holder: dict[str, Any] = {}

    async def go() -> int:
        holder.update(await soak(opts))
        return 0

    run(go(), opts.loop)
    return holder


if __name__ == "__main__":
    sys.exit(main())
