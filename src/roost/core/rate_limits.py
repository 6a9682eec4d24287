"""A subscription's delivery rate: a token bucket on the broker's clock.

    bucket = TokenBucket(rate_per_s=50, burst=10, now_ms=clock.now_ms())
    allowed = bucket.available(now_ms)   # whole messages that may go now
    bucket.spend(delivered, now_ms)
    bucket.next_token_ms(now_ms)         # when the next one may go (a deadline to wake at)

As NATS's consumer ``RateLimit`` and Pulsar's dispatch rate: ``rate_per_s`` messages a second
on average, ``burst`` at once at most (a full bucket). It holds ``burst`` tokens when made and
refills continuously; only what is delivered is spent, so an empty queue wastes no tokens.
Time is the clock's milliseconds: the same bucket decides the same way under a ``ManualClock``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from roost.errors import InvalidConfig

if TYPE_CHECKING:
    from roost.core.model import SubscriptionSpec

#: What float rounding may take off a whole token (the same tolerance everywhere).
_EPSILON = 1e-9
#: The fastest a limit may be (faster is no limit: say None).
MAX_RATE_PER_S = 1_000_000.0
MAX_BURST = 1_000_000


def check_rate_limit(rate_per_s: float | None, burst: int | None) -> None:
    if rate_per_s is None:
        if burst is not None:
            raise InvalidConfig("rate_burst", burst, "goes with a rate_limit_per_s")
        return
    if isinstance(rate_per_s, bool) or not (
        isinstance(rate_per_s, int | float) and 0 < rate_per_s <= MAX_RATE_PER_S
    ):
        rule = f"more than 0 and at most {MAX_RATE_PER_S:g} messages a second"
        raise InvalidConfig("rate_limit_per_s", rate_per_s, rule)
    if burst is not None and (type(burst) is not int or not 1 <= burst <= MAX_BURST):
        raise InvalidConfig("rate_burst", burst, f"between 1 and {MAX_BURST} messages")


def default_burst(rate_per_s: float) -> int:
    """A second's worth, at least one message."""
    return max(1, math.ceil(rate_per_s))


class TokenBucket:
    __slots__ = ("_at_ms", "_tokens", "burst", "rate_per_s")

    def __init__(self, rate_per_s: float, burst: int, now_ms: int) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = float(burst)
        self._at_ms = now_ms

    def _refill(self, now_ms: int) -> None:
        if now_ms > self._at_ms:
            gained = (now_ms - self._at_ms) * self.rate_per_s / 1000
            self._tokens = min(float(self.burst), self._tokens + gained)
            self._at_ms = now_ms

    def available(self, now_ms: int) -> int:
        """Whole messages that may be delivered at ``now_ms``."""
        self._refill(now_ms)
        return int(self._tokens + _EPSILON)  # a token float rounding left a hair short

    def spend(self, count: int, now_ms: int) -> None:
        self._refill(now_ms)
        self._tokens = max(0.0, self._tokens - count)

    def next_token_ms(self, now_ms: int) -> int:
        """The first millisecond at which at least one whole message may go."""
        self._refill(now_ms)
        missing = 1.0 - _EPSILON - self._tokens
        if missing <= 0:
            return now_ms
        return now_ms + math.ceil(missing * 1000 / self.rate_per_s)


def rate_bucket(spec: SubscriptionSpec, now_ms: int) -> TokenBucket | None:
    """The bucket ``spec`` asks for (full), or None if it is not limited."""
    if spec.rate_limit_per_s is None:
        return None
    burst = spec.rate_burst or default_burst(spec.rate_limit_per_s)
    return TokenBucket(spec.rate_limit_per_s, burst, now_ms)
