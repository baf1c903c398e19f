"""The errors of the client: one root, :class:`GatewayClientError`, and the cases a backend
handles as subclasses. Each carries the HTTP ``status``, the gateway's error ``code`` and its
``message``."""

from __future__ import annotations


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
