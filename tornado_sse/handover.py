"""Handing the listening port over to a successor process (``REUSE_PORT``).

With ``SO_REUSEPORT`` several processes listen on one port and the kernel spreads new
connections among them. A restart without downtime starts the new gateway first, on the same
port, then sends SIGTERM to the old one: the old one stops listening at once
(:func:`stop_listening`) and drains its streams (each gets ``retry:`` and ends) while the new one
takes every new connection. The port is never closed in between, which matters to Firefox: its
``EventSource`` gives up for good when a reconnect is refused (Chromium keeps retrying).
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

from tornado.iostream import IOStream
from tornado.tcpserver import TCPServer

#: Most queued connections taken over from one socket when it stops listening (a bound on the
#: loop; a kernel backlog is far smaller).
MAX_QUEUED_ACCEPTS = 65536


def stop_listening(server: TCPServer, sockets: Sequence[socket.socket]) -> int:
    """Make ``server`` stop accepting on ``sockets`` (the listening sockets it serves) without
    resetting the connections the kernel has already queued on them: those are accepted and
    served like any other. Returns how many were.

    Closing a listening socket resets the connections in its accept queue (they do not move to
    the other sockets of the port unless ``net.ipv4.tcp_migrate_req`` is 1), so each socket is
    held open by a duplicate while ``server`` lets go of it, emptied, then closed.
    """
    held = [sock.dup() for sock in sockets]
    server.stop()
    taken = 0
    for sock in held:
        sock.setblocking(False)
        try:
            for _ in range(MAX_QUEUED_ACCEPTS):
                try:
                    connection, address = sock.accept()
                except BlockingIOError:
                    break  # the queue is empty
                except ConnectionAbortedError:
                    continue  # the client gave up while it was queued
                connection.setblocking(False)
                server.handle_stream(IOStream(connection), address)
                taken += 1
        finally:
            sock.close()
    return taken
