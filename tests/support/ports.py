"""Free loopback ports, for servers a test starts and for addresses nothing answers on.

A port is free when the helper returns it; it stays free only until something binds it, so a
test uses it at once.
"""

from __future__ import annotations

import socket

from tornado.testing import bind_unused_port


def unused_port() -> int:
    """A port of 127.0.0.1 that nothing listens on (bound, then closed): connecting to it is
    refused, and a server the test starts can bind it."""
    sock, port = bind_unused_port()
    sock.close()
    return port


def unused_ports(count: int) -> int:
    """The first of ``count`` consecutive loopback ports that are free now (bounded search).

    Probed with ``SO_REUSEADDR``, as servers bind (Tornado's ``bind_sockets`` sets it): a port
    that only has connections in TIME_WAIT is free for them.
    """
    for _ in range(200):
        first = unused_port()
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
