"""The backend's client for the internal API: ``/internal/send`` and ``/internal/connections``.

Two clients with one API: :class:`Gateway` blocks and uses the standard library only (it works
in any WSGI backend); :class:`AsyncGateway` has the same methods as coroutines on Tornado's
``AsyncHTTPClient``. Both build their requests and read the answers with the same plain functions
below (:func:`send_item`, :func:`encode_json`, :func:`request_headers`, :func:`decode_response`,
:func:`error_for`), so they cannot drift apart.

Every failure is a :class:`GatewayClientError` carrying the HTTP ``status``, the gateway's error
``code`` and its ``message``; the subclasses name the cases a backend handles::

    gateway = Gateway("http://127.0.0.1:3000", secret=os.environ.get("INTERNAL_SECRET"))
    try:
        gateway.send(token, json.dumps({"count": 3}), name="update")
    except TokenNotFound:
        forget(token)  # the stream is gone

:func:`mint_jwt` makes the token of a stream that opens without a connect callback (the
gateway's ``JWT_SECRET``)::

    url = "/sse/feed?jwt=" + mint_jwt("42", ["user.42", "news"], ttl=3600, secret=JWT_SECRET)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http
import http.client
import json
import math
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tornado.httpclient import AsyncHTTPClient

SEND_PATH = "/internal/send"
CONNECTIONS_PATH = "/internal/connections"
#: The shortest ``JWT_SECRET`` the gateway accepts for HS256, in bytes (RFC 7518 3.2).
MIN_JWT_SECRET_BYTES = 32


# --------------------------------------------------------------------------------------------
# Errors


class GatewayClientError(Exception):
    """A call to the gateway failed.

    ``status`` is the HTTP status (``None`` when no answer came), ``code`` the ``UPPER_SNAKE``
    code of the gateway's JSON error body (``None`` when there was none) and ``message`` a
    human text.
    """

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code

    def __str__(self) -> str:
        prefix = " ".join(str(part) for part in (self.status, self.code) if part is not None)
        return f"{prefix}: {self.message}" if prefix else self.message


class TokenNotFound(GatewayClientError):
    """No stream, open or connecting, holds this token (404 ``TOKEN_NOT_FOUND``): it is gone."""


class BufferFull(GatewayClientError):
    """Too many sends are queued for a stream whose connect callback is in flight (429)."""


class Unauthorized(GatewayClientError):
    """The gateway wants another ``secret`` (401 ``UNAUTHORIZED``)."""


class InvalidRequest(GatewayClientError):
    """The gateway refused the request (400); ``code`` names the rule, e.g. ``INVALID_JSON``."""


class GatewayUnavailable(GatewayClientError):
    """No answer (connection refused, timeout, reset) or a 5xx such as ``BROKER_UNAVAILABLE``.

    The send may or may not have been delivered: retry only what is safe to repeat.
    """


# --------------------------------------------------------------------------------------------
# Requests and answers, shared by both clients (no I/O)


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
    data: str | None = None,
    name: str | None = None,
    id: str | None = None,
    close: bool = False,
) -> dict[str, Any]:
    """One ``/internal/send`` object, as sent alone or as an item of :meth:`Gateway.batch`.

    Give exactly one of ``token`` and ``channel``. ``event`` is present only when ``data`` is
    not ``None``; ``event.name`` and ``event.id`` only when not ``None``; ``close`` only when
    true. Raises ``ValueError`` when both or neither of ``token`` and ``channel`` are given, or
    ``name`` or ``id`` without ``data``; everything else is left for the gateway to validate.
    """
    if (token is None) == (channel is None):
        raise ValueError("give exactly one of token and channel")
    item: dict[str, Any] = {"channel": channel} if token is None else {"token": token}
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


def _send_status(answer: Any) -> str:
    status = answer.get("status") if isinstance(answer, dict) else None
    if not isinstance(status, str):
        raise GatewayClientError(f"unexpected answer to a send: {answer!r}", status=200)
    return status


def _batch_results(answer: Any, expected: int) -> list[BatchResult]:
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


def _connections(answer: Any) -> dict[str, Any]:
    if not isinstance(answer, dict):
        raise GatewayClientError(f"unexpected answer to connections: {answer!r}", status=200)
    return answer


def _base_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"the gateway URL must start with http:// or https://, not {url!r}")
    return url.rstrip("/")


def _connections_path(limit: int) -> str:
    return f"{CONNECTIONS_PATH}?limit={int(limit)}"


# --------------------------------------------------------------------------------------------
# Clients


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """The gateway never redirects: a 3xx is an answer (an error), not a place to go."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class Gateway:
    """A blocking client of the internal API, standard library only; safe to share between
    threads.

    ``url`` is the gateway's base URL, e.g. ``"http://127.0.0.1:3000"`` (or its
    ``INTERNAL_PORT``). With ``secret`` every request carries ``Authorization: Bearer
    <secret>``. ``timeout`` (seconds) bounds connecting and each read. Proxy environment
    variables are ignored (the secret must not travel through a proxy) and redirects are not
    followed. Every method raises :class:`GatewayClientError` (a subclass, see
    :func:`error_for`) when the call fails.
    """

    def __init__(self, url: str, secret: str | None = None, timeout: float = 5.0) -> None:
        self.url = _base_url(url)
        self.secret = secret
        self.timeout = timeout
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)

    def send(
        self,
        token: str,
        data: str,
        name: str | None = None,
        id: str | None = None,
        close: bool = False,
    ) -> str:
        """Send one event to ``token``, then end its stream when ``close``.

        Returns ``"ok"`` (written) or ``"buffered"`` (queued until its connect callback ends).
        """
        return _send_status(self._post(send_item(token, data=data, name=name, id=id, close=close)))

    def publish(
        self, channel: str, data: str, name: str | None = None, id: str | None = None
    ) -> None:
        """Publish one event to every stream subscribed to ``channel`` (none is not an error)."""
        self._post(send_item(channel=channel, data=data, name=name, id=id))

    def close(self, token: str) -> None:
        """End the stream of ``token``. Raises :class:`TokenNotFound` when it is already gone."""
        self._post(send_item(token, close=True))

    def batch(self, items: list[dict[str, Any]]) -> list[BatchResult]:
        """Apply several send objects (see :func:`send_item`) in order, in one request.

        Returns one :class:`BatchResult` per item, in order; a failed item does not raise, only
        a failure of the whole request does.
        """
        return _batch_results(self._post(items), len(items))

    def connections(self, limit: int = 100) -> dict[str, Any]:
        """``{"count": <open streams>, "connections": [<at most limit of them>]}``."""
        return _connections(self._call("GET", _connections_path(limit), None))

    def _post(self, value: Any) -> Any:
        return self._call("POST", SEND_PATH, encode_json(value))

    def _call(self, method: str, path: str, body: bytes | None) -> Any:
        request = urllib.request.Request(
            self.url + path,
            data=body,
            method=method,
            headers=request_headers(self.secret, json_body=body is not None),
        )
        try:
            status, raw = self._exchange(request)
        except (OSError, http.client.HTTPException) as exc:
            message = str(getattr(exc, "reason", None) or exc) or type(exc).__name__
            raise GatewayUnavailable(message) from exc
        return decode_response(status, raw)

    def _exchange(self, request: urllib.request.Request) -> tuple[int, bytes]:
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:  # an answer, only not a 2xx one
            with exc:
                return exc.code, exc.read()


class AsyncGateway:
    """The coroutine twin of :class:`Gateway`, on Tornado's ``AsyncHTTPClient``.

    Same arguments, methods, results and errors. ``http_client`` is the client to use (its
    owner closes it); by default the shared ``AsyncHTTPClient()`` of the running IOLoop.
    ``timeout`` bounds connecting and the whole request. Redirects are not followed.
    """

    def __init__(
        self,
        url: str,
        secret: str | None = None,
        timeout: float = 5.0,
        *,
        http_client: AsyncHTTPClient | None = None,
    ) -> None:
        self.url = _base_url(url)
        self.secret = secret
        self.timeout = timeout
        self._http_client = http_client

    async def send(
        self,
        token: str,
        data: str,
        name: str | None = None,
        id: str | None = None,
        close: bool = False,
    ) -> str:
        """See :meth:`Gateway.send`."""
        item = send_item(token, data=data, name=name, id=id, close=close)
        return _send_status(await self._post(item))

    async def publish(
        self, channel: str, data: str, name: str | None = None, id: str | None = None
    ) -> None:
        """See :meth:`Gateway.publish`."""
        await self._post(send_item(channel=channel, data=data, name=name, id=id))

    async def close(self, token: str) -> None:
        """See :meth:`Gateway.close`."""
        await self._post(send_item(token, close=True))

    async def batch(self, items: list[dict[str, Any]]) -> list[BatchResult]:
        """See :meth:`Gateway.batch`."""
        return _batch_results(await self._post(items), len(items))

    async def connections(self, limit: int = 100) -> dict[str, Any]:
        """See :meth:`Gateway.connections`."""
        return _connections(await self._call("GET", _connections_path(limit), None))

    async def _post(self, value: Any) -> Any:
        return await self._call("POST", SEND_PATH, encode_json(value))

    async def _call(self, method: str, path: str, body: bytes | None) -> Any:
        # Imported here so that the blocking client never needs Tornado.
        from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

        request = HTTPRequest(
            self.url + path,
            method=method,
            body=body,
            headers=request_headers(self.secret, json_body=body is not None),
            connect_timeout=self.timeout,
            request_timeout=self.timeout,
            follow_redirects=False,
        )
        client = self._http_client or AsyncHTTPClient()
        try:
            response = await client.fetch(request, raise_error=False)
        except (OSError, HTTPClientError) as exc:
            # With raise_error=False only failures without an answer (refused, timeout,
            # reset) are raised; HTTPClientError is Tornado's 599 for them.
            raise GatewayUnavailable(str(exc) or type(exc).__name__) from exc
        return decode_response(response.code, response.body or b"")


# --------------------------------------------------------------------------------------------
# Stream JWTs


def mint_jwt(
    user: str | None,
    channels: Sequence[str],
    ttl: float,
    info: Mapping[str, Any] | None = None,
    *,
    secret: str | bytes,
    audience: str | None = None,
    issuer: str | None = None,
    now: float | None = None,
) -> str:
    """A JWT (HS256) that opens a stream without a connect callback: ``?jwt=<it>``.

    Claims: ``sub`` = ``user`` (left out when ``None``: an anonymous stream), ``channels``,
    ``info`` (when given), ``iat`` = ``now`` (default: the current time) and ``exp`` = ``now`` +
    ``ttl`` seconds, rounded up to a whole second: the gateway ends the stream then. ``aud`` and
    ``iss`` when given (the gateway's ``JWT_AUDIENCE`` and ``JWT_ISSUER``). ``secret`` is the
    gateway's ``JWT_SECRET``. Standard library only.

    Raises ``ValueError`` for a ``ttl`` that is not positive or a secret shorter than 32 bytes
    (the gateway would refuse it), and for values JSON cannot carry; the gateway checks the rest
    (channel names, the size of ``info``) and answers 401 ``INVALID_JWT`` for a token it cannot
    accept.
    """
    key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if len(key) < MIN_JWT_SECRET_BYTES:
        raise ValueError("the secret must be at least %d bytes long" % MIN_JWT_SECRET_BYTES)
    if not ttl > 0:
        raise ValueError("ttl must be a positive number of seconds")
    issued = time.time() if now is None else now
    claims: dict[str, Any] = {}
    if user is not None:
        claims["sub"] = user
    claims["channels"] = list(channels)
    if info is not None:
        claims["info"] = dict(info)
    if audience is not None:
        claims["aud"] = audience
    if issuer is not None:
        claims["iss"] = issuer
    claims["iat"] = int(issued)
    claims["exp"] = math.ceil(issued + ttl)
    header = _b64url(encode_json({"alg": "HS256", "typ": "JWT"}))
    signing_input = header + b"." + _b64url(encode_json(claims))
    signature = hmac.new(key, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + _b64url(signature)).decode("ascii")


def _b64url(raw: bytes) -> bytes:
    return base64.urlsafe_b64encode(raw).rstrip(b"=")
