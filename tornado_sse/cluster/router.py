"""Sends to tokens held by other instances: a request over the holder's channel, a reply back.

Each instance listens on ``<prefix>instance:<id>``. A send to a token held elsewhere is
published there as ``{"op": "send", "rid", "from", "token", "frame", "close"}``; the holder
delivers it and answers ``{"op": "reply", "rid", "status", "body"}`` on the sender's channel, with
the status and body its own ``/internal/send`` would have given (ok, buffered, 404, 429).

A question about a user's (or a token's) streams (a user send, a live subscription, a listing)
travels the same way as ``{"op": "ask", "rid", "from", "ask": {...}}``; the instance answers
with the JSON its :meth:`~tornado_sse.broker.BrokerHandler.on_ask` gave, once it has finished
(a subscription is confirmed by Redis before the answer leaves).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError

from ..errors import BrokerUnavailable, GatewayError, TokenNotFound, from_wire
from ..log import fields
from .directory import TokenDirectory
from .keys import KeySpace
from .link import POOL_TIMEOUT, RedisLink

log = logging.getLogger("tornado_sse.redis")

#: Seconds a routed send waits for the holder's answer.
REPLY_TIMEOUT = POOL_TIMEOUT

#: Request ids remembered to apply a repeated request once (far more than a reply timeout's
#: worth of requests at any realistic rate).
SEEN_REQUESTS = 100_000

#: Delivers a send to a local token (see ``BrokerHandler.on_send``).
Deliver = Callable[[str, bytes | None, bool], str]
#: Answers a question about local streams (see ``BrokerHandler.on_ask``).
Answer = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class Router:
    """Request and reply between instances, for sends to tokens."""

    def __init__(
        self, link: RedisLink, directory: TokenDirectory, instance: str, keys: KeySpace
    ) -> None:
        self.link = link
        self.directory = directory
        self.instance = instance
        self.keys = keys
        self._deliver: Deliver | None = None
        self._answer_ask: Answer | None = None
        self._waiting: dict[str, asyncio.Future[tuple[int, dict[str, Any]]]] = {}
        # Requests already applied here, by id: a publish retried on a fresh connection may
        # arrive twice, and must be applied once.
        self._seen: set[str] = set()
        self._seen_order: deque[str] = deque()
        link.listen(self._channel(instance), self._on_message)
        link.on_down(self._fail_waiting)

    def _channel(self, instance: str) -> str:
        return self.keys.instance(instance)

    def start(self, deliver: Deliver, answer: Answer | None = None) -> None:
        """Deliver sends routed to this instance with ``deliver``; answer questions with
        ``answer``."""
        self._deliver = deliver
        self._answer_ask = answer

    async def ask_token(self, token: str, question: dict[str, Any]) -> dict[str, Any]:
        """Ask the instance holding ``token`` ``question``; its answer, or its error
        (``TokenNotFound`` when no live instance holds it)."""
        self.link.require()
        try:
            owner = await self.directory.holder(token)
            if owner is None:
                raise TokenNotFound()
            return await self.ask(owner, question)
        except RedisError as exc:
            raise self.link.unavailable(exc) from None

    async def ask(self, instance: str, question: dict[str, Any]) -> dict[str, Any]:
        """Ask ``instance`` ``question``; its answer, or raise its error (``BrokerUnavailable``
        if it does not answer)."""
        if instance == self.instance:
            if self._answer_ask is None:
                raise TokenNotFound()
            return await self._answer_ask(question)
        try:
            status, body = await self._exchange(instance, {"op": "ask", "ask": question})
        except RedisError as exc:
            raise self.link.unavailable(exc) from None
        if status == 200:
            return body
        raise from_wire(status, body)

    async def route(self, token: str, frame: bytes | None, close: bool) -> str:
        """Deliver a send to the instance holding ``token``; its answer, or its error."""
        self.link.require()
        try:
            owner = await self.directory.holder(token)
            if owner is None:
                raise TokenNotFound()
            if owner == self.instance:
                return self._deliver_here(token, frame, close)
            status, body = await self._request(owner, token, frame, close)
        except RedisError as exc:
            raise self.link.unavailable(exc) from None
        if status == 200:
            return str(body["status"])
        raise from_wire(status, body)

    async def _request(
        self, owner: str, token: str, frame: bytes | None, close: bool
    ) -> tuple[int, dict[str, Any]]:
        message = {
            "op": "send",
            "token": token,
            "frame": frame.decode("utf-8") if frame is not None else None,
            "close": close,
        }
        return await self._exchange(owner, message)

    async def _exchange(self, owner: str, message: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Publish ``message`` to ``owner`` and wait for its reply: (status, body)."""
        rid = uuid.uuid4().hex
        reply: asyncio.Future[tuple[int, dict[str, Any]]]
        reply = asyncio.get_running_loop().create_future()
        self._waiting[rid] = reply
        message = {**message, "rid": rid, "from": self.instance}
        try:
            receivers = await self.link.publish(self._channel(owner), json.dumps(message))
            if receivers == 0:
                raise BrokerUnavailable("the instance holding this token is not listening")
            return await asyncio.wait_for(reply, REPLY_TIMEOUT)
        except TimeoutError:
            raise BrokerUnavailable("the instance holding this token did not answer") from None
        finally:
            self._waiting.pop(rid, None)

    def _deliver_here(self, token: str, frame: bytes | None, close: bool) -> str:
        if self._deliver is None:
            raise TokenNotFound()
        return self._deliver(token, frame, close)

    def _on_message(self, data: bytes) -> None:
        message = json.loads(data)
        if message["op"] == "reply":
            future = self._waiting.get(message["rid"])
            if future is not None and not future.done():
                future.set_result((message["status"], message["body"]))
            return
        if message["rid"] in self._seen:
            return
        self._seen.add(message["rid"])
        self._seen_order.append(message["rid"])
        if len(self._seen_order) > SEEN_REQUESTS:
            self._seen.discard(self._seen_order.popleft())
        if message["op"] == "ask":
            self.link.spawn(self._answer_question(message))
            return
        frame = message["frame"].encode("utf-8") if message["frame"] is not None else None
        body: dict[str, Any]
        try:
            status, body = (
                200,
                {"status": self._deliver_here(message["token"], frame, message["close"])},
            )
        except GatewayError as error:
            status, body = error.status, error.to_dict()
        answer = {"op": "reply", "rid": message["rid"], "status": status, "body": body}
        self.link.spawn(self._answer(message["from"], answer))

    async def _answer_question(self, message: dict[str, Any]) -> None:
        body: dict[str, Any]
        try:
            if self._answer_ask is None:
                raise TokenNotFound()
            status, body = 200, await self._answer_ask(message["ask"])
        except GatewayError as error:
            status, body = error.status, error.to_dict()
        answer = {"op": "reply", "rid": message["rid"], "status": status, "body": body}
        await self._answer(message["from"], answer)

    async def _answer(self, instance: str, answer: dict[str, Any]) -> None:
        try:
            await self.link.publish(self._channel(instance), json.dumps(answer))
        except RedisError as exc:
            log.warning("cannot answer a routed send", extra=fields(error=str(exc)))

    def _fail_waiting(self) -> None:
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(BrokerUnavailable("the Redis link went down"))
