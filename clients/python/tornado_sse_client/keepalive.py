"""When a kept-alive connection to the gateway may carry another request.

Both clients keep the connections of finished calls open and reuse them. An idle connection is
reused only while it has been idle for less than ``keepalive_seconds`` (keep it below the
gateway's own idle timeout) and nothing has arrived on it: a connection that became readable
while idle was closed by the gateway (or carries bytes nobody asked for), and a request written
on it could be lost. A request is never sent twice: when a connection fails after the request
was written, the call raises :class:`~tornado_sse_client.GatewayUnavailable`.
"""

from __future__ import annotations

import select

#: Default longest idle time, in seconds, after which a kept-alive connection is not reused:
#: below the gateway's 10 s wait for the next request on an idle connection.
DEFAULT_KEEPALIVE_SECONDS = 5.0

#: Most idle connections a client keeps open; the others are closed when their call ends.
MAX_IDLE_CONNECTIONS = 10


def reusable(fileno: int, idle_since: float, keepalive_seconds: float, now: float) -> bool:
    """Whether the idle connection on socket ``fileno``, idle since ``idle_since`` (monotonic
    seconds), may carry a request at ``now``: idle for less than ``keepalive_seconds`` and with
    nothing to read (no end of stream, no reset, no stray bytes)."""
    if now - idle_since >= keepalive_seconds:
        return False
    try:
        return not _readable(fileno)
    except (OSError, ValueError):  # closed meanwhile
        return False


def _readable(fileno: int) -> bool:
    if hasattr(select, "poll"):  # any descriptor number, unlike select()
        poller = select.poll()
        poller.register(fileno, select.POLLIN)
        return bool(poller.poll(0))
    readable, _, _ = select.select([fileno], [], [], 0)
    return bool(readable)
