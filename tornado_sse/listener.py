"""Accepting connections and reading requests, with the guards a server open to anyone needs.

Tornado's ``HTTPServer`` reads requests and hands them to the application; this module adds
what it leaves out:

- **Requests still being received are counted.** A connection that has not yet sent its first
  complete request, and a request whose head has arrived but whose declared body has not, hold a
  socket and memory while the gateway cannot see them as streams. :class:`GatewayHTTPServer`
  counts them in :attr:`Registry.receiving <tornado_sse.registry.Registry.receiving>`, where
  they take places under ``MAX_CONNECTIONS`` (the metric ``tornado_sse_requests_receiving``).
  ``HEADER_TIMEOUT_SECONDS`` bounds the wait for a head (which on a kept-alive connection
  includes its idle time since the previous request) and ``BODY_TIMEOUT_SECONDS`` the wait for
  a declared body, from the end of the head; past either the connection is closed
  (:class:`Deadlines`: one timer for all connections, where Tornado's own timeouts schedule one
  per request).
- **Out of file descriptors, accepting pauses instead of spinning.** Tornado's accept loop
  raises ``OSError(EMFILE)`` out of the IOLoop handler, which logs a traceback and runs again at
  once, for as long as a connection waits in the listen backlog. The :class:`Acceptor` stops
  watching the listening sockets instead, for :data:`PAUSE_SECONDS`, and logs one line when it
  starts, one per :data:`LOG_INTERVAL_SECONDS` while it lasts (with counts), and one when it
  ends.
- **A reserve of descriptors** (:class:`FdReserve`), held while accepting and released when the
  process runs out, so that disconnect callbacks and Redis still get sockets. Accepting resumes
  only once the reserve could be taken back, so accepted connections never eat into it.
  Connections that hold no request in progress (they have not finished sending one, or wait
  idle for the next) are the first to go: the oldest of them are closed to make room, as nginx
  reuses its idle connections, so that ``/healthz`` and new clients get through while an attacker
  holds sockets open.
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import resource
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

from tornado import httputil
from tornado.http1connection import HTTP1ServerConnection
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop, PeriodicCallback
from tornado.iostream import IOStream

from .config import Settings
from .log import fields
from .metrics import Metrics
from .registry import Registry

log = logging.getLogger("tornado_sse.listener")

#: Descriptors held in reserve while accepting (released when the process runs out).
RESERVE_FDS = 16
#: How long accepting pauses once the process is out of descriptors (nginx pauses 500 ms).
PAUSE_SECONDS = 0.1
#: At most one log line per this many seconds while the process stays out of descriptors.
LOG_INTERVAL_SECONDS = 10.0
#: Connections without a request in progress are closed to make room only once they are this
#: old, so that a client just accepted has time to send its head.
SHED_GRACE_SECONDS = 0.5
#: Idle connections closed per pause: at least this many, or an eighth of them.
SHED_BATCH = 32
#: Connections accepted per readiness event of a listening socket (as Tornado does).
ACCEPT_BATCH = 128
#: Descriptors a process needs beside its streams and callback connections: the listening
#: sockets, the event loop, the callback client's own, Redis, and the reserve.
BASE_FDS = 32 + RESERVE_FDS

#: ``accept()`` errors that mean the process or the system is out of a resource.
_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: ``accept()`` errors that concern only the connection being accepted (Linux passes pending
#: network errors of a new connection this way): skip it and accept the next.
_SKIP = frozenset(
    {errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.ENETDOWN, errno.ENETUNREACH}
)


def descriptor_limit() -> int:
    """The soft limit on open file descriptors of this process (``ulimit -n``)."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def descriptors_needed(settings: Settings) -> int:
    """File descriptors a process needs to hold ``MAX_CONNECTIONS`` streams: one per stream,
    one per callback connection, and :data:`BASE_FDS` for the rest."""
    return settings.max_connections + settings.callback_max_clients + BASE_FDS


class FdReserve:
    """``count`` descriptors (``/dev/null``) held so that they can be given back when needed."""

    def __init__(self, count: int = RESERVE_FDS) -> None:
        self.count = count
        self._fds: list[int] = []

    @property
    def held(self) -> bool:
        """Whether the whole reserve is held."""
        return len(self._fds) == self.count

    def acquire(self) -> bool:
        """Take the whole reserve, or none of it: False if the process lacks the descriptors."""
        while len(self._fds) < self.count:
            try:
                self._fds.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
            except OSError:
                self.release()
                return False
        return True

    def release(self) -> None:
        """Give every reserved descriptor back to the process."""
        fds, self._fds = self._fds, []
        for fd in fds:
            os.close(fd)

    def spare(self) -> bool:
        """Whether the process could open one more descriptor now (a probe, closed at once)."""
        try:
            os.close(os.dup(self._fds[0]) if self._fds else os.open(os.devnull, os.O_RDONLY))
        except OSError:
            return False
        return True


class Acceptor:
    """Accepts connections on the listening sockets of one process, backing off when the
    process is out of file descriptors (see the module docstring).

    Every server of a process must share one acceptor: descriptors are the process's, and a
    server that went on accepting while another paused would take the reserve.
    """

    def __init__(
        self,
        *,
        reserve: int = RESERVE_FDS,
        pause: float = PAUSE_SECONDS,
        log_interval: float = LOG_INTERVAL_SECONDS,
        metrics: Metrics | None = None,
    ) -> None:
        self.pause_seconds = pause
        self.log_interval = log_interval
        self.metrics = metrics
        self._reserve = FdReserve(reserve)
        self._sockets: dict[socket.socket, Callable[[socket.socket, Any], None]] = {}
        #: Connections with no request in progress, oldest first, and since when.
        self._idle: collections.OrderedDict[IOStream, float] = collections.OrderedDict()
        self._paused = False
        self._resume_timer: object | None = None
        self._report_timer: object | None = None
        self._pauses = 0  # since the last log line
        self._shed = 0  # since the last log line

    @property
    def paused(self) -> bool:
        """Whether accepting is paused for want of descriptors."""
        return self._paused

    # -- listening sockets ----------------------------------------------------------------

    def add(
        self, sock: socket.socket, callback: Callable[[socket.socket, Any], None]
    ) -> Callable[[], None]:
        """Accept connections on ``sock`` and pass each to ``callback(connection, address)``;
        returns the function that stops it (the contract of ``tornado.netutil``'s
        ``add_accept_handler``)."""
        if not self._sockets and not self._reserve.held and not self._reserve.acquire():
            log.warning(
                "no file descriptors to keep in reserve",
                extra=fields(reserve=self._reserve.count, limit=descriptor_limit()),
            )
        self._sockets[sock] = callback
        if not self._paused:
            self._watch(sock)

        def remove() -> None:
            if self._sockets.pop(sock, None) is not None and not self._paused:
                IOLoop.current().remove_handler(sock)
            if not self._sockets:
                self.close()

        return remove

    def close(self) -> None:
        """Release the reserve and stop the timers (once no socket is left)."""
        loop = IOLoop.current()
        for timer in (self._resume_timer, self._report_timer):
            if timer is not None:
                loop.remove_timeout(timer)
        self._resume_timer = self._report_timer = None
        self._paused = False
        self._reserve.release()

    def _watch(self, sock: socket.socket) -> None:
        callback = self._sockets[sock]
        IOLoop.current().add_handler(
            sock, lambda _fd, _events: self._accept(sock, callback), IOLoop.READ
        )

    def _accept(self, sock: socket.socket, callback: Callable[[socket.socket, Any], None]) -> None:
        accepted = 0
        for _ in range(ACCEPT_BATCH):
            if self._paused or sock not in self._sockets:
                return
            try:
                connection, address = sock.accept()
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in _SKIP:
                    continue
                if exc.errno in _EXHAUSTED:
                    self._exhausted(exc)
                    return
                raise
            accepted += 1
            callback(connection, address)
        # The last accept may have taken the last descriptor: the reserve must then be given to
        # the callbacks before they need it, not after the next accept fails.
        if accepted and not self._reserve.spare():
            self._exhausted(OSError(errno.EMFILE, os.strerror(errno.EMFILE)))

    # -- running out ----------------------------------------------------------------------

    def _exhausted(self, exc: OSError) -> None:
        """Out of descriptors: make room, release the reserve, pause, and say so (rate-limited)."""
        self._shed_idle()
        self._reserve.release()
        self._pause()
        self._pauses += 1
        if self.metrics is not None:
            self.metrics.accept_pauses.inc()
        if self._report_timer is None:
            self._report("out of file descriptors: accepting paused", exc)
            self._report_timer = IOLoop.current().call_later(self.log_interval, self._summarise)

    def _pause(self) -> None:
        if not self._paused:
            self._paused = True
            loop = IOLoop.current()
            for sock in self._sockets:
                loop.remove_handler(sock)
        if self._resume_timer is None:
            self._resume_timer = IOLoop.current().call_later(self.pause_seconds, self._resume)

    def _resume(self) -> None:
        self._resume_timer = None
        if not self._reserve.acquire():
            # Still short: free what idle connections hold, and try again after a pause.
            self._shed_idle()
            self._resume_timer = IOLoop.current().call_later(self.pause_seconds, self._resume)
            return
        self._paused = False
        for sock in list(self._sockets):
            self._watch(sock)

    def _summarise(self) -> None:
        """Once per log interval after running out: a line with the counts, or the all-clear."""
        if self._pauses or self._paused:
            self._report("still out of file descriptors", None)
            self._report_timer = IOLoop.current().call_later(self.log_interval, self._summarise)
            return
        self._report_timer = None
        log.info("accepting connections again", extra=fields(shed=self._shed))
        self._shed = 0

    def _report(self, message: str, exc: OSError | None) -> None:
        log.warning(
            message,
            extra=fields(
                error=errno.errorcode.get(exc.errno or 0, str(exc.errno)) if exc else None,
                pauses=self._pauses,
                shed=self._shed,
                paused=self._paused,
                idle=len(self._idle),
                limit=descriptor_limit(),
                interval=self.log_interval,
            ),
        )
        self._pauses = self._shed = 0

    # -- connections without a request in progress ---------------------------------------

    def idle(self, stream: IOStream) -> None:
        """``stream`` holds no request in progress (accepted, or kept alive between requests):
        it may be closed to make room."""
        if stream not in self._idle:
            self._idle[stream] = time.monotonic()

    def busy(self, stream: IOStream) -> None:
        """``stream`` now carries a request the application is serving: it is left alone."""
        self._idle.pop(stream, None)

    def _shed_idle(self) -> int:
        """Close the oldest idle connections (older than the grace time) to free their
        descriptors; returns how many."""
        count = max(SHED_BATCH, len(self._idle) // 8)
        cutoff = time.monotonic() - SHED_GRACE_SECONDS
        shed = 0
        while self._idle and shed < count:
            stream, since = next(iter(self._idle.items()))
            if since > cutoff:
                break
            del self._idle[stream]
            stream.close()
            shed += 1
        self._shed += shed
        if self.metrics is not None and shed:
            self.metrics.connections_shed.inc(shed)
        return shed


class Deadlines:
    """When each connection still receiving a request must have received it, and a sweep that
    closes the connections past their deadline.

    The sweep runs every ``interval`` seconds while any deadline is set, so a connection is
    closed at most ``interval`` after its deadline.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._at: dict[IOStream, float] = {}
        self._timer: PeriodicCallback | None = None

    def set(self, stream: IOStream, seconds: float) -> None:
        """``stream`` must have received what it is receiving within ``seconds``."""
        self._at[stream] = time.monotonic() + seconds
        if self._timer is None:
            self._timer = PeriodicCallback(self._sweep, self.interval * 1000)
            self._timer.start()

    def clear(self, stream: IOStream) -> None:
        """``stream`` has nothing more to receive for now (idempotent)."""
        self._at.pop(stream, None)

    def sweep(self) -> int:
        """Close every connection past its deadline; returns how many."""
        now = time.monotonic()
        late = [stream for stream, at in self._at.items() if at <= now]
        for stream in late:
            del self._at[stream]
            stream.close()
        if not self._at:
            self.stop()
        return len(late)

    def _sweep(self) -> None:
        self.sweep()

    def stop(self) -> None:
        """Stop the sweep (it starts again with the next deadline)."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None


class WriteQueue(list[Any]):
    """A FIFO as small as an empty list while nothing waits in it: the stand-in for the two
    ``collections.deque`` an ``IOStream`` keeps for its pending writes (each deque allocates
    a 64-slot block, about 760 bytes, at once). An open stream's frames nearly always go
    straight to the socket (:mod:`tornado_sse.writer`), so these queues are empty all but
    briefly, and short when they are not."""

    __slots__ = ()

    def popleft(self) -> Any:
        """Remove and return the first item (``IndexError`` when empty), as a deque does."""
        return self.pop(0)


class NoDelayStream(IOStream):
    """An IOStream whose socket keeps ``TCP_NODELAY`` on, as nginx's ``tcp_nodelay`` does,
    and whose write queues take no memory while empty (:class:`WriteQueue`).

    Every write of the gateway is a whole answer or a whole stream frame, so nothing is gained
    by letting the kernel hold a small segment back (Nagle's algorithm, up to a delayed ACK
    of 40 ms for an event frame); Tornado turns the option on and off again around each
    answer, two system calls per request, which this stream skips.

    The queues replaced are Tornado's ``IOStream._write_futures`` and
    ``_StreamBuffer._buffers``, used only through ``append``, ``popleft``, ``clear``,
    indexing, truth and iteration; ``tests/unit/test_writer.py`` sends through them and checks
    they are still the ones Tornado uses.
    """

    def __init__(self, connection: socket.socket, **kwargs: Any) -> None:
        super().__init__(connection, **kwargs)
        self._write_futures = WriteQueue()  # type: ignore[assignment]
        self._write_buffer._buffers = WriteQueue()  # type: ignore[assignment]
        try:
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not TCP (a Unix socket), or the peer already left: nothing to tune

    def set_nodelay(self, value: bool) -> None:
        """Keep ``TCP_NODELAY`` on (class docstring)."""

    def close(self, exc_info: Any = False) -> None:
        """Close as Tornado does, keeping the error (``self.error``) without its traceback:
        Tornado closes a stream whose client reset it from inside the read that failed, and
        the traceback's frames hold the stream, so stream, handler and request would wait in
        a reference cycle for the collector instead of being freed when the stream ends."""
        super().close(exc_info)
        if self.error is not None:
            self.error.__traceback__ = None


class GatewayHTTPServer(HTTPServer):
    """Tornado's HTTP server, accepting through an :class:`Acceptor` and counting the requests
    still being received in ``registry.receiving``.

    A connection counts from the moment it is accepted until its first request has arrived
    whole (head and declared body); a later request on a kept-alive connection counts from its
    head until its body has arrived. The count drops as soon as the request is complete, before
    the application sees it, so a stream request never counts against itself.
    """

    def initialize(  # type: ignore[override]
        self,
        request_callback: Any,
        *,
        registry: Registry,
        acceptor: Acceptor,
        header_timeout: float,
        body_timeout: float,
        **kwargs: Any,
    ) -> None:
        super().initialize(request_callback, **kwargs)
        # The heads' deadlines are :attr:`deadlines`; without this Tornado would also wrap the
        # read of every head in a timeout of its own (an hour, its default), a timer and a
        # future more per request.
        self.conn_params.header_timeout = None
        self.registry = registry
        self.acceptor = acceptor
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.deadlines = Deadlines(min(1.0, max(0.01, min(header_timeout, body_timeout) / 10)))
        self._receiving: set[IOStream] = set()

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        for sock in sockets:
            self._sockets[sock.fileno()] = sock
            self._handlers[sock.fileno()] = self.acceptor.add(sock, self._handle_connection)

    def _handle_connection(self, connection: socket.socket, address: Any) -> None:
        if self.ssl_options is not None:
            super()._handle_connection(connection, address)
            return
        stream = NoDelayStream(
            connection, max_buffer_size=self.max_buffer_size, read_chunk_size=self.read_chunk_size
        )
        self.handle_stream(stream, address)

    def handle_stream(self, stream: IOStream, address: tuple[Any, ...]) -> None:
        self.acceptor.idle(stream)
        self.receiving(stream, True)
        super().handle_stream(stream, address)

    def start_request(
        self, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> httputil.HTTPMessageDelegate:
        # Called before each request's head is read: the head's deadline starts now.
        delegate = super().start_request(server_conn, request_conn)
        stream = server_conn.stream  # type: ignore[attr-defined]
        self.acceptor.idle(stream)
        self.deadlines.set(stream, self.header_timeout)
        return _TrackedRequest(delegate, self, stream)

    def on_close(self, server_conn: object) -> None:
        super().on_close(server_conn)
        assert isinstance(server_conn, HTTP1ServerConnection)
        self.receiving(server_conn.stream, False)
        self.acceptor.busy(server_conn.stream)
        self.deadlines.clear(server_conn.stream)

    def stop(self) -> None:
        super().stop()
        self.deadlines.stop()

    def receiving(self, stream: IOStream, now: bool) -> None:
        """Mark whether ``stream`` is receiving a request (idempotent)."""
        if now == (stream in self._receiving):
            return
        if now:
            self._receiving.add(stream)
            self.registry.receiving += 1
        else:
            self._receiving.discard(stream)
            self.registry.receiving -= 1


class _TrackedRequest(httputil.HTTPMessageDelegate):
    """Wraps the application's delegate for one request, to follow its reception."""

    def __init__(
        self, delegate: httputil.HTTPMessageDelegate, server: GatewayHTTPServer, stream: IOStream
    ) -> None:
        self._delegate = delegate
        self._server = server
        self._stream = stream

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> Any:
        self._server.receiving(self._stream, True)
        self._server.deadlines.set(self._stream, self._server.body_timeout)
        return self._delegate.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Any:
        return self._delegate.data_received(chunk)

    def finish(self) -> None:
        self._server.receiving(self._stream, False)
        self._server.acceptor.busy(self._stream)
        self._server.deadlines.clear(self._stream)
        self._delegate.finish()

    def on_connection_close(self) -> None:
        self._server.receiving(self._stream, False)
        self._delegate.on_connection_close()
