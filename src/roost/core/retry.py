"""How long a failed delivery waits before the next one.

``fixed``: always ``base_ms``. ``exponential``: ``base_ms * 2 ** (deliveries - 1)``, capped at
``max_ms``. ``jitter`` (0..1) takes up to that fraction off at random ("equal jitter" keeps at
least ``1 - jitter`` of the delay), so consumers that failed together do not retry together. The
random source is passed in: tests pin it, the broker seeds one per subscription.

    policy = RetryPolicy(kind="exponential", base_ms=1000, max_ms=60_000, jitter=0.0)
    policy.delay_ms(deliveries=3, rng=random.Random(0))   # 4000
    RetryPolicy.exponential(base=1, limit=60, jitter=0.0) == policy   # in seconds
    RetryPolicy.fixed(timedelta(seconds=5))
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Literal

import msgspec

from roost.errors import InvalidConfig

MAX_RETRY_DELAY_MS = 12 * 3600 * 1000


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind: Literal["fixed", "exponential"] = "exponential"
    base_ms: int = 1000
    max_ms: int = 5 * 60 * 1000
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.kind not in ("fixed", "exponential"):
            raise InvalidConfig("retry.kind", self.kind, "fixed or exponential")
        if not 0 <= self.base_ms <= MAX_RETRY_DELAY_MS:
            raise InvalidConfig("retry.base_ms", self.base_ms, f"0..{MAX_RETRY_DELAY_MS}")
        if not self.base_ms <= self.max_ms <= MAX_RETRY_DELAY_MS:
            raise InvalidConfig("retry.max_ms", self.max_ms, f"base_ms..{MAX_RETRY_DELAY_MS}")
        if not 0.0 <= self.jitter <= 1.0:
            raise InvalidConfig("retry.jitter", self.jitter, "between 0 and 1")

    @classmethod
    def fixed(cls, delay: float | timedelta, *, jitter: float = 0.0) -> RetryPolicy:
        """Always ``delay`` (seconds, or a ``timedelta``) after a failure."""
        ms = _ms("retry delay", delay)
        return cls(kind="fixed", base_ms=ms, max_ms=ms, jitter=jitter)

    @classmethod
    def exponential(
        cls,
        base: float | timedelta = 1.0,
        limit: float | timedelta = 300.0,
        *,
        jitter: float = 0.2,
    ) -> RetryPolicy:
        """``base`` after the first failure, doubling after each one, never above ``limit``
        (seconds, or ``timedelta``s)."""
        return cls(base_ms=_ms("retry base", base), max_ms=_ms("retry limit", limit),
                   jitter=jitter)  # fmt: skip

    def delay_ms(self, deliveries: int, rng: random.Random) -> int:
        """The wait after the ``deliveries``-th delivery failed (``deliveries`` >= 1)."""
        if self.kind == "fixed":
            delay = self.base_ms
        else:
            delay = min(self.max_ms, self.base_ms << min(deliveries - 1, 40))
        if self.jitter:
            delay -= int(delay * self.jitter * rng.random())
        return delay


def _ms(name: str, value: float | timedelta) -> int:
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise InvalidConfig(name, value, "a number of seconds or a timedelta")
    if not 0 <= seconds <= MAX_RETRY_DELAY_MS / 1000:
        raise InvalidConfig(name, value, f"0..{MAX_RETRY_DELAY_MS // 1000} seconds")
    return round(seconds * 1000)


#: The policy a subscription gets when none is given (frozen: one shared value is safe).
DEFAULT_RETRY = RetryPolicy()
