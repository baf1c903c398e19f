"""The gateway's state and decisions, without HTTP: what handlers ask, and what shutdown does.

:class:`Gateway` holds the registry, the backend client and the broker of one process, runs the
single heartbeat timer for all streams, and knows whether the process is draining. It is the
broker's :class:`~tornado_sse.broker.BrokerHandler`: sends and channel events are dispatched and
delivered here, whatever the broker. Streams that carry a JWT are authorised here without a
connect callback, and ended at their ``exp`` by one expiry timer shared by all of them.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Coroutine, Iterable
from typing import Any, Protocol

from tornado.ioloop import PeriodicCallback

from . import protocol
from .backend import Backend
from .broker import Broker
from .config import Settings
from .connection import Connection, State, StreamWriter
from .errors import (
    BrokerUnavailable,
    CloseDetail,
    CloseReason,
    GatewayError,
    InvalidRequest,
    JWTExpired,
    Outcome,
    RateLimited,
    ServiceNotConfigured,
    ShuttingDown,
    TooManyConnections,
    TooManyStreams,
    connect_error,
)
from .expiry import ExpiryQueue
from .history import GAP, Replay, parse_event_id
from .jwt_auth import JWTVerifier, jwt_from_url
from .limits import TokenBucket
from .log import fields
from .metrics import Metrics
from .presence import Presence
from .protocol import RequestSnapshot, SendRequest, SubscriptionRequest
from .registry import Registry
from .user_sends import KEEP_SLACK

log = logging.getLogger("tornado_sse.gateway")

#: What a stream gets when its JWT expires, before its ``retry:`` hint and its end.
JWT_EXPIRED_FRAME = protocol.encode_event("", "jwt_expired")
#: The expiry timer looks again at least this often (seconds), so that a step of the wall
#: clock, which ``exp`` is measured by, delays no stream's end by more than that.
EXPIRY_RECHECK_SECONDS = 1.0
#: ``outcome`` labels of the connects metric for streams that send no connect callback.
OUTCOME_JWT, OUTCOME_JWT_INVALID, OUTCOME_JWT_EXPIRED = "jwt", "jwt_invalid", "jwt_expired"
OUTCOME_RATE_LIMITED = "rate_limited"


#: The HTTP status and JSON body a send body gets (:meth:`Gateway.answer_body`).
Answered = tuple[int, dict[str, Any]]


async def settled(answered: Answered | Awaitable[Answered]) -> Answered:
    """The answer of :meth:`Gateway.answer_body`, awaited if it has to be."""
    return answered if isinstance(answered, tuple) else await answered


class PublishSocket(Protocol):
    """An open publish socket (``GET /internal/ws``), as the gateway sees it: something to end
    when the gateway shuts down."""

    def shut_down(self) -> None:
        """End the socket because the gateway is shutting down."""


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
        verifier: JWTVerifier | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.backend = backend
        self.broker = broker
        self.metrics = metrics
        #: Verifies the ``jwt`` of stream requests; ``None``: no JWT key is configured.
        self.verifier = verifier
        metrics.open_streams.set_function(lambda: registry.open_count)
        metrics.broker_up.set_function(lambda: 1 if broker.ready else 0)
        metrics.watch_writes(
            lambda: (
                registry.frames_written - registry.heartbeats_written,
                registry.heartbeats_written,
                registry.bytes_written,
            )
        )
        #: Whether any channel keeps history (``HISTORY_SIZE``, ``HISTORY_RULES``).
        self.replay_on = settings.retention.enabled
        self.draining = False
        self.started_at = time.time()
        self._heartbeat: PeriodicCallback | None = None
        self._connecting = 0
        self._unknown_keys_seen: set[str] = set()
        #: Seconds the broker keeps each user send for the user's streams still connecting.
        self._keep_user_sends = settings.callback_timeout_seconds + KEEP_SLACK
        self.presence = Presence(
            broker,
            globs=settings.presence_event_globs,
            delay=settings.presence_leave_delay_seconds,
            limit=settings.max_streams_per_user,
        )
        rate = settings.max_connects_per_second
        self._connect_rate = TokenBucket(rate) if rate > 0 else None
        self._expiries = ExpiryQueue()
        self._expiry_timer: asyncio.TimerHandle | None = None
        registry.on_ended = self.connection_ended
        self._sockets: set[PublishSocket] = set()
        metrics.open_sockets.set_function(lambda: len(self._sockets))

    # -- streams ------------------------------------------------------------------------------

    @property
    def configured(self) -> bool:
        """Whether streams can be authorised: ``CALLBACK_URL`` or a JWT key is set."""
        return self.backend is not None or self.verifier is not None

    def admit(self, request: RequestSnapshot) -> Connection:
        """Register a new connection for ``request`` with a fresh UUID4 token (sends to it queue
        from now on), or raise why no stream can start now.

        The checks, in order: a way to authorise it (its ``jwt`` parameter when a JWT key is
        configured, else ``CALLBACK_URL``), draining, ``MAX_CONNECTIONS``, then
        ``MAX_CONNECTS_PER_SECOND``, then the JWT itself. A stream authorised by its JWT gets
        its claims here; :meth:`connect` then sends no callback for it.
        """
        token = jwt_from_url(request.url) if self.verifier is not None else None
        if token is None and self.backend is None:
            if self.verifier is not None:
                raise ServiceNotConfigured(
                    "CALLBACK_URL is not set: only streams with a 'jwt' parameter can open"
                )
            raise ServiceNotConfigured()
        if self.draining:
            raise ShuttingDown()
        if len(self.registry) + self.registry.receiving >= self.settings.max_connections:
            raise TooManyConnections()
        if self._connect_rate is not None and not self._connect_rate.take():
            self.metrics.count_connect(OUTCOME_RATE_LIMITED)
            raise RateLimited()
        conn = Connection(protocol.new_uuid4(), request)
        if token is not None:
            self._authorise(conn, token)
        self.registry.add(conn)
        return conn

    def _authorise(self, conn: Connection, token: str) -> None:
        """Give ``conn`` the claims of its verified JWT, or raise ``InvalidJWT``/``JWTExpired``."""
        assert self.verifier is not None
        try:
            claims = self.verifier.verify(token)
        except GatewayError as error:
            expired = isinstance(error, JWTExpired)
            self.metrics.count_connect(OUTCOME_JWT_EXPIRED if expired else OUTCOME_JWT_INVALID)
            log.debug(
                "jwt refused",
                extra=fields(request_id=conn.request.request_id, why=error.message),
            )
            raise
        conn.user, conn.info = claims.user, claims.info
        conn.channels, conn.expires_at = claims.channels, claims.expires_at

    async def connect(self, conn: Connection) -> bool:
        """Run the connect callback for ``conn`` and settle everything but the HTTP answer.

        The broker learns the token first. Returns True when the stream may open (call
        :meth:`open`), False when the client left meanwhile (nobody is left to answer). Raises the
        error the client must get otherwise; the connection is then ended here, and the backend
        hears ``disconnect`` if it may believe the token connected.

        A stream authorised by its JWT (see :meth:`admit`) sends no callback: the backend, if
        there is one, hears only its ``disconnect``.
        """
        if conn.expires_at is not None:
            return await self._connect_by_jwt(conn)
        assert self.backend is not None
        self._connecting += 1
        try:
            await self._register(conn)
            outcome = await self.backend.connect(
                conn.token, conn.request, abandoned=lambda: conn.state is State.CLOSED
            )
        finally:
            self._connecting -= 1
        self.metrics.count_connect(outcome.outcome.value)
        if outcome.outcome is Outcome.REJECTED:  # other failures are logged by the backend
            log.log(
                logging.INFO if outcome.status in (401, 403) else logging.WARNING,
                "stream refused by the backend",
                extra=fields(
                    token=conn.token, request_id=conn.request.request_id, status=outcome.status
                ),
            )
        if outcome.outcome is not Outcome.ACCEPTED:
            self.broker.unregister(conn.token)
            detail = _FAILURE_DETAIL.get(outcome.outcome)
            self.registry.fail(conn, backend_may_know=detail is not None, detail=detail)
            if outcome.outcome is Outcome.ABANDONED:
                return False  # never sent: the client left while it waited for a connection
            raise connect_error(outcome.outcome, outcome.status, outcome.message)
        conn.channels, conn.user, conn.info = outcome.channels, outcome.user, outcome.info
        return await self._accepted(conn)

    async def _connect_by_jwt(self, conn: Connection) -> bool:
        """:meth:`connect` for a stream authorised by its JWT: the broker learns the token and
        no callback is sent. The verified JWT stands for the backend's 2xx answer (the connect
        the backend never heard is implied), so from here on it is settled like one."""
        await self._register(conn)
        self.metrics.count_connect(OUTCOME_JWT)
        return await self._accepted(conn)

    async def _accepted(self, conn: Connection) -> bool:
        """Settle a connect that was accepted (by the backend or by a JWT), whose channels,
        user and info are set: live subscription changes that came meanwhile, the user's
        streams and presence, the broker's subscriptions, then the live changes that came
        while those were settled. True when the stream may open."""
        conn.channels = _changed(conn.channels, conn.channel_changes or ())
        conn.channel_changes = []  # the changes that come while it is counted and subscribed
        self.registry.bind_user(conn)
        await self._count(conn)
        if conn.channels:
            await self._subscribe(conn)
        late, conn.channel_changes = conn.channel_changes, None
        if late:
            await self._apply_late_changes(conn, late)
        if conn.state is State.CLOSED:
            # The client left, or the gateway began draining, while the connect was settled.
            self.registry.settle(conn)  # the connect was accepted: the backend hears the end
            if conn.close_reason == CloseReason.CLIENT_CLOSED:
                return False
            raise ShuttingDown()
        return True

    async def _apply_late_changes(
        self, conn: Connection, late: list[tuple[bool, tuple[str, ...]]]
    ) -> None:
        """Apply ``late``, the live subscription changes that came while ``conn`` was counted
        and subscribed (each was answered already), now that its count and its broker
        subscriptions are those of its channels, in the order they came; end it and raise if
        the broker cannot."""
        try:
            for add, channels in late:
                await self._change(conn, channels, add)
        except GatewayError as error:
            self.registry.fail(conn, backend_may_know=True)
            raise self._broker_trouble(conn, error) from None

    async def _count(self, conn: Connection) -> None:
        """Count ``conn`` in presence and in its user's streams, before it opens; end it and
        raise if its user holds ``MAX_STREAMS_PER_USER`` streams already (the backend hears
        ``disconnect``, ``error``, ``user_limit``) or the broker cannot."""
        try:
            entered = await self.presence.enter(conn)
        except TooManyStreams:
            self.registry.fail(conn, backend_may_know=True, detail=CloseDetail.USER_LIMIT)
            raise
        except GatewayError as error:
            self.registry.fail(conn, backend_may_know=True)
            raise self._broker_trouble(conn, error) from None
        if entered is not None:
            self.registry.catch_up(conn, entered.sends, entered.through)

    async def _register(self, conn: Connection) -> None:
        """Make ``conn``'s token reachable through the broker, with the record a survivor would
        report it from (when the broker keeps one); end it and raise if the broker cannot."""
        record = protocol.snapshot_record(conn.request) if self.broker.keeps_records else b""
        try:
            await self.broker.register(conn.token, record)
        except GatewayError as error:
            self.registry.fail(conn, backend_may_know=False)
            raise self._broker_trouble(conn, error) from None

    async def _subscribe(self, conn: Connection) -> None:
        """Have the broker deliver ``conn``'s channels here before the stream opens, so that
        every event published after the client's ``open`` reaches it."""
        try:
            await self.broker.subscribe(conn.channels)
        except GatewayError as error:
            self.registry.fail(conn, backend_may_know=True)  # it was accepted: it must hear
            raise self._broker_trouble(conn, error) from None
        conn.subscribed = True

    def _broker_trouble(self, conn: Connection, error: GatewayError) -> GatewayError:
        """The error a stream's client gets when the broker failed it: in words of its own,
        with the details (addresses, library text) in the log only."""
        log.warning(
            "stream refused: broker unavailable",
            extra=fields(token=conn.token, request_id=conn.request.request_id, error=error.message),
        )
        return BrokerUnavailable(
            "the gateway cannot reach its message broker just now; try again shortly"
        )

    def open(self, conn: Connection, writer: StreamWriter) -> Coroutine[Any, Any, None] | None:
        """Open an accepted stream on ``writer``: the sends queued meanwhile and (without a
        ``Last-Event-ID`` to resume from) the ``presence_join`` events its own count published
        are written before this returns, then live events follow; a JWT stream lasts until
        its ``exp``. When the client sent ``Last-Event-ID``, returns the coroutine to await
        next, which writes the replay (or a gap event) and those joins before the live events
        held meanwhile; else ``None``."""
        log.info(
            "stream opened",
            extra=fields(
                token=conn.token,
                request_id=conn.request.request_id,
                auth="callback" if conn.expires_at is None else "jwt",
            ),
        )
        last_event_id = conn.request.last_event_id
        replaying = last_event_id is not None and bool(conn.channels) and self.replay_on
        joins, conn.joins = conn.joins, ()
        opened = self.registry.open(conn, writer, hold=replaying or bool(joins))
        self.broker.count_open(self.registry.open_count)
        if opened and conn.expires_at is not None:
            self._expiries.add(conn.expires_at, conn)
            self._arm_expiry()
        if not opened:
            return None
        if last_event_id is None or not replaying:
            if joins:  # its own joins first; the same ones arriving live are skipped
                self.registry.release(conn, joins, after=0)
            return None
        return self._open_replaying(conn, last_event_id, joins)

    async def _open_replaying(
        self, conn: Connection, last_event_id: str, joins: tuple[tuple[int, bytes], ...]
    ) -> None:
        replay = await self._replay(last_event_id, conn.channels)
        if conn.state is not State.OPEN:
            return
        if replay.gap:
            gap = protocol.encode_event(last_event_id, "history_gap")
            self.registry.release(conn, [(0, gap), *joins], after=0)
        else:
            last = parse_event_id(last_event_id) or 0
            frames = {i: protocol.with_id(i, tail) for i, tail in replay.events}
            frames.update((i, frame) for i, frame in joins if i > last)
            self.registry.release(conn, sorted(frames.items()), after=last)

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
        report = None
        if self.backend is not None and conn.backend_may_know:
            backend, reason = self.backend, conn.close_reason or CloseReason.ERROR
            detail = conn.close_detail

            def report() -> None:
                backend.disconnect(conn.token, reason, conn.request, detail)

        # The broker calls report once the end is this instance's to report (exactly once
        # cluster-wide), which may be later, or never if a survivor reports it.
        self.broker.unregister(conn.token, report)
        if conn.opened_at:
            self.broker.count_open(self.registry.open_count)
        if conn.subscribed:
            conn.subscribed = False
            self.broker.unsubscribe(conn.channels)
        self.presence.exit(conn)
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

    # -- publish sockets ------------------------------------------------------------------------

    def socket_opened(self, sock: PublishSocket) -> None:
        """A publish socket opened: it is ended by :meth:`shutdown`."""
        self._sockets.add(sock)

    def socket_closed(self, sock: PublishSocket) -> None:
        """A publish socket closed, for whatever reason (called once per socket)."""
        self._sockets.discard(sock)

    @property
    def open_sockets(self) -> int:
        """How many publish sockets are open."""
        return len(self._sockets)

    # -- sends (BrokerHandler) ----------------------------------------------------------------

    def answer_body(self, body: Any) -> Answered | Awaitable[Answered]:
        """The HTTP status and JSON body that the decoded ``/internal/send`` body ``body``
        gets: one send (an object), or a batch (an array, applied in order, each item
        answered with the status and body it would have got alone). Anything else is 400
        ``INVALID_JSON``. The one place that decides a send's result, for HTTP and the
        publish socket alike; it raises nothing.

        The answer comes at once, as a tuple, when no send in ``body`` had to wait (a token
        this process holds, or a refusal); otherwise as an awaitable of it, which the caller
        awaits (:func:`settled`). So the publish socket answers a run of such sends without a
        task or a turn of the event loop for each.
        """
        if isinstance(body, list):
            return self._answer_batch(body)
        if not isinstance(body, dict):
            error = InvalidRequest("INVALID_JSON", "the body must be a JSON object or array")
            return error.status, error.to_dict()
        return self._answer_item(body)

    def _answer_batch(self, items: list[Any]) -> Answered | Awaitable[Answered]:
        results: list[dict[str, Any]] = []
        waiting = self._settle_batch(items, results)
        if waiting is None:
            return 200, {"results": results}
        return self._finish_batch(items, results, waiting)

    def _settle_batch(
        self, items: list[Any], results: list[dict[str, Any]]
    ) -> Awaitable[Answered] | None:
        """Answer ``items`` after the ``len(results)`` answered already, in order, while they
        settle at once; the awaitable answer of the first one that waits, or None at the end."""
        for k in range(len(results), len(items)):
            answered = self._answer_item(items[k])
            if not isinstance(answered, tuple):
                return answered
            results.append({"status": answered[0], "body": answered[1]})
        return None

    async def _finish_batch(
        self,
        items: list[Any],
        results: list[dict[str, Any]],
        waiting: Awaitable[Answered] | None,
    ) -> Answered:
        while waiting is not None:  # bounded: each turn answers one more item
            status, answer = await waiting
            results.append({"status": status, "body": answer})
            waiting = self._settle_batch(items, results)
        return 200, {"results": results}

    def _answer_item(self, item: Any) -> Answered | Awaitable[Answered]:
        """Validate and deliver one send: its HTTP status and JSON body (at once, or to be
        awaited when it must wait for the broker)."""
        try:
            request = protocol.validate_send(item)
            if request.token is not None and self.registry.get(request.token) is not None:
                if request.unknown:
                    self._warn_unknown_keys(request.unknown)
                return 200, {"status": self._send_here(request)}
        except GatewayError as error:
            return error.status, error.to_dict()
        return self._answer_later(request)

    async def _answer_later(self, request: SendRequest) -> Answered:
        try:
            return 200, await self.answer(request)
        except GatewayError as error:
            return error.status, error.to_dict()

    async def answer(self, request: SendRequest) -> dict[str, Any]:
        """The JSON answer of one validated send: ``{"status": ...}``, and for a user send the
        number of streams it reached, cluster-wide; raises a ``GatewayError``."""
        if request.user is not None:
            return {"status": "ok", "streams": await self.send_user(request)}
        return {"status": await self.send(request)}

    async def send_user(self, request: SendRequest) -> int:
        """Deliver a user send to every stream of the user on every instance, connecting ones
        included; returns how many streams it reached, not counting those whose connect
        callback is in flight: the broker logs the send, and they get it when they are
        counted (see :mod:`~tornado_sse.user_sends`). The other instances are asked first,
        so that when the broker cannot be reached (503) this instance's streams did not get
        it either, and a retry does not double it here."""
        assert request.user is not None
        frame = protocol.encode(request.event) if request.event is not None else None
        mark, answers = await self.broker.send_user(
            request.user, frame, request.close, self._keep_user_sends
        )
        reached = self.registry.send_user(request.user, frame, request.close, mark)
        for answer in answers:
            reached += int(answer.get("streams", 0))
        return reached

    async def send(self, request: SendRequest) -> str:
        """Deliver one validated send: ``"ok"`` or ``"buffered"``; raises a ``GatewayError``.

        A channel event goes through the broker (it assigns the id and keeps the history); a
        token send is delivered here when this process holds the token, else routed.
        """
        if request.unknown:
            self._warn_unknown_keys(request.unknown)
        if request.channel is not None:
            if request.event is not None:
                tail = protocol.encode_event(request.event.data, request.event.name)
                await self.broker.publish(request.channel, tail)
            return "ok"
        assert request.token is not None
        if self.registry.get(request.token) is not None:
            return self._send_here(request)
        frame = protocol.encode(request.event) if request.event is not None else None
        return await self.broker.route(request.token, frame, request.close)

    def _send_here(self, request: SendRequest) -> str:
        """Deliver a token send to the stream this process holds: ``"ok"`` or ``"buffered"``;
        raises ``BufferFull``."""
        assert request.token is not None
        frame = protocol.encode(request.event) if request.event is not None else None
        return self.registry.send(request.token, frame, request.close)

    def _warn_unknown_keys(self, keys: tuple[str, ...]) -> None:
        """Log each unknown key of a send the first time this process sees it (at most
        :data:`MAX_UNKNOWN_KEYS_LOGGED` of them)."""
        for key in (k[:100] for k in keys):
            seen = self._unknown_keys_seen
            if key in seen or len(seen) >= MAX_UNKNOWN_KEYS_LOGGED:
                continue
            seen.add(key)
            log.warning("unknown field in a send, ignored (logged once)", extra=fields(field=key))

    def on_publication(self, channel: str, event_id: int, tail: bytes) -> None:
        """Write a channel event to this process's subscribers."""
        self.registry.publish(channel, event_id, protocol.with_id(event_id, tail))

    def on_send(self, token: str, frame: bytes | None, close: bool) -> str:
        """Deliver a send routed here for a token this process holds."""
        return self.registry.send(token, frame, close)

    def on_gap(self, channel: str, since: int) -> None:
        """Events of ``channel`` after ``since`` never reached this process and cannot be
        caught up: its streams there get ``history_gap``, as a reconnect would."""
        gap = protocol.encode_event(str(since), "history_gap")
        self.registry.publish(channel, since, gap)

    def on_lost(self, streams: list[tuple[str, bytes]]) -> None:
        """Report the streams of an instance that died (this process alone got them): the
        backend hears their disconnect, ``error`` / ``instance_lost``, with their request."""
        for token, record in streams:
            reason, detail = CloseReason.ERROR, CloseDetail.INSTANCE_LOST
            self.metrics.disconnects.labels(reason, detail).inc()
            log.info("stream of a lost instance reported", extra=fields(token=token))
            if self.backend is not None:
                self.backend.disconnect(
                    token, reason, protocol.snapshot_from_record(record), detail
                )

    def on_fenced(self) -> None:
        """This process could not refresh its liveness in Redis in time, so a survivor may
        soon report its streams (``instance_lost``): end them all first, each with a jittered
        ``retry:`` hint so that browsers reconnect, spread out, to an instance that can serve
        them. Each end is reported once, ``error`` / ``instance_lost``, by this process or by
        that survivor."""
        count = self.registry.close_all(
            CloseReason.ERROR, CloseDetail.INSTANCE_LOST, last_frame=self.retry_frame, clean=True
        )
        log.warning("streams ended: liveness in Redis not refreshed", extra=fields(streams=count))

    async def on_ask(self, question: dict[str, Any]) -> dict[str, Any]:
        """Answer another instance's question about this process's streams of a user (or of a
        token): a user send, a live subscription change, a listing."""
        op = question["op"]
        if op == "send":
            frame = question["frame"].encode("utf-8") if question["frame"] is not None else None
            mark = (int(question["mark"][0]), int(question["mark"][1]))
            reached = self.registry.send_user(question["user"], frame, question["close"], mark)
            return {"streams": reached}
        if op in ("subscribe", "unsubscribe"):
            targets = self._targets(question.get("token"), question.get("user"))
            channels = tuple(question["channels"])
            return {"streams": await self._change_all(targets, channels, op == "subscribe")}
        if op == "connections":
            return {"connections": self._listing(self.registry.of_user(question["user"]))}
        raise ValueError("unknown question %r" % op)

    # -- live subscriptions -------------------------------------------------------------------

    async def change_subscription(self, request: SubscriptionRequest, add: bool) -> dict[str, Any]:
        """``/internal/subscribe`` (``add``) or ``unsubscribe``: change the channels of a token's
        stream, or of every stream of a user, wherever they are, and answer once every publish
        answered from now on follows the change. Raises ``TokenNotFound`` for an unknown token,
        ``BrokerUnavailable``."""
        question: dict[str, Any] = {
            "op": "subscribe" if add else "unsubscribe",
            "token": request.token,
            "user": request.user,
            "channels": list(request.channels),
        }
        targets = self._targets(request.token, request.user)
        streams = await self._change_all(targets, request.channels, add)
        if request.user is not None:
            for answer in await self.broker.ask_user(request.user, question):
                streams += int(answer.get("streams", 0))
        elif not targets:
            assert request.token is not None
            answer = await self.broker.ask_token(request.token, question)
            streams += int(answer.get("streams", 0))
        return {"status": "ok", "streams": streams}

    def _targets(self, token: str | None, user: str | None) -> list[Connection]:
        if user is not None:
            return self.registry.of_user(user)
        conn = self.registry.get(token) if token is not None else None
        return [conn] if conn is not None and not conn.closing else []

    async def _change_all(
        self, targets: list[Connection], channels: tuple[str, ...], add: bool
    ) -> int:
        changed = 0
        for conn in targets:
            if await self._change(conn, channels, add):
                changed += 1
        return changed

    async def _change(self, conn: Connection, channels: tuple[str, ...], add: bool) -> bool:
        """Change one local stream's channels; False if it ended meanwhile."""
        if conn.channel_changes is not None:  # its connect is not settled yet
            conn.channel_changes.append((add, channels))
            return True
        if not add:
            removed = self.registry.remove_channels(conn, channels)
            if conn.subscribed:
                self.broker.unsubscribe(removed)
            await self.presence.follow(conn)
            return True
        fresh = tuple(c for c in channels if c not in conn.channels)
        if fresh:
            await self.broker.subscribe(fresh)  # every later publish arrives here
            if conn.state is State.CLOSED:
                self.broker.unsubscribe(fresh)
                return False
            if not conn.channels:
                conn.subscribed = True  # its count now covers its channels
            self.registry.add_channels(conn, fresh)
        await self.presence.follow(conn)  # also what an earlier change that failed left behind
        return conn.state is not State.CLOSED

    # -- questions ------------------------------------------------------------------------------

    async def connections(self, limit: int, user: str | None = None) -> dict[str, Any]:
        """``/internal/connections``: how many streams are open on every instance, and up to
        ``limit`` of this instance's (each saying which instance holds it); with ``user``,
        only that user's streams, cluster-wide."""
        if user is None:
            count = await self.broker.open_count(self.registry.open_count)
            return {
                "count": count,
                "connections": self._listing(self.registry.connections(), limit),
            }
        listed = self._listing(c for c in self.registry.of_user(user) if c.state is State.OPEN)
        for answer in await self.broker.ask_user(user, {"op": "connections", "user": user}):
            listed.extend(answer.get("connections", ()))
        return {"count": len(listed), "connections": listed[:limit]}

    def _listing(
        self, conns: Iterable[Connection], limit: int | None = None
    ) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = []
        for conn in conns:
            if limit is not None and len(listed) >= limit:
                break
            if conn.state is not State.OPEN:
                continue
            listed.append(
                {
                    "token": conn.token,
                    "url": conn.request.url,
                    "channels": list(conn.channels),
                    "connected_at": _iso(conn.connected_at),
                    "user": conn.user,
                    "info": conn.info.value if conn.info is not None else None,
                    "instance": self.broker.instance,
                }
            )
        return listed

    async def presence_of(self, channel: str) -> bytes:
        """``/internal/presence``: who holds streams on ``channel``, cluster-wide, as the
        answer's compact JSON body (encoded by the broker's read, not per user here)."""
        return (await self.presence.snapshot(channel)).body(channel)

    async def history(self, channel: str, since: int | None, limit: int) -> dict[str, Any]:
        """``/internal/history``: the channel's kept events after ``since`` (all kept ones
        without it), oldest first, at most ``limit``; ``complete`` is False when events after
        ``since`` may have been dropped (or the channel keeps none)."""
        if self.settings.retention.policy(channel).keeps:
            window = await self.broker.history((channel,), since if since is not None else -1)
        else:
            window = None
        if since is None:
            complete, events = True, window.events if window is not None else ()
        elif window is None:
            complete, events = False, ()
        else:
            replay = window.replay(since)
            complete, events = not replay.gap, window.events
        listed = []
        for event_id, tail in events[:limit]:
            name, data = protocol.decode_tail(tail)
            listed.append({"id": str(event_id), "event": name, "data": data})
        return {"channel": channel, "events": listed, "complete": complete}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """``/readyz``: whether this process can take streams now, and the body that says so."""
        reasons = []
        if not self.configured:
            reasons.append("neither CALLBACK_URL nor JWT_SECRET/JWT_PUBLIC_KEY is set")
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
        ``CALLBACK_URL``); with ``REUSE_PORT``, also for a stream refused because this process
        is draining, since the successor on the port takes the retry."""
        if self.settings.reuse_port and isinstance(error, ShuttingDown):
            return True
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
        """Start the broker, presence's sweep and the shared heartbeat timer (call once the
        IOLoop runs)."""
        self.broker.start(self)
        self.presence.start(self.registry.channels)
        if self._heartbeat is None:
            interval = self.settings.heartbeat_interval_seconds
            self._heartbeat = PeriodicCallback(self.beat, interval * 1000)
            self._heartbeat.start()

    def beat(self) -> None:
        """Write one heartbeat to every stream open for at least half an interval."""
        self.registry.heartbeat(self.settings.heartbeat_interval_seconds / 2)

    def stop(self) -> None:
        """Stop the heartbeat and expiry timers and presence's timers."""
        self.presence.close()
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
            self._expiry_timer = None

    # -- JWT expiry -----------------------------------------------------------------------------

    def _arm_expiry(self) -> None:
        """Set the one expiry timer for the earliest ``exp`` of the open JWT streams (or sooner,
        see :data:`EXPIRY_RECHECK_SECONDS`), unless it is already set to fire before."""
        deadline = self._expiries.next_deadline()
        if deadline is None:
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + min(max(0.0, deadline - time.time()), EXPIRY_RECHECK_SECONDS)
        timer = self._expiry_timer
        if timer is not None:
            if timer.when() <= when:
                return
            timer.cancel()
        self._expiry_timer = loop.call_at(when, self._on_expiry_timer)

    def _on_expiry_timer(self) -> None:
        self._expiry_timer = None
        self.expire(time.time())
        self._arm_expiry()

    def expire(self, now: float) -> int:
        """End every open JWT stream whose ``exp`` is at or before ``now`` (Unix seconds): it
        gets ``event: jwt_expired`` and a ``retry:`` hint, then ends (``server_closed``, detail
        ``jwt_expired``; the backend, if there is one, hears that). Returns how many ended."""
        due = self._expiries.pop_due(now)
        for conn in due:
            self.registry.write(conn, JWT_EXPIRED_FRAME + self.retry_frame())
            self.registry.close(conn, CloseReason.SERVER_CLOSED, CloseDetail.JWT_EXPIRED)
        return len(due)

    def retry_frame(self) -> bytes:
        """A ``retry:`` hint of 1-5 s, random per stream so that reconnects spread out."""
        return protocol.encode_retry(random.randint(1000, 5000))

    # -- shutdown -----------------------------------------------------------------------------

    def _report_undelivered(self) -> None:
        """Say how many disconnect callbacks a timed-out shutdown leaves undelivered."""
        assert self.backend is not None
        tokens = self.backend.pending_tokens()
        log.warning(
            "shutdown timed out with disconnect callbacks undelivered",
            extra=fields(undelivered=len(tokens), connecting=self._connecting),
        )
        for token in tokens:
            log.debug("disconnect callback undelivered", extra=fields(token=token))

    async def shutdown(self) -> bool:
        """Drain: refuse new streams, end every stream with a jittered ``retry:`` hint, send the
        disconnect callbacks, and wait for them within ``SHUTDOWN_TIMEOUT_SECONDS``.

        Returns True if every callback finished in time.
        """
        self.draining = True
        deadline = time.monotonic() + self.settings.shutdown_timeout_seconds
        self.stop()
        sockets = list(self._sockets)
        for sock in sockets:
            sock.shut_down()
        count = self.registry.close_all(
            CloseReason.SERVER_CLOSED, CloseDetail.SHUTDOWN, last_frame=self.retry_frame
        )
        log.info("draining", extra=fields(streams=count, sockets=len(sockets)))
        done = True
        if self.backend is not None:
            # Connects still in flight report their disconnect when their answer arrives.
            while self.backend.pending_disconnects or self._connecting or self.broker.unreported:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    done = False
                    if self.broker.unreported:
                        log.warning(
                            "Redis unreachable at shutdown: another instance reports the end "
                            "of these streams (instance_lost)",
                            extra=fields(streams=self.broker.unreported),
                        )
                    self._report_undelivered()
                    break
                if self.broker.unreported:
                    # Ends whose records Redis must release first (it may be unreachable):
                    # what is not released in time is reported by a survivor, never twice.
                    await self.broker.report_all(min(deadline, time.monotonic() + 0.5))
                elif self.backend.pending_disconnects:
                    await self.backend.drain(min(remaining, 0.5))
                else:
                    await asyncio.sleep(min(remaining, 0.05))
        await self.presence.drain(max(deadline - time.monotonic(), 0.1))
        await self.broker.close()
        if self.backend is not None:
            self.backend.close()
        return done


#: Most distinct unknown send fields logged by one process (each once), so that a backend sending
#: random keys cannot grow the gateway's memory.
MAX_UNKNOWN_KEYS_LOGGED = 100

#: The close detail of a connect that the backend may have accepted although the client got no
#: stream (so it must hear ``disconnect``, reason ``error``); other failures need none. A
#: request written and then left unanswered is reported like one that timed out.
_FAILURE_DETAIL = {
    Outcome.TIMEOUT: CloseDetail.CONNECT_TIMEOUT,
    Outcome.LOST: CloseDetail.CONNECT_TIMEOUT,
    Outcome.BAD_ANSWER: CloseDetail.BAD_CALLBACK_RESPONSE,
}


def _changed(
    channels: tuple[str, ...], changes: Iterable[tuple[bool, tuple[str, ...]]]
) -> tuple[str, ...]:
    """``channels`` after the live subscription ``changes`` (``(add, channels)``, in order)."""
    result = list(channels)
    for add, names in changes:
        if add:
            result += [c for c in names if c not in result]
        else:
            result = [c for c in result if c not in names]
    return tuple(result)


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))
