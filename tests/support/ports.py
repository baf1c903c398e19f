"""Free loopback ports, for servers a test starts and for addresses nothing answers on.

A port is free when the helper returns it; it stays free only until something binds it, so a
test uses it at once.
"""

from __future__ import annotations

import random
import socket

from tornado.testing import bind_unused_port


def unused_port() -> int:
    """A port of 127.0.0.1 that nothing listens on (bound, then closed): connecting to it is
    refused, and a server the test starts can bind it."""
    sock, port = bind_unused_port()
    sock.close()
    return port


#: Where :func:`unused_ports` looks: below Linux's ephemeral range (32768-60999 by default), so
#: that the TIME_WAIT sockets of a busy machine's outgoing connections (which block a bind to
#: their port, SO_REUSEADDR or not) never stand in the way.
PORT_RANGE = (20000, 32000)


def unused_ports(count: int) -> int:
    """The first of ``count`` consecutive loopback ports that are free now (bounded search).

    Probed with ``SO_REUSEADDR``, as servers bind (Tornado's ``bind_sockets`` sets it).
    """
    low, high = PORT_RANGE
    for _ in range(200):
        first = random.randrange(low, high - count)
        socks = []
        try:
            for port in range(first, first + count):
                sock = socket.socket()
                socks.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no %d consecutive free ports" % count)
