"""The error tree of tornado_sse and the one place that maps errors to HTTP.

Every error a client or a backend can see is a :class:`GatewayError` carrying an HTTP status, an
``UPPER_SNAKE`` code and a human message, and is rendered as the JSON shape of the wire contract::

    {"error": {"code": "TOKEN_NOT_FOUND", "message": "no open stream has this token"}}

Each wire code has one class here; handlers and the gateway raise these by name and never pick a
status or a code themselves. The outcome of a connect callback is mapped to the error its client
gets by :func:`connect_error`, and the words that say why a stream ended (:class:`CloseReason`,
:class:`CloseDetail`) are defined here too, so the registry, the gateway, the callbacks and the
metrics all use the same values.
"""

from __future__ import annotations

import enum
import json


class CloseReason(enum.StrEnum):
    """The ``reason`` of a disconnect callback (PROTOCOL 2): these three and no others."""

    CLIENT_CLOSED = "client_closed"
    SERVER_CLOSED = "server_closed"
    ERROR = "error"


class CloseDetail(enum.StrEnum):
    """The optional ``detail`` of a disconnect callback: a short machine word."""

    SHUTDOWN = "shutdown"
    SLOW_CONSUMER = "slow_consumer"
    CONNECT_TIMEOUT = "connect_timeout"
    BAD_CALLBACK_RESPONSE = "bad_callback_response"
    WRITE_FAILED = "write_failed"
    JWT_EXPIRED = "jwt_expired"
    INSTANCE_LOST = "instance_lost"
    USER_LIMIT = "user_limit"


class Outcome(enum.StrEnum):
    """What a connect callback came to (the value is the ``outcome`` metric label)."""

    ACCEPTED = "accepted"  # 2xx
    REJECTED = "rejected"  # any other HTTP status: passed through to the client
    TIMEOUT = "timeout"  # no answer in time: the backend may have accepted
    UNAVAILABLE = "unavailable"  # refused, DNS, TLS, reset: the backend cannot have accepted
    LOST = "lost"  # written, then the connection closed unanswered: the backend may know it
    BAD_ANSWER = "bad_answer"  # 2xx with an unusable answer body (or one over 64 KiB)
    EXPIRED = "expired"  # no free connection in time: never sent
    ABANDONED = "abandoned"  # the client left before it was sent: never sent


class GatewayError(Exception):
    """An error with a place on the wire: ``status`` (HTTP), ``code`` and ``message``.

    Subclasses fix ``status`` and ``code``; ``message`` is for people. A subclass may still be
    given another ``status`` (e.g. :class:`BackendError` passes the backend's status through).
    """

    status: int = 500
    code: str = "INTERNAL_ERROR"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, dict[str, str]]:
        """The JSON error body as a dict."""
        return error_dict(self.code, self.message)

    def to_json(self) -> bytes:
        """The JSON error body as UTF-8 bytes."""
        return error_json(self.code, self.message)


# -- 4xx: the request is wrong -----------------------------------------------------------------


class InvalidRequest(GatewayError):
    """A request that breaks a validation rule (400); ``code`` names the rule."""

    status = 400

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)


class InvalidLimit(GatewayError):
    """A ``limit`` query argument that is not a whole number >= 0 (400)."""

    status = 400
    code = "INVALID_LIMIT"

    def __init__(self, message: str = "'limit' must be a whole number >= 0") -> None:
        super().__init__(message)


class InvalidChannel(GatewayError):
    """A channel name no connect answer could carry (400)."""

    status = 400
    code = "INVALID_CHANNEL"

    def __init__(self) -> None:
        super().__init__("'channel' must be 1-200 printable ASCII characters without spaces")


class InvalidUser(GatewayError):
    """A user id no connect answer could carry (400)."""

    status = 400
    code = "INVALID_USER"

    def __init__(self) -> None:
        super().__init__("'user' must be 1-200 printable ASCII characters without spaces")


class InvalidSince(GatewayError):
    """A ``since`` that is not an event id the gateway could have issued (400)."""

    status = 400
    code = "INVALID_SINCE"

    def __init__(self) -> None:
        super().__init__("'since' must be an event id (decimal digits)")


class Unauthorized(GatewayError):
    """The internal API was called without the secret (401): neither ``Bearer <secret>`` nor,
    from a browser, Basic credentials with the secret as the password."""

    status = 401
    code = "UNAUTHORIZED"

    def __init__(self) -> None:
        super().__init__("a valid 'Authorization: Bearer <INTERNAL_SECRET>' is required")


class NotAWebSocket(GatewayError):
    """A request for the publish socket that is not a WebSocket opening handshake (400)."""

    status = 400
    code = "INVALID_UPGRADE"

    def __init__(self, why: str) -> None:
        super().__init__("this endpoint only opens a WebSocket: %s" % why)


class CrossOriginRefused(GatewayError):
    """A publish socket opened by a page of another origin (a browser's ``Origin``) (403):
    the internal API is for servers, and a page must not push events through it."""

    status = 403
    code = "CROSS_ORIGIN_REFUSED"

    def __init__(self) -> None:
        super().__init__("the internal API does not take WebSockets from pages of other origins")


class WebSocketVersionUnsupported(GatewayError):
    """A WebSocket handshake of another version than 13 (RFC 6455) (426); the answer carries
    ``Sec-WebSocket-Version: 13``."""

    status = 426
    code = "UPGRADE_REQUIRED"

    def __init__(self) -> None:
        super().__init__("only WebSocket version 13 (RFC 6455) is spoken")


class InvalidJWT(GatewayError):
    """A stream's ``jwt`` does not verify: signature, algorithm, audience, issuer or a claim
    (401). ``message`` says which, in words of ours: never the token, never a library's text."""

    status = 401
    code = "INVALID_JWT"


class JWTExpired(GatewayError):
    """A stream's ``jwt`` verifies but its ``exp`` has passed (401)."""

    status = 401
    code = "JWT_EXPIRED"

    def __init__(self) -> None:
        super().__init__("the JWT has expired: fetch a fresh one")


class NotFound(GatewayError):
    """No route for this path (404)."""

    status = 404
    code = "NOT_FOUND"


class TokenNotFound(GatewayError):
    """No stream, open or connecting, holds this token (404)."""

    status = 404
    code = "TOKEN_NOT_FOUND"

    def __init__(self, message: str = "no open stream has this token") -> None:
        super().__init__(message)


class PayloadTooLarge(GatewayError):
    """A request body over ``MAX_BODY_BYTES`` (413)."""

    status = 413
    code = "PAYLOAD_TOO_LARGE"

    def __init__(self, limit: int) -> None:
        super().__init__("the body is larger than MAX_BODY_BYTES (%d bytes)" % limit)


class MethodNotAllowed(GatewayError):
    """A method the endpoint does not serve (405)."""

    status = 405
    code = "METHOD_NOT_ALLOWED"

    def __init__(self) -> None:
        super().__init__("Method Not Allowed")


class UnsupportedMediaType(GatewayError):
    """A request body that is declared as something other than JSON (415)."""

    status = 415
    code = "UNSUPPORTED_MEDIA_TYPE"

    def __init__(self) -> None:
        super().__init__("the body must be JSON (Content-Type: application/json)")


class BufferFull(GatewayError):
    """Too many sends queued for a stream whose connect callback is in flight (429)."""

    status = 429
    code = "BUFFER_FULL"


class TooManyStreams(GatewayError):
    """The connect answer names a user who already holds ``MAX_STREAMS_PER_USER`` streams,
    cluster-wide (429)."""

    status = 429
    code = "TOO_MANY_STREAMS"

    def __init__(self, limit: int) -> None:
        super().__init__("this user already holds the most streams allowed (%d)" % limit)


class HeadersTooLarge(GatewayError):
    """A request head over ``MAX_HEADER_BYTES`` (431)."""

    status = 431
    code = "REQUEST_HEADER_FIELDS_TOO_LARGE"

    def __init__(self, limit: int) -> None:
        super().__init__("the request headers are larger than %d bytes" % limit)


# -- 503: the gateway cannot take this now ---------------------------------------------------------


class ServiceNotConfigured(GatewayError):
    """``CALLBACK_URL`` is not set, so no stream can be authorised (503)."""

    status = 503
    code = "SERVICE_NOT_CONFIGURED"

    def __init__(
        self, message: str = "CALLBACK_URL is not set: no stream can be authorised"
    ) -> None:
        super().__init__(message)


class ServiceUnavailable(GatewayError):
    """The gateway cannot take this request now (503); subclasses say why."""

    status = 503
    code = "SERVICE_UNAVAILABLE"


class ShuttingDown(ServiceUnavailable):
    """The gateway is draining: no new stream opens (503)."""

    code = "SHUTTING_DOWN"

    def __init__(self) -> None:
        super().__init__("the gateway is shutting down")


class TooManyConnections(ServiceUnavailable):
    """``MAX_CONNECTIONS`` streams are already held (503)."""

    code = "TOO_MANY_CONNECTIONS"

    def __init__(self) -> None:
        super().__init__("the gateway holds its maximum of streams")


class RateLimited(ServiceUnavailable):
    """More new streams than ``MAX_CONNECTS_PER_SECOND`` allows (503), refused before any
    callback or JWT work."""

    code = "RATE_LIMITED"

    def __init__(self) -> None:
        super().__init__("too many new streams at once: try again in a moment")


class BrokerUnavailable(ServiceUnavailable):
    """A send could not be routed, or a stream registered, because the broker is unreachable."""

    code = "BROKER_UNAVAILABLE"


# -- what a connect callback came to -----------------------------------------------------------


class BackendAuthFailed(GatewayError):
    """The backend answered the connect callback 401."""

    status = 401
    code = "BACKEND_AUTH_FAILED"

    def __init__(self) -> None:
        super().__init__("the backend refused the credentials")


class BackendForbidden(GatewayError):
    """The backend answered the connect callback 403."""

    status = 403
    code = "BACKEND_FORBIDDEN"

    def __init__(self) -> None:
        super().__init__("the backend forbade this stream")


class BackendError(GatewayError):
    """The backend answered the connect callback with another non-2xx status, passed through."""

    code = "BACKEND_ERROR"

    def __init__(self, status: int) -> None:
        super().__init__("the backend answered %d" % status, status=status)


class BadCallbackResponse(GatewayError):
    """A 2xx connect answer whose body is unusable (502)."""

    status = 502
    code = "BAD_CALLBACK_RESPONSE"

    def __init__(self, why: str) -> None:
        super().__init__("the backend's connect answer is unusable: %s" % why)


class BackendUnavailable(ServiceUnavailable):
    """The connect callback could not reach the backend (503)."""

    code = "BACKEND_UNAVAILABLE"


class GatewayTimeout(GatewayError):
    """The backend did not answer the connect callback in time (504)."""

    status = 504
    code = "GATEWAY_TIMEOUT"

    def __init__(self) -> None:
        super().__init__("the backend did not answer in time")


def connect_error(outcome: Outcome, status: int | None, message: str) -> GatewayError:
    """The error a client gets for a connect callback that did not accept (PROTOCOL 1.4).

    ``status`` is the backend's HTTP status (for ``REJECTED``); ``message`` says what went
    wrong, for the outcomes that carry one.
    """
    if outcome in (Outcome.TIMEOUT, Outcome.EXPIRED):
        return GatewayTimeout()
    if outcome in (Outcome.UNAVAILABLE, Outcome.LOST, Outcome.ABANDONED):
        return BackendUnavailable(message or "the backend is unreachable")
    if outcome is Outcome.BAD_ANSWER:
        return BadCallbackResponse(message)
    assert outcome is Outcome.REJECTED and status is not None, (outcome, status)
    if status == 401:
        return BackendAuthFailed()
    if status == 403:
        return BackendForbidden()
    return BackendError(status)


# Codes the wire contract names for HTTP statuses raised by Tornado itself (routing, body size,
# method). Anything else falls back to a generic code derived from the reason phrase.
_STATUS_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    426: "UPGRADE_REQUIRED",
    431: "REQUEST_HEADER_FIELDS_TOO_LARGE",
    500: "INTERNAL_ERROR",
    503: "SERVICE_UNAVAILABLE",
}


def code_for_status(status: int) -> str:
    """The ``UPPER_SNAKE`` error code used for a bare HTTP ``status``."""
    return _STATUS_CODES.get(status, "HTTP_%d" % status)


def error_dict(code: str, message: str) -> dict[str, dict[str, str]]:
    """The JSON error shape of the wire contract, as a dict."""
    return {"error": {"code": code, "message": message}}


def error_json(code: str, message: str) -> bytes:
    """The JSON error shape of the wire contract, as compact UTF-8 bytes."""
    return json.dumps(error_dict(code, message), separators=(",", ":")).encode()


def from_wire(status: int, body: dict[str, object]) -> GatewayError:
    """Rebuild the error another instance answered (``status`` and the JSON error body)."""
    error = body.get("error")
    code, message = "INTERNAL_ERROR", "error"
    if isinstance(error, dict):
        code = str(error.get("code", code))
        message = str(error.get("message", message))
    return GatewayError(message, status=status, code=code)
