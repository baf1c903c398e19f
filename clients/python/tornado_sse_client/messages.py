"""The internal API's requests and answers, without I/O: what both clients send and how they
read what comes back.

:class:`~tornado_sse_client.Gateway` and :class:`~tornado_sse_client.AsyncGateway` build every
request and read every answer with these functions, so the two cannot drift apart.
"""

from __future__ import annotations

import http
import json
import urllib.parse
from dataclasses import dataclass
from typing import Any

from .errors import (
    BufferFull,
    GatewayClientError,
    GatewayUnavailable,
    InvalidRequest,
    TokenNotFound,
    Unauthorized,
)

SEND_PATH = "/internal/send"
CONNECTIONS_PATH = "/internal/connections"
HISTORY_PATH = "/internal/history"
PRESENCE_PATH = "/internal/presence"
SUBSCRIBE_PATH = "/internal/subscribe"
UNSUBSCRIBE_PATH = "/internal/unsubscribe"
SOCKET_PATH = "/internal/ws"

#: The transports a client sends by: an HTTP request per call, or the publish socket.
TRANSPORTS = ("http", "ws")


@dataclass(frozen=True, slots=True)
class BatchResult:
    """The outcome of one item of a batch: the ``status`` and ``body`` it would have got alone."""

    status: int
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        """Whether the item succeeded (a 2xx status)."""
        return 200 <= self.status < 300

    @property
    def error(self) -> GatewayClientError | None:
        """The error this item would have raised alone, or ``None`` when it succeeded."""
        return None if self.ok else error_for(self.status, self.body)


def send_item(
    token: str | None = None,
    *,
    channel: str | None = None,
    user: str | None = None,
    data: str | None = None,
    name: str | None = None,
    id: str | None = None,
    close: bool = False,
) -> dict[str, Any]:
    """One ``/internal/send`` object, as sent alone or as an item of :meth:`Gateway.batch`.

    Give exactly one of ``token``, ``channel`` and ``user``. ``event`` is present only when
    ``data`` is not ``None``; ``event.name`` and ``event.id`` only when not ``None``; ``close``
    only when true. Raises ``ValueError`` when not exactly one target is given, or ``name`` or
    ``id`` without ``data``; everything else is left for the gateway to validate.
    """
    targets = {"token": token, "channel": channel, "user": user}
    given = {key: value for key, value in targets.items() if value is not None}
    if len(given) != 1:
        raise ValueError("give exactly one of token, channel and user")
    item: dict[str, Any] = dict(given)
    if data is not None:
        event: dict[str, str] = {}
        if name is not None:
            event["name"] = name
        event["data"] = data
        if id is not None:
            event["id"] = id
        item["event"] = event
    elif name is not None or id is not None:
        raise ValueError("an event name or id needs data")
    if close:
        item["close"] = True
    return item


def subscription_body(
    channels: list[str], token: str | None = None, user: str | None = None
) -> dict[str, Any]:
    """The body of ``/internal/subscribe`` or ``/internal/unsubscribe``: exactly one of
    ``token`` and ``user`` (``ValueError`` otherwise), and the channels."""
    if (token is None) == (user is None):
        raise ValueError("give exactly one of token and user")
    body: dict[str, Any] = {"token": token} if token is not None else {"user": user}
    body["channels"] = list(channels)
    return body


def streams_answer(answer: Any) -> int:
    """The ``streams`` count of a decoded 2xx answer (a user send, a live subscription)."""
    streams = answer.get("streams") if isinstance(answer, dict) else None
    if not isinstance(streams, int):
        raise GatewayClientError(f"unexpected answer: {answer!r}", status=200)
    return streams


def presence_path(channel: str) -> str:
    """The request target of ``/internal/presence`` for ``channel``."""
    return f"{PRESENCE_PATH}?{urllib.parse.urlencode({'channel': channel})}"


def presence_answer(answer: Any) -> dict[str, Any]:
    """A decoded 2xx answer of ``/internal/presence``, checked to have its ``users`` list."""
    if not isinstance(answer, dict) or not isinstance(answer.get("users"), list):
        raise GatewayClientError(f"unexpected answer to presence: {answer!r}", status=200)
    return answer


def encode_json(value: Any) -> bytes:
    """Compact UTF-8 JSON. Raises ``ValueError`` for values JSON cannot carry (lone surrogates,
    ``NaN``) and ``TypeError`` for objects it does not know."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def request_headers(secret: str | None, *, json_body: bool) -> dict[str, str]:
    """The request headers: ``Content-Type`` when there is a JSON body, and
    ``Authorization: Bearer <secret>`` only when a secret is set."""
    headers = {"Accept": "application/json"}
    if json_body:
        headers["Content-Type"] = "application/json"
    if secret:
        headers["Authorization"] = "Bearer " + secret
    return headers


def decode_response(status: int, raw: bytes) -> Any:
    """The decoded JSON body of a 2xx answer; raises the :func:`error_for` error otherwise.

    A 2xx answer whose body is not JSON raises a plain :class:`GatewayClientError`.
    """
    if not 200 <= status < 300:
        raise error_for(status, raw)
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeError, ValueError):
        raise GatewayClientError(f"answer is not JSON: {raw[:100]!r}", status=status) from None


def error_for(status: int | None, body: bytes | Any) -> GatewayClientError:
    """The error for a non-2xx answer: ``body`` is the raw body, or its decoded JSON.

    The class follows the status and the ``{"error": {"code", "message"}}`` body: 401
    :class:`Unauthorized`, 404 ``TOKEN_NOT_FOUND`` :class:`TokenNotFound`, 429
    :class:`BufferFull`, 400 or any ``INVALID_*`` code :class:`InvalidRequest`, 5xx (503
    ``BROKER_UNAVAILABLE`` among them) :class:`GatewayUnavailable`, anything else (a 404 route,
    413, a redirect) :class:`GatewayClientError`.
    """
    code, message = _error_fields(body)
    if message is None:
        message = _status_phrase(status)
    cls: type[GatewayClientError] = GatewayClientError
    if status == 401:
        cls = Unauthorized
    elif status == 404 and code == "TOKEN_NOT_FOUND":
        cls = TokenNotFound
    elif status == 429:
        cls = BufferFull
    elif status == 400 or (code is not None and code.startswith("INVALID_")):
        cls = InvalidRequest
    elif status is not None and 500 <= status < 600:
        cls = GatewayUnavailable
    return cls(message, status=status, code=code)


def _error_fields(body: bytes | Any) -> tuple[str | None, str | None]:
    if isinstance(body, bytes):
        try:
            body = json.loads(body.decode("utf-8"))
        except (UnicodeError, ValueError):
            text = body.decode("utf-8", "replace").strip()
            return None, (text[:200] or None)
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, None
    code, message = error.get("code"), error.get("message")
    return (
        code if isinstance(code, str) else None,
        message if isinstance(message, str) else None,
    )


def _status_phrase(status: int | None) -> str:
    try:
        return http.HTTPStatus(status).phrase if status is not None else "no answer"
    except ValueError:
        return f"HTTP {status}" if status is not None else "no answer"


def send_status(answer: Any) -> str:
    """The ``status`` of a decoded 2xx answer to a send (``"ok"`` or ``"buffered"``)."""
    status = answer.get("status") if isinstance(answer, dict) else None
    if not isinstance(status, str):
        raise GatewayClientError(f"unexpected answer to a send: {answer!r}", status=200)
    return status


def batch_results(answer: Any, expected: int) -> list[BatchResult]:
    """The results of a decoded 2xx answer to a batch of ``expected`` items, in order."""
    results = answer.get("results") if isinstance(answer, dict) else None
    if not isinstance(results, list) or len(results) != expected:
        raise GatewayClientError(f"unexpected answer to a batch: {answer!r}", status=200)
    out = []
    for result in results:
        if not (
            isinstance(result, dict)
            and isinstance(result.get("status"), int)
            and isinstance(result.get("body"), dict)
        ):
            raise GatewayClientError(f"unexpected batch result: {result!r}", status=200)
        out.append(BatchResult(status=result["status"], body=result["body"]))
    return out


def connections_answer(answer: Any) -> dict[str, Any]:
    """A decoded 2xx answer of ``/internal/connections``, checked to be an object."""
    if not isinstance(answer, dict):
        raise GatewayClientError(f"unexpected answer to connections: {answer!r}", status=200)
    return answer


def base_url(url: str) -> str:
    """``url`` without its trailing slashes; ``ValueError`` unless it is ``http(s)://``."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"the gateway URL must start with http:// or https://, not {url!r}")
    return url.rstrip("/")


def connections_path(limit: int, user: str | None = None) -> str:
    """The request target of ``/internal/connections`` for ``limit`` (and ``user``)."""
    query = {"limit": str(int(limit))}
    if user is not None:
        query["user"] = user
    return f"{CONNECTIONS_PATH}?{urllib.parse.urlencode(query)}"


def history_path(channel: str, since: str | None, limit: int) -> str:
    """The request target of ``/internal/history`` for ``channel``, ``since`` and ``limit``."""
    query = {"channel": channel, "limit": str(int(limit))}
    if since is not None:
        query["since"] = since
    return f"{HISTORY_PATH}?{urllib.parse.urlencode(query)}"


def history_answer(answer: Any) -> dict[str, Any]:
    """A decoded 2xx answer of ``/internal/history``, checked to have its ``events`` list."""
    if not isinstance(answer, dict) or not isinstance(answer.get("events"), list):
        raise GatewayClientError(f"unexpected answer to history: {answer!r}", status=200)
    return answer


def check_transport(transport: str) -> str:
    """``transport`` if it is one of :data:`TRANSPORTS`, else ``ValueError``."""
    if transport not in TRANSPORTS:
        raise ValueError(f"transport must be 'http' or 'ws', not {transport!r}")
    return transport


def socket_url(url: str) -> str:
    """The ``ws://`` (``wss://``) URL of the publish socket of the gateway at ``url``."""
    return "ws" + base_url(url)[4:] + SOCKET_PATH


def socket_message(value: Any, ref: int) -> str:
    """The text of one publish socket message: ``value`` (a send object or a batch array) as
    compact JSON, an object with ``"ref": ref`` added (a copy: ``value`` is not changed)."""
    if isinstance(value, dict):
        value = {**value, "ref": ref}
    return encode_json(value).decode("utf-8")


def socket_answer(text: str, ref: int | None) -> Any:
    """The decoded body of a 2xx answer on the publish socket, which must carry ``ref``
    (``None`` for a batch); raises the :func:`error_for` error of its status otherwise, or a
    :class:`GatewayUnavailable` when the answer is not one (the socket is then unusable)."""
    try:
        answer = json.loads(text)
        status, body, got = answer["status"], answer["body"], answer["ref"]
    except (ValueError, TypeError, KeyError):
        raise GatewayUnavailable(f"not an answer of the publish socket: {text[:100]!r}") from None
    if got != ref or not isinstance(status, int):
        raise GatewayUnavailable(f"answer out of order (ref {got!r}, expected {ref!r})")
    if not 200 <= status < 300:
        raise error_for(status, body)
    return body


def close_error(code: int | None, reason: str) -> GatewayClientError:
    """The error of a call whose publish socket was closed before its answer came: 1009 (the
    message was over the gateway's ``MAX_BODY_BYTES``) is the 413 ``PAYLOAD_TOO_LARGE`` the
    same send over HTTP would get; any other end is :class:`GatewayUnavailable` (the send may
    or may not have been applied)."""
    if code == 1009:
        return GatewayClientError(
            "the message is larger than the gateway's MAX_BODY_BYTES",
            status=413,
            code="PAYLOAD_TOO_LARGE",
        )
    why = f"the publish socket was closed ({code}{': ' + reason if reason else ''})"
    return GatewayUnavailable(why if code is not None else "the publish socket was closed")
