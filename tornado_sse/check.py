"""``tornado-sse check``: validate the configuration and probe what the gateway depends on.

Prints one line per check in plain words and returns 0 when everything is usable, 1 otherwise
(2, like the gateway itself, when a setting is invalid). Warnings (a public internal API, a file
descriptor limit too low for ``MAX_CONNECTIONS``) are printed but do not fail the check.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Sequence
from typing import TextIO
from urllib.parse import urlsplit

from .config import ConfigError, Settings
from .listener import descriptor_limit, descriptors_needed
from .server import parse


def _probe_tcp(url: str, default_port: int, timeout: float) -> str | None:
    """None if a TCP connection to ``url``'s host and port opens in time, else the reason."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = parts.port or default_port
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return "%s:%d: %s" % (host, port, exc.strerror or exc)


async def _probe_redis(url: str, timeout: float) -> str | None:
    try:
        import redis.asyncio as aioredis
    except ImportError:
        return "the redis package is not installed (pip install 'tornado-sse[redis]')"
    client = aioredis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        await client.ping()
        return None
    except Exception as exc:  # any failure is an answer here
        return str(exc) or type(exc).__name__
    finally:
        await client.aclose()


def _descriptor_report(settings: Settings) -> str:
    """The file descriptor limit against what ``MAX_CONNECTIONS`` needs, in plain words."""
    limit, needed = descriptor_limit(), descriptors_needed(settings)
    if limit >= needed:
        return "the file descriptor limit (%d) covers MAX_CONNECTIONS=%d (about %d needed)" % (
            limit,
            settings.max_connections,
            needed,
        )
    fitting = max(0, settings.max_connections - (needed - limit))
    return (
        "warning: the file descriptor limit (%d) is below the %d that MAX_CONNECTIONS=%d needs: "
        "raise it (ulimit -n, LimitNOFILE=) or set MAX_CONNECTIONS to %d at most"
        % (limit, needed, settings.max_connections, fitting)
    )


def run_checks(settings: Settings, out: TextIO = sys.stdout) -> bool:
    """Probe the callback URL and Redis of ``settings``; print a line each. True if all good."""

    def say(ok: bool, text: str) -> None:
        print("%s %s" % ("ok  " if ok else "FAIL", text), file=out)

    good = True
    say(
        True,
        "configuration is valid (port %d, prefix %s)" % (settings.port, settings.sse_path_prefix),
    )
    timeout = min(settings.callback_timeout_seconds, 5.0)
    if not settings.callback_url:
        say(False, "CALLBACK_URL is not set: every stream would be refused with 503")
        good = False
    else:
        https = urlsplit(settings.callback_url).scheme == "https"
        problem = _probe_tcp(settings.callback_url, 443 if https else 80, timeout)
        if problem is None:
            say(True, "the backend at CALLBACK_URL accepts connections")
        else:
            say(False, "the backend at CALLBACK_URL is unreachable: %s" % problem)
            good = False
    if settings.redis_url:
        problem = asyncio.run(_probe_redis(settings.redis_url, timeout))
        if problem is None:
            say(True, "Redis at REDIS_URL answers PING")
        else:
            say(False, "Redis at REDIS_URL is unreachable: %s" % problem)
            good = False
    say(True, _descriptor_report(settings))
    if settings.internal_port is None and settings.internal_secret is None:
        say(
            True,
            "warning: the internal API is public on port %d without INTERNAL_SECRET"
            % settings.port,
        )
    return good


def main(argv: Sequence[str]) -> int:
    """Entry point of ``tornado-sse check``."""
    try:
        settings = parse(argv, prog="tornado-sse check")
    except ConfigError as exc:
        print("FAIL %s" % exc)
        return 2
    return 0 if run_checks(settings) else 1
