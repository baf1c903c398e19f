"""Callbacks to the backend: one pooled, kept-alive HTTP client and the outcome of each call.

:class:`Backend` owns an ``AsyncHTTPClient(force_instance=True)``: libcurl when ``pycurl`` is
installed (connections are reused), Tornado's pure-Python client otherwise. Its promises:

- **Never sent twice by accident.** libcurl silently resends a request when a reused kept-alive
  connection turns out closed after the request was written; every request here forbids the
  rewind that resend needs (its seek callback fails), so the request fails instead and is
  reported as such. The only repeats are the disconnect retries of ``DISCONNECT_RETRY_SECONDS``,
  and they carry the same ``Idempotency-Key``.
- **A deadline for the whole life of a callback.** At most ``max_clients`` callbacks are in
  flight; the others wait for a free slot, within ``CALLBACK_TIMEOUT_SECONDS`` counted from the
  moment they were asked for. Disconnects take free slots before connects, so a storm of
  connects cannot starve them. A connect whose client left before its slot came is not sent.
- **Fresh connections only.** A pooled connection is reused only while it has been idle for
  less than ``CALLBACK_KEEPALIVE_SECONDS``, so a backend's keep-alive timeout does not race it.
- **Bounded answers.** A connect answer body over :data:`MAX_ANSWER_BYTES` is refused (the
  transfer is cut there); disconnect answers are read and discarded.

``connect()`` never raises for backend trouble: it returns a :class:`ConnectOutcome` that the
gateway maps to the client's answer. ``disconnect()`` is fire-and-forget; :meth:`drain` waits for
the callbacks still in flight (used at shutdown).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPRequest, HTTPResponse
from tornado.simple_httpclient import HTTPStreamClosedError, HTTPTimeoutError

from . import protocol, signing
from .errors import CloseDetail, CloseReason, Outcome
from .log import fields
from .protocol import RequestSnapshot

log = logging.getLogger("tornado_sse.backend")

try:  # pragma: no cover - depends on the install
    import pycurl
    from tornado.curl_httpclient import CurlAsyncHTTPClient, CurlError

    _CURL = True
except ImportError:  # pragma: no cover - depends on the install
    _CURL = False

if _CURL:

    class CallbackCurlClient(CurlAsyncHTTPClient):
        """libcurl for the callbacks, each request set up with only the options a callback
        uses.

        Tornado sets up every request for every feature of ``HTTPRequest`` (proxies, methods,
        authentication, client certificates, streaming): about forty libcurl options, each
        request (a handle is reset after each). A callback is always a ``POST`` of a body in
        memory, with a few headers, its two timeouts, no redirect followed, a compressed
        answer decoded and the answer bounded by ``max_body_size``; so that is what is set
        here, the same way Tornado sets it, and libcurl's defaults stand for the rest (TLS
        peer and host verification on, the proxy from the environment, no credentials).
        ``prepare_curl_callback`` then adds the callback's own options. Only
        :class:`Backend` uses it, with requests of that shape (``ValueError`` otherwise)."""

        _PROTOCOLS = pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS

        def _curl_setup_request(self, curl: Any, request: Any, buffer: Any, headers: Any) -> None:
            body = request.body
            if request.method != "POST" or body is None or request.follow_redirects:
                raise ValueError("a callback is a POST with a body and no redirect followed")
            curl.setopt(pycurl.PROTOCOLS, self._PROTOCOLS)
            curl.setopt(pycurl.REDIR_PROTOCOLS, self._PROTOCOLS)
            curl.setopt(pycurl.URL, request.url)
            lines = [b"Expect: ", b"Pragma: "]  # libcurl would add them: see Tornado's setup
            for name, value in request.headers.get_all():
                line = b"%s: %s" % (name.encode("ascii"), value.encode("latin-1"))
                if b"\r" in line or b"\n" in line:
                    raise ValueError("Illegal characters in header (CR or LF): %r" % line)
                lines.append(line)
            curl.setopt(pycurl.HTTPHEADER, lines)
            limit = self.max_body_size

            def write(chunk: bytes) -> int:
                if buffer.tell() + len(chunk) > limit:
                    curl.info["body_too_large"] = True
                    return 0  # libcurl fails the transfer with CURLE_WRITE_ERROR
                return int(buffer.write(chunk))

            curl.setopt(pycurl.WRITEFUNCTION, write)
            curl.setopt(pycurl.CONNECTTIMEOUT_MS, int(1000 * request.connect_timeout))
            curl.setopt(pycurl.TIMEOUT_MS, int(1000 * request.request_timeout))
            curl.setopt(pycurl.USERAGENT, request.user_agent or "Mozilla/5.0 (compatible; pycurl)")
            if request.decompress_response:
                curl.setopt(pycurl.ENCODING, "gzip,deflate")
            curl.setopt(pycurl.POST, True)
            curl.setopt(pycurl.READFUNCTION, BytesIO(body).read)
            curl.setopt(pycurl.POSTFIELDSIZE, len(body))
            if threading.active_count() > 1:
                curl.setopt(pycurl.NOSIGNAL, 1)  # as Tornado: libcurl's signals and threads
            if request.prepare_curl_callback is not None:
                request.prepare_curl_callback(curl)


#: The largest connect answer body read (channels, user and info fit many times over).
MAX_ANSWER_BYTES = 64 * 1024
#: The share of ``CALLBACK_TIMEOUT_SECONDS`` that must be left when a connection frees up for a
#: queued callback to be sent at all (one sent with less would most likely time out).
MIN_TIME_LEFT = 0.25
#: Header that lets a backend recognise a repeated callback.
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: Disconnect retry backoff: first and longest wait, in seconds (each jittered down to half).
RETRY_FIRST, RETRY_MAX = 0.25, 5.0

# libcurl error numbers (see libcurl-errors(3)), by what they mean for a callback.
_CURL_TIMEOUT = {28}  # no answer in time
_CURL_TOO_LARGE = {23, 63}  # our write callback refused more, or MAXFILESIZE was exceeded
# The request was (or may have been) written, then the connection ended without an answer:
# refused rewind (a resend was needed), empty reply, receive error, partial answer.
_CURL_LOST = {18, 52, 56, 65}


@dataclass(frozen=True, slots=True)
class ConnectOutcome:
    """The result of a connect callback. ``status`` is the backend's HTTP status, if any;
    ``message`` says what went wrong, in words fit for the public (no address, no library
    text); the details go to the log."""

    outcome: Outcome
    status: int | None = None
    channels: tuple[str, ...] = ()
    message: str = ""
    #: The user the accepted stream belongs to (``None``: anonymous) and their presence info.
    user: str | None = None
    info: protocol.Info | None = None


#: Called after every callback with (action, outcome label, seconds); used for metrics.
Observer = Callable[[str, str, float], None]


class Slots:
    """At most ``size`` callbacks in flight; waiters for disconnects are served first."""

    def __init__(self, size: int) -> None:
        self.free = size
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._normal: deque[asyncio.Future[None]] = deque()

    async def acquire(self, urgent: bool, timeout: float) -> bool:
        """Take a slot within ``timeout`` seconds; False if none came in time."""
        if self.free > 0 and not self._urgent and not self._normal:
            self.free -= 1
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        (self._urgent if urgent else self._normal).append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), max(timeout, 0.0))
        except TimeoutError:
            if waiter.done():  # handed a slot just as the wait ended
                return True
            waiter.cancel()
            return False
        except asyncio.CancelledError:
            if waiter.done():
                self.release()  # pass on the slot handed over meanwhile
            else:
                waiter.cancel()
            raise
        return True

    def release(self) -> None:
        """Give a slot back (to the first live waiter, disconnects first)."""
        for queue in (self._urgent, self._normal):
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    return
        self.free += 1


class Backend:
    """The backend's callback endpoint, as seen by the gateway.

    ``url`` is ``CALLBACK_URL``; ``timeout`` bounds each callback's whole life; ``max_clients``
    bounds the callbacks in flight; ``secret`` signs every body with ``X-SSE-Signature``;
    ``retry_seconds`` > 0 retries failed disconnects for that long; a pooled connection is
    reused only while it has been idle for less than ``keepalive_seconds`` (keep it below the
    backend's own keep-alive timeout, so that the backend never closes a connection just as a
    callback is written on it).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        max_clients: int = 100,
        secret: str | Sequence[str] | None = None,
        retry_seconds: float = 0.0,
        keepalive_seconds: int = 1,
        observer: Observer | None = None,
    ) -> None:
        self.url = url
        self.keepalive_seconds = keepalive_seconds
        self.timeout = timeout
        self.secret = secret
        self.retry_seconds = retry_seconds
        self._observer = observer
        self._slots = Slots(max_clients)
        self._pending: dict[asyncio.Task[None], str] = {}
        self._prepare_connect = self._curl_options(True) if _CURL else None
        self._prepare_disconnect = self._curl_options(False) if _CURL else None
        if _CURL:
            # max_body_size bounds the decoded answer even where libcurl's MAXFILESIZE would
            # count only the bytes on the wire (before libcurl 8.4).
            self._client: AsyncHTTPClient = CallbackCurlClient(
                force_instance=True, max_clients=max_clients, max_body_size=MAX_ANSWER_BYTES
            )
        else:
            self._client = AsyncHTTPClient(
                force_instance=True, max_clients=max_clients, max_body_size=MAX_ANSWER_BYTES
            )

    # -- one request -----------------------------------------------------------------------------

    def _request(
        self, body: bytes, request_id: str | None, key: str, timeout: float, connect: bool
    ) -> HTTPRequest:
        headers = {"Content-Type": "application/json", IDEMPOTENCY_HEADER: key}
        if request_id:
            headers["X-Request-ID"] = request_id
        if self.secret:
            headers[signing.SIGNATURE_HEADER] = signing.sign(body, self.secret)
        return HTTPRequest(
            self.url,
            method="POST",
            body=body,
            headers=headers,
            connect_timeout=timeout,
            request_timeout=timeout,
            follow_redirects=False,
            decompress_response=True,
            prepare_curl_callback=self._prepare_connect if connect else self._prepare_disconnect,
        )

    async def _post(
        self,
        body: bytes,
        request_id: str | None,
        key: str,
        *,
        connect: bool,
        deadline: float,
        abandoned: Callable[[], bool] | None = None,
    ) -> HTTPResponse | BaseException | Outcome:
        """POST ``body`` once, within ``deadline`` (monotonic). The response (any status), the
        transport error, or ``EXPIRED`` / ``ABANDONED`` when it was never sent. Never raises."""
        if not await self._slots.acquire(not connect, deadline - time.monotonic()):
            return Outcome.EXPIRED
        try:
            if abandoned is not None and abandoned():
                return Outcome.ABANDONED
            remaining = deadline - time.monotonic()
            if remaining < self.timeout * MIN_TIME_LEFT:
                return Outcome.EXPIRED  # too late to be worth the backend's trouble
            request = self._request(body, request_id, key, remaining, connect)
            try:
                return await self._client.fetch(request, raise_error=False)
            except Exception as exc:  # refused, DNS, TLS, lost: CurlError and the like
                return exc
        finally:
            self._slots.release()

    def _curl_options(self, connect: bool) -> Callable[[Any], None]:
        """The libcurl options of every callback: no silent resend (the rewind it needs fails),
        reuse only of recently used connections, the answer's header lines not parsed (nothing
        here reads them: the status comes from libcurl, and libcurl decodes a compressed body
        itself); for a connect, an answer cut at :data:`MAX_ANSWER_BYTES` (libcurl >= 8.4 also
        stops a transfer of unknown length there); for a disconnect, the answer read and
        discarded. Built once per kind of callback."""
        max_age = self.keepalive_seconds - 1  # libcurl reuses while idle seconds <= max age

        def prepare(curl: Any) -> None:
            curl.setopt(pycurl.SEEKFUNCTION, _refuse_rewind)
            curl.setopt(pycurl.MAXAGE_CONN, max_age)
            curl.setopt(pycurl.HEADERFUNCTION, _discard)
            if connect:
                curl.setopt(pycurl.MAXFILESIZE, MAX_ANSWER_BYTES)
            else:
                # A handle keeps its options from one callback to the next: lift a connect's
                # bound, or a long disconnect answer would fail (and be retried).
                curl.setopt(pycurl.MAXFILESIZE, 0)
                curl.setopt(pycurl.WRITEFUNCTION, _discard)

        return prepare

    # -- connect ---------------------------------------------------------------------------------

    async def connect(
        self,
        token: str,
        request: RequestSnapshot,
        abandoned: Callable[[], bool] | None = None,
    ) -> ConnectOutcome:
        """Ask the backend whether this stream may open. Never raises for backend trouble.

        ``abandoned()`` is asked once a slot is free: if it says the client has left, the
        callback is not sent (outcome ``ABANDONED``).
        """
        started = time.monotonic()
        result = await self._post(
            protocol.connect_body(token, request),
            request.request_id,
            protocol.new_uuid4(),
            connect=True,
            deadline=started + self.timeout,
            abandoned=abandoned,
        )
        outcome = connect_outcome(result)
        if outcome.outcome in _LOGGED_FAILURES:
            log.warning(
                "connect callback failed",
                extra=fields(
                    token=token,
                    request_id=request.request_id,
                    outcome=outcome.outcome.value,
                    error=describe(result),
                ),
            )
        self._observe("connect", outcome.outcome.value, started)
        return outcome

    # -- disconnect ------------------------------------------------------------------------------

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
            self._deliver_disconnect(token, body, request.request_id)
        )
        self._pending[task] = token
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._pending.pop(task, None)

    async def _deliver_disconnect(self, token: str, body: bytes, request_id: str | None) -> None:
        """Send one disconnect, retrying a failure (no connection, timeout, 5xx) with capped,
        jittered exponential backoff for ``retry_seconds``, always with the same key."""
        key = protocol.new_uuid4()
        give_up = time.monotonic() + self.retry_seconds
        wait = RETRY_FIRST
        while True:
            started = time.monotonic()
            result = await self._post(
                body, request_id, key, connect=False, deadline=started + self.timeout
            )
            label = _disconnect_label(result)
            self._observe("disconnect", label, started)
            if label in ("ok", "rejected"):
                if label == "rejected":
                    log.warning(
                        "disconnect callback answered",
                        extra=fields(status=_status(result), token=token),
                    )
                return
            pause = random.uniform(wait / 2, wait)
            if time.monotonic() + pause > give_up:
                log.warning(
                    "disconnect callback failed",
                    extra=fields(token=token, error=describe(result)),
                )
                return
            log.info("disconnect callback retried", extra=fields(token=token, wait=pause))
            await asyncio.sleep(pause)
            wait = min(wait * 2, RETRY_MAX)

    def _observe(self, action: str, label: str, started: float) -> None:
        if self._observer is not None:
            self._observer(action, label, time.monotonic() - started)

    @property
    def pending_disconnects(self) -> int:
        """Disconnect callbacks scheduled and not yet finished (retries included)."""
        return len(self._pending)

    def pending_tokens(self) -> list[str]:
        """The tokens whose disconnect callback has not finished yet."""
        return list(self._pending.values())

    async def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the disconnect callbacks in flight. True if done."""
        if not self._pending:
            return True
        _, pending = await asyncio.wait(set(self._pending), timeout=timeout)
        return not pending

    def close(self) -> None:
        """Close the HTTP client (its pooled connections)."""
        self._client.close()


# -- libcurl options ---------------------------------------------------------------------------


def _refuse_rewind(offset: int, origin: int) -> int:
    return pycurl.SEEKFUNC_FAIL


def _discard(data: bytes) -> None:
    return None


# -- outcomes --------------------------------------------------------------------------------------

#: Connect failures worth a log line (the client's answer does not say why, on purpose).
_LOGGED_FAILURES = {Outcome.UNAVAILABLE, Outcome.LOST, Outcome.TIMEOUT, Outcome.BAD_ANSWER}

_PUBLIC_MESSAGES = {
    Outcome.UNAVAILABLE: "the backend is unreachable",
    Outcome.LOST: "the backend closed the connection without answering",
    Outcome.TIMEOUT: "the backend did not answer in time",
    Outcome.EXPIRED: "the backend did not answer in time",
}


def transport_failure(error: BaseException) -> Outcome:
    """What a callback that got no HTTP answer came to."""
    if _CURL and isinstance(error, CurlError):
        if error.errno in _CURL_TIMEOUT:
            return Outcome.TIMEOUT
        if error.errno in _CURL_TOO_LARGE:
            return Outcome.BAD_ANSWER
        if error.errno in _CURL_LOST:
            return Outcome.LOST
        return Outcome.UNAVAILABLE
    if isinstance(error, (HTTPTimeoutError, TimeoutError)):
        return Outcome.TIMEOUT
    if isinstance(error, HTTPStreamClosedError):
        return Outcome.LOST
    return Outcome.UNAVAILABLE


def _answer(result: HTTPResponse | BaseException | Outcome) -> HTTPResponse | None:
    """The HTTP answer in ``result``, or None when there was none (a 599 from the backend
    itself is an answer; Tornado's own 599 errors carry no response)."""
    if not isinstance(result, HTTPResponse):
        return None
    error = result.error
    if error is not None and getattr(error, "response", None) is None:
        return None
    return result


def _error_of(result: HTTPResponse | BaseException) -> BaseException:
    if isinstance(result, BaseException):
        return result
    assert result.error is not None
    return result.error


def connect_outcome(result: HTTPResponse | BaseException | Outcome) -> ConnectOutcome:
    """Map the answer (or failure) of a connect callback to a :class:`ConnectOutcome`."""
    if isinstance(result, Outcome):
        return ConnectOutcome(result, message=_PUBLIC_MESSAGES.get(result, ""))
    answer = _answer(result)
    if answer is None:
        outcome = transport_failure(_error_of(result))
        if outcome is Outcome.BAD_ANSWER:
            return ConnectOutcome(
                outcome, message="the answer body is larger than %d bytes" % MAX_ANSWER_BYTES
            )
        return ConnectOutcome(outcome, message=_PUBLIC_MESSAGES[outcome])
    if not 200 <= answer.code < 300:
        return ConnectOutcome(Outcome.REJECTED, status=answer.code)
    try:
        named = protocol.read_connect_answer(answer.body or b"")
    except ValueError as exc:
        return ConnectOutcome(Outcome.BAD_ANSWER, status=answer.code, message=str(exc))
    return ConnectOutcome(
        Outcome.ACCEPTED,
        status=answer.code,
        channels=named.channels,
        user=named.user,
        info=named.info,
    )


def _status(result: HTTPResponse | BaseException | Outcome) -> int | None:
    answer = _answer(result)
    return answer.code if answer is not None else None


def _disconnect_label(result: HTTPResponse | BaseException | Outcome) -> str:
    """``ok`` (2xx), ``rejected`` (an answer not worth retrying: 3xx or 4xx), or ``error`` (no
    connection, timeout, 5xx: retried with ``DISCONNECT_RETRY_SECONDS``)."""
    status = _status(result)
    if status is None or status >= 500:
        return "error"
    return "ok" if 200 <= status < 300 else "rejected"


def describe(result: HTTPResponse | BaseException | Outcome) -> str:
    """A one-line account of a callback's failure, for the log only (it may name addresses)."""
    if isinstance(result, Outcome):
        return result.value
    answer = _answer(result)
    if answer is not None:
        return "HTTP %d" % answer.code
    error = _error_of(result)
    return type(error).__name__ + (": %s" % error if str(error) else "")
