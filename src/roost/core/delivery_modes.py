"""The one protocol every subscription mode implements, and the table that opens each mode.

    sub = open_subscription(spec, engine, journal, clock)   # by ``spec.mode``
    sub.watch(on_done, on_deadline, on_snapshot_due)
    deadline_ms = sub.tick()
    floor = sub.floor(partition)            # below it, this subscription is done

The broker holds every subscription as a ``Subscription`` and asks only this protocol about
it: its position per partition (for retention and backpressure), its time (``tick``), its
journal, its stats and what it still holds (``peek``). What a consumer does is the mode's own
surface — ``receive``/``ack``/``nack``/``extend`` on ``QueueSubscription`` (`queue`, `keyed`),
``join``/``fetch``/``commit`` on ``StreamSubscription`` — and the broker checks the kind once,
where a command names a subscription (core/registry.py).

A new delivery mode (priorities, fair queues, ...) is a class implementing this protocol plus
one row in ``OPENERS``; nothing else in the broker changes. Rules every mode keeps:

- ``floor(p)`` never goes down except by ``reset``: retention deletes below the slowest floor.
- ``watch``'s callbacks are called on every change they describe (a floor that may have moved,
  a deadline that may be earlier than the last ``tick`` answered, a snapshot that became due),
  so the broker never has to look at a subscription that did not report.
- ``tick`` costs what is due; it returns the next deadline (ms on the clock) or None.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from roost.clock import Clock
from roost.core.inspection import Peeked
from roost.core.model import Mode, SubscriptionSpec
from roost.core.stats import StreamStats, SubscriptionStats
from roost.core.streams import StreamSubscription
from roost.core.subscription import PendingDeadLetter, QueueSubscription
from roost.storage import Journal, LocalEngine, Topic
from roost.storage.log import PartitionLog


class Subscription(Protocol):
    """A named reader of a topic, in any mode, as the broker sees it."""

    spec: SubscriptionSpec
    topic: Topic
    journal: Journal
    #: Where it dead-letters (None: it never does, as a stream).
    dead_letter: Topic | None

    def watch(
        self,
        on_done: Callable[[int], None],
        on_deadline: Callable[[int], None],
        on_snapshot_due: Callable[[], None],
    ) -> None: ...

    def tick(self) -> int | None:
        """Do what is due; the next deadline (ms), or None."""
        ...

    @property
    def pending_dead_letters(self) -> list[PendingDeadLetter]:
        """Dead-letter appends the host must await before a tick can settle them."""
        ...

    # -- position, per partition ----------------------------------------------------------

    def floor(self, partition: int) -> int:
        """Below this offset the subscription is done with ``partition``."""
        ...

    def unconsumed(self, partition: int) -> int:
        """Messages of ``partition`` up to its end that it is not done with (its backlog)."""
        ...

    def drop_below(self, partition: int, offset: int) -> int:
        """Count everything below ``offset`` as consumed (overflow ``drop_oldest``)."""
        ...

    def seen_ends(self) -> list[int]:
        """Per partition, one past the highest offset its journal names."""
        ...

    def skip(self, partition: int, start: int, end: int) -> None:
        """``[start, end)`` of ``partition`` will be a gap batch (recovery)."""
        ...

    def announce_delays(
        self, partition: int, delays: list[tuple[int, int]]
    ) -> list[tuple[PartitionLog, int]]:
        """``(offset, visible_at_ms)`` of delayed records just published to ``partition``;
        what the publish's confirm must await besides its records."""
        ...

    def purge(self) -> int:
        """Finish every confirmed message; how many it skipped."""
        ...

    # -- operators ------------------------------------------------------------------------

    def stats(self, now_ms: int) -> SubscriptionStats | StreamStats: ...

    def peek(self, now_ms: int, max_messages: int, partition: int | None) -> list[Peeked]: ...

    # -- journal --------------------------------------------------------------------------

    @property
    def snapshot_due(self) -> bool: ...

    def snapshot(self) -> bytes: ...


def _open_queue(
    spec: SubscriptionSpec, engine: LocalEngine, journal: Journal, clock: Clock
) -> Subscription:
    dead_letter = engine.topic(spec.dead_letter) if spec.dead_letter else None
    return QueueSubscription.open(spec, engine.topic(spec.topic), journal, clock, dead_letter)


def _open_stream(
    spec: SubscriptionSpec, engine: LocalEngine, journal: Journal, clock: Clock
) -> Subscription:
    return StreamSubscription.open(spec, engine.topic(spec.topic), journal, clock)


Opener = Callable[[SubscriptionSpec, LocalEngine, Journal, Clock], Subscription]

#: Mode -> how a subscription of that mode resumes from its journal.
OPENERS: dict[Mode, Opener] = {
    "queue": _open_queue,
    "keyed": _open_queue,  # a queue that parks all but one message per key
    "stream": _open_stream,
}


def open_subscription(
    spec: SubscriptionSpec, engine: LocalEngine, journal: Journal, clock: Clock
) -> Subscription:
    """Resume ``spec`` from ``journal`` in its mode (a new journal starts at ``spec.start``)."""
    return OPENERS[spec.mode](spec, engine, journal, clock)
