"""Callbacks to the backend: one pooled, kept-alive HTTP client and the outcome of each call.

:class:`Backend` owns an ``AsyncHTTPClient(force_instance=True)`` (libcurl when ``pycurl`` is
installed, so connections are reused; Tornado's pure-Python client otherwise). ``connect()``
never raises for backend trouble: it returns a :class:`ConnectOutcome` that the stream handler maps
to HTTP. ``disconnect()`` is fire-and-forget: it never blocks the caller, and :meth:`drain`
waits for the callbacks still in flight (used at shutdown).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse

from . import protocol, signing
from .errors import CloseDetail, CloseReason, Outcome
from .log import fields
from .protocol import RequestSnapshot

log = logging.getLogger("tornado_sse.backend")

try:  # pragma: no cover - depends on the install
    import pycurl  # noqa: F401
    from tornado.curl_httpclient import CurlAsyncHTTPClient, CurlError

    _CURL = True
except ImportError:  # pragma: no cover - depends on the install
    _CURL = False

# libcurl error numbers that mean "the answer did not come in time" rather than "unreachable".
_CURL_TIMEOUT = 28


@dataclass(frozen=True, slots=True)
class ConnectOutcome:
    """The result of a connect callback. ``status`` is the backend's HTTP status, if any."""

    outcome: Outcome
    status: int | None = None
    channels: tuple[str, ...] = ()
    message: str = ""

    @property
    def backend_may_know(self) -> bool:
        """Whether the backend may believe the token connected (so it must hear disconnect)."""
        return self.outcome in (Outcome.ACCEPTED, Outcome.TIMEOUT, Outcome.BAD_ANSWER)


#: Called after every callback with (action, outcome label, seconds); used for metrics.
Observer = Callable[[str, str, float], None]


class Backend:
    """The backend's callback endpoint, as seen by the gateway.

    ``url`` is ``CALLBACK_URL``; ``timeout`` bounds each callback; ``max_clients`` bounds the
    callbacks in flight (more wait in the client's queue, within their timeout); ``secret``
    signs every body with ``X-SSE-Signature``.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        max_clients: int = 100,
        secret: str | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.secret = secret
        self._observer = observer
        self._pending: set[asyncio.Task[None]] = set()
        if _CURL:
            self._client: AsyncHTTPClient = CurlAsyncHTTPClient(
                force_instance=True, max_clients=max_clients
            )
        else:
            self._client = AsyncHTTPClient(force_instance=True, max_clients=max_clients)

    def _request(self, body: bytes, request_id: str | None) -> HTTPRequest:
        headers = {"Content-Type": "application/json"}
        if request_id:
            headers["X-Request-ID"] = request_id
        if self.secret:
            headers[signing.SIGNATURE_HEADER] = signing.sign(body, self.secret)
        return HTTPRequest(
            self.url,
            method="POST",
            body=body,
            headers=headers,
            connect_timeout=self.timeout,
            request_timeout=self.timeout,
            follow_redirects=False,
            decompress_response=True,
        )

    async def _post(self, body: bytes, request_id: str | None) -> HTTPResponse | BaseException:
        """POST ``body``; the response (any status) or the transport error. Never raises."""
        try:
            return await self._client.fetch(self._request(body, request_id), raise_error=False)
        except Exception as exc:  # refused, DNS, TLS, timeouts of the simple client
            return exc

    async def connect(self, token: str, request: RequestSnapshot) -> ConnectOutcome:
        """Ask the backend whether this stream may open. Never raises for backend trouble."""
        started = time.monotonic()
        result = await self._post(protocol.connect_body(token, request), request.request_id)
        outcome = _connect_outcome(result)
        self._observe("connect", outcome.outcome.value, started)
        return outcome

    def disconnect(
        self,
        token: str,
        reason: CloseReason,
        request: RequestSnapshot,
        detail: CloseDetail | None = None,
    ) -> None:
        """Schedule the disconnect callback and return at once. Failures are logged, not raised."""
        body = protocol.disconnect_body(token, reason, request, detail)
        task = asyncio.get_running_loop().create_task(
            self._send_disconnect(token, body, request.request_id)
        )
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _send_disconnect(self, token: str, body: bytes, request_id: str | None) -> None:
        started = time.monotonic()
        result = await self._post(body, request_id)
        if isinstance(result, BaseException) or result.error is not None and result.code == 599:
            label = "error"
            log.warning(
                "disconnect callback failed", extra=fields(token=token, error=_describe(result))
            )
        elif 200 <= result.code < 300:
            label = "ok"
        else:
            label = "rejected"
            log.warning(
                "disconnect callback answered", extra=fields(status=result.code, token=token)
            )
        self._observe("disconnect", label, started)

    def _observe(self, action: str, label: str, started: float) -> None:
        if self._observer is not None:
            self._observer(action, label, time.monotonic() - started)

    @property
    def pending_disconnects(self) -> int:
        """Disconnect callbacks scheduled and not yet finished."""
        return len(self._pending)

    async def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the disconnect callbacks in flight. True if done."""
        if not self._pending:
            return True
        _, pending = await asyncio.wait(set(self._pending), timeout=timeout)
        return not pending

    def close(self) -> None:
        """Close the HTTP client (its pooled connections)."""
        self._client.close()


def _is_timeout(error: BaseException) -> bool:
    if _CURL and isinstance(error, CurlError):
        return error.errno == _CURL_TIMEOUT
    if isinstance(error, HTTPClientError):
        return error.code == 599 and "timeout" in str(error).lower()
    return isinstance(error, (TimeoutError, asyncio.TimeoutError))


def _describe(result: HTTPResponse | BaseException) -> str:
    error = result if isinstance(result, BaseException) else result.error
    return type(error).__name__ + (": %s" % error if error else "")


def _connect_outcome(result: HTTPResponse | BaseException) -> ConnectOutcome:
    """Map the answer (or failure) of a connect callback to a :class:`ConnectOutcome`."""
    if isinstance(result, BaseException) or (result.code == 599 and result.error is not None):
        error = result if isinstance(result, BaseException) else result.error
        assert error is not None
        if _is_timeout(error):
            return ConnectOutcome(Outcome.TIMEOUT, message="the backend did not answer in time")
        return ConnectOutcome(
            Outcome.UNAVAILABLE, message="the backend is unreachable (%s)" % _describe(result)
        )
    if not 200 <= result.code < 300:
        return ConnectOutcome(Outcome.REJECTED, status=result.code)
    try:
        channels = protocol.parse_connect_answer(result.body or b"")
    except ValueError as exc:
        return ConnectOutcome(Outcome.BAD_ANSWER, status=result.code, message=str(exc))
    return ConnectOutcome(Outcome.ACCEPTED, status=result.code, channels=channels)
