"""The pure protocol core: SSE encoding, request validation and callback bodies.

Nothing here does I/O or imports tornado, asyncio or redis. Every function takes values and
returns values (or raises :class:`~tornado_sse.errors.InvalidRequest`), so the whole wire format
can be tested byte for byte in memory.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .errors import InvalidRequest

try:  # orjson is optional (the ``fast`` extra): the same JSON, parsed and written faster
    import orjson
except ImportError:  # pragma: no cover - depends on what is installed
    orjson = None  # type: ignore[assignment]

#: The ``Content-Type`` of every stream: with the charset, so that clients which default to
#: Latin-1 for ``text/*`` (Python's ``requests``) decode the UTF-8 right.
STREAM_CONTENT_TYPE = "text/event-stream; charset=utf-8"

#: The heartbeat comment written to idle streams.
HEARTBEAT = b": heartbeat\n\n"

#: Most channels a connect answer may name.
MAX_CHANNELS = 100
#: Longest channel name (and user id), in characters.
MAX_CHANNEL_LENGTH = 200
#: Largest ``info`` of a connect answer, as compact JSON, in bytes.
MAX_INFO_BYTES = 1024

_CHANNEL_RE = re.compile(r"[!-~]{1,%d}" % MAX_CHANNEL_LENGTH)
_FORBIDDEN_IN_FIELD = ("\r", "\n", "\0")


@dataclass(frozen=True, slots=True)
class Event:
    """One SSE event as the backend sent it. ``name`` and ``id`` are ``None`` when absent."""

    data: str
    name: str | None = None
    id: str | None = None


@dataclass(frozen=True, slots=True)
class SendRequest:
    """A validated item of ``POST /internal/send``: exactly one of ``token``, ``channel`` and
    ``user``.

    ``unknown`` names the keys the item carried that the contract does not know, in order
    (``"nmae"``, or ``"event.nmae"`` inside the event): they are ignored, but a typo in one
    would silently turn a named event into a ``message``, so the gateway logs them.
    """

    token: str | None
    channel: str | None
    event: Event | None
    close: bool
    unknown: tuple[str, ...] = ()
    user: str | None = None


@dataclass(frozen=True, slots=True)
class SubscriptionRequest:
    """A validated body of ``POST /internal/subscribe`` (or ``unsubscribe``): exactly one of
    ``token`` and ``user``, and the channels to add (or remove)."""

    token: str | None
    user: str | None
    channels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Info:
    """The info shown beside a user in presence, as a connect answer (or a JWT) gave it: the
    JSON object, and its compact JSON text, encoded once when it was validated (presence
    records, events and listings are built from the text)."""

    value: dict[str, Any]
    text: str


@dataclass(frozen=True, slots=True)
class ConnectAnswer:
    """What a 2xx connect answer names (wire contract 3.1): channels, the stream's user (``None``
    for anonymous) and the info shown beside that user in presence."""

    channels: tuple[str, ...] = ()
    user: str | None = None
    info: Info | None = None


# --------------------------------------------------------------------------------------------
# Encoding


def split_lines(data: str) -> list[str]:
    """Split ``data`` on CRLF, CR and LF, as an SSE parser will join it back with LF."""
    if "\r" in data:
        data = data.replace("\r\n", "\n").replace("\r", "\n")
    return data.split("\n")


def encode_event(data: str, name: str | None = None, id: str | None = None) -> bytes:
    """Encode one event to the SSE wire format (UTF-8).

    ``id:`` comes first when ``id`` is not ``None``, ``event:`` when ``name`` is a non-empty
    string, then one ``data:`` line per line of ``data``, then the blank line. ``name`` and
    ``id`` must already be valid (no CR, LF or NUL: see :func:`validate_send`).
    """
    parts = []
    if id is not None:
        parts.append("id: %s\n" % id)
    if name:
        parts.append("event: %s\n" % name)
    for line in split_lines(data):
        parts.append("data: %s\n" % line)
    parts.append("\n")
    return "".join(parts).encode("utf-8")


def with_id(event_id: int, tail: bytes) -> bytes:
    """The frame of a channel event: the ``id:`` line the gateway assigned, then ``tail`` (the
    event encoded without an id, as :func:`encode_event` gives it)."""
    return b"id: %d\n%b" % (event_id, tail)


def decode_tail(tail: bytes) -> tuple[str | None, str]:
    """The event name (``None`` when unnamed) and data of an event encoded by
    :func:`encode_event` without an id, as an SSE client would read them back."""
    name: str | None = None
    lines = []
    for line in tail.decode("utf-8").split("\n"):
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            lines.append(line[6:])
    return name, "\n".join(lines)


def encode(event: Event) -> bytes:
    """Encode an :class:`Event` (see :func:`encode_event`)."""
    return encode_event(event.data, event.name, event.id)


def encode_comment(text: str) -> bytes:
    """Encode an SSE comment line followed by a blank line. ``text`` must be a single line."""
    if any(c in text for c in _FORBIDDEN_IN_FIELD):
        raise ValueError("a comment must be a single line without NUL")
    return (": %s\n\n" % text).encode("utf-8")


def encode_retry(milliseconds: int) -> bytes:
    """Encode a ``retry:`` field that sets the client's reconnection delay."""
    if milliseconds < 0:
        raise ValueError("retry must not be negative")
    return b"retry: %d\n\n" % milliseconds


# --------------------------------------------------------------------------------------------
# Validation of /internal/send


def decode_json(raw: bytes | str) -> Any:
    """Decode a JSON request body (or the text of a publish socket message), or raise
    ``INVALID_JSON``.

    Rejects bytes that are not UTF-8, the non-standard constants ``NaN`` and ``Infinity``, and
    strings holding lone surrogates (they cannot be written to a UTF-8 stream). With orjson
    installed it parses first; whatever it refuses, the standard library decides, so that the
    verdict and its message are the same with or without it.
    """
    if orjson is not None:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # refused by orjson: the standard library below gives the verdict and message
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        value = json.loads(text, parse_constant=_reject_constant)
        _check_unicode(value)
    except (UnicodeError, ValueError, RecursionError) as exc:
        raise InvalidRequest("INVALID_JSON", "body is not valid JSON: %s" % _short(exc)) from None
    return value


def split_ref(message: Any) -> tuple[Any, Any]:
    """``(ref, body)`` of a decoded publish socket message (wire contract 4.5): an object
    loses its top-level ``"ref"`` (any JSON value; ``None`` when absent), which is no part of
    the send; an array (a batch) or anything else carries none and is returned whole."""
    if isinstance(message, dict) and "ref" in message:
        return message.pop("ref"), message
    return None, message


def encode_socket_answer(ref: Any, status: int, body: dict[str, Any]) -> str:
    """The text of the answer to one publish socket message: ``{"ref", "status", "body"}``,
    compact JSON, ``ref`` as it came (``null`` when it had none)."""
    return json.dumps(
        {"ref": ref, "status": status, "body": body}, separators=(",", ":"), ensure_ascii=False
    )


def _reject_constant(name: str) -> Any:
    raise ValueError("%s is not JSON" % name)


def _check_unicode(value: Any) -> None:
    """Raise ``UnicodeError`` if any string in ``value`` (keys included) is not encodable."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            item.encode("utf-8")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 120 else text[:117] + "..."


def _is_clean_field(value: str) -> bool:
    return not any(c in value for c in _FORBIDDEN_IN_FIELD)


def is_valid_channel(name: object) -> bool:
    """Whether ``name`` is a channel name: 1-200 printable ASCII characters, no spaces."""
    return isinstance(name, str) and _CHANNEL_RE.fullmatch(name) is not None


#: The keys of a send item, and of its ``event``, that the contract knows.
SEND_KEYS = frozenset({"token", "channel", "user", "event", "close"})
EVENT_KEYS = frozenset({"name", "data", "id"})


def unknown_keys(item: dict[str, Any]) -> tuple[str, ...]:
    """The keys of a send ``item`` (and, as ``event.<key>``, of its ``event`` object) that are
    not in :data:`SEND_KEYS` or :data:`EVENT_KEYS`, in their order."""
    unknown = [key for key in item if key not in SEND_KEYS]
    event = item.get("event")
    if isinstance(event, dict):
        unknown += ["event." + key for key in event if key not in EVENT_KEYS]
    return tuple(unknown)


def validate_send(item: Any) -> SendRequest:
    """Validate one ``/internal/send`` object, in the order of the wire contract.

    Raises :class:`InvalidRequest` with the code of the first rule broken:
    ``INVALID_JSON``, ``INVALID_TOKEN_MISSING``, ``INVALID_CHANNEL``, ``INVALID_EVENT_TYPE``,
    ``INVALID_EVENT_DATA_MISSING``, ``INVALID_EVENT_NAME_TYPE``, ``INVALID_EVENT_ID``,
    ``INVALID_CLOSE_TYPE``. Unknown keys are no error: :attr:`SendRequest.unknown` names them.
    """
    if not isinstance(item, dict):
        raise InvalidRequest("INVALID_JSON", "each send must be a JSON object")

    token = item.get("token")
    channel = item.get("channel")
    user = item.get("user")
    given = [
        key
        for key, value in (("token", token), ("channel", channel), ("user", user))
        if value is not None
    ]
    if len(given) > 1:
        raise InvalidRequest(
            "INVALID_TOKEN_MISSING", "give one of 'token', 'channel' and 'user', not several"
        )
    if not given:
        raise InvalidRequest(
            "INVALID_TOKEN_MISSING", "'token' (or 'channel' or 'user') is required"
        )
    if token is not None and not (isinstance(token, str) and token):
        raise InvalidRequest("INVALID_TOKEN_MISSING", "'token' must be a non-empty string")
    if user is not None and not (isinstance(user, str) and user):
        raise InvalidRequest("INVALID_TOKEN_MISSING", "'user' must be a non-empty string")
    if channel is not None:
        if not (isinstance(channel, str) and channel):
            raise InvalidRequest("INVALID_TOKEN_MISSING", "'channel' must be a non-empty string")
        if not is_valid_channel(channel):
            raise InvalidRequest(
                "INVALID_CHANNEL",
                "'channel' must be 1-200 printable ASCII characters without spaces",
            )

    event = None
    if "event" in item:
        event = _validate_event(item["event"])

    close = item.get("close", False)
    if "close" in item and not isinstance(close, bool):
        raise InvalidRequest("INVALID_CLOSE_TYPE", "'close' must be a boolean")
    if close and channel is not None:
        raise InvalidRequest("INVALID_CLOSE_TYPE", "'close' cannot be used with a channel")

    return SendRequest(
        token=token,
        channel=channel,
        event=event,
        close=close,
        user=user,
        unknown=unknown_keys(item),
    )


def _validate_event(event: Any) -> Event:
    if not isinstance(event, dict):
        raise InvalidRequest("INVALID_EVENT_TYPE", "'event' must be an object")
    data = event.get("data")
    if not isinstance(data, str):
        raise InvalidRequest("INVALID_EVENT_DATA_MISSING", "'event.data' must be a string")
    name = event.get("name")
    if "name" in event and not (isinstance(name, str) and _is_clean_field(name)):
        raise InvalidRequest(
            "INVALID_EVENT_NAME_TYPE", "'event.name' must be a string without CR, LF or NUL"
        )
    id_ = event.get("id")
    if "id" in event and not (isinstance(id_, str) and _is_clean_field(id_)):
        raise InvalidRequest(
            "INVALID_EVENT_ID", "'event.id' must be a string without CR, LF or NUL"
        )
    return Event(data=data, name=name, id=id_)


# --------------------------------------------------------------------------------------------
# Connect answers


def parse_connect_answer(body: bytes) -> tuple[str, ...]:
    """The channels named by a 2xx connect answer, without duplicates (see
    :func:`read_connect_answer`, which also reads the user and info)."""
    return read_connect_answer(body).channels


def read_connect_answer(body: bytes) -> ConnectAnswer:
    """What a 2xx connect answer names (wire contract 3.1).

    An empty body or one that is not a JSON object names nothing. Raises ``ValueError`` when an
    object carries ``channels`` (or its alias ``bindings``) that is not a list of at most 100
    valid channel names, a ``user`` that is not 1-200 printable ASCII characters, or an
    ``info`` that is not a JSON object of at most 1 KiB (compact).
    """
    if not body.strip():
        return ConnectAnswer()
    try:
        answer = json.loads(body.decode("utf-8-sig"))
    except (UnicodeError, ValueError, RecursionError):
        return ConnectAnswer()
    if not isinstance(answer, dict):
        return ConnectAnswer()
    return ConnectAnswer(
        channels=_answer_channels(answer),
        user=_answer_user(answer.get("user")),
        info=validate_info(answer.get("info")),
    )


def _answer_channels(answer: dict[str, Any]) -> tuple[str, ...]:
    key = "channels" if "channels" in answer else "bindings"
    if key not in answer:
        return ()
    return validate_channels(answer[key], key)


def validate_channels(channels: Any, key: str = "channels") -> tuple[str, ...]:
    """``channels`` as a connect answer (or a JWT) may name them: a list of at most 100 valid
    channel names; returned without duplicates. Raises ``ValueError`` naming ``key`` otherwise."""
    if not isinstance(channels, list):
        raise ValueError("'%s' must be a list of channel names" % key)
    return validate_channel_list(channels, key)


def validate_channel_list(channels: list[Any], key: str = "channels") -> tuple[str, ...]:
    """``channels`` without duplicates, if it holds at most 100 valid channel names; else
    raises ``ValueError`` naming ``key``."""
    if len(channels) > MAX_CHANNELS:
        raise ValueError("'%s' names more than %d channels" % (key, MAX_CHANNELS))
    for name in channels:
        if not is_valid_channel(name):
            raise ValueError("'%s' holds an invalid channel name" % key)
    return tuple(dict.fromkeys(channels))


def is_valid_user(user: object) -> bool:
    """Whether ``user`` is a user id: 1-200 printable ASCII characters, no spaces."""
    return isinstance(user, str) and _CHANNEL_RE.fullmatch(user) is not None


def _answer_user(user: Any) -> str | None:
    if user is None:
        return None
    if not is_valid_user(user):
        raise ValueError("'user' must be 1-200 printable ASCII characters without spaces")
    return str(user)


def validate_info(info: Any) -> Info | None:
    """``info`` as a connect answer (or a JWT) may give it: ``None``, or a JSON object of at
    most :data:`MAX_INFO_BYTES` as compact JSON; else raises ``ValueError``."""
    if info is None:
        return None
    if not isinstance(info, dict):
        raise ValueError("'info' must be a JSON object")
    text = compact_json(info)
    if len(text.encode("utf-8")) > MAX_INFO_BYTES:
        raise ValueError("'info' is larger than %d bytes" % MAX_INFO_BYTES)
    return Info(info, text)


def compact_json(value: Any) -> str:
    """``value`` as compact JSON text (no spaces, non-ASCII kept as it is)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def validate_subscription(item: Any) -> SubscriptionRequest:
    """Validate a ``/internal/subscribe`` or ``/internal/unsubscribe`` body.

    Raises :class:`InvalidRequest`: ``INVALID_JSON`` (not an object), ``INVALID_TOKEN_MISSING``
    (not exactly one of ``token`` and ``user`` as a non-empty string), ``INVALID_CHANNEL``
    (``channels`` not a list of at most 100 channel names, as in a connect answer).
    """
    if not isinstance(item, dict):
        raise InvalidRequest("INVALID_JSON", "the body must be a JSON object")
    token, user = item.get("token"), item.get("user")
    if (token is None) == (user is None):
        raise InvalidRequest("INVALID_TOKEN_MISSING", "give exactly one of 'token' and 'user'")
    target = token if token is not None else user
    if not (isinstance(target, str) and target):
        raise InvalidRequest(
            "INVALID_TOKEN_MISSING", "'token' or 'user' must be a non-empty string"
        )
    channels = item.get("channels")
    if not isinstance(channels, list):
        raise InvalidRequest("INVALID_CHANNEL", "'channels' must be a list of channel names")
    try:
        names = validate_channel_list(channels)
    except ValueError as exc:
        raise InvalidRequest("INVALID_CHANNEL", str(exc)) from None
    return SubscriptionRequest(token=token, user=user, channels=names)


# --------------------------------------------------------------------------------------------
# The request snapshot and callback bodies

_REQUEST_ID_RE = re.compile(r"[!-~]{1,128}")


class RequestSnapshot:
    """A stream's request as captured at connect, sent whole in every callback for its token.

    ``url`` is the raw request target (path and query exactly as received), ``headers`` the
    captured headers (see :func:`capture_headers`), ``request_id`` the client's sane
    ``X-Request-ID`` or a fresh one, ``last_event_id`` the replay position the client asked for
    (``Last-Event-ID``, else the ``lastEventId`` query parameter), if any.

    Every held stream keeps one for its whole life, so the URL and headers are kept as one
    bytes object, :attr:`json`: the ``request`` object of the callbacks, encoded once at
    connect and spliced as it is into every callback body. ``url`` and ``headers`` are read
    back from it (each read decodes it).
    """

    __slots__ = ("json", "request_id", "last_event_id")

    def __init__(
        self,
        url: str,
        headers: dict[str, str],
        request_id: str,
        last_event_id: str | None = None,
    ) -> None:
        #: ``{"url": ..., "headers": {...}}`` as compact JSON (:func:`dumps`), copied to a
        #: bytes object of its own size: orjson's result keeps the whole buffer it wrote into
        #: (1 KiB at least), which every held stream would carry.
        self.json = bytes(memoryview(dumps({"url": url, "headers": headers})))
        self.request_id = request_id
        self.last_event_id = last_event_id

    @property
    def url(self) -> str:
        """The raw request target."""
        url: str = decode_json(self.json)["url"]
        return url

    @property
    def headers(self) -> dict[str, str]:
        """The captured headers (a new dict at each read)."""
        headers: dict[str, str] = decode_json(self.json)["headers"]
        return headers

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RequestSnapshot):
            return NotImplemented
        return (self.json, self.request_id, self.last_event_id) == (
            other.json,
            other.request_id,
            other.last_event_id,
        )

    def __hash__(self) -> int:
        return hash((self.json, self.request_id, self.last_event_id))

    def __repr__(self) -> str:
        return "RequestSnapshot(%r, request_id=%r, last_event_id=%r)" % (
            self.json,
            self.request_id,
            self.last_event_id,
        )


def capture_request(url: str, pairs: Iterable[tuple[str, str]]) -> RequestSnapshot:
    """The :class:`RequestSnapshot` of a stream request for target ``url`` and header ``pairs``.

    ``url`` and the header values are taken as the HTTP server decoded them, as Latin-1 (as
    Tornado does); each is re-read as UTF-8 where its bytes are UTF-8 (:func:`utf8_text`), so the
    backend sees ``/sse/café`` and ``Cookie: name=José``. Percent-escapes are left as they are.
    """
    url = utf8_text(url)
    headers = capture_headers((name, utf8_text(value)) for name, value in pairs)
    return RequestSnapshot(
        url,
        headers,
        request_id(headers.get("x-request-id")),
        _last_event_id(url, headers.get("last-event-id")),
    )


def utf8_text(text: str) -> str:
    """``text``, read from bytes as Latin-1, re-read as UTF-8 if those bytes are valid UTF-8.

    HTTP servers decode the request line and header values as Latin-1, so the UTF-8 bytes of
    ``café`` arrive as ``cafÃ©``: this gives back ``café``. Text that is ASCII, whose bytes
    are not UTF-8 (a lone Latin-1 ``é``), or that holds characters beyond Latin-1 (so it was
    never read as Latin-1) is returned unchanged.
    """
    if text.isascii():
        return text
    try:
        return text.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return text


def bearer_matches(authorization: str | None, secret: str) -> bool:
    """Whether an ``Authorization`` header value is ``Bearer <secret>``.

    The scheme name ``Bearer`` may come in any case (RFC 9110 11.1: ``bearer``, ``BEARER``),
    followed by one or more spaces; the credentials are compared with ``secret`` in constant
    time.
    """
    if authorization is None:
        return False
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(credentials.lstrip(" ").encode(), secret.encode())


def credentials_match(authorization: str | None, secret: str) -> bool:
    """Whether an ``Authorization`` header value carries the internal API's ``secret``: as
    ``Bearer <secret>`` (:func:`bearer_matches`: what servers send), or as the password of
    ``Basic`` credentials with any user name (RFC 7617: what a browser sends after its login
    dialog, so that a person can open the dashboard). The scheme name may come in any case;
    the secret is compared in constant time. Anything else (no header, another scheme, Basic
    credentials that are not base64 of ``user:password``) does not match.
    """
    if bearer_matches(authorization, secret):
        return True
    if authorization is None:
        return False
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(credentials.strip(" "), validate=True)
    except binascii.Error:
        return False
    _user, colon, password = decoded.partition(b":")
    return bool(colon) and hmac.compare_digest(password, secret.encode())


def request_id(value: str | None) -> str:
    """The client's ``X-Request-ID`` if it is sane (1-128 printable ASCII), else a fresh one."""
    if value is not None and _REQUEST_ID_RE.fullmatch(value):
        return value
    return _uuid4_bytes().hex()


def new_uuid4() -> str:
    """A fresh random UUID (version 4) in its canonical text form, like ``str(uuid.uuid4())``
    (the same 122 random bits from ``os.urandom``), without building a ``uuid.UUID``."""
    h = _uuid4_bytes().hex()
    return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


def _uuid4_bytes() -> bytearray:
    """16 random bytes with the version (4) and variant (RFC 9562) bits of a UUID4 set."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return raw


def _last_event_id(url: str, header: str | None) -> str | None:
    """``Last-Event-ID`` from the header, else the last ``lastEventId`` query parameter."""
    if header is not None or "lastEventId" not in url:
        return header
    values = parse_qs(urlsplit(url).query, keep_blank_values=True).get("lastEventId")
    return values[-1] if values else None


def capture_headers(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The ``headers`` of a callback: names lower-cased, repeats joined with ``", "``.

    ``cookie`` headers are joined with ``"; "`` instead, as a single Cookie header would be.
    """
    headers: dict[str, str] = {}
    for name, value in pairs:
        key = name.lower()
        if key in headers:
            separator = "; " if key == "cookie" else ", "
            headers[key] = headers[key] + separator + value
        else:
            headers[key] = value
    return headers


def snapshot_record(request: RequestSnapshot) -> bytes:
    """``request`` as compact bytes to keep elsewhere (see :func:`snapshot_from_record`)."""
    value = decode_json(request.json)
    return dumps({"u": value["url"], "h": value["headers"], "r": request.request_id})


def snapshot_from_record(record: bytes) -> RequestSnapshot:
    """The :class:`RequestSnapshot` kept by :func:`snapshot_record`."""
    value = json.loads(record)
    return RequestSnapshot(value["u"], value["h"], value["r"])


def dumps(value: Any) -> bytes:
    """``value`` as compact JSON in UTF-8 (non-ASCII characters as they are, not escaped)."""
    if orjson is not None:
        return orjson.dumps(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def connect_body(token: str, request: RequestSnapshot) -> bytes:
    """The compact JSON body of a ``connect`` callback: ``action``, ``token``, ``request``."""
    return b'{"action":"connect","token":%b,"request":%b}' % (dumps(token), request.json)


def disconnect_body(
    token: str, reason: str, request: RequestSnapshot, detail: str | None = None
) -> bytes:
    """The compact JSON body of a ``disconnect`` callback: ``action``, ``reason``, ``token``,
    ``request``, and ``detail`` only when given."""
    body = b'{"action":"disconnect","reason":%b,"token":%b,"request":%b' % (
        dumps(str(reason)),
        dumps(token),
        request.json,
    )
    if detail is not None:
        body += b',"detail":%b' % dumps(str(detail))
    return body + b"}"
