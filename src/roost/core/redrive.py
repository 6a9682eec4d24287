"""Redrive: move dead letters back to where they came from, all of them or a filtered subset.

A dead-letter topic is read by an internal queue subscription, ``roost-redrive``. A redrive
run leases dead letters a batch at a time. Each one that matches the filter is published again
to its source topic (its ``x-roost-source-topic`` header, or ``to``) without the ``x-roost-*``
headers, and acked once that copy is durable. Each one that does not match (or cannot be moved:
no source, a destination gone or full) stays leased until the run ends, then is released, so one
run looks at every dead letter once and a later run can look again. Copying before acking makes
a move at-least-once: a crash between the two moves that message twice, never zero times. The
rate is the host's to bound (``Host.redrive``).

Like SQS's message move tasks, a moved message starts over: a new offset, delivery count 0.

``Redrives`` is the broker's side of it: it makes the ``roost-redrive`` subscription on first
use, runs a batch through the broker's own publish, and corrects a subscription's
``dead_letters`` count and an operator's peek for what was redriven already.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import msgspec

from roost.clock import Clock
from roost.core.inspection import Cursor, Peeked, peek_queue, peek_topic
from roost.core.model import DELIVER_AT_HEADER, Message, SubscriptionSpec
from roost.core.publishing import Outgoing, Published, PublishOutcome
from roost.core.registry import Registry
from roost.core.stats import SubscriptionStats
from roost.core.subscription import DLQ_HEADERS, QueueSubscription
from roost.errors import InvalidRequest, RoostError
from roost.receipt import Receipt
from roost.storage import LocalEngine
from roost.storage.log import PartitionLog

REDRIVE_SUBSCRIPTION = "roost-redrive"
#: How long a redrive run holds the dead letters it skips (it releases them when it ends).
HOLD_MS = 3600 * 1000
_STRIPPED = {*DLQ_HEADERS, DELIVER_AT_HEADER}


class RedriveFilter(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which dead letters to move; every field given must match (no fields: all)."""

    source_topic: str | None = None
    key: bytes | None = None
    error_contains: str | None = None
    #: Header name -> value the dead letter must carry.
    headers: dict[str, bytes] | None = None

    def matches(self, message: Message) -> bool:
        if self.source_topic is not None:
            # A letter that names no source is not from that source: it stays, unmatched.
            source = message.header("x-roost-source-topic")
            if source is None or source.decode(errors="replace") != self.source_topic:
                return False
        if self.key is not None and message.key != self.key:
            return False
        if self.error_contains is not None:
            error = (message.header("x-roost-last-error") or b"").decode(errors="replace")
            if self.error_contains not in error:
                return False
        return all(message.header(name) == value for name, value in (self.headers or {}).items())


TaskState = Literal["running", "completed", "cancelled", "failed"]


class RedriveTask(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    dead_letter_topic: str
    where: RedriveFilter
    rate_per_s: float
    #: Where the letters go; None: back to each one's source topic.
    to: str | None
    state: TaskState
    #: Moved so far (saved at most once a second while running).
    moved: int
    #: Dead letters waiting when it started (not all may match the filter).
    to_move: int
    started_ms: int
    finished_ms: int | None = None
    error: str | None = None


class RedriveBatch(msgspec.Struct):
    """One batch of a run: the dead letters copied back (to ack once the copies are durable),
    those skipped (still held until the run ends), and why any could not be moved."""

    moved: list[Receipt]
    skipped: list[Receipt]
    errors: list[str]
    exhausted: bool


def redrive_spec(dead_letter_topic: str) -> SubscriptionSpec:
    return SubscriptionSpec(
        name=REDRIVE_SUBSCRIPTION, topic=dead_letter_topic, mode="queue", start="earliest",
        max_deliveries=None,
    )  # fmt: skip


def source_of(message: Message) -> str:
    source = message.header("x-roost-source-topic")
    if source is None:
        raise InvalidRequest(
            f"{message.topic}/{message.partition}@{message.offset} has no x-roost-source-topic "
            "header: it was not dead-lettered by Roost; redrive it with an explicit destination"
        )
    return source.decode()


def original_headers(message: Message) -> tuple[tuple[str, bytes], ...]:
    return tuple((name, value) for name, value in message.headers if name not in _STRIPPED)


Publish = Callable[[str, Sequence[Outgoing]], PublishOutcome]


class Redrives:
    """Redrive runs over the broker's subscriptions, publishing through ``publish``."""

    def __init__(
        self,
        engine: LocalEngine,
        clock: Clock,
        registry: Registry,
        create: Callable[[SubscriptionSpec], object],
        publish: Publish,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._registry = registry
        self._create = create
        self._publish = publish

    def _reader(self, dead_letter_topic: str) -> QueueSubscription | None:
        sub = self._registry.find(dead_letter_topic, REDRIVE_SUBSCRIPTION)
        return sub if isinstance(sub, QueueSubscription) else None

    def batch(
        self, dead_letter_topic: str, where: RedriveFilter, max_messages: int, to: str | None
    ) -> tuple[RedriveBatch, PublishOutcome]:
        """Copy one batch of matching dead letters back. Nothing is acked here: once the
        outcome is durable, ``finish`` acks ``batch.moved``.

        A dead letter that cannot be moved (no source header, a destination that is gone or
        full) is skipped like a non-matching one, with the reason in ``batch.errors``.
        """
        if self._registry.find(dead_letter_topic, REDRIVE_SUBSCRIPTION) is None:
            self._create(redrive_spec(dead_letter_topic))
        sub = self._registry.queue(dead_letter_topic, REDRIVE_SUBSCRIPTION)
        messages = sub.receive(max_messages, HOLD_MS)
        published: list[Published] = []
        durability: list[tuple[PartitionLog, int]] = []
        moved: list[Receipt] = []
        skipped: list[Receipt] = []
        errors: list[str] = []
        for message in messages:
            if not where.matches(message):
                skipped.append(message.receipt)
                continue
            try:
                part = self._publish(
                    to or source_of(message),
                    [Outgoing(value=message.value, key=message.key,
                              headers=original_headers(message))],
                )  # fmt: skip
            except RoostError as e:
                skipped.append(message.receipt)
                errors.append(f"{message.topic}/{message.partition}@{message.offset}: {e}")
                continue
            published.extend(part.published)
            durability.extend(part.durability)
            moved.append(message.receipt)
        outcome = PublishOutcome(published, durability)
        return RedriveBatch(moved, skipped, errors, exhausted=not messages), outcome

    def finish(self, dead_letter_topic: str, moved: Sequence[Receipt]) -> None:
        """The copies of ``moved`` are durable at their destination: ack the dead letters."""
        sub = self._reader(dead_letter_topic)
        if sub is not None and moved:
            sub.ack(moved)

    def release(self, dead_letter_topic: str, receipts: Sequence[Receipt]) -> None:
        """End a redrive run: the dead letters it skipped are visible to the next run."""
        sub = self._reader(dead_letter_topic)
        if sub is not None and receipts:
            sub.nack(receipts, delay_ms=0)

    def peek(
        self,
        dead_letter_topic: str,
        max_messages: int,
        partition: int | None,
        after: Cursor | None = None,
    ) -> list[Peeked]:
        """The dead letters not yet redriven (those a running redrive holds are ``leased``);
        without any redrive so far, every record of the topic. Past ``after`` (paging)."""
        sub = self._reader(dead_letter_topic)
        if sub is not None:
            return peek_queue(sub, self._clock.now_ms(), max_messages, partition, after)
        topic = self._engine.topic(dead_letter_topic)
        return peek_topic(topic, max_messages, partition, after=after)

    def waiting(self, dead_letter_topic: str) -> int:
        """Dead letters not yet redriven (every record, before any redrive)."""
        sub = self._reader(dead_letter_topic)
        if sub is not None:
            return sub.stats(self._clock.now_ms()).backlog
        topic = self._engine.topic(dead_letter_topic)
        return sum(log.end_offset - log.start_offset for log in topic.partitions)

    def uncount_redriven(self, stats: SubscriptionStats) -> SubscriptionStats:
        """``stats`` with ``dead_letters`` less those redriven: once redriven, a dead letter
        is gone from the count, though its record stays."""
        sub = self._reader(stats.dead_letter_topic or "")
        if sub is None:
            return stats
        waiting = sub.stats(self._clock.now_ms()).backlog
        return msgspec.structs.replace(stats, dead_letters=waiting)
