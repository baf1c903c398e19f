"""HMAC signatures of the gateway's callbacks, and :func:`verify` for backends.

With ``CALLBACK_SECRET`` set, every callback the gateway POSTs carries the header::

    X-SSE-Signature: t=1700000000,v1=<hex HMAC-SHA256 of b"1700000000." + raw body>

``t`` is the signing time in Unix seconds. The timestamp is part of the signed bytes, so a
captured callback cannot be re-dated: :func:`verify` refuses any signature older (or newer) than
``tolerance_seconds``. During a secret rotation the header may carry several ``v1=`` entries, one
per secret; one match is enough.

This module uses the standard library only (the gateway signs with it, and backends verify with
it, through ``tornado_sse_client`` or ``tornado_sse.signing``). In a Flask backend, verify the
raw body before parsing it::

    import os

    from flask import Flask, abort, request
    from tornado_sse_client import SIGNATURE_HEADER, verify

    app = Flask(__name__)
    SECRET = os.environ["CALLBACK_SECRET"]

    @app.post("/sse/callback")
    def sse_callback():
        if not verify(request.get_data(), request.headers.get(SIGNATURE_HEADER), SECRET):
            abort(401)
        callback = request.get_json()
        ...
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Sequence

#: The request header that carries the signature.
SIGNATURE_HEADER = "X-SSE-Signature"

#: Default largest accepted distance between the signing time and now, in seconds.
DEFAULT_TOLERANCE_SECONDS = 300.0

_TIMESTAMP_RE = re.compile(r"[0-9]{1,15}")
_HEX_DIGEST_RE = re.compile(r"[0-9a-fA-F]{64}")


def sign(body: bytes, secret: str | Sequence[str], timestamp: int | None = None) -> str:
    """The ``X-SSE-Signature`` value for ``body``: ``t=<timestamp>,v1=<hex HMAC-SHA256>``.

    The MAC covers ``b"<timestamp>." + body`` under the UTF-8 bytes of ``secret``.
    ``timestamp`` is in Unix seconds and defaults to now. A sequence of secrets (a rotation in
    progress) gives one ``v1=`` entry per secret, in order. Raises ``ValueError`` for an empty
    secret, an empty sequence or a negative timestamp.
    """
    secrets = _secrets(secret)
    t = int(time.time()) if timestamp is None else int(timestamp)
    if t < 0:
        raise ValueError("timestamp must not be negative")
    return ",".join([f"t={t}"] + ["v1=" + _digest(s, t, body) for s in secrets])


def verify(
    body: bytes,
    header: str | None,
    secret: str | Sequence[str],
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """Whether ``header`` is a valid signature of ``body`` made recently with ``secret``.

    ``body`` must be the raw request body, byte for byte, as received. ``now`` (Unix seconds)
    defaults to the current time. Returns ``False``, never raises, when the header is missing
    or malformed (not exactly one decimal ``t``, no ``v1``), when no ``v1`` entry matches, or
    when ``|now - t| > tolerance_seconds``. Entries other than ``t`` and ``v1`` are ignored, so
    later signature versions can be added beside ``v1``. A sequence of secrets accepts a
    signature made with any of them (a rotation on the backend's side). Digests are compared in
    constant time. Raises ``ValueError`` only for an empty secret or an empty sequence.

    The tolerance bounds how long a captured callback can be replayed. A backend that must
    refuse every replay, even inside the window, also remembers the signatures it has seen
    until they expire.
    """
    secrets = _secrets(secret)
    parsed = _parse(header)
    if parsed is None:
        return False
    t, candidates = parsed
    if now is None:
        now = time.time()
    if not abs(now - t) <= tolerance_seconds:
        return False
    found = False
    for s in secrets:
        expected = _digest(s, t, body).encode("ascii")
        for candidate in candidates:
            # No early exit: the time taken does not depend on which entry matched.
            found |= hmac.compare_digest(expected, candidate)
    return found


def _secrets(secret: str | Sequence[str]) -> list[str]:
    secrets = [secret] if isinstance(secret, str) else list(secret)
    if not secrets or not all(isinstance(s, str) and s for s in secrets):
        raise ValueError("secret must be a non-empty string or a sequence of them")
    return secrets


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    message = b"%d." % timestamp + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def _parse(header: str | None) -> tuple[int, list[bytes]] | None:
    """``(t, [v1 digests as lower-case ASCII bytes])``, or ``None`` when malformed."""
    if not header or not isinstance(header, str):
        return None
    timestamp: int | None = None
    candidates: list[bytes] = []
    for item in header.split(","):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep:
            return None
        if key == "t":
            if timestamp is not None or not _TIMESTAMP_RE.fullmatch(value):
                return None
            timestamp = int(value)
        elif key == "v1" and _HEX_DIGEST_RE.fullmatch(value):
            candidates.append(value.lower().encode("ascii"))
    if timestamp is None or not candidates:
        return None
    return timestamp, candidates
