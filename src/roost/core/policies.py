"""A topic's core-level policies: backlog limits, overflow, retention until consumed.

Storage keeps bytes (``TopicConfig``); these say what the broker does with them.

- **Backlog** of a partition: the messages published and not yet consumed by the slowest
  subscription — ``end_offset`` minus the lowest ack floor (queue, keyed) or committed offset
  (stream). A topic without subscriptions has no backlog: nobody is waiting to read it.
  Bytes are estimated from the partition's average record size (segments are not indexed by
  offset-to-bytes); message counts are exact.
- **Overflow**, when a publish would take a partition past ``max_backlog_messages`` or
  ``max_backlog_bytes``: ``reject`` refuses it with ``BacklogFull`` (retriable), ``block`` holds
  the publish until consumers make room or ``block_timeout_ms`` passes (then ``BacklogFull``),
  ``drop_oldest`` makes room by marking the oldest messages consumed for every subscription.
- **Retention until consumed**: segments wholly below every subscription's floor are deleted.
  Queues have it; plain topics keep their storage retention (time, size) only.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from roost.errors import InvalidConfig

Overflow = Literal["reject", "block", "drop_oldest"]
MAX_BLOCK_MS = 60_000


class TopicPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    max_backlog_messages: int | None = None
    max_backlog_bytes: int | None = None
    overflow: Overflow = "reject"
    block_timeout_ms: int = 5_000
    retain_until_consumed: bool = False
    #: How long a dedup id (or content hash) keeps a republish from being appended again.
    dedup_window_ms: int = 5 * 60 * 1000
    #: Deduplicate on a hash of key, value and headers when a message has no dedup id.
    content_dedup: bool = False
    #: ``drop_oldest`` copies what it drops to each subscription's dead-letter topic, with
    #: ``x-roost-death-reason: overflow`` (RabbitMQ's drop-head with a dead-letter exchange).
    dead_letter_dropped: bool = False

    def __post_init__(self) -> None:
        for name in ("max_backlog_messages", "max_backlog_bytes"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value < 1):
                raise InvalidConfig(name, value, "a positive int, or None for no limit")
        if self.overflow not in ("reject", "block", "drop_oldest"):
            raise InvalidConfig("overflow", self.overflow, "reject, block or drop_oldest")
        if not 1000 <= self.dedup_window_ms <= 24 * 3600 * 1000:
            raise InvalidConfig("dedup_window_ms", self.dedup_window_ms, "1 s .. 24 h")
        if self.dead_letter_dropped and self.overflow != "drop_oldest":
            raise InvalidConfig(
                "dead_letter_dropped", True, "only with overflow='drop_oldest' (nothing else drops)"
            )
        if not 0 <= self.block_timeout_ms <= MAX_BLOCK_MS:
            raise InvalidConfig("block_timeout_ms", self.block_timeout_ms, f"0..{MAX_BLOCK_MS}")

    @property
    def limited(self) -> bool:
        return self.max_backlog_messages is not None or self.max_backlog_bytes is not None

    def excess(self, backlog: int, adding: int, average_bytes: float) -> int:
        """How many messages over the limits the partition would be after ``adding``."""
        over = 0
        if self.max_backlog_messages is not None:
            over = max(over, backlog + adding - self.max_backlog_messages)
        if self.max_backlog_bytes is not None and average_bytes > 0:
            allowed = int(self.max_backlog_bytes // average_bytes)
            over = max(over, backlog + adding - allowed)
        return over


DEFAULT_POLICY = TopicPolicy()
QUEUE_POLICY = TopicPolicy(retain_until_consumed=True)
