"""The broker seam: what moves events between gateway instances, and the in-process broker.

A broker moves already-encoded bytes and keeps history; it knows nothing of streams. It

- publishes a channel event: gives it the next id, keeps it in the history, and hands it to
  :meth:`BrokerHandler.on_publication` on every instance (this one included);
- reads history for a replay (a :class:`~tornado_sse.history.Window`);
- keeps a token directory (:meth:`Broker.register` / :meth:`Broker.unregister`) and routes a
  send to the instance that holds a token, where it arrives as :meth:`BrokerHandler.on_send`;
- keeps the users' records (streams per user, presence per channel) and decides, once for the
  whole cluster, whether a stream is its user's join on a channel, when their leave is due, and
  whether the user already holds ``MAX_STREAMS_PER_USER`` streams (:meth:`Broker.enter`,
  :meth:`Broker.exit`, :meth:`Broker.settle_leaves`, :meth:`Broker.presence`), and
  publishes the join and leave events it decides;
- logs each user send for a while (:meth:`Broker.send_user`), so that a stream of the user whose
  connect callback was in flight gets it when it is counted (see :mod:`tornado_sse.user_sends`);
- carries a question (a JSON object: a user send, a live subscription, a listing) to the other
  instances holding a user's streams, or to the instance holding a token, where it arrives as
  :meth:`BrokerHandler.on_ask`, and brings back their answers (:meth:`Broker.ask_user`,
  :meth:`Broker.ask_token`).

The gateway is the :class:`BrokerHandler`: dispatch by token or channel, encoding, local-first
routing and delivery to connections live there, once, whatever the broker. :class:`LocalBroker`
serves a single process; ``tornado_sse.cluster`` holds the Redis one.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Sequence
from typing import Any, Protocol

from tornado.ioloop import PeriodicCallback

from .errors import TokenNotFound
from .history import History, IdCounter, Retention, Window
from .presence import Leave, Ledger, Snapshot, presence_event
from .user_sends import Entered, SendLog, SendMark

#: Seconds between two passes of the in-process history's expiry timer.
EXPIRY_INTERVAL = 1.0


class BrokerHandler(Protocol):
    """What a broker calls back; the gateway implements it. Neither method may block."""

    def on_publication(self, channel: str, event_id: int, tail: bytes) -> None:
        """A channel event (id ``event_id``, encoded without its id line) was published."""

    def on_send(self, token: str, frame: bytes | None, close: bool) -> str:
        """A send routed here for ``token``: ``"ok"`` or ``"buffered"``, or raise the
        ``GatewayError`` its sender must get (e.g. ``TokenNotFound``)."""

    def on_gap(self, channel: str, since: int) -> None:
        """Events of ``channel`` after id ``since`` may never have reached this instance (its
        link was cut and they are no longer in the history): its streams there must hear."""

    def on_lost(self, streams: list[tuple[str, bytes]]) -> None:
        """Streams of an instance that died, given to this instance alone: ``(token,
        record)`` pairs, the record as given to :meth:`Broker.register`."""

    def on_fenced(self) -> None:
        """This instance could not tell the shared broker it is alive in time: a survivor
        may soon report its streams as those of a lost instance. End every stream now (each
        end is reported once, by whichever of the two removes its record first)."""

    async def on_ask(self, question: dict[str, Any]) -> dict[str, Any]:
        """A question from another instance (see :meth:`Broker.ask_user`): the JSON answer, or
        raise the ``GatewayError`` its sender must get."""


class Broker(Protocol):
    """Moves events between instances and keeps history (see the module docstring)."""

    @property
    def ready(self) -> bool:
        """Whether the broker can route and publish now (a shared broker may lose its link)."""

    @property
    def instance(self) -> str:
        """This instance's id among the cluster's."""

    @property
    def keeps_records(self) -> bool:
        """Whether :meth:`register` keeps the stream's record (for a survivor to report it):
        when False the gateway need not make one."""

    def start(self, handler: BrokerHandler) -> None:
        """Start delivering to ``handler`` (call once, when the IOLoop runs)."""

    async def close(self) -> None:
        """Release the broker's resources."""

    async def publish(self, channel: str, tail: bytes) -> int:
        """Publish an event on ``channel``: returns its id once every instance will get it.

        Raises ``BrokerUnavailable`` when the event could not be published.
        """

    async def history(self, channels: Collection[str], since: int) -> Window:
        """What the history holds of ``channels`` after id ``since``."""

    async def subscribe(self, channels: Collection[str]) -> None:
        """Receive the events of ``channels`` on this instance from now on (counted: one call
        per stream); returns once every later publish will arrive. Raises
        ``BrokerUnavailable`` (and counts nothing) if it cannot."""

    def unsubscribe(self, channels: Collection[str]) -> None:
        """Undo one :meth:`subscribe` of ``channels``; never waits."""

    async def wait_ready(self, timeout: float) -> bool:
        """Wait until the broker is ready, at most ``timeout`` seconds; whether it is."""

    async def register(self, token: str, record: bytes) -> None:
        """Make ``token`` reachable from every instance (before its connect callback), and
        keep ``record`` for whoever reports the stream if this instance dies.

        Raises ``BrokerUnavailable`` if it cannot.
        """

    def unregister(self, token: str, report: Callable[[], None] | None = None) -> None:
        """Forget ``token`` (its stream ended); never waits. ``report`` sends the stream's
        disconnect callback: the broker calls it once if the end is this instance's to report
        (exactly once cluster-wide: never when another instance reports it, as
        ``instance_lost``), possibly later (once Redis can say so)."""

    @property
    def unreported(self) -> int:
        """Ended streams whose ``report`` the broker has neither called nor given up yet."""

    async def report_all(self, deadline: float) -> int:
        """At shutdown: settle every pending ``report`` by ``deadline`` (monotonic) if it can;
        returns how many are left to another instance."""

    def count_open(self, open_streams: int) -> None:
        """This instance has ``open_streams`` streams open now; never waits."""

    async def open_count(self, local: int) -> int:
        """Streams open on every instance, given this one's ``local`` count."""

    async def route(self, token: str, frame: bytes | None, close: bool) -> str:
        """Deliver a send to the instance holding ``token`` and return its answer.

        Raises what that instance raised, ``TokenNotFound`` when no instance holds it, or
        ``BrokerUnavailable`` when it cannot be reached.
        """

    async def ask_token(self, token: str, question: dict[str, Any]) -> dict[str, Any]:
        """Ask the instance holding ``token`` (another one: the gateway answers for its own
        tokens) ``question``; its answer. Raises as :meth:`route`."""

    async def ask_user(self, user: str, question: dict[str, Any]) -> list[dict[str, Any]]:
        """Ask every other instance holding streams of ``user`` ``question``; their answers
        (none for a single process). Raises ``BrokerUnavailable`` if one cannot be reached or
        does not answer."""

    async def send_user(
        self, user: str, frame: bytes | None, close: bool, keep: float
    ) -> tuple[SendMark, list[dict[str, Any]]]:
        """Log a send to ``user`` for ``keep`` seconds (for their streams counted meanwhile,
        see :meth:`enter`), then ask every other instance holding streams of the user to
        deliver it (``{"op": "send", "user", "frame", "close", "mark"}``, see
        :meth:`ask_user`); its mark and their answers. Raises ``BrokerUnavailable`` as
        :meth:`ask_user` does."""

    async def enter(
        self,
        user: str | None,
        info: str | None,
        channels: Collection[str],
        *,
        announce: Collection[str],
        limit: int | None,
        join: bytes | None = None,
        began: float | None = None,
    ) -> Entered:
        """Count one stream of ``user`` (``None``: anonymous) on ``channels``, cluster-wide.

        With ``limit`` not ``None`` this is a new stream: the user's stream count goes one up,
        unless they hold ``limit`` (> 0) already, which raises ``TooManyStreams`` and counts
        nothing. The answer's ``joins`` are the channels of ``announce`` where this is the
        user's join, decided once for the cluster, each with the id of its join event: with
        ``join`` (the user's ``presence_join`` event, encoded without an id) the broker
        publishes it on each of those channels, as :meth:`publish` would, before it answers
        (in the step that decides it where it can); the id is 0 without ``join``, or when that
        publish failed (which is logged, not raised). With ``began`` and a ``limit`` (a new
        stream of a user, whose connect began at ``began`` on ``time.monotonic``'s clock), the
        answer also holds the user's sends logged since then and a mark at least that of
        every send to the user logged so far, read after the stream was counted.
        Raises ``BrokerUnavailable`` if it cannot count.
        """

    async def exit(
        self,
        user: str | None,
        channels: Collection[str],
        *,
        announce: Collection[str],
        stream: bool,
    ) -> list[str]:
        """Undo one :meth:`enter` (``stream``: one with a ``limit``). Returns the channels of
        ``announce`` where the user now holds no stream anywhere: a leave is due there after the
        delay, if they do not come back (ask :meth:`settle_leaves`)."""

    async def settle_leaves(self, due: Sequence[tuple[str, str]], delay: float) -> list[Leave]:
        """Decide the leaves of ``due``, ``(channel, user)`` pairs: each user who has held no
        stream on that channel for ``delay`` seconds leaves it, decided once for the cluster
        (at most one caller gets a leave). The broker publishes each leave it decides as the
        ``presence_leave`` event (:func:`~tornado_sse.presence.presence_event`, with the info
        the user was shown with) before it answers (a failure of that publish is logged, not
        raised); returns those leaves. Raises ``BrokerUnavailable`` if it cannot decide."""

    async def presence(self, channel: str, delay: float) -> Snapshot:
        """Who holds streams on ``channel`` now, cluster-wide; the counts of instances that
        died are dropped, and the leaves of their users that are due (``delay``) are decided
        and returned in the snapshot, to be announced."""


class LocalBroker:
    """The broker of a single process: an id counter, a history, the set of its tokens.

    Every publication is delivered here, so subscriptions need no bookkeeping; a timer frees
    expired history once a second.
    """

    def __init__(self, retention: Retention) -> None:
        self.ids = IdCounter()
        self.history_store = History(retention, first_id=self.ids.first)
        self._tokens: set[str] = set()
        self._handler: BrokerHandler | None = None
        self._expiry: PeriodicCallback | None = None
        self._instance = uuid.uuid4().hex
        self.ledger = Ledger()
        self.user_sends = SendLog()

    @property
    def ready(self) -> bool:
        return True

    @property
    def instance(self) -> str:
        return self._instance

    @property
    def keeps_records(self) -> bool:
        return False  # a single process reports its own streams

    def start(self, handler: BrokerHandler) -> None:
        self._handler = handler
        if self._expiry is None:
            self._expiry = PeriodicCallback(self._expire, EXPIRY_INTERVAL * 1000)
            self._expiry.start()

    def _expire(self) -> None:
        self.history_store.expire()

    async def close(self) -> None:
        if self._expiry is not None:
            self._expiry.stop()
            self._expiry = None

    async def publish(self, channel: str, tail: bytes) -> int:
        return self._publish(channel, tail)

    def _publish(self, channel: str, tail: bytes) -> int:
        event_id = self.ids.next()
        self.history_store.append(event_id, channel, tail)
        if self._handler is not None:
            self._handler.on_publication(channel, event_id, tail)
        return event_id

    async def history(self, channels: Collection[str], since: int) -> Window:
        return self.history_store.window(channels, since)

    async def subscribe(self, channels: Collection[str]) -> None:
        return None

    def unsubscribe(self, channels: Collection[str]) -> None:
        return None

    async def wait_ready(self, timeout: float) -> bool:
        return True

    async def register(self, token: str, record: bytes) -> None:
        self._tokens.add(token)

    def unregister(self, token: str, report: Callable[[], None] | None = None) -> None:
        self._tokens.discard(token)
        if report is not None:
            report()

    @property
    def unreported(self) -> int:
        return 0

    async def report_all(self, deadline: float) -> int:
        return 0

    def count_open(self, open_streams: int) -> None:
        return None

    async def open_count(self, local: int) -> int:
        return local

    async def route(self, token: str, frame: bytes | None, close: bool) -> str:
        if token not in self._tokens or self._handler is None:
            raise TokenNotFound()
        return self._handler.on_send(token, frame, close)

    async def ask_token(self, token: str, question: dict[str, Any]) -> dict[str, Any]:
        if token not in self._tokens or self._handler is None:
            raise TokenNotFound()
        return await self._handler.on_ask(question)

    async def ask_user(self, user: str, question: dict[str, Any]) -> list[dict[str, Any]]:
        return []  # a single process: the gateway has reached every stream itself

    async def send_user(
        self, user: str, frame: bytes | None, close: bool, keep: float
    ) -> tuple[SendMark, list[dict[str, Any]]]:
        return self.user_sends.log(user, frame, close, keep), []

    async def enter(
        self,
        user: str | None,
        info: str | None,
        channels: Collection[str],
        *,
        announce: Collection[str],
        limit: int | None,
        join: bytes | None = None,
        began: float | None = None,
    ) -> Entered:
        found = self.ledger.enter(user, info, channels, announce, limit)
        if join is None:
            joins = dict.fromkeys(found, 0)
        else:
            joins = {channel: self._publish(channel, join) for channel in found}
        if user is None or began is None or limit is None:
            return Entered(joins)
        sends, through = self.user_sends.since(user, began)
        return Entered(joins, sends, through)

    async def exit(
        self,
        user: str | None,
        channels: Collection[str],
        *,
        announce: Collection[str],
        stream: bool,
    ) -> list[str]:
        return self.ledger.exit(user, channels, announce, stream)

    async def settle_leaves(self, due: Sequence[tuple[str, str]], delay: float) -> list[Leave]:
        leaves = []
        for channel, user in due:
            leave = self.ledger.settle_leave(channel, user, delay)
            if leave is not None:
                self._publish(channel, presence_event("presence_leave", user, leave.info_text))
                leaves.append(leave)
        return leaves

    async def presence(self, channel: str, delay: float) -> Snapshot:
        return self.ledger.snapshot(channel)
