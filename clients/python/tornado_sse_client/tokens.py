"""Stream JWTs: the token a page puts in ``?jwt=`` to open a stream without a connect callback.

HS256 with the standard library only (``hmac``, ``hashlib``, ``base64``, ``json``); the gateway
verifies it with PyJWT against its ``JWT_SECRET``::

    url = "/sse/feed?jwt=" + mint_jwt("42", ["user.42", "news"], ttl=3600, secret=JWT_SECRET)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from .messages import encode_json

#: The shortest ``JWT_SECRET`` the gateway accepts for HS256, in bytes (RFC 7518 3.2).
MIN_SECRET_BYTES = 32


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
    gateway's ``JWT_SECRET``.

    Raises ``ValueError`` for a ``ttl`` that is not positive or a secret shorter than 32 bytes
    (the gateway would refuse it), and for values JSON cannot carry; the gateway checks the rest
    (channel names, the size of ``info``) and answers 401 ``INVALID_JWT`` for a token it cannot
    accept.
    """
    key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError("the secret must be at least %d bytes long" % MIN_SECRET_BYTES)
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
