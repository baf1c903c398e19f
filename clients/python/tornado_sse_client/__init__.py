"""tornado_sse_client: push events through a tornado_sse gateway, and verify its callbacks.

Standard library only, so that a Flask or Django backend needs neither Tornado nor pycurl to
talk to the gateway. Two clients with one API, both keeping their connections alive:
:class:`Gateway` blocks (any WSGI backend, from any thread); :class:`AsyncGateway` has the same
methods as coroutines (asyncio). Every failure is a :class:`GatewayClientError` carrying the
HTTP ``status``, the gateway's error ``code`` and its ``message``; the subclasses name the cases
a backend handles::

    from tornado_sse_client import Gateway, TokenNotFound

    gateway = Gateway("http://127.0.0.1:3000", secret=os.environ.get("INTERNAL_SECRET"))
    try:
        gateway.send(token, json.dumps({"count": 3}), name="update")
    except TokenNotFound:
        forget(token)  # the stream is gone

:func:`verify` checks the ``X-SSE-Signature`` of a callback (see :mod:`tornado_sse_client.signing`);
:func:`mint_jwt` makes the token of a stream that opens without a connect callback (see
:mod:`tornado_sse_client.tokens`).
"""

from .aio import AsyncGateway
from .errors import (
    BufferFull,
    GatewayClientError,
    GatewayUnavailable,
    InvalidRequest,
    TokenNotFound,
    Unauthorized,
)
from .messages import BatchResult, send_item, subscription_body
from .signing import SIGNATURE_HEADER, sign, verify
from .sync import Gateway
from .tokens import mint_jwt

__version__ = "2.0.0.dev0"

__all__ = [
    "AsyncGateway",
    "BatchResult",
    "BufferFull",
    "Gateway",
    "GatewayClientError",
    "GatewayUnavailable",
    "InvalidRequest",
    "SIGNATURE_HEADER",
    "TokenNotFound",
    "Unauthorized",
    "mint_jwt",
    "send_item",
    "subscription_body",
    "sign",
    "verify",
]
