"""The error tree of tornado_sse and the one place that maps errors to HTTP.

Every error a client or a backend can see is a :class:`GatewayError` carrying an HTTP status, an
``UPPER_SNAKE`` code and a human message, and is rendered as the JSON shape of the wire contract::

    {"error": {"code": "TOKEN_NOT_FOUND", "message": "no open stream has this token"}}
"""

from __future__ import annotations

import json


class GatewayError(Exception):
    """An error with a place on the wire: ``status`` (HTTP), ``code`` and ``message``."""

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


class InvalidRequest(GatewayError):
    """A request body that breaks a validation rule (400); ``code`` names the rule."""

    status = 400

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)


class TokenNotFound(GatewayError):
    """No stream, open or connecting, holds this token (404)."""

    status = 404
    code = "TOKEN_NOT_FOUND"


class BufferFull(GatewayError):
    """Too many sends queued for a stream whose connect callback is in flight (429)."""

    status = 429
    code = "BUFFER_FULL"


class Unauthorized(GatewayError):
    """The internal API was called without the right bearer secret (401)."""

    status = 401
    code = "UNAUTHORIZED"


class NotFound(GatewayError):
    """No route for this path (404)."""

    status = 404
    code = "NOT_FOUND"


class ServiceNotConfigured(GatewayError):
    """``CALLBACK_URL`` is not set, so no stream can be authorised (503)."""

    status = 503
    code = "SERVICE_NOT_CONFIGURED"


class ServiceUnavailable(GatewayError):
    """The gateway cannot take this stream now (503): draining, or too many connections."""

    status = 503
    code = "SERVICE_UNAVAILABLE"


class BrokerUnavailable(GatewayError):
    """A send could not be routed because the broker is unreachable (503)."""

    status = 503
    code = "BROKER_UNAVAILABLE"


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
