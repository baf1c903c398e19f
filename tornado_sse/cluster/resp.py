"""What a subscribed Redis connection receives, parsed from raw bytes: the replies of RESP2 and
RESP3 (https://redis.io/docs/latest/develop/reference/protocol-spec/) and the pub/sub events
they carry. Pure: no sockets here; :class:`~tornado_sse.cluster.link.RedisLink` feeds it what
it reads.

A subscribed connection gets pushes (RESP3 ``>``, RESP2 ``*``) of bulk strings and integers:
``message``, ``subscribe``, ``unsubscribe``, ``pong`` and, from servers that send them,
notices of their own. Parsing a whole read at once costs a few microseconds per message, a
fraction of what reading the connection one reply at a time through redis-py does, which
matters because every event routed between instances is one.
"""

from __future__ import annotations

from typing import Any

#: One pub/sub event: its kind (``message``, ``subscribe``, ``unsubscribe``, ...), the channel
#: and the payload (the message's bytes; the subscription count of a confirmation).
Event = tuple[str, bytes, Any]

#: The reply types read here, by their first byte; every other one is a ProtocolError.
_SCALARS = frozenset(b"+-:_#,(")
_AGGREGATES = frozenset(b"*>~")
_BULKS = frozenset(b"$=")


class ProtocolError(ValueError):
    """The bytes are not a reply this parser reads (a broken or unexpected stream)."""


class ReplyError:
    """An error reply (``-ERR ...``, RESP3 ``!``), kept as a value: on a subscribed connection
    it means the subscription is not what the gateway asked for."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message

    def __repr__(self) -> str:
        return "ReplyError(%r)" % self.message


def parse(data: bytes) -> tuple[list[Any], int]:
    """Every complete reply at the start of ``data``, in order, and the number of bytes they
    took (what follows is the start of an incomplete one). Bulk strings are ``bytes``, simple
    strings ``str``, integers ``int``, nulls ``None``, errors :class:`ReplyError`, arrays,
    pushes and sets ``list``. Raises :class:`ProtocolError` for bytes that are not RESP."""
    replies: list[Any] = []
    pos = 0
    end = len(data)
    while pos < end:
        value, after = _value(data, pos)
        if after < 0:
            break
        replies.append(value)
        pos = after
    return replies, pos


def _value(data: bytes, pos: int) -> tuple[Any, int]:
    """The reply at ``pos`` and the offset after it; ``(None, -1)`` when it is incomplete."""
    line_end = data.find(b"\r\n", pos)
    if line_end < 0:
        if len(data) - pos > 64 * 1024:  # no reply head is this long
            raise ProtocolError("a reply head without an end of line")
        return None, -1
    kind = data[pos]
    head = data[pos + 1 : line_end]
    after = line_end + 2
    if kind in _BULKS:
        size = _integer(head)
        if size < 0:
            return None, after  # RESP2 null bulk string
        if len(data) < after + size + 2:
            return None, -1
        if data[after + size : after + size + 2] != b"\r\n":
            raise ProtocolError("a bulk string without its end of line")
        return data[after : after + size], after + size + 2
    if kind in _AGGREGATES:
        count = _integer(head)
        if count < 0:
            return None, after  # RESP2 null array
        items = []
        for _ in range(count):
            item, after = _value(data, after)
            if after < 0:
                return None, -1
            items.append(item)
        return items, after
    if kind in _SCALARS:
        if kind == 0x2B:  # +
            return head.decode("utf-8", "replace"), after
        if kind == 0x2D:  # -
            return ReplyError(head.decode("utf-8", "replace")), after
        if kind == 0x3A or kind == 0x28:  # : (
            return _integer(head), after
        if kind == 0x5F:  # _
            return None, after
        if kind == 0x23:  # #
            return head == b"t", after
        return head.decode("ascii", "replace"), after  # , (a double, as text)
    if kind == 0x21:  # ! a bulk error
        size = _integer(head)
        if len(data) < after + size + 2:
            return None, -1
        message = data[after : after + size].decode("utf-8", "replace")
        return ReplyError(message), after + size + 2
    raise ProtocolError("unexpected reply type %r" % chr(kind))


def _integer(text: bytes) -> int:
    try:
        return int(text)
    except ValueError:
        raise ProtocolError("not an integer: %r" % text[:40]) from None


def events(replies: list[Any]) -> list[Event]:
    """The pub/sub events among ``replies`` (as :func:`parse` returns them): each push or
    array that starts with a kind and a channel. Raises :class:`ProtocolError` for an error
    reply (Redis refused a command of the subscription) or a reply no subscribed connection
    gets."""
    out: list[Event] = []
    for reply in replies:
        if isinstance(reply, ReplyError):
            raise ProtocolError("Redis refused a subscription command: %s" % reply.message)
        if not isinstance(reply, list) or not reply or not isinstance(reply[0], bytes):
            raise ProtocolError("not a pub/sub reply: %r" % (reply,))
        kind = reply[0].decode("ascii", "replace")
        if kind == "message" and len(reply) == 3:
            out.append((kind, reply[1], reply[2]))
        elif len(reply) >= 2 and isinstance(reply[1], bytes):
            out.append((kind, reply[1], reply[2] if len(reply) > 2 else None))
        # else a server notice without a channel (a RESP2 pong, ...): nothing to deliver
    return out
