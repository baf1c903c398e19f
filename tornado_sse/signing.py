"""HMAC signatures of the gateway's callbacks: :func:`sign` and, for backends, :func:`verify`.

The code lives in :mod:`tornado_sse_client.signing` (standard library only), which backends
install on their own (``pip install ./clients/python``); this module is the same functions,
for the gateway and for code written against ``tornado_sse.signing``.
"""

from tornado_sse_client.signing import (
    DEFAULT_TOLERANCE_SECONDS,
    SIGNATURE_HEADER,
    sign,
    verify,
)

__all__ = ["DEFAULT_TOLERANCE_SECONDS", "SIGNATURE_HEADER", "sign", "verify"]
