"""The gateway's state and decisions, without HTTP: what handlers ask, and what shutdown does.

:class:`Gateway` holds the registry, the backend client and the broker of one process, runs the
single heartbeat timer for all streams, and knows whether the process is draining. It is the
broker's :class:`~tornado_sse.broker.BrokerHandler`: sends and channel events are dispatched and
delivered here, whatever the broker.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from typing import Any

from tornado.ioloop import PeriodicCallback

from . import protocol
from .backend import Backend
from .broker import Broker
from .config import Settings
from .connection import Connection, State, StreamWriter
from .errors import (
    CloseDetail,
    CloseReason,
    GatewayError,
    Outcome,
    ServiceNotConfigured,
    ShuttingDown,
    TooManyConnections,
    connect_error,
)
from .history import GAP, Replay, parse_event_id
from .log import fields
from .metrics import Metrics
from .protocol import RequestSnapshot, SendRequest
from .registry import Registry

log = logging.getLogger("tornado_sse.gateway")


class Gateway:
    """One process of tornado_sse: streams, sends, callbacks, heartbeats and shutdown.

    Built by :func:`tornado_sse.app.make_app`; handlers reach it through ``initialize``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        registry: Registry,
        backend: Backend | None,
        broker: Broker,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.backend = backend
        self.broker = broker
        self.metrics = metrics
        metrics.open_streams.set_function(lambda: registry.open_count)
        metrics.broker_up.set_function(lambda: 1 if broker.ready else 0)
        metrics.watch_writes(
            lambda: (
                registry.frames_written - registry.heartbeats_written,
                registry.heartbeats_written,
                registry.bytes_written,
            )
        )
        self.draining = False
        self.started_at = time.time()
        self._heartbeat: PeriodicCallback | None = None
        self._connecting = 0
        registry.on_ended = self.connection_ended

    # -- streams ------------------------------------------------------------------------------

    @property
    def configured(self) -> bool:
        """Whether a ``CALLBACK_URL`` is set (no stream can open without one)."""
        return self.backend is not None

    def admit(self, request: RequestSnapshot) -> Connection:
        """Register a new connection for ``request`` with a fresh UUID4 token (sends to it queue
        from now on), or raise why no stream can start now."""
        if not self.configured:
            raise ServiceNotConfigured()
        if self.draining:
            raise ShuttingDown()
        if len(self.registry) + self.registry.receiving >= self.settings.max_connections:
            raise TooManyConnections()
        conn = Connection(str(uuid.uuid4()), request)
        self.registry.add(conn)
        return conn

    async def connect(self, conn: Connection) -> bool:
        """Run the connect callback for ``conn`` and settle everything but the HTTP answer.

        The broker learns the token first. Returns True when the stream may open (call
        :meth:`open`), False when the client left meanwhile (nobody is left to answer). Raises the
        error the client must get otherwise; the connection is then ended here, and the backend
        hears ``disconnect`` if it may believe the token connected.
        """
        assert self.backend is not None
        self._connecting += 1
        try:
            try:
                await self.broker.register(conn.token)
            except GatewayError:
                self.registry.fail(conn, backend_may_know=False)
                raise
            outcome = await self.backend.connect(conn.token, conn.request)
        finally:
            self._connecting -= 1
        self.metrics.connects.labels(outcome.outcome.value).inc()
        if outcome.outcome is not Outcome.ACCEPTED:
            self.broker.unregister(conn.token)
            detail = _FAILURE_DETAIL.get(outcome.outcome)
            self.registry.fail(conn, backend_may_know=detail is not None, detail=detail)
            raise connect_error(outcome.outcome, outcome.status, outcome.message)
        conn.channels = outcome.channels
        if conn.state is State.CLOSED:
            # The client left, or the gateway began draining, while the backend answered.
            self.registry.settle(conn)  # the backend accepted: it hears the disconnect
            if conn.close_reason == CloseReason.CLIENT_CLOSED:
                return False
            raise ShuttingDown()
        return True

    async def open(self, conn: Connection, writer: StreamWriter) -> None:
        """Open an accepted stream on ``writer``: queued sends, then replay (or a gap event)
        when the client sent ``Last-Event-ID``, then live events."""
        log.info(
            "stream opened", extra=fields(token=conn.token, request_id=conn.request.request_id)
        )
        last_event_id = conn.request.last_event_id
        replaying = (
            last_event_id is not None and bool(conn.channels) and self.settings.history_size > 0
        )
        if not self.registry.open(conn, writer, hold=replaying) or not replaying:
            return
        assert last_event_id is not None
        replay = await self._replay(last_event_id, conn.channels)
        if conn.state is not State.OPEN:
            return
        if replay.gap:
            gap = protocol.encode_event(last_event_id, "history_gap")
            self.registry.release(conn, [(0, gap)], after=0)
        else:
            last = parse_event_id(last_event_id) or 0
            frames = [(i, protocol.with_id(i, tail)) for i, tail in replay.events]
            self.registry.release(conn, frames, after=last)

    async def _replay(self, last_event_id: str, channels: tuple[str, ...]) -> Replay:
        since = parse_event_id(last_event_id)
        if since is None:
            return GAP  # not an id this gateway issued
        try:
            window = await self.broker.history(channels, since)
        except GatewayError:
            return GAP  # the history is out of reach: say so, go on live
        return window.replay(since)

    def client_left(self, conn: Connection) -> None:
        """The client of ``conn`` went away (TCP close or reset)."""
        self.registry.close(conn, CloseReason.CLIENT_CLOSED)

    def connection_ended(self, conn: Connection) -> None:
        """Log the end of ``conn`` and, if it may believe it connected, tell the backend.

        Called once per connection by the registry, after the stream has ended; the callback is
        scheduled and never waited for.
        """
        self.broker.unregister(conn.token)
        reason = conn.close_reason or CloseReason.ERROR
        if conn.close_detail == CloseDetail.SLOW_CONSUMER:
            self.metrics.slow_consumers.inc()
        self.metrics.disconnects.labels(reason, conn.close_detail or "").inc()
        if conn.opened_at:
            log.info(
                "stream closed",
                extra=fields(
                    token=conn.token,
                    request_id=conn.request.request_id,
                    reason=reason.value,
                    detail=conn.close_detail.value if conn.close_detail else None,
                    duration=round(time.monotonic() - conn.opened_at, 3),
                ),
            )
        if self.backend is not None and conn.backend_may_know:
            self.backend.disconnect(conn.token, reason, conn.request, conn.close_detail)

    # -- sends (BrokerHandler) ----------------------------------------------------------------

    async def send(self, request: SendRequest) -> str:
        """Deliver one validated send: ``"ok"`` or ``"buffered"``; raises a ``GatewayError``.

        A channel event goes through the broker (it assigns the id and keeps the history); a
        token send is delivered here when this process holds the token, else routed.
        """
        if request.channel is not None:
            if request.event is not None:
                tail = protocol.encode_event(request.event.data, request.event.name)
                await self.broker.publish(request.channel, tail)
            return "ok"
        assert request.token is not None
        frame = protocol.encode(request.event) if request.event is not None else None
        if self.registry.get(request.token) is not None:
            return self.registry.send(request.token, frame, request.close)
        return await self.broker.route(request.token, frame, request.close)

    def on_publication(self, channel: str, event_id: int, tail: bytes) -> None:
        """Write a channel event to this process's subscribers."""
        self.registry.publish(channel, event_id, protocol.with_id(event_id, tail))

    def on_send(self, token: str, frame: bytes | None, close: bool) -> str:
        """Deliver a send routed here for a token this process holds."""
        return self.registry.send(token, frame, close)

    # -- questions ------------------------------------------------------------------------------

    def connections(self, limit: int) -> dict[str, Any]:
        """``/internal/connections``: how many streams are open, and up to ``limit`` of them."""
        listed: list[dict[str, Any]] = []
        for conn in self.registry.connections():
            if len(listed) >= limit:
                break
            listed.append(
                {
                    "token": conn.token,
                    "url": conn.request.url,
                    "channels": list(conn.channels),
                    "connected_at": _iso(conn.connected_at),
                }
            )
        return {"count": self.registry.open_count, "connections": listed}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """``/readyz``: whether this process can take streams now, and the body that says so."""
        reasons = []
        if not self.configured:
            reasons.append("CALLBACK_URL is not set")
        if not self.broker.ready:
            reasons.append("the broker (Redis) is unreachable")
        if self.draining:
            reasons.append("the gateway is shutting down")
        if reasons:
            return False, {"status": "not_ready", "configured": self.configured, "reasons": reasons}
        return True, {
            "status": "ready",
            "configured": True,
            "connections": self.registry.open_count,
        }

    def wants_retry_stream(self, error: GatewayError) -> bool:
        """Whether a refused stream gets a ``retry:`` stream instead of ``error``: with
        ``RETRY_ON_UNAVAILABLE``, for transient refusals (503 and 504, but not a missing
        ``CALLBACK_URL``)."""
        return (
            self.settings.retry_on_unavailable
            and error.status in (503, 504)
            and not isinstance(error, ServiceNotConfigured)
        )

    def render_metrics(self) -> tuple[bytes, str]:
        """The Prometheus exposition text and its content type."""
        return self.metrics.render()

    def count_request(self, route: str, status: int) -> None:
        """Count one internal API request (``route`` is a route label, never a raw path)."""
        self.metrics.internal_requests.labels(route, str(status)).inc()

    # -- heartbeats ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the broker and the shared heartbeat timer (call once the IOLoop runs)."""
        self.broker.start(self)
        if self._heartbeat is None:
            interval = self.settings.heartbeat_interval_seconds
            self._heartbeat = PeriodicCallback(self.beat, interval * 1000)
            self._heartbeat.start()

    def beat(self) -> None:
        """Write one heartbeat to every stream open for at least half an interval."""
        self.registry.heartbeat(self.settings.heartbeat_interval_seconds / 2)

    def stop(self) -> None:
        """Stop the heartbeat timer."""
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None

    def retry_frame(self) -> bytes:
        """A ``retry:`` hint of 1-5 s, random per stream so that reconnects spread out."""
        return protocol.encode_retry(random.randint(1000, 5000))

    # -- shutdown -----------------------------------------------------------------------------

    async def shutdown(self) -> bool:
        """Drain: refuse new streams, end every stream with a jittered ``retry:`` hint, send the
        disconnect callbacks, and wait for them within ``SHUTDOWN_TIMEOUT_SECONDS``.

        Returns True if every callback finished in time.
        """
        self.draining = True
        deadline = time.monotonic() + self.settings.shutdown_timeout_seconds
        self.stop()
        count = self.registry.close_all(
            CloseReason.SERVER_CLOSED, CloseDetail.SHUTDOWN, last_frame=self.retry_frame
        )
        log.info("draining", extra=fields(streams=count))
        done = True
        if self.backend is not None:
            # Connects still in flight report their disconnect when their answer arrives.
            while self.backend.pending_disconnects or self._connecting:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    done = False
                    break
                if self.backend.pending_disconnects:
                    await self.backend.drain(min(remaining, 0.5))
                else:
                    await asyncio.sleep(min(remaining, 0.05))
        await self.broker.close()
        if self.backend is not None:
            self.backend.close()
        return done


#: The close detail of a connect that failed in a way the backend may not have noticed (so it
#: must hear ``disconnect``); other failures need none.
_FAILURE_DETAIL = {
    Outcome.TIMEOUT: CloseDetail.CONNECT_TIMEOUT,
    Outcome.BAD_ANSWER: CloseDetail.BAD_CALLBACK_RESPONSE,
}


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))
