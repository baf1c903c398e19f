"""The link of one gateway instance to Redis: a bounded pool and one supervised subscription.

:class:`RedisLink` owns the Redis client and the pub/sub connection. The other parts of the
cluster register with it before it starts: the pub/sub channels they listen on, what to do each
time the link comes up (re-announce state Redis may have lost), when it goes down, and periodic
refreshes. The link reconnects with capped exponential backoff; :attr:`RedisLink.up` is true only
while the subscription is live.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.retry import Retry
from redis.backoff import EqualJitterBackoff
from redis.exceptions import RedisError

from ..errors import BrokerUnavailable
from ..log import fields
from . import resp

log = logging.getLogger("tornado_sse.redis")

#: Connections to Redis per instance (one of them holds the subscription).
REDIS_CONNECTIONS = 32
#: Seconds a caller waits for a free pooled connection, and for a reply.
POOL_TIMEOUT = 5.0
#: Reconnection backoff: first and longest wait, in seconds (short, so that sends work again
#: within about a second of Redis coming back).
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 1.0
#: Seconds between two probes the link publishes to itself, and how long one may take to come
#: back before the subscription is declared silent and re-established.
PROBE_INTERVAL, PROBE_TIMEOUT = 1.0, 5.0
#: Seconds between two looks for a probe or periodic hook that is due.
TICK = min(1.0, PROBE_INTERVAL)
#: Retries of a command whose connection turned out dead (a pooled connection left stale by a
#: Redis restart or failover), each on a fresh connection. Every command the cluster sends is
#: safe to repeat: writes are idempotent, publishes carry an id their receivers deduplicate.
COMMAND_RETRIES = 2
#: The most bytes the subscription reads at once.
READ_SIZE = 256 * 1024


class _Packing:
    """redis-py's ``pack_command`` giving the same bytes, joined once rather than once per
    argument (the gateway's scripts take dozens of arguments, and redis-py's packing was most
    of a call's cost). Values it does not expect (floats, memoryviews, anything larger than
    the connection's buffer cutoff) go to redis-py's own packing."""

    __slots__ = ()

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        if isinstance(first, str):
            args = tuple(first.encode().split()) + args[1:]
        elif b" " in first:
            args = tuple(first.split()) + args[1:]
        encoder = self.encoder  # type: ignore[attr-defined]
        cutoff = self._buffer_cutoff  # type: ignore[attr-defined]
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            kind = type(arg)
            if kind is str:
                arg = arg.encode(encoder.encoding, encoder.encoding_errors)
            elif kind is int:
                arg = b"%d" % arg
            elif kind is not bytes:
                return super().pack_command(*args)  # type: ignore[misc]
            if len(arg) > cutoff:
                return super().pack_command(*args)  # type: ignore[misc]
            parts.append(b"$%d\r\n%b\r\n" % (len(arg), arg))
        return [b"".join(parts)]


def packing(connection_class: type) -> type:
    """``connection_class`` (whichever redis-py picked: TCP, TLS, Unix socket, Sentinel) with
    :class:`_Packing`'s ``pack_command``."""
    return type("Packing" + connection_class.__name__, (_Packing, connection_class), {})


def connection_pool(url: str, sentinels: str | None, master: str | None) -> Any:
    """The bounded pool of one instance: of ``url``, or of the primary that ``sentinels``
    (``host:port,...``) name for ``master``. Callers wait for a free connection, so a burst of
    connects queues its registrations instead of opening one Redis connection each."""
    options: dict[str, Any] = {
        "socket_connect_timeout": 2,
        "socket_timeout": 5,
        "retry": Retry(EqualJitterBackoff(cap=0.5, base=0.05), COMMAND_RETRIES),
        "retry_on_error": [redis_errors.ConnectionError, redis_errors.TimeoutError, OSError],
    }
    if sentinels:
        from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

        hosts = []
        for item in sentinels.split(","):
            host, _, port = item.strip().rpartition(":")
            hosts.append((host, int(port)))
        sentinel = Sentinel(hosts, socket_timeout=2, socket_connect_timeout=2)
        pool: Any = SentinelConnectionPool(
            master, sentinel, max_connections=REDIS_CONNECTIONS, **options
        )
    else:
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=REDIS_CONNECTIONS, timeout=POOL_TIMEOUT, **options
        )
    pool.connection_class = packing(pool.connection_class)
    return pool


def cluster_client(urls: str) -> Any:
    """redis-py's own Redis Cluster client, started from the nodes ``urls`` names
    (``redis://host:port``, comma-separated if several; credentials from the first)."""
    from redis.asyncio.cluster import ClusterNode, RedisCluster

    nodes = []
    username: str | None = None
    password: str | None = None
    for item in urls.split(","):
        parts = urlsplit(item.strip())
        nodes.append(ClusterNode(parts.hostname or "127.0.0.1", parts.port or 6379))
        if password is None and parts.password:
            username, password = unquote(parts.username or "") or None, unquote(parts.password)
    return RedisCluster(
        startup_nodes=nodes,
        max_connections=REDIS_CONNECTIONS,
        socket_connect_timeout=2,
        socket_timeout=5,
        retry=Retry(EqualJitterBackoff(cap=0.5, base=0.05), COMMAND_RETRIES),
        retry_on_error=[redis_errors.ConnectionError, redis_errors.TimeoutError, OSError],
        username=username,
        password=password,
    )


class _Subscription:
    """The pub/sub connection of one Redis (or Sentinel primary): plain SUBSCRIBE, on a
    connection of the client's pool that it keeps to itself until :meth:`aclose`.

    redis-py opens the connection (address, TLS, authentication, protocol, database) and
    writes the commands; what comes back is read here, a whole read at a time
    (:mod:`~tornado_sse.cluster.resp`), since reading it one reply at a time through redis-py
    costs several times more than delivering the message does. The connection is never
    reopened underneath: a subscription whose connection was lost fails (the link then starts
    over and subscribes everything again), rather than going on unsubscribed."""

    def __init__(self, client: Any, probe: str) -> None:
        self._pool = client.connection_pool
        self._conn: Any = None
        self._reader: asyncio.StreamReader | None = None
        #: What was read and not parsed yet (the start of a reply), in pieces, their size, and
        #: the size at which it is worth parsing again (see :func:`resp.parse`).
        self._pieces: list[bytes] = []
        self._size = 0
        self._need = 0
        #: Why the subscription must start over, once the events read before it are out.
        self._lost: str | None = None
        self.probes = [probe]

    async def open(self, channels: list[str]) -> None:
        self._conn = await self._pool.get_connection()
        self._reader = getattr(self._conn, "_reader", None)
        if not isinstance(self._reader, asyncio.StreamReader):  # redis-py changed underneath
            raise redis_errors.ConnectionError("this redis-py has no reader to subscribe with")
        await self._send("SUBSCRIBE", *self.probes, *channels)

    async def subscribe(self, channels: list[str]) -> None:
        await self._send("SUBSCRIBE", *channels)

    async def unsubscribe(self, channels: list[str]) -> None:
        await self._send("UNSUBSCRIBE", *channels)

    async def _send(self, *args: str) -> None:
        conn = self._conn
        if conn is None or not conn.is_connected or conn._reader is not self._reader:
            raise redis_errors.ConnectionError("the subscription's connection is lost")
        await conn.send_command(*args, check_health=False)

    async def events(self) -> list[resp.Event]:
        """The events of the next read, however long it takes to come (``[]`` if it brought
        only part of a reply). Raises ``ConnectionError`` when the connection is lost,
        carries what a subscription never gets, or Redis says it moves elsewhere."""
        reader = self._reader
        if reader is None or self._lost is not None:
            raise redis_errors.ConnectionError(self._lost or "the subscription is not open")
        chunk = await reader.read(READ_SIZE)
        if not chunk:
            raise redis_errors.ConnectionError("Redis closed the subscription's connection")
        self._size += len(chunk)
        if self._pieces:
            self._pieces.append(chunk)
            if self._size < self._need:
                return []  # a large reply still arriving: joined once it is whole
            chunk = b"".join(self._pieces)
        try:
            events, used, need = resp.parse_events(chunk)
        except resp.ProtocolError as exc:
            raise redis_errors.ConnectionError(str(exc)) from None
        rest = chunk[used:]
        self._pieces = [rest] if rest else []
        self._size = len(rest)
        self._need = need - used
        for i, (kind, _, _) in enumerate(events):
            if kind == "MOVING":  # a maintenance notice: the endpoint moves
                self._lost = "Redis moves the subscription's endpoint"
                return events[:i]
        return events

    async def aclose(self) -> None:
        conn, self._conn, self._reader = self._conn, None, None
        if conn is not None:
            try:
                await conn.disconnect(nowait=True)
            finally:
                await self._pool.release(conn)


class _ShardedSubscription:
    """Sharded pub/sub over a Redis Cluster (Redis 7 ``SSUBSCRIBE``): one connection per primary
    that serves a subscribed channel's slot, each read by its own task into one queue, and one
    probe channel per connection (a name hashed to a slot of that primary), so a silent
    connection to any node is noticed. An error on any connection fails the whole
    subscription: the link then starts over on the cluster's current layout."""

    def __init__(self, cluster: Any, probe: str) -> None:
        self._cluster = cluster
        self._probe = probe
        self.probes: list[str] = []
        self._pubsubs: dict[str, Any] = {}  # node name -> its PubSub
        self._clients: list[Any] = []
        self._where: dict[str, str] = {}  # channel -> node name
        self._readers: list[asyncio.Task[None]] = []
        self._queue: asyncio.Queue[dict[str, Any] | BaseException] = asyncio.Queue()

    async def open(self, channels: list[str]) -> None:
        if self._cluster._initialize:
            await self._cluster.initialize()
        else:  # a link that starts over learns the cluster's layout afresh (a failover)
            await self._cluster.nodes_manager.initialize()
        for node in self._cluster.get_primaries():
            await self._node(node)
        await self.subscribe(channels)

    async def _node(self, node: Any) -> Any:
        pubsub = self._pubsubs.get(node.name)
        if pubsub is not None:
            return pubsub
        kwargs = node.connection_kwargs
        client = aioredis.Redis(
            host=node.host,
            port=node.port,
            username=kwargs.get("username"),
            password=kwargs.get("password"),
            socket_connect_timeout=2,
            socket_timeout=None,  # a subscription waits for messages as long as it takes
        )
        self._clients.append(client)
        pubsub = client.pubsub()
        self._pubsubs[node.name] = pubsub
        probe = self._probe_for(node.name)
        await pubsub.ssubscribe(probe)
        self.probes.append(probe)
        self._readers.append(asyncio.get_running_loop().create_task(self._read(pubsub)))
        return pubsub

    def _probe_for(self, node: str) -> str:
        for n in range(100_000):  # bounded: a third of the names land on each of 3 nodes
            name = "%s{%d}" % (self._probe, n)
            if self._cluster.get_node_from_key(name).name == node:
                return name
        raise redis_errors.ConnectionError("no probe channel hashes to node %s" % node)

    async def subscribe(self, channels: list[str]) -> None:
        for channel in channels:  # one SSUBSCRIBE per channel: they may lie in other slots
            node = self._cluster.get_node_from_key(channel)
            await (await self._node(node)).ssubscribe(channel)
            self._where[channel] = node.name

    async def unsubscribe(self, channels: list[str]) -> None:
        for channel in channels:
            name = self._where.pop(channel, None)
            if name is not None:
                await self._pubsubs[name].sunsubscribe(channel)

    async def _read(self, pubsub: Any) -> None:
        try:
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message is not None:
                    self._queue.put_nowait(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # handed to the link's loop, which starts over
            self._queue.put_nowait(exc)

    async def events(self) -> list[resp.Event]:
        """As :meth:`_Subscription.events`, from every node's connection."""
        item = await self._queue.get()
        events = []
        while True:
            if isinstance(item, BaseException):
                if isinstance(item, (RedisError, OSError)):
                    raise item
                raise redis_errors.ConnectionError(str(item) or type(item).__name__)
            kind = item["type"]
            if kind in ("smessage", "ssubscribe", "sunsubscribe"):
                kind = kind[1:]
            events.append((kind, item["channel"], item["data"]))
            if self._queue.empty():
                return events
            item = self._queue.get_nowait()

    async def aclose(self) -> None:
        for reader in self._readers:
            reader.cancel()
        if self._readers:
            await asyncio.wait(self._readers, timeout=2.0)
        for pubsub in self._pubsubs.values():
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()
        for client in self._clients:
            with contextlib.suppress(RedisError, OSError):
                await client.aclose()


Hook = Callable[[], Awaitable[None]]


class RedisLink:
    """The Redis client of one instance and its supervised subscription."""

    def __init__(
        self,
        url: str,
        *,
        sentinels: str | None = None,
        master: str | None = None,
        cluster: bool = False,
    ) -> None:
        #: Whether this is a Redis Cluster: sharded pub/sub, and ``client`` is a RedisCluster.
        self.cluster = cluster
        if cluster:
            self.client: Any = cluster_client(url)
        else:
            pool = connection_pool(url, sentinels, master)
            self.client = aioredis.Redis.from_pool(pool)  # closes the pool with the client
        self.up = False
        self._probe_channel = "tornado_sse:probe:%s" % uuid.uuid4().hex
        self._probe_sent = 0.0  # monotonic time of the probes in flight, 0 if none
        self._probes_out: set[bytes] = set()  # probe channels whose probe has not come back
        self._became_up = asyncio.Event()
        self._listeners: dict[bytes, Callable[[bytes], None]] = {}
        self._prefixed: list[tuple[bytes, Callable[[bytes, bytes], None]]] = []
        self._confirmations: dict[bytes, list[asyncio.Future[None]]] = {}
        #: Barriers in flight: marker -> (probe channels it has not come back on yet, waiter).
        self._barriers: dict[bytes, tuple[set[bytes], asyncio.Future[None]]] = {}
        self._pubsub: _Subscription | _ShardedSubscription | None = None
        self._on_up: list[Hook] = []
        self._on_down: list[Callable[[], None]] = []
        self._on_close: list[Hook] = []
        self._periodic: list[tuple[float, Hook]] = []
        self._running: set[int] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._main: asyncio.Task[None] | None = None

    # -- registration (before start) ----------------------------------------------------------

    def listen(self, channel: str, on_message: Callable[[bytes], None]) -> None:
        """Call ``on_message(data)`` for every message published on pub/sub ``channel``."""
        self._listeners[channel.encode()] = on_message

    def listen_prefix(self, prefix: str, on_message: Callable[[bytes, bytes], None]) -> None:
        """Call ``on_message(channel, data)`` for messages on channels that start with
        ``prefix`` and were subscribed with :meth:`subscribe`."""
        self._prefixed.append((prefix.encode(), on_message))

    def on_up(self, hook: Hook) -> None:
        """Await ``hook()`` each time the subscription is (re)established, before :attr:`up`."""
        self._on_up.append(hook)

    def on_down(self, hook: Callable[[], None]) -> None:
        """Call ``hook()`` each time the link is lost."""
        self._on_down.append(hook)

    def on_close(self, hook: Hook) -> None:
        """Await ``hook()`` at :meth:`close` while the link may still be used (errors ignored)."""
        self._on_close.append(hook)

    def every(self, seconds: float, hook: Hook) -> None:
        """Await ``hook()`` about every ``seconds`` while the link is up."""
        self._periodic.append((seconds, hook))

    # -- life ------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start supervising the link (call once the IOLoop runs)."""
        if self._main is None:
            self._main = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Finish background work (at most 2 s), run the close hooks, and disconnect."""
        self._closing = True
        if self._tasks:  # token deletions of the streams just ended, answers to routed sends
            await asyncio.wait(set(self._tasks), timeout=2.0)
        for hook in self._on_close:  # through the pool, even if the subscription is down
            with contextlib.suppress(RedisError, OSError):
                await hook()
        left = list(self._tasks) + ([self._main] if self._main is not None else [])
        for task in left:
            task.cancel()
        if left:  # let them end here, not be torn down with the event loop
            await asyncio.wait(left, timeout=2.0)
        await self.client.aclose()

    async def subscribe(self, channels: list[str], *, confirm: bool = True) -> None:
        """Subscribe the live link to ``channels``; with ``confirm``, return only once Redis
        has confirmed every one (so every later publish on them arrives here). Raises
        ``RedisError``/``OSError``/``TimeoutError`` when it cannot."""
        pubsub = self._pubsub
        if pubsub is None:
            raise BrokerUnavailable("Redis is unreachable")
        loop = asyncio.get_running_loop()
        waiters = []
        if confirm:
            for channel in channels:
                waiter: asyncio.Future[None] = loop.create_future()
                self._confirmations.setdefault(channel.encode(), []).append(waiter)
                waiters.append(waiter)
        await pubsub.subscribe(channels)
        if waiters:
            await asyncio.wait_for(asyncio.gather(*waiters), POOL_TIMEOUT)

    async def barrier(self) -> None:
        """Return once every subscription connection has delivered all that its server
        published before this call: a marker published now on this link's own probe channel of
        each server (each primary of a cluster) has come back on each, after everything that
        server published earlier (Redis pushes a connection's messages in the order they were
        published). Raises ``BrokerUnavailable`` while the link is down, ``RedisError``,
        ``OSError`` or ``TimeoutError`` (after :data:`POOL_TIMEOUT`) when it cannot."""
        pubsub = self._pubsub
        if pubsub is None:
            raise BrokerUnavailable("Redis is unreachable")
        probes = list(pubsub.probes)
        marker = b"b" + uuid.uuid4().hex.encode()
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._barriers[marker] = ({probe.encode() for probe in probes}, waiter)
        try:
            await asyncio.gather(*(self.publish(probe, marker) for probe in probes))
            await asyncio.wait_for(waiter, POOL_TIMEOUT)
        finally:
            self._barriers.pop(marker, None)

    def _marker_back(self, channel: bytes, marker: bytes) -> None:
        entry = self._barriers.get(marker)
        if entry is not None:
            waiting, waiter = entry
            waiting.discard(channel)
            if not waiting and not waiter.done():
                waiter.set_result(None)

    async def unsubscribe(self, channels: list[str]) -> None:
        """Unsubscribe the live link from ``channels`` (nothing to do while it is down)."""
        if self._pubsub is not None and channels:
            await self._pubsub.unsubscribe(channels)

    async def publish(self, channel: str, data: bytes | str) -> int:
        """Publish ``data`` on ``channel`` (``SPUBLISH`` in a cluster); how many received it."""
        if self.cluster:
            return int(await self.client.spublish(channel, data))
        return int(await self.client.publish(channel, data))

    async def wait_up(self, timeout: float) -> bool:
        """Wait until the link is up, at most ``timeout`` seconds; whether it is."""
        if not self.up:
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                await asyncio.wait_for(self._became_up.wait(), timeout)
        return self.up

    def require(self) -> None:
        """Raise ``BrokerUnavailable`` unless the link is up."""
        if not self.up:
            raise BrokerUnavailable("Redis is unreachable: this send cannot be routed")

    @staticmethod
    def unavailable(exc: Exception) -> BrokerUnavailable:
        """The error for a Redis command that failed with ``exc``."""
        return BrokerUnavailable("Redis is unreachable: %s" % (str(exc) or type(exc).__name__))

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in the background; :meth:`close` waits for it briefly."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- supervision -------------------------------------------------------------------------

    async def _run(self) -> None:
        """Keep the subscription alive; reconnect with backoff."""
        backoff = BACKOFF_FIRST
        while not self._closing:
            pubsub = self._subscription()
            try:
                await pubsub.open([channel.decode() for channel in self._listeners])
                self._pubsub = pubsub
                self._probe_sent = 0.0
                self._probes_out = set()
                for hook in self._on_up:
                    await hook()
                self.up = True
                self._became_up.set()
                backoff = BACKOFF_FIRST
                log.info("redis link up")
                await self._listen(pubsub)
            except (RedisError, OSError) as exc:
                if self.up:
                    log.warning("redis link down", extra=fields(error=str(exc)))
                self.up = False
                for down in self._on_down:
                    down()
            finally:
                self.up = False
                self._became_up.clear()
                self._pubsub = None
                self._fail_confirmations()
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
            if self._closing:
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    def _subscription(self) -> _Subscription | _ShardedSubscription:
        if self.cluster:
            return _ShardedSubscription(self.client, self._probe_channel)
        return _Subscription(self.client, self._probe_channel)

    def _fail_confirmations(self) -> None:
        for waiters in self._confirmations.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(BrokerUnavailable("the Redis link went down"))
        self._confirmations.clear()
        for _, barrier in self._barriers.values():
            if not barrier.done():
                barrier.set_exception(BrokerUnavailable("the Redis link went down"))
        self._barriers.clear()

    def _dispatch(self, event: resp.Event) -> None:
        kind, channel, data = event
        if kind == "message" and self._barriers and data[:1] == b"b":
            self._marker_back(channel, data)  # then counts as a probe, below
        if kind == "message" and channel in self._probes_out:
            self._probes_out.discard(channel)
            if not self._probes_out:
                self._probe_sent = 0.0  # every connection carries messages: they are alive
        elif kind == "message" and channel.startswith(self._probe_channel.encode()):
            pass  # a probe that came back after the subscription was renewed
        elif kind == "message":
            on_message = self._listeners.get(channel)
            if on_message is not None:
                on_message(data)
                return
            for prefix, on_prefixed in self._prefixed:
                if channel.startswith(prefix):
                    on_prefixed(channel, data)
                    return
        elif kind == "subscribe":
            for waiter in self._confirmations.pop(channel, ()):
                if not waiter.done():
                    waiter.set_result(None)

    async def _run_periodic(self, index: int, hook: Hook) -> None:
        try:
            await hook()
        except (RedisError, OSError) as exc:  # retried at its next turn
            log.info("a periodic Redis task failed", extra=fields(error=exc))
        finally:
            self._running.discard(index)

    async def _probe(self, now: float) -> None:
        """Publish a probe to this link's own channel, and declare the subscription silent if
        the previous one has not come back in time (a failover can leave a subscription on a
        server that no longer receives publishes, with no error to tell)."""
        if self._probe_sent and now - self._probe_sent > PROBE_TIMEOUT:
            raise redis_errors.ConnectionError("the subscription is silent: no probe came back")
        if not self._probe_sent and self._pubsub is not None:
            self._probe_sent = now
            probes = list(self._pubsub.probes)
            self._probes_out = {probe.encode() for probe in probes}
            self.spawn(self._send_probes(probes))

    async def _send_probes(self, probes: list[str]) -> None:
        for probe in probes:
            with contextlib.suppress(RedisError, OSError):  # a probe that cannot go out is lost
                await self.publish(probe, b"probe")

    async def _listen(self, pubsub: Any) -> None:
        """Read and dispatch the subscription's events while a ticker probes it and runs the
        periodic hooks; returns (raising why) as soon as either fails, the other stopped."""
        loop = asyncio.get_running_loop()
        reader = loop.create_task(self._read(pubsub))
        ticker = loop.create_task(self._tick())
        try:
            await asyncio.wait((reader, ticker), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, ticker):
                task.cancel()
            await asyncio.wait((reader, ticker))
        for task in (reader, ticker):
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error

    async def _read(self, pubsub: Any) -> None:
        """Dispatch the events of each read, as they come: no timer armed per read, since a
        busy link reads thousands of times a second (the ticker watches for silence)."""
        while True:
            for event in await pubsub.events():
                self._dispatch(event)

    async def _tick(self) -> None:
        """Every :data:`TICK` seconds: the probe (raising once the subscription is found
        silent) and the periodic hooks that are due."""
        last_run = [time.monotonic()] * len(self._periodic)
        last_probe = 0.0
        while True:
            now = time.monotonic()
            if now - last_probe >= PROBE_INTERVAL:
                last_probe = now
                await self._probe(now)
            for i, (seconds, hook) in enumerate(self._periodic):
                if now - last_run[i] >= seconds and i not in self._running:
                    # In the background: a stalled Redis must not stop the ticker from
                    # noticing, through the probe, that the subscription went silent.
                    last_run[i] = now
                    self._running.add(i)
                    self.spawn(self._run_periodic(i, hook))
            await asyncio.sleep(TICK)
