"""The core's nouns: subscription settings, delivered messages, receipts.

    spec = SubscriptionSpec(name="workers", topic="emails", mode="queue", dead_letter="emails.dlq")

A ``Receipt`` names one delivery of one message: (partition, offset, delivery). Acks and nacks
carry it, so an ack for a delivery whose lease expired (the message went to someone else) is
refused instead of acking the newer delivery. Protocols turn it into their own handle (an SQS
receipt handle, an AMQP delivery tag) and back; the core never sees those.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from roost.core.rate_limits import check_rate_limit
from roost.core.retry import RetryPolicy
from roost.errors import InvalidConfig
from roost.receipt import Receipt
from roost.storage.config import check_name

Mode = Literal["stream", "queue", "keyed"]
StartPosition = Literal["earliest", "latest"]

DEFAULT_VISIBILITY_MS = 30_000
MAX_VISIBILITY_MS = 12 * 3600 * 1000
#: The longest publish or nack delay; a topic with time retention allows at most its retention
#: (core/delay_limits.py). Delays this long cost what short ones do (core/delay_wheel.py).
MAX_DELAY_MS = 365 * 24 * 3600 * 1000
#: The longest delay a queue applies to every message (``delay_ms`` of a subscription).
MAX_QUEUE_DELAY_MS = 24 * 3600 * 1000
DEFAULT_MAX_DELIVERIES = 10

#: Subscriptions Roost makes for itself are named with this (``roost-redrive`` on a dead-letter
#: topic, the CLI's ``roost-peek-<random>``): the dashboard does not list them as queues.
INTERNAL_PREFIX = "roost-"


def is_internal(subscription: str) -> bool:
    return subscription.startswith(INTERNAL_PREFIX)


#: Header a record carries when it must not be delivered before a time (ms since the epoch).
DELIVER_AT_HEADER = "x-roost-deliver-at"


class SubscriptionSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How a subscription reads its topic. Persisted in the metadata store."""

    name: str
    topic: str
    mode: Mode = "queue"
    #: Where a new subscription starts reading.
    start: StartPosition = "latest"
    visibility_timeout_ms: int = DEFAULT_VISIBILITY_MS
    #: Deliveries before a message is dead-lettered; None retries forever (say so explicitly).
    max_deliveries: int | None = DEFAULT_MAX_DELIVERIES
    dead_letter: str | None = None
    delay_ms: int = 0
    retry: RetryPolicy = RetryPolicy()
    #: The journal holding this subscription's state (assigned by the broker).
    journal: str = ""
    #: Deliveries a second at most, over all its consumers (NATS's ``RateLimit``); None: no
    #: limit. ``queue`` and ``keyed`` subscriptions (core/rate_limits.py).
    rate_limit_per_s: float | None = None
    #: Deliveries at once at most (the bucket); None: a second's worth.
    rate_burst: int | None = None

    def __post_init__(self) -> None:
        check_name("subscription", self.name)
        check_name("topic", self.topic)
        if self.mode not in ("stream", "queue", "keyed"):
            raise InvalidConfig("mode", self.mode, "stream, queue or keyed")
        check_visibility(self.visibility_timeout_ms)
        if self.max_deliveries is not None and not 1 <= self.max_deliveries <= 1000:
            raise InvalidConfig("max_deliveries", self.max_deliveries, "1..1000, or None")
        if self.dead_letter is not None:
            check_name("topic", self.dead_letter)
        if type(self.delay_ms) is not int or not 0 <= self.delay_ms <= MAX_QUEUE_DELAY_MS:
            raise InvalidConfig(
                "delay_ms", self.delay_ms, f"between 0 and {MAX_QUEUE_DELAY_MS} (24 h)"
            )
        check_rate_limit(self.rate_limit_per_s, self.rate_burst)
        if self.rate_limit_per_s is not None and self.mode == "stream":
            raise InvalidConfig("rate_limit_per_s", self.rate_limit_per_s,
                                "is for queue and keyed subscriptions; a stream reads as it "
                                "fetches")  # fmt: skip


def check_visibility(visibility_ms: int) -> int:
    if type(visibility_ms) is not int or not 0 <= visibility_ms <= MAX_VISIBILITY_MS:
        raise InvalidConfig(
            "visibility_timeout_ms", visibility_ms, f"between 0 and {MAX_VISIBILITY_MS} (12 h)"
        )
    return visibility_ms


def check_delay(delay_ms: int) -> int:
    if type(delay_ms) is not int or not 0 <= delay_ms <= MAX_DELAY_MS:
        raise InvalidConfig("delay_ms", delay_ms, f"between 0 and {MAX_DELAY_MS} (365 days)")
    return delay_ms


class Message(msgspec.Struct, frozen=True):
    """A delivered message: the record, where it lives, and which delivery this is."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    delivery_count: int

    @property
    def receipt(self) -> Receipt:
        """What an ack or nack of this delivery carries."""
        return Receipt(self.partition, self.offset, self.delivery_count)

    def header(self, name: str) -> bytes | None:
        """The last value of header ``name``, or None."""
        for header_name, value in reversed(self.headers):
            if header_name == name:
                return value
        return None
