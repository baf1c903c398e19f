"""Running a gateway: settings from the command line, listening sockets, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import signal
import socket
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from .app import App, GatewayApplication, make_app
from .config import Settings, argument_parser, load
from .listener import Acceptor, GatewayHTTPServer, descriptor_limit, descriptors_needed
from .log import fields
from .memory import HeapTrimmer

log = logging.getLogger("tornado_sse")


def parse(argv: Sequence[str], prog: str = "tornado-sse") -> Settings:
    """Settings from command-line ``argv`` (without the program name) and the environment."""
    args = vars(argument_parser(prog).parse_args(list(argv)))
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
        # Bodies are counted by the send handler, which answers 413 in JSON; this outer bound
        # only stops a client that keeps sending after that answer.
        max_body_size=settings.max_body_bytes + 64 * 1024,
        # Heads up to twice MAX_HEADER_BYTES are read and answered 431 in JSON by the app;
        # beyond that Tornado drops the connection without reading more.
        max_header_size=2 * settings.max_header_bytes,
        # Tornado's header timeout: the wait for a complete head, which on a kept-alive
        # connection includes the idle time since the previous request.
        idle_connection_timeout=settings.header_timeout_seconds,
        # The wait for the whole declared body, from the end of the head.
        body_timeout=settings.body_timeout_seconds,
    )


@dataclass
class Sockets:
    """Listening sockets bound before forking, shared by every process."""

    main: list[socket.socket]
    internal: list[socket.socket] = field(default_factory=list)

    @classmethod
    def bind(cls, settings: Settings) -> Sockets:
        address = settings.address or None
        internal = []
        if settings.internal_port is not None:
            internal = bind_sockets(settings.internal_port, address)
        return cls(bind_sockets(settings.port, address), internal)


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
    acceptor = Acceptor(metrics=app.gateway.metrics)
    servers = listen(app, settings, sockets, acceptor)
    if process_index is not None:
        servers += _own_metrics_server(app, settings, process_index, acceptor)
    app.gateway.start()
    registry = app.gateway.registry
    trimmer = HeapTrimmer(lambda: registry.released_bytes)
    trimmer.start()
    warn_if_exposed(settings)
    warn_if_short_of_descriptors(settings)
    if not settings.callback_url:
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
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down", extra=fields(timeout=settings.shutdown_timeout_seconds))
    try:
        done = await asyncio.wait_for(
            app.gateway.shutdown(), timeout=settings.shutdown_timeout_seconds + 1
        )
    except TimeoutError:
        done = False
    if not done:
        log.warning("shutdown timed out with disconnect callbacks still in flight")
    trimmer.stop()
    for server in servers:
        server.stop()
    log.info("stopped")
    return 0


#: How many times, in all, dead processes are started again before the whole gateway stops.
MAX_RESTARTS = 10


def run_processes(settings: Settings) -> int:
    """Run ``settings.processes`` gateway processes (0: one per core) sharing the listening
    sockets; forward SIGTERM/SIGINT to them, restart one that dies on its own, and return 0 if
    every process drained cleanly."""
    count = settings.processes or os.cpu_count() or 1
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
                code = run(serve(settings, sockets=sockets, process_index=index), settings)
            finally:
                os._exit(code)
        children[pid] = index

    def forward(signum: int, frame: object) -> None:
        nonlocal stopping
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
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
