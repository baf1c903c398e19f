"""The blocking client: :class:`Gateway`, on ``http.client`` with kept-alive connections."""

from __future__ import annotations

import http.client
import itertools
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from . import websocket
from .errors import GatewayUnavailable
from .keepalive import DEFAULT_KEEPALIVE_SECONDS, MAX_IDLE_CONNECTIONS, reusable
from .messages import (
    SEND_PATH,
    SOCKET_PATH,
    SUBSCRIBE_PATH,
    UNSUBSCRIBE_PATH,
    BatchResult,
    base_url,
    batch_results,
    check_transport,
    close_error,
    connections_answer,
    connections_path,
    decode_response,
    encode_json,
    error_for,
    history_answer,
    history_path,
    presence_answer,
    presence_path,
    request_headers,
    send_item,
    send_status,
    socket_answer,
    socket_message,
    streams_answer,
    subscription_body,
)
from .websocket import FrameReader, ProtocolError

#: Largest answer head read when opening the publish socket.
MAX_HEAD_BYTES = 64 * 1024


class ConnectionPool:
    """Idle kept-alive connections to one host, shared by threads.

    :meth:`take` gives a connection that no other thread uses: a reusable idle one (see
    :func:`~tornado_sse_client.keepalive.reusable`), else a new one from ``connect``.
    :meth:`give_back` keeps it for the next call (at most :data:`MAX_IDLE_CONNECTIONS`).
    """

    def __init__(
        self, connect: Callable[[], http.client.HTTPConnection], keepalive_seconds: float
    ) -> None:
        self._connect = connect
        self._keepalive_seconds = keepalive_seconds
        self._lock = threading.Lock()
        self._idle: list[tuple[http.client.HTTPConnection, float]] = []

    def take(self) -> http.client.HTTPConnection:
        """A connection for one request (the caller gives it back or closes it)."""
        while True:  # bounded: each turn removes one idle connection
            with self._lock:
                if not self._idle:
                    break
                conn, idle_since = self._idle.pop()  # the most recently used first
            sock = conn.sock
            if sock is not None and reusable(
                sock.fileno(), idle_since, self._keepalive_seconds, time.monotonic()
            ):
                return conn
            conn.close()
        return self._connect()

    def give_back(self, conn: http.client.HTTPConnection) -> None:
        """Keep ``conn``, whose last answer was read whole, for a later call."""
        with self._lock:
            if len(self._idle) < MAX_IDLE_CONNECTIONS:
                self._idle.append((conn, time.monotonic()))
                return
        conn.close()

    def close(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            conn.close()


class SocketConnection:
    """A blocking WebSocket to the publish socket (``/internal/ws``), standard library only:
    :meth:`exchange` writes one message and reads its answer. Not shared between threads by
    itself (:class:`Gateway` holds a lock around it).

    Raises :class:`~tornado_sse_client.GatewayClientError` (the answer's error when the
    handshake is refused, :class:`GatewayUnavailable` when the socket fails or closes).
    """

    def __init__(self, sock: socket.socket, reader: FrameReader) -> None:
        self._sock = sock
        self._reader = reader
        self._messages: list[websocket.Message] = []

    @classmethod
    def open(
        cls,
        connect: Callable[[], socket.socket],
        target: str,
        host: str,
        headers: dict[str, str],
    ) -> SocketConnection:
        """Connect, and make the opening handshake for ``target``."""
        try:
            sock = connect()
        except OSError as exc:
            raise GatewayUnavailable(_reason(exc)) from exc
        try:
            key = websocket.handshake_key()
            sock.sendall(websocket.handshake_request(target, host, key, headers))
            head, rest = _read_head(sock)
            status, answer_headers = _parse_head(head)
            if status != 101:
                body = rest
                length = int(answer_headers.get("content-length", "0") or 0)
                while len(body) < min(length, MAX_HEAD_BYTES):  # bounded by the length
                    piece = sock.recv(65536)
                    if not piece:
                        break
                    body += piece
                raise error_for(status, body)
            websocket.check_accept(answer_headers, key)
        except BaseException as exc:
            sock.close()
            if isinstance(exc, (OSError, ProtocolError)):
                raise GatewayUnavailable(_reason(exc)) from exc
            raise
        conn = cls(sock, FrameReader())
        conn._messages = conn._reader.feed(rest)
        return conn

    def exchange(self, text: str) -> str:
        """Write the text message ``text`` and return the text of the next message that
        comes back (answering pings meanwhile)."""
        try:
            self._sock.sendall(websocket.encode_text(text))
            while True:  # bounded by the timeout of each read
                while self._messages:
                    message = self._messages.pop(0)
                    if message.opcode == websocket.OP_TEXT:
                        return message.text
                    if message.opcode == websocket.OP_PING:
                        pong = websocket.encode_frame(websocket.OP_PONG, message.payload)
                        self._sock.sendall(pong)
                    elif message.opcode == websocket.OP_CLOSE:
                        self.close(message.code or websocket.CLOSE_NORMAL)
                        raise close_error(message.code, message.reason)
                piece = self._sock.recv(65536)
                if not piece:
                    raise close_error(None, "")
                self._messages = self._reader.feed(piece)
        except (OSError, ProtocolError) as exc:
            self.close()
            raise GatewayUnavailable(_reason(exc)) from exc

    def close(self, code: int = websocket.CLOSE_NORMAL) -> None:
        """Send a close frame (if the socket still takes one) and close the connection."""
        try:
            self._sock.sendall(websocket.encode_close(code))
        except OSError:
            pass
        self._sock.close()


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:  # bounded by MAX_HEAD_BYTES
        if len(data) > MAX_HEAD_BYTES:
            raise ProtocolError("answer head larger than %d bytes" % MAX_HEAD_BYTES)
        piece = sock.recv(65536)
        if not piece:
            raise ProtocolError("the connection closed during the handshake")
        data += piece
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    status_line, *lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise ProtocolError("not an HTTP answer: %r" % status_line[:80])
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


class Gateway:
    """A blocking client of the internal API, standard library only; safe to share between
    threads.

    ``url`` is the gateway's base URL, e.g. ``"http://127.0.0.1:3000"`` (or its
    ``INTERNAL_PORT``). With ``secret`` every request carries ``Authorization: Bearer
    <secret>``. ``timeout`` (seconds) bounds connecting and each read. Connections are kept
    alive and reused while idle for less than ``keepalive_seconds``; ``ssl_context`` is for an
    ``https://`` URL (default: the system's trusted certificates). Proxy environment variables
    are ignored (the secret must not travel through a proxy) and redirects are not followed.

    With ``transport="ws"`` the sends (:meth:`send`, :meth:`publish`, :meth:`close`,
    :meth:`batch`, :meth:`send_to_user`, :meth:`close_user`) go over one publish socket
    (``/internal/ws``), opened at the first send and again after it failed; the other calls
    stay HTTP requests. Threads take turns on the socket. A send is never written twice: when
    the socket fails before its answer came, the call raises ``GatewayUnavailable``.
    Every method raises :class:`~tornado_sse_client.GatewayClientError` (a subclass, see
    :func:`~tornado_sse_client.messages.error_for`) when the call fails.

    :meth:`close_idle` (or leaving a ``with`` block) closes the idle connections; the client
    stays usable. They are closed too when the client is garbage collected.
    """

    def __init__(
        self,
        url: str,
        secret: str | None = None,
        timeout: float = 5.0,
        *,
        keepalive_seconds: float = DEFAULT_KEEPALIVE_SECONDS,
        ssl_context: ssl.SSLContext | None = None,
        transport: str = "http",
    ) -> None:
        self.url = base_url(url)
        self.secret = secret
        self.timeout = timeout
        self.transport = check_transport(transport)
        parts = urlsplit(self.url)
        self._prefix = parts.path
        host, port = parts.hostname or "", parts.port
        tls = parts.scheme == "https"
        context = (ssl_context or ssl.create_default_context()) if tls else None
        if context is not None:

            def connect() -> http.client.HTTPConnection:
                return http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
        else:

            def connect() -> http.client.HTTPConnection:
                return http.client.HTTPConnection(host, port, timeout=timeout)

        def connect_socket() -> socket.socket:
            sock = socket.create_connection((host, port or (443 if tls else 80)), timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if context is not None:
                return context.wrap_socket(sock, server_hostname=host)
            return sock

        self._connect_socket = connect_socket
        self._host_header = parts.netloc.rpartition("@")[2]
        self._pool = ConnectionPool(connect, keepalive_seconds)
        self._socket: SocketConnection | None = None
        self._socket_lock = threading.Lock()
        self._refs = itertools.count(1)
        weakref.finalize(self, self._pool.close)

    def send(
        self,
        token: str,
        data: str,
        name: str | None = None,
        id: str | None = None,
        close: bool = False,
    ) -> str:
        """Send one event to ``token``, then end its stream when ``close``.

        Returns ``"ok"`` (written) or ``"buffered"`` (queued until its connect callback ends).
        """
        return send_status(self._post(send_item(token, data=data, name=name, id=id, close=close)))

    def publish(
        self, channel: str, data: str, name: str | None = None, id: str | None = None
    ) -> None:
        """Publish one event to every stream subscribed to ``channel`` (none is not an error)."""
        self._post(send_item(channel=channel, data=data, name=name, id=id))

    def close(self, token: str) -> None:
        """End the stream of ``token``. Raises :class:`~tornado_sse_client.TokenNotFound` when
        it is already gone."""
        self._post(send_item(token, close=True))

    def batch(self, items: list[dict[str, Any]]) -> list[BatchResult]:
        """Apply several send objects (see :func:`~tornado_sse_client.send_item`) in order, in
        one request.

        Returns one :class:`~tornado_sse_client.BatchResult` per item, in order; a failed item
        does not raise, only a failure of the whole request does.
        """
        return batch_results(self._post(items), len(items))

    def connections(self, limit: int = 100, user: str | None = None) -> dict[str, Any]:
        """``{"count": <open streams>, "connections": [<at most limit of them>]}``; with
        ``user``, only that user's streams, on every instance."""
        return connections_answer(self._call("GET", connections_path(limit, user), None))

    def send_to_user(
        self,
        user: str,
        data: str | None,
        name: str | None = None,
        id: str | None = None,
        close: bool = False,
    ) -> int:
        """Send one event (none when ``data`` is ``None``) to every stream of ``user``, on
        every instance, then end them when ``close``. Returns how many streams it reached (0
        when the user has none)."""
        item = send_item(user=user, data=data, name=name, id=id, close=close)
        return streams_answer(self._post(item))

    def close_user(self, user: str) -> int:
        """End every stream of ``user``; returns how many there were."""
        return streams_answer(self._post(send_item(user=user, close=True)))

    def subscribe(
        self, channels: list[str], *, token: str | None = None, user: str | None = None
    ) -> int:
        """Add ``channels`` to the stream of ``token``, or to every stream of ``user``, without
        a reconnect; every publish after this returns reaches them. Returns how many streams
        changed; raises :class:`TokenNotFound` for an unknown token."""
        body = encode_json(subscription_body(channels, token, user))
        return streams_answer(self._call("POST", SUBSCRIBE_PATH, body))

    def unsubscribe(
        self, channels: list[str], *, token: str | None = None, user: str | None = None
    ) -> int:
        """Remove ``channels`` (see :meth:`subscribe`)."""
        body = encode_json(subscription_body(channels, token, user))
        return streams_answer(self._call("POST", UNSUBSCRIBE_PATH, body))

    def presence(self, channel: str) -> dict[str, Any]:
        """Who is on ``channel``, cluster-wide: ``{"channel", "users": [{"user", "info",
        "streams"}], "anonymous"}``."""
        return presence_answer(self._call("GET", presence_path(channel), None))

    def history(self, channel: str, since: str | None = None, limit: int = 100) -> dict[str, Any]:
        """A channel's kept events, oldest first, after the id ``since`` (all kept ones
        without it), at most ``limit`` (1-1000): ``{"channel", "events": [{"id", "event",
        "data"}], "complete"}``; ``complete`` is False when events after ``since`` were
        dropped. Page on with ``since`` = the last event's id."""
        return history_answer(self._call("GET", history_path(channel, since, limit), None))

    def close_idle(self) -> None:
        """Close this client's idle connections, and its publish socket; it stays usable (later
        calls connect anew)."""
        self._pool.close()
        with self._socket_lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close_idle()

    def _post(self, value: Any) -> Any:
        if self.transport == "ws":
            return self._socket_call(value)
        return self._call("POST", SEND_PATH, encode_json(value))

    def _socket_call(self, value: Any) -> Any:
        """Send ``value`` over the publish socket (opened if need be) and return its answer's
        body, or raise the error it got."""
        ref = next(self._refs) if isinstance(value, dict) else None
        text = socket_message(value, ref or 0)
        with self._socket_lock:
            if self._socket is None:
                headers = request_headers(self.secret, json_body=False)
                self._socket = SocketConnection.open(
                    self._connect_socket, self._prefix + SOCKET_PATH, self._host_header, headers
                )
            try:
                answer = self._socket.exchange(text)
            except BaseException:
                self._socket = None  # it closed itself, or is in an unknown state
                raise
        try:
            return socket_answer(answer, ref)
        except GatewayUnavailable:
            with self._socket_lock:  # an answer that is not one: the socket is out of step
                if self._socket is not None:
                    self._socket.close()
                    self._socket = None
            raise

    def _call(self, method: str, path: str, body: bytes | None) -> Any:
        headers = request_headers(self.secret, json_body=body is not None)
        try:
            conn = self._pool.take()
        except (OSError, http.client.HTTPException) as exc:
            raise GatewayUnavailable(_reason(exc)) from exc
        try:
            conn.request(method, self._prefix + path, body=body, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()  # in an unknown state; the request is not sent again
            raise GatewayUnavailable(_reason(exc)) from exc
        except BaseException:
            conn.close()
            raise
        if response.will_close:
            conn.close()
        else:
            self._pool.give_back(conn)
        return decode_response(response.status, raw)


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
