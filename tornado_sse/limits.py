"""Rate limits: the token bucket behind ``MAX_CONNECTS_PER_SECOND``.

Pure: the clock is injected, so the bucket can be tested without waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """Allows ``rate`` events per second on average, in bursts of up to ``burst``.

    The bucket starts full; each allowed event takes one token, and tokens come back at
    ``rate`` per second up to ``burst``. One process's bucket: nothing is shared.
    """

    __slots__ = ("rate", "burst", "_clock", "_tokens", "_last")

    def __init__(
        self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """``burst`` defaults to one second's worth (``rate``), and is at least 1."""
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = max(1.0, rate if burst is None else burst)
        self._clock = clock
        self._tokens = self.burst
        self._last = clock()

    def take(self) -> bool:
        """Take a token: True if the event is allowed now, False if it is over the rate."""
        now = self._clock()
        tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return True
        self._tokens = tokens
        return False
