"""The broker: where sends and channel publishes go. This module holds the in-process one.

A broker routes a validated :class:`~tornado_sse.protocol.SendRequest` to the stream(s) it names,
assigns channel event ids and keeps the replay history. :class:`LocalBroker` serves a single
process; a broker shared by several processes implements the same :class:`Broker` interface.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from . import protocol
from .history import History, IdCounter, Replay
from .protocol import Event, SendRequest
from .registry import Registry


class Broker(Protocol):
    """Routes sends and publishes, and answers replay questions."""

    @property
    def ready(self) -> bool:
        """Whether sends can be routed now (a shared broker may lose its link)."""

    async def send(self, request: SendRequest) -> str:
        """Deliver ``request``: ``"ok"`` or ``"buffered"``; raises a ``GatewayError``."""

    async def register(self, token: str) -> None:
        """Make ``token`` reachable (before its connect callback); raises ``BrokerUnavailable``."""

    def unregister(self, token: str) -> None:
        """Forget ``token`` (its stream ended); never waits."""

    async def replay(self, last_event_id: str, channels: Collection[str]) -> Replay:
        """Events published on ``channels`` after ``last_event_id``, or a gap."""

    def start(self) -> None:
        """Start background work (call once the IOLoop runs)."""

    async def close(self) -> None:
        """Release the broker's resources."""


class LocalBroker:
    """The broker of a single process: the registry, an id counter and a history."""

    def __init__(self, registry: Registry, history_size: int, history_ttl: float) -> None:
        self.registry = registry
        self.ids = IdCounter()
        self.history = History(history_size, history_ttl, first_id=self.ids.first)

    @property
    def ready(self) -> bool:
        return True

    async def send(self, request: SendRequest) -> str:
        if request.channel is not None:
            if request.event is not None:
                self.publish(request.channel, request.event)
            return "ok"
        assert request.token is not None
        frame = protocol.encode(request.event) if request.event is not None else None
        return self.registry.send(request.token, frame, request.close)

    def publish(self, channel: str, event: Event) -> int:
        """Give ``event`` the next id, keep it for replay and write it to local subscribers."""
        event_id = self.ids.next()
        frame = protocol.encode_event(event.data, event.name, str(event_id))
        self.history.append(event_id, channel, frame)
        return self.registry.publish(channel, event_id, frame)

    async def register(self, token: str) -> None:
        return None

    def unregister(self, token: str) -> None:
        return None

    async def replay(self, last_event_id: str, channels: Collection[str]) -> Replay:
        return self.history.replay(last_event_id, channels)

    def start(self) -> None:
        return None

    async def close(self) -> None:
        return None
