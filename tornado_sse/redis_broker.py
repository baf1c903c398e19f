"""The Redis broker: many gateway processes and machines acting as one gateway.

Every instance (one gateway process) has a random id and

- keeps ``<prefix>instance:<id>`` alive (a key with a short TTL, refreshed every few seconds);
- maps each of its tokens to itself with ``<prefix>token:<token>`` (refreshed while it lives);
- listens on two pub/sub channels: ``<prefix>events`` (every channel event of the cluster) and
  ``<prefix>instance:<id>`` (sends routed to its tokens, and answers to the sends it routed).

A send to a token held elsewhere is published to the holder's instance channel and answered by
the holder (``ok``, ``buffered``, 404, 429) over the sender's channel. A channel publish runs one
Lua script that takes the next id, appends the event to the history list and publishes it, so ids
increase in publish order across the cluster and history and delivery cannot disagree. Each
instance writes events it receives to its own subscribers.

While Redis is unreachable, open streams stay open, sends to local tokens still work, every
other send answers 503 ``BROKER_UNAVAILABLE`` and new streams are refused with that code; the
link is retried with capped exponential backoff and, once back, the instance re-registers its
tokens (Redis may have lost them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Collection
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from . import protocol
from .errors import BrokerUnavailable, GatewayError, TokenNotFound
from .history import Replay, parse_event_id
from .protocol import Event, SendRequest
from .registry import Registry

log = logging.getLogger("tornado_sse.redis")

#: Seconds an instance stays "alive" without refreshing its key: the longest a dead instance's
#: tokens keep answering anything but 404.
INSTANCE_TTL = 15
#: Seconds between refreshes of the instance key.
INSTANCE_REFRESH = 5
#: Seconds a token key lives without refresh (refreshed every third of it).
TOKEN_TTL = 3600
#: Seconds a routed send waits for the holder's answer.
REPLY_TIMEOUT = 5.0
#: Connections to Redis per instance (one of them holds the subscription).
REDIS_CONNECTIONS = 32
#: Reconnection backoff: first and longest wait, in seconds.
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 5.0

# KEYS: id counter, history list. ARGV: channel, frame without its id line, history size,
# publish time, pub/sub channel of events, first id minus one (used once per cluster).
PUBLISH_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SET', KEYS[1], ARGV[6]) end
local id = string.format('%d', redis.call('INCR', KEYS[1]))
local frame = 'id: ' .. id .. '\\n' .. ARGV[2]
local size = tonumber(ARGV[3])
if size > 0 then
  redis.call('RPUSH', KEYS[2], ARGV[4] .. ' ' .. id .. ' ' .. ARGV[1] .. '\\n' .. frame)
  redis.call('LTRIM', KEYS[2], -size, -1)
end
redis.call('PUBLISH', ARGV[5], id .. ' ' .. ARGV[1] .. '\\n' .. frame)
return id
"""

# KEYS: token key. ARGV: instance key prefix. The holder's id if it is alive, else nil (and the
# stale token key is deleted).
ROUTE_SCRIPT = """
local owner = redis.call('GET', KEYS[1])
if not owner then return nil end
if redis.call('EXISTS', ARGV[1] .. owner) == 1 then return owner end
redis.call('DEL', KEYS[1])
return nil
"""


class RedisBroker:
    """The broker of one gateway process in a cluster that shares ``url`` (a Redis URL)."""

    def __init__(
        self,
        url: str,
        registry: Registry,
        *,
        history_size: int,
        history_ttl: float,
        prefix: str = "tornado_sse:",
    ) -> None:
        self.registry = registry
        self.history_size = history_size
        self.history_ttl = history_ttl
        self.id = uuid.uuid4().hex
        self.prefix = prefix
        # A bounded pool that makes callers wait for a free connection: a burst of connects
        # queues its token registrations instead of opening one Redis connection each.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=REDIS_CONNECTIONS,
            timeout=REPLY_TIMEOUT,
            socket_connect_timeout=2,
            socket_timeout=5,
        )
        self._redis = aioredis.Redis.from_pool(pool)  # closes the pool with the client
        self._events_channel = prefix + "events"
        self._my_channel = self._instance_channel(self.id)
        self._publish = self._redis.register_script(PUBLISH_SCRIPT)
        self._route = self._redis.register_script(ROUTE_SCRIPT)
        self._waiting: dict[str, asyncio.Future[tuple[int, dict[str, Any]]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._connected = False
        self._closing = False
        self._main: asyncio.Task[None] | None = None

    # -- keys ---------------------------------------------------------------------------------

    def _instance_key(self, instance: str) -> str:
        return "%sinstance:%s" % (self.prefix, instance)

    def _instance_channel(self, instance: str) -> str:
        return "%sinstance:%s" % (self.prefix, instance)

    def _token_key(self, token: str) -> str:
        return "%stoken:%s" % (self.prefix, token)

    # -- Broker interface -----------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._connected

    def start(self) -> None:
        if self._main is None:
            self._main = asyncio.get_running_loop().create_task(self._run())

    async def register(self, token: str) -> None:
        self._require_link()
        try:
            await self._redis.set(self._token_key(token), self.id, ex=TOKEN_TTL)
        except RedisError as exc:
            raise self._unavailable(exc) from None

    def unregister(self, token: str) -> None:
        if self._connected:
            self._spawn(self._forget(token))

    async def send(self, request: SendRequest) -> str:
        if request.channel is not None:
            if request.event is not None:
                await self.publish(request.channel, request.event)
            return "ok"
        assert request.token is not None
        frame = protocol.encode(request.event) if request.event is not None else None
        if self.registry.get(request.token) is not None:
            return self.registry.send(request.token, frame, request.close)
        return await self._send_remote(request.token, frame, request.close)

    async def publish(self, channel: str, event: Event) -> int:
        """Publish ``event`` on ``channel`` cluster-wide; returns its id."""
        self._require_link()
        tail = protocol.encode_event(event.data, event.name)
        first = int(time.time() * 1_000_000) - 1
        try:
            event_id = await self._publish(
                keys=[self.prefix + "event_id", self.prefix + "history"],
                args=[
                    channel,
                    tail,
                    self.history_size,
                    repr(time.time()),
                    self._events_channel,
                    first,
                ],
            )
        except RedisError as exc:
            raise self._unavailable(exc) from None
        return int(event_id)

    async def replay(self, last_event_id: str, channels: Collection[str]) -> Replay:
        if self.history_size <= 0:
            return Replay()
        last = parse_event_id(last_event_id)
        if last is None:
            return Replay(gap=True)
        self._require_link()
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.lrange(self.prefix + "history", 0, -1)
                pipe.get(self.prefix + "event_id")
                entries, current = await pipe.execute()
        except RedisError as exc:
            raise self._unavailable(exc) from None
        if current is None or last > int(current):
            return Replay(gap=True)
        oldest = time.time() - self.history_ttl
        kept = []
        for entry in entries:
            head, _, frame = entry.partition(b"\n")
            at, event_id, channel = head.split(b" ", 2)
            if float(at) >= oldest:
                kept.append((int(event_id), channel.decode(), frame))
        first = kept[0][0] if kept else int(current) + 1
        if last < first - 1:
            return Replay(gap=True)
        return Replay(
            events=tuple((i, frame) for i, ch, frame in kept if i > last and ch in channels)
        )

    async def close(self) -> None:
        self._closing = True
        if self._main is not None:
            self._main.cancel()
        if self._tasks:  # token deletions of the streams just ended, answers to routed sends
            await asyncio.wait(set(self._tasks), timeout=2.0)
        if self._connected:
            # Without the instance key, the others answer 404 for any token key left behind.
            with contextlib.suppress(RedisError):
                await self._redis.delete(self._instance_key(self.id))
        for task in list(self._tasks):
            task.cancel()
        await self._redis.aclose()

    # -- routing ----------------------------------------------------------------------------

    async def _send_remote(self, token: str, frame: bytes | None, close: bool) -> str:
        self._require_link()
        try:
            owner = await self._route(
                keys=[self._token_key(token)], args=[self.prefix + "instance:"]
            )
            if owner is None or owner.decode() == self.id:
                raise TokenNotFound("no open stream has this token")
            rid = uuid.uuid4().hex
            reply: asyncio.Future[tuple[int, dict[str, Any]]]
            reply = asyncio.get_running_loop().create_future()
            self._waiting[rid] = reply
            message = {
                "op": "send",
                "rid": rid,
                "from": self.id,
                "token": token,
                "frame": frame.decode("utf-8") if frame is not None else None,
                "close": close,
            }
            try:
                receivers = await self._redis.publish(
                    self._instance_channel(owner.decode()), json.dumps(message)
                )
                if receivers == 0:
                    raise BrokerUnavailable("the instance holding this token is not listening")
                status, body = await asyncio.wait_for(reply, REPLY_TIMEOUT)
            finally:
                self._waiting.pop(rid, None)
        except RedisError as exc:
            raise self._unavailable(exc) from None
        except TimeoutError:
            raise BrokerUnavailable("the instance holding this token did not answer") from None
        if status == 200:
            return str(body["status"])
        error = body.get("error", {})
        raise GatewayError(error.get("message", "error"), status=status, code=error.get("code"))

    def _on_instance_message(self, data: bytes) -> None:
        message = json.loads(data)
        if message["op"] == "reply":
            future = self._waiting.get(message["rid"])
            if future is not None and not future.done():
                future.set_result((message["status"], message["body"]))
            return
        frame = message["frame"].encode("utf-8") if message["frame"] is not None else None
        body: dict[str, Any]
        try:
            result = self.registry.send(message["token"], frame, message["close"])
            status, body = 200, {"status": result}
        except GatewayError as error:
            status, body = error.status, error.to_dict()
        answer = {"op": "reply", "rid": message["rid"], "status": status, "body": body}
        self._spawn(self._answer(message["from"], answer))

    async def _answer(self, instance: str, answer: dict[str, Any]) -> None:
        try:
            await self._redis.publish(self._instance_channel(instance), json.dumps(answer))
        except RedisError as exc:
            log.warning("cannot answer a routed send error=%s", exc)

    def _on_event(self, data: bytes) -> None:
        head, _, frame = data.partition(b"\n")
        event_id, channel = head.split(b" ", 1)
        self.registry.publish(channel.decode(), int(event_id), frame)

    # -- the link ---------------------------------------------------------------------------

    async def _run(self) -> None:
        """Keep the subscription and the instance key alive; reconnect with backoff."""
        backoff = BACKOFF_FIRST
        while not self._closing:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self._events_channel, self._my_channel)
                await self._resync()
                self._connected = True
                backoff = BACKOFF_FIRST
                log.info("redis link up instance=%s", self.id)
                await self._listen(pubsub)
            except (RedisError, OSError) as exc:
                if self._connected:
                    log.warning("redis link down error=%s", exc)
                self._connected = False
                self._fail_waiting()
            finally:
                self._connected = False
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
            if self._closing:
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _listen(self, pubsub: Any) -> None:
        refreshed = time.monotonic()
        tokens_refreshed = refreshed
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None and message["type"] == "message":
                if message["channel"] == self._events_channel.encode():
                    self._on_event(message["data"])
                else:
                    self._on_instance_message(message["data"])
            now = time.monotonic()
            if now - refreshed >= INSTANCE_REFRESH:
                await self._redis.set(self._instance_key(self.id), b"1", ex=INSTANCE_TTL)
                refreshed = now
            if now - tokens_refreshed >= TOKEN_TTL / 3:
                await self._register_all()
                tokens_refreshed = now

    async def _resync(self) -> None:
        """After (re)connecting: announce the instance and re-register every local token."""
        await self._redis.set(self._instance_key(self.id), b"1", ex=INSTANCE_TTL)
        await self._register_all()

    async def _register_all(self) -> None:
        tokens = [c.token for c in self.registry.connections()]
        for start in range(0, len(tokens), 1000):
            async with self._redis.pipeline(transaction=False) as pipe:
                for token in tokens[start : start + 1000]:
                    pipe.set(self._token_key(token), self.id, ex=TOKEN_TTL)
                await pipe.execute()

    async def _forget(self, token: str) -> None:
        # If this fails the key expires by itself, and lookups check that its holder has it.
        with contextlib.suppress(RedisError):
            await self._redis.delete(self._token_key(token))

    def _fail_waiting(self) -> None:
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(BrokerUnavailable("the Redis link went down"))

    def _require_link(self) -> None:
        if not self._connected:
            raise BrokerUnavailable("Redis is unreachable: this send cannot be routed")

    def _unavailable(self, exc: Exception) -> BrokerUnavailable:
        return BrokerUnavailable("Redis is unreachable: %s" % (str(exc) or type(exc).__name__))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
