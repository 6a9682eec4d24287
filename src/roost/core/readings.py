"""Everything the broker's observers read, in one pass: ``read_broker(broker)``.

``/metrics`` (admin/metrics.py) and the dashboard's live feed (admin/dashboard/) both turn a
``Reading`` into what they show, so neither computes a number the other does not:

- a subscription's gauges are ``Broker.stats`` (core/stats.py), the very numbers
  ``roost stats`` prints: depth, backlog, in flight, delayed, oldest age, dead letters, lag;
- its counters are the plain ints the core keeps per partition (``PartitionDeliveries``,
  ``StreamSubscription.delivered``);
- a partition's published count is its end offset less the one it opened at.

A reading is a copy, taken synchronously on the event loop: later traffic does not change it,
so two readings give rates by difference (admin/dashboard/snapshot.py). It carries both clock
readings of the broker's (injected) clock: ``now_ms`` for timestamps, ``monotonic_ms`` for the
time between two readings. Counters count since the process started; after a restart, or a
topic or subscription deleted and made again, a counter may be lower than in an earlier reading.

Cost: one ``Broker.stats`` per subscription, which reads one record per partition for the age
of the oldest message; nothing per message.
"""

from __future__ import annotations

import msgspec

from roost.core.broker import Broker
from roost.core.stats import StreamStats, SubscriptionStats
from roost.core.streams import StreamSubscription
from roost.core.subscription import QueueSubscription


class PartitionReading(msgspec.Struct, frozen=True):
    partition: int
    #: Records appended since the process started: end offset less the one it opened at.
    published: int
    start_offset: int
    end_offset: int
    size_bytes: int
    #: A write or fsync failed: the partition refuses writes until it is repaired (in place).
    write_failed: bool
    #: Damage was found on disk: the partition refuses reads and writes (storage/recovery.py).
    quarantined: bool = False
    #: Segments retention deleted since the process started (time, size, until consumed).
    retention_deleted_segments: int = 0


class TopicReading(msgspec.Struct, frozen=True):
    name: str
    partitions: list[PartitionReading]


class Counters(msgspec.Struct, frozen=True):
    """One subscription partition's counters since the process started. A stream counts
    only ``delivered`` (records fetched); it has no leases to ack, nack or expire."""

    delivered: int = 0
    redelivered: int = 0
    acked: int = 0
    nacked: int = 0
    expired: int = 0
    dead_lettered: int = 0
    #: Messages whose TTL passed before they were delivered (core/expiry.py), not leases.
    ttl_expired: int = 0


class SubscriptionReading(msgspec.Struct, frozen=True):
    #: Exactly what ``Broker.stats`` answers for it.
    stats: SubscriptionStats | StreamStats
    #: Per partition, in partition order (``stats.partitions`` has the same order).
    counters: list[Counters]


class Reading(msgspec.Struct, frozen=True):
    now_ms: int
    monotonic_ms: int
    #: Every topic, by name.
    topics: list[TopicReading]
    #: Every subscription, by (topic, name).
    subscriptions: list[SubscriptionReading]


def read_broker(broker: Broker) -> Reading:
    """Every topic and subscription of ``broker`` as it is now (see the module docstring)."""
    topics = [_topic(broker, name) for name in sorted(broker.list_topics())]
    subscriptions = []
    for sub in sorted(broker.subscriptions(), key=lambda s: (s.spec.topic, s.spec.name)):
        stats = broker.stats(sub.spec.topic, sub.spec.name)
        counters: list[Counters] = []  # a mode without counters shows none
        if isinstance(sub, StreamSubscription):
            counters = [Counters(delivered=n) for n in sub.delivered]
        elif isinstance(sub, QueueSubscription):
            for partition in range(len(sub.topic.partitions)):
                state = sub.partition_state(partition)
                counters.append(
                    Counters(
                        state.delivered,
                        state.redelivered,
                        state.acked,
                        state.nacked,
                        state.expired,
                        state.dead_lettered,
                        sub.expired_count(partition),
                    )
                )
        subscriptions.append(SubscriptionReading(stats, counters))
    clock = broker.clock
    return Reading(clock.now_ms(), clock.monotonic_ms(), topics, subscriptions)


def _topic(broker: Broker, name: str) -> TopicReading:
    partitions = [
        PartitionReading(
            partition,
            log.end_offset - log.opened_end_offset,
            log.start_offset,
            log.end_offset,
            log.size_bytes,
            log.failure is not None,
            bool(log.quarantined),
            broker.retention_deleted_segments(name, partition),
        )
        for partition, log in enumerate(broker.engine.topic(name).partitions)
    ]
    return TopicReading(name, partitions)
