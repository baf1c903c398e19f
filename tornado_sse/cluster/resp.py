"""What a subscribed Redis connection receives, parsed from raw bytes: the replies of RESP2 and
RESP3 (https://redis.io/docs/latest/develop/reference/protocol-spec/) and the pub/sub events
they carry. Pure: no sockets here; :class:`~tornado_sse.cluster.link.RedisLink` feeds it what
it reads.

A subscribed connection gets pushes (RESP3 ``>``, RESP2 ``*``) of bulk strings and integers:
``message``, ``subscribe``, ``unsubscribe``, ``pong`` and, from servers that send them,
notices of their own. Parsing a whole read at once costs a few microseconds per message, a
fraction of what reading the connection one reply at a time through redis-py does, which
matters because every event routed between instances is one; :func:`parse_events` reads a
well-formed ``message`` push with a handful of searches instead of a reply tree.
"""

from __future__ import annotations

from typing import Any

#: One pub/sub event: its kind (``message``, ``subscribe``, ``unsubscribe``, ...), the channel
#: and the payload (the message's bytes; the subscription count of a confirmation).
Event = tuple[str, bytes, Any]

#: The reply types read here, by their first byte; every other one is a ProtocolError.
_SCALARS = frozenset(b"+-:_#,(")
_BULKS = frozenset(b"$=!")  # string, verbatim string, error
_AGGREGATES = frozenset(b"*>~%|")  # array, push, set, map, attribute
_PAIRED = frozenset(b"%|")  # aggregates of keys and values
_ARRAY, _BULK, _BULK_ERROR, _ATTRIBUTE = b"*$!|"
#: How a message push starts (RESP3, RESP2), up to the length of its channel.
_MESSAGE_HEADS = (b">3\r\n$7\r\nmessage\r\n$", b"*3\r\n$7\r\nmessage\r\n$")
_MESSAGE_HEAD_SIZE = len(_MESSAGE_HEADS[0])
#: The longest length of a bulk string read by the shortcut for messages (digits).
_SHORT_LENGTH = 20
#: The longest reply head (type, length or simple value, line end) accepted.
MAX_HEAD = 64 * 1024


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


def parse_events(data: bytes) -> tuple[list[Event], int, int]:
    """``events`` of the replies :func:`parse` finds in ``data``, with the same bytes used
    and needed, and the same errors; a well-formed ``message`` push (nearly every reply a
    subscription gets) is read by a shortcut that builds its event directly."""
    out: list[Event] = []
    pos = 0
    end = len(data)
    while pos < end:
        found = _message(data, pos) if data.startswith(_MESSAGE_HEADS, pos) else None
        if found is not None:
            out.append(found[0])
            pos = found[1]
            continue
        try:
            value, pos_after = _value(data, pos)
        except _Incomplete as incomplete:
            return out, pos, incomplete.need
        out.extend(events([value]))
        pos = pos_after
    return out, pos, pos + 1


def _message(data: bytes, pos: int) -> tuple[Event, int] | None:
    """The ``message`` push at ``pos`` (which starts with one of :data:`_MESSAGE_HEADS`) and
    the offset after it, or ``None`` when it is not whole here or not as a server writes it
    (then :func:`_value` reads it, or says what is wrong)."""
    start = pos + _MESSAGE_HEAD_SIZE
    channel, after = _short_bulk(data, start)
    if channel is None or not data.startswith(b"$", after):
        return None
    payload, after = _short_bulk(data, after + 1)
    if payload is None:
        return None
    return ("message", channel, payload), after


def _short_bulk(data: bytes, pos: int) -> tuple[bytes | None, int]:
    """The body of the bulk string whose length starts at ``pos`` and the offset after it;
    ``None`` when it is not whole here or not well formed."""
    line_end = data.find(b"\r\n", pos, pos + _SHORT_LENGTH)
    if line_end < 0:
        return None, pos
    head = data[pos:line_end]
    if not head.isdigit():
        return None, pos
    start = line_end + 2
    stop = start + int(head)
    if data[stop : stop + 2] != b"\r\n":
        return None, pos
    return data[start:stop], stop + 2


class _Incomplete(Exception):
    """The reply being parsed needs at least ``need`` bytes of the data (from its start)."""

    def __init__(self, need: int) -> None:
        self.need = need


def parse(data: bytes) -> tuple[list[Any], int, int]:
    """Every complete reply at the start of ``data``, in order; the number of bytes they took
    (what follows is the start of an incomplete reply); and how long ``data`` must at least be
    before the next reply can be complete (so that a large bulk string arriving over many
    reads is parsed once, when it is whole).

    Bulk strings are ``bytes``, simple strings ``str``, integers ``int``, nulls ``None``,
    errors :class:`ReplyError`, arrays, pushes and sets ``list``, maps ``list`` of their keys
    and values in turn; attributes are skipped. Raises :class:`ProtocolError` for bytes that
    are not RESP."""
    replies: list[Any] = []
    pos = 0
    end = len(data)
    while pos < end:
        try:
            value, pos_after = _value(data, pos)
        except _Incomplete as incomplete:
            return replies, pos, incomplete.need
        replies.append(value)
        pos = pos_after
    return replies, pos, pos + 1


def _value(data: bytes, pos: int) -> tuple[Any, int]:
    """The reply at ``pos`` and the offset after it; raises :class:`_Incomplete`."""
    line_end = data.find(b"\r\n", pos, pos + MAX_HEAD)
    if line_end < 0:
        if len(data) - pos >= MAX_HEAD:
            raise ProtocolError("a reply head without an end of line")
        raise _Incomplete(len(data) + 1)
    kind = data[pos]
    head = data[pos + 1 : line_end]
    after = line_end + 2
    if kind in _BULKS:
        size = _integer(head)
        if size == -1 and kind == _BULK:
            return None, after  # RESP2 null bulk string
        if size < 0:
            raise ProtocolError("a negative length: %d" % size)
        end = after + size
        if len(data) < end + 2:
            raise _Incomplete(end + 2)
        if data[end : end + 2] != b"\r\n":
            raise ProtocolError("a bulk string without its end of line")
        if kind == _BULK_ERROR:
            return ReplyError(data[after:end].decode("utf-8", "replace")), end + 2
        return data[after:end], end + 2
    if kind in _AGGREGATES:
        count = _integer(head)
        if count == -1 and kind == _ARRAY:
            return None, after  # RESP2 null array
        if count < 0:
            raise ProtocolError("a negative count: %d" % count)
        if kind in _PAIRED:
            count *= 2
        items = []
        for _ in range(count):
            item, after = _value(data, after)
            items.append(item)
        if kind == _ATTRIBUTE:
            return _value(data, after)  # the value the attribute annotates
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
    raise ProtocolError("unexpected reply type %r" % chr(kind))


def _integer(text: bytes) -> int:
    try:
        return int(text)
    except ValueError:
        raise ProtocolError("not an integer: %r" % text[:40]) from None


def events(replies: list[Any]) -> list[Event]:
    """The pub/sub events among ``replies`` (as :func:`parse` returns them): each push or
    array that starts with its kind, as ``(kind, channel, payload)``; a notice without a
    channel (a RESP2 ``pong``, a server's ``MOVING``, ...) has ``b""`` for its channel. Raises
    :class:`ProtocolError` for an error reply (Redis refused a command of the subscription)
    or a reply no subscribed connection gets."""
    out: list[Event] = []
    for reply in replies:
        if isinstance(reply, ReplyError):
            raise ProtocolError("Redis refused a subscription command: %s" % reply.message)
        if not isinstance(reply, list) or not reply or not isinstance(reply[0], (bytes, str)):
            raise ProtocolError("not a pub/sub reply: %.200r" % (reply,))
        kind = reply[0] if isinstance(reply[0], str) else reply[0].decode("ascii", "replace")
        if kind == "message" and len(reply) == 3:
            out.append((kind, reply[1], reply[2]))
            continue
        channel = reply[1] if len(reply) > 1 and isinstance(reply[1], bytes) else b""
        out.append((kind, channel, reply[2] if len(reply) > 2 else None))
    return out
