"""The blocking client: :class:`Gateway`, on ``http.client`` with kept-alive connections."""

from __future__ import annotations

import http.client
import ssl
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from .errors import GatewayUnavailable
from .keepalive import DEFAULT_KEEPALIVE_SECONDS, MAX_IDLE_CONNECTIONS, reusable
from .messages import (
    SEND_PATH,
    SUBSCRIBE_PATH,
    UNSUBSCRIBE_PATH,
    BatchResult,
    base_url,
    batch_results,
    connections_answer,
    connections_path,
    decode_response,
    encode_json,
    history_answer,
    history_path,
    presence_answer,
    presence_path,
    request_headers,
    send_item,
    send_status,
    streams_answer,
    subscription_body,
)


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


class Gateway:
    """A blocking client of the internal API, standard library only; safe to share between
    threads.

    ``url`` is the gateway's base URL, e.g. ``"http://127.0.0.1:3000"`` (or its
    ``INTERNAL_PORT``). With ``secret`` every request carries ``Authorization: Bearer
    <secret>``. ``timeout`` (seconds) bounds connecting and each read. Connections are kept
    alive and reused while idle for less than ``keepalive_seconds``; ``ssl_context`` is for an
    ``https://`` URL (default: the system's trusted certificates). Proxy environment variables
    are ignored (the secret must not travel through a proxy) and redirects are not followed.
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
    ) -> None:
        self.url = base_url(url)
        self.secret = secret
        self.timeout = timeout
        parts = urlsplit(self.url)
        self._prefix = parts.path
        host, port = parts.hostname or "", parts.port
        if parts.scheme == "https":
            context = ssl_context or ssl.create_default_context()

            def connect() -> http.client.HTTPConnection:
                return http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
        else:

            def connect() -> http.client.HTTPConnection:
                return http.client.HTTPConnection(host, port, timeout=timeout)

        self._pool = ConnectionPool(connect, keepalive_seconds)
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
        """Close this client's idle connections; it stays usable (later calls connect anew)."""
        self._pool.close()

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close_idle()

    def _post(self, value: Any) -> Any:
        return self._call("POST", SEND_PATH, encode_json(value))

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
