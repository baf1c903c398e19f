"""Running a gateway: settings from the command line, listening sockets, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence

from tornado.httpserver import HTTPServer
from tornado.web import Application

from .app import App, make_app
from .config import Settings, argument_parser, load

log = logging.getLogger("tornado_sse")


def parse(argv: Sequence[str], prog: str = "tornado-sse") -> Settings:
    """Settings from command-line ``argv`` (without the program name) and the environment."""
    args = vars(argument_parser(prog).parse_args(list(argv)))
    conf = args.pop("conf", None)
    return load(args, conf_file=conf)


def http_server(app: Application, settings: Settings) -> HTTPServer:
    """An HTTP server for ``app`` with the limits of ``settings`` (not yet listening)."""
    return HTTPServer(
        app,
        # Bodies are counted by the send handler, which answers 413 in JSON; this outer bound
        # only stops a client that keeps sending after that answer.
        max_body_size=settings.max_body_bytes + 64 * 1024,
        # Heads up to twice MAX_HEADER_BYTES are read and answered 431 in JSON by the app;
        # beyond that Tornado drops the connection without reading more.
        max_header_size=2 * settings.max_header_bytes,
        idle_connection_timeout=120,
    )


def listen(app: App, settings: Settings) -> list[HTTPServer]:
    """Start the HTTP server(s) for ``app``: the main port, and ``INTERNAL_PORT`` if set."""
    server = http_server(app, settings)
    server.listen(settings.port, settings.address)
    servers = [server]
    if app.internal_app is not None and settings.internal_port is not None:
        internal = http_server(app.internal_app, settings)
        internal.listen(settings.internal_port, settings.address)
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


async def serve(settings: Settings, app: App | None = None) -> int:
    """Run the gateway until SIGTERM or SIGINT, then drain it. Returns the exit status."""
    app = app or make_app(settings)
    servers = listen(app, settings)
    app.gateway.start()
    warn_if_exposed(settings)
    if not settings.callback_url:
        log.warning("CALLBACK_URL is not set: every stream will be refused with 503")
    log.info(
        "listening port=%d internal_port=%s prefix=%s",
        settings.port,
        settings.internal_port or "-",
        settings.sse_path_prefix,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down timeout=%.1fs", settings.shutdown_timeout_seconds)
    try:
        done = await asyncio.wait_for(
            app.gateway.shutdown(), timeout=settings.shutdown_timeout_seconds + 1
        )
    except asyncio.TimeoutError:
        done = False
    if not done:
        log.warning("shutdown timed out with disconnect callbacks still in flight")
    for server in servers:
        server.stop()
    log.info("stopped")
    return 0
