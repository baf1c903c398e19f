"""The gateway's state and decisions, without HTTP: what handlers ask, and what shutdown does.

:class:`Gateway` holds the registry, the backend client and the broker of one process, runs the
single heartbeat timer for all streams, and knows whether the process is draining.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid

from tornado.ioloop import PeriodicCallback

from . import protocol
from .backend import Backend, ConnectOutcome, Outcome
from .broker import Broker
from .config import Settings
from .connection import Connection, State, StreamWriter
from .errors import GatewayError
from .history import Replay, parse_event_id
from .metrics import Metrics
from .registry import Registry

log = logging.getLogger("tornado_sse.gateway")


class Gateway:
    """One process of tornado_sse: streams, callbacks, heartbeats and shutdown.

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

    @property
    def full(self) -> bool:
        """Whether ``MAX_CONNECTIONS`` streams (connecting or open) are already held."""
        return len(self.registry) >= self.settings.max_connections

    def new_connection(
        self,
        url: str,
        headers: dict[str, str],
        request_id: str | None,
        last_event_id: str | None,
    ) -> Connection:
        """Create and register a connection with a fresh UUID4 token; sends to it queue."""
        conn = Connection(
            str(uuid.uuid4()),
            url,
            headers,
            request_id=request_id,
            last_event_id=last_event_id,
        )
        self.registry.add(conn)
        return conn

    async def connect(self, conn: Connection) -> ConnectOutcome:
        """Run the connect callback for ``conn`` and settle everything but the HTTP answer.

        The broker learns the token first (raises ``BrokerUnavailable`` if it cannot). On a 2xx
        the caller opens the stream with :meth:`open`. Otherwise the connection is ended here,
        and the backend hears ``disconnect`` if it may believe the token connected.
        """
        assert self.backend is not None
        self._connecting += 1
        try:
            try:
                await self.broker.register(conn.token)
            except GatewayError:
                self.registry.fail(conn, backend_may_know=False)
                raise
            outcome = await self.backend.connect(
                conn.token, conn.url, conn.headers, conn.request_id
            )
        finally:
            self._connecting -= 1
        self.metrics.connects.labels(outcome.outcome.value).inc()
        if outcome.outcome is not Outcome.ACCEPTED:
            self.broker.unregister(conn.token)
        if outcome.outcome is Outcome.ACCEPTED:
            conn.channels = outcome.channels
        elif outcome.outcome is Outcome.TIMEOUT:
            self.registry.fail(conn, backend_may_know=True, detail="connect_timeout")
        elif outcome.outcome is Outcome.BAD_ANSWER:
            self.registry.fail(conn, backend_may_know=True, detail="bad_callback_response")
        else:
            self.registry.fail(conn, backend_may_know=False)
        return outcome

    async def open(self, conn: Connection, writer: StreamWriter) -> None:
        """Open an accepted stream on ``writer``: queued sends, then replay (or a gap event)
        when the client sent ``Last-Event-ID``, then live events."""
        replaying = (
            conn.last_event_id is not None
            and bool(conn.channels)
            and self.settings.history_size > 0
        )
        if not self.registry.open(conn, writer, hold=replaying) or not replaying:
            return
        assert conn.last_event_id is not None
        try:
            replay = await self.broker.replay(conn.last_event_id, conn.channels)
        except GatewayError:
            replay = Replay(gap=True)  # the history is out of reach: say so, go on live
        if conn.state is not State.OPEN:
            return
        if replay.gap:
            gap = protocol.encode_event(conn.last_event_id, "history_gap")
            self.registry.release(conn, [(0, gap)], after=0)
        else:
            last = parse_event_id(conn.last_event_id) or 0
            self.registry.release(conn, replay.events, after=last)

    def connection_ended(self, conn: Connection) -> None:
        """Log the end of ``conn`` and, if it may believe it connected, tell the backend.

        Called once per connection by the registry, after the stream has ended; the callback is
        scheduled and never waited for.
        """
        self.broker.unregister(conn.token)
        if conn.close_detail == "slow_consumer":
            self.metrics.slow_consumers.inc()
        self.metrics.disconnects.labels(conn.close_reason, conn.close_detail or "").inc()
        if conn.opened_at:
            log.info(
                "stream closed token=%s request_id=%s reason=%s detail=%s duration=%.3f",
                conn.token,
                conn.request_id,
                conn.close_reason,
                conn.close_detail or "-",
                time.monotonic() - conn.opened_at,
            )
        if self.backend is None or not conn.backend_may_know:
            return
        self.backend.disconnect(
            conn.token,
            conn.close_reason or "error",
            conn.url,
            conn.headers,
            detail=conn.close_detail,
            request_id=conn.request_id,
        )

    # -- heartbeats ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the shared heartbeat timer (call once the IOLoop runs)."""
        self.broker.start()
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

    def retry_hint_ms(self) -> int:
        """A reconnection delay of 1-5 s, random per stream so that reconnects spread out."""
        return random.randint(1000, 5000)

    def _retry_frame(self) -> bytes:
        return protocol.encode_retry(self.retry_hint_ms())

    # -- shutdown -----------------------------------------------------------------------------

    async def shutdown(self) -> bool:
        """Drain: refuse new streams, end every stream with a jittered ``retry:`` hint, send the
        disconnect callbacks, and wait for them within ``SHUTDOWN_TIMEOUT_SECONDS``.

        Returns True if every callback finished in time.
        """
        self.draining = True
        deadline = time.monotonic() + self.settings.shutdown_timeout_seconds
        self.stop()
        count = self.registry.close_all("server_closed", "shutdown", last_frame=self._retry_frame)
        log.info("draining streams=%d", count)
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
