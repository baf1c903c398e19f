"""Running a gateway: settings from the command line, listening sockets, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import importlib.util
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from . import handover
from .app import App, GatewayApplication, make_app
from .config import ConfigError, Settings, argument_parser, load
from .listener import Acceptor, GatewayHTTPServer, descriptor_limit, descriptors_needed
from .log import fields
from .memory import HeapTrimmer

log = logging.getLogger("tornado_sse")


def parse(
    argv: Sequence[str], prog: str = "tornado-sse", description: str | None = None
) -> Settings:
    """Settings from command-line ``argv`` (without the program name) and the environment;
    ``description`` heads ``--help``."""
    args = vars(argument_parser(prog, description).parse_args(list(argv)))
    conf = args.pop("conf", None)
    return load(args, conf_file=conf)


def http_server(
    app: GatewayApplication, settings: Settings, acceptor: Acceptor | None = None
) -> GatewayHTTPServer:
    """An HTTP server for ``app`` with the limits of ``settings`` (not yet listening).

    Every server of one process must share one ``acceptor`` (see :class:`Acceptor`); without
    one, the server gets an acceptor of its own.
    """
    gateway = app.gateway
    return GatewayHTTPServer(
        app,
        registry=gateway.registry,
        acceptor=acceptor or Acceptor(metrics=gateway.metrics),
        # The bound of the routes whose bodies Tornado buffers. The send handler lifts it for
        # its own requests: it counts the body itself, answers 413 in JSON and then discards
        # the rest for a bounded time (json_post.JSONPost), where this bound would cut the
        # connection without an answer.
        max_body_size=settings.max_body_bytes + 64 * 1024,
        # Heads up to twice MAX_HEADER_BYTES are read and answered 431 in JSON by the app;
        # beyond that Tornado drops the connection without reading more.
        max_header_size=2 * settings.max_header_bytes,
        # The wait for a complete head, which on a kept-alive connection includes the idle
        # time since the previous request, and for the whole declared body, from the end of
        # the head (listener.Deadlines).
        header_timeout=settings.header_timeout_seconds,
        body_timeout=settings.body_timeout_seconds,
    )


class ListenError(ConfigError):
    """A port of the settings cannot be listened on; the message is one line naming the port
    and its setting."""


def bind(
    port: int, address: str | None, setting: str, reuse_port: bool = False
) -> list[socket.socket]:
    """Listening sockets on ``port`` of ``address`` (None: every interface), with
    ``SO_REUSEPORT`` if asked; raises :class:`ListenError` naming ``setting`` when that is
    impossible (in use, not permitted)."""
    try:
        return bind_sockets(port, address, reuse_port=reuse_port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ListenError(
                "port %d (%s) is already in use: stop what listens there or set another %s"
                % (port, setting, setting)
            ) from None
        on = " of HOST %s" % address if address else ""
        raise ListenError(
            "cannot listen on port %d%s (%s): %s" % (port, on, setting, exc.strerror or exc)
        ) from None


@dataclass
class Sockets:
    """Listening sockets bound before forking, shared by every process."""

    main: list[socket.socket]
    internal: list[socket.socket] = field(default_factory=list)

    @classmethod
    def bind(cls, settings: Settings) -> Sockets:
        """Bind ``PORT`` and ``INTERNAL_PORT`` (if set); raises :class:`ListenError`."""
        address = settings.address or None
        reuse = settings.reuse_port  # a successor may bind the same ports (handover.py)
        main = bind(settings.port, address, "PORT", reuse)
        internal = []
        if settings.internal_port is not None:
            try:
                internal = bind(settings.internal_port, address, "INTERNAL_PORT", reuse)
            except ListenError:
                for sock in main:
                    sock.close()
                raise
        return cls(main, internal)

    def close(self) -> None:
        """Close this process's descriptors of the sockets."""
        for sock in self.main + self.internal:
            sock.close()


def listen(
    app: App, settings: Settings, sockets: Sockets | None = None, acceptor: Acceptor | None = None
) -> list[HTTPServer]:
    """Start the HTTP server(s) for ``app``: the main port, and ``INTERNAL_PORT`` if set, all
    accepting through ``acceptor`` (one is made if none is given)."""
    sockets = sockets or Sockets.bind(settings)
    acceptor = acceptor or Acceptor(metrics=app.gateway.metrics)
    server = http_server(app, settings, acceptor)
    server.add_sockets(sockets.main)
    servers: list[HTTPServer] = [server]
    if app.internal_app is not None:
        internal = http_server(app.internal_app, settings, acceptor)
        internal.add_sockets(sockets.internal)
        servers.append(internal)
    return servers


def warn_if_exposed(settings: Settings) -> None:
    """Warn when anyone who reaches the main port can push to every stream."""
    if settings.internal_port is None and settings.internal_secret is None:
        log.warning(
            "the internal API is served on the public port without INTERNAL_SECRET: "
            "anyone who can reach port %d can send events; set INTERNAL_SECRET or INTERNAL_PORT",
            settings.port,
        )


def warn_if_short_of_descriptors(settings: Settings) -> None:
    """Warn when the file descriptor limit cannot hold ``MAX_CONNECTIONS`` streams."""
    limit, needed = descriptor_limit(), descriptors_needed(settings)
    if limit < needed:
        log.warning(
            "the file descriptor limit is too low for MAX_CONNECTIONS: raise it (ulimit -n) "
            "or lower MAX_CONNECTIONS",
            extra=fields(limit=limit, needed=needed, max_connections=settings.max_connections),
        )


def _own_metrics_server(
    app: App, settings: Settings, index: int, acceptor: Acceptor
) -> list[HTTPServer]:
    """With ``INTERNAL_PORT`` P, process ``index`` also serves its internal API and its own
    ``/metrics`` on P + 1 + index; a port that cannot be bound is logged, not fatal."""
    if app.internal_app is None or settings.internal_port is None:
        return []
    own_port = settings.internal_port + 1 + index
    own = http_server(app.internal_app, settings, acceptor)
    try:
        own.listen(own_port, settings.address)
    except OSError as exc:  # the shared ports still serve; only per-process metrics are lost
        log.error("cannot serve this process's metrics", extra=fields(port=own_port, error=exc))
        return []
    return [own]


async def _wait_for_broker(app: App, settings: Settings, stop: asyncio.Event) -> None:
    """Take no connection before the Redis link is up (PROTOCOL 6): a platform that routes to a
    process as soon as it listens must not send it streams it would refuse. After
    ``REDIS_CONNECT_TIMEOUT_SECONDS`` (or once ``stop`` is set) the port opens anyway, with
    ``/readyz`` 503."""
    timeout = settings.redis_connect_timeout_seconds
    ready = asyncio.ensure_future(app.gateway.broker.wait_ready(timeout))
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({ready, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not ready.done():
        ready.cancel()
        return
    if not ready.result():
        log.warning(
            "Redis is unreachable; serving anyway, not ready until it answers",
            extra=fields(waited=timeout),
        )


def wait_for_redis(settings: Settings) -> bool:
    """Before binding the shared port of ``--processes``: wait until Redis answers PING, at
    most ``REDIS_CONNECT_TIMEOUT_SECONDS``; whether it did. (With Sentinel or a Redis Cluster,
    each process's own link decides.)"""
    if not settings.redis_url or settings.redis_sentinels or settings.redis_cluster:
        return True
    import redis

    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=1, socket_timeout=1)
    deadline = time.monotonic() + settings.redis_connect_timeout_seconds
    try:
        while True:  # bounded by the deadline
            try:
                return bool(client.ping())
            except (redis.RedisError, OSError):
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.1)
    finally:
        client.close()


async def serve(
    settings: Settings,
    app: App | None = None,
    sockets: Sockets | None = None,
    process_index: int | None = None,
) -> int:
    """Run the gateway until SIGTERM or SIGINT, then drain it. Returns the exit status.

    ``sockets`` are shared listening sockets (several processes); ``process_index`` is this
    process's number among them: with ``INTERNAL_PORT`` P it also serves the internal API and
    its own ``/metrics`` on P + 1 + index.
    """
    app = app or make_app(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # a stop while waiting for Redis drains too
        loop.add_signal_handler(sig, stop.set)
    app.gateway.start()
    if settings.uses_redis:
        await _wait_for_broker(app, settings, stop)
    sockets = sockets or Sockets.bind(settings)
    acceptor = Acceptor(metrics=app.gateway.metrics)
    servers = listen(app, settings, sockets, acceptor)
    if process_index is not None:
        servers += _own_metrics_server(app, settings, process_index, acceptor)
    registry = app.gateway.registry
    trimmer = HeapTrimmer(lambda: registry.released_bytes)
    trimmer.start()
    warn_if_exposed(settings)
    warn_if_short_of_descriptors(settings)
    if not settings.callback_url and not settings.jwt_configured:
        log.warning("CALLBACK_URL is not set: every stream will be refused with 503")
    log.info(
        "listening",
        extra=fields(
            port=settings.port,
            internal_port=settings.internal_port,
            prefix=settings.sse_path_prefix,
            loop=type(asyncio.get_running_loop()).__module__.split(".")[0],
        ),
    )
    await stop.wait()
    if settings.reuse_port:  # a successor listens on the same port: let it take new connects
        for server, socks in zip(servers, (sockets.main, sockets.internal), strict=False):
            handover.stop_listening(server, socks)
    log.info("shutting down", extra=fields(timeout=settings.shutdown_timeout_seconds))
    try:  # the gateway says itself how many callbacks a timed-out drain leaves undelivered
        await asyncio.wait_for(
            app.gateway.shutdown(), timeout=settings.shutdown_timeout_seconds + 1
        )
    except TimeoutError:
        log.warning("shutdown did not finish in time")
    trimmer.stop()
    for server in servers:
        server.stop()
    log.info("stopped")
    return 0


#: How many times, in all, dead processes are started again before the whole gateway stops.
MAX_RESTARTS = 10


def run_processes(settings: Settings, forked: Callable[[int], None] | None = None) -> int:
    """Run ``settings.processes`` gateway processes (0: one per core) sharing the listening
    sockets; forward SIGTERM/SIGINT to them, restart one that dies on its own, and return 0 if
    every process drained cleanly. Each new process calls ``forked(index)`` first (``__main__``
    labels its log lines with it)."""
    count = settings.processes or os.cpu_count() or 1
    if not wait_for_redis(settings):
        log.warning(
            "Redis is unreachable; starting anyway, not ready until it answers",
            extra=fields(waited=settings.redis_connect_timeout_seconds),
        )
    sockets = Sockets.bind(settings)
    children: dict[int, int] = {}
    stopping = False
    restarts = 0

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = 1
            try:
                if forked is not None:
                    forked(index)
                code = run(serve(settings, sockets=sockets, process_index=index), settings)
            finally:
                os._exit(code)
        children[pid] = index

    def forward(signum: int, frame: object) -> None:
        nonlocal stopping
        if not stopping:
            sockets.close()  # nothing is restarted now; the children hold their own descriptors
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
                os.kill(pid, signum)

    for index in range(count):
        spawn(index)
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    log.info("started", extra=fields(processes=count))
    status = 0
    while children:
        pid, wait_status = os.wait()
        if pid not in children:
            continue
        index = children.pop(pid)
        code = os.waitstatus_to_exitcode(wait_status)
        if stopping:
            status = status or (code != 0)
        elif restarts < MAX_RESTARTS:
            restarts += 1
            log.warning(
                "a process exited; starting it again", extra=fields(process=index, status=code)
            )
            spawn(index)
        else:
            log.error(
                "a process exited; too many restarts, stopping",
                extra=fields(process=index, status=code),
            )
            status = 1
            forward(signal.SIGTERM, None)
    return int(status)


def run(main: Coroutine[Any, Any, int], settings: Settings) -> int:
    """Run ``main`` on the event loop ``EVENT_LOOP`` asks for: uvloop when it is installed and
    the setting is ``auto`` or ``uvloop``, else asyncio's own."""
    factory = None
    if settings.event_loop != "asyncio" and importlib.util.find_spec("uvloop") is not None:
        import uvloop

        factory = uvloop.new_event_loop
    tune_garbage_collector()
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


#: The cyclic garbage collector's thresholds in a gateway process (Python's are 700, 10, 10).
GC_THRESHOLDS = (50_000, 20, 100)


def tune_garbage_collector() -> None:
    """Collect cyclic garbage less often than Python's defaults, which suit short-lived
    scripts: every stream held is hundreds of long-lived objects, and the collector walked all
    of them again and again while streams were being opened (a third of a connect's CPU with
    10,000 streams held, measured with the collector off). Young garbage still goes within
    ``GC_THRESHOLDS[0]`` allocations; what start-up built for good is frozen out of every
    collection (``gc.freeze``)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
