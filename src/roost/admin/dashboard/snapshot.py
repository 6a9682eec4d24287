"""What the dashboard shows at one moment: a ``Reading`` (core/readings.py) plus rates.

    snapshot(previous, current)    # pure: two readings in, one Snapshot out

A rate is a counter's increase between two readings divided by the time between them, by the
broker's monotonic clock, so tests give the readings they want and nothing waits. The gauges
are passed through untouched: a subscription's ``stats`` is exactly what ``Broker.stats`` (and
so ``roost stats`` and ``/metrics``) says.

A rate is None, "not known", rather than a guess:

- in the first snapshot (no previous reading), or when no time passed between the two;
- for a topic or subscription the previous reading did not have;
- when a counter went down: the broker restarted, or the topic or subscription was deleted
  and made again, so the difference means nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from roost.core.model import is_internal
from roost.core.readings import (
    Counters,
    PartitionReading,
    Reading,
    SubscriptionReading,
    TopicReading,
)
from roost.core.stats import StreamStats, SubscriptionStats


class Rates(msgspec.Struct, frozen=True):
    """Per second, over the time between the two readings; None: not known."""

    published: float | None = None
    delivered: float | None = None
    acked: float | None = None
    dead_lettered: float | None = None


class TopicLine(msgspec.Struct, frozen=True):
    name: str
    #: Offsets, sizes and published counts, as read.
    partitions: list[PartitionReading]
    #: Records stored (end less start offset, summed over partitions).
    records: int
    size_bytes: int
    published_per_s: float | None
    #: Names of its subscriptions.
    subscriptions: list[str]


class SubscriptionLine(msgspec.Struct, frozen=True):
    #: ``Broker.stats`` as it is: per partition depth, lag, owners... (core/stats.py).
    stats: SubscriptionStats | StreamStats
    #: ``published``: the subscription's topic's; the others: the subscription's own.
    rates: Rates


class Snapshot(msgspec.Struct, frozen=True):
    #: When it was read, ms since the epoch (the charts' time axis).
    at_ms: int
    #: The time the rates cover; None in the first snapshot.
    interval_ms: int | None
    topics: list[TopicLine]
    subscriptions: list[SubscriptionLine]


def snapshot(previous: Reading | None, current: Reading) -> Snapshot:
    """``current`` with the rates since ``previous`` (see the module docstring)."""
    elapsed_ms = None
    if previous is not None and current.monotonic_ms > previous.monotonic_ms:
        elapsed_ms = current.monotonic_ms - previous.monotonic_ms
    before_topics = {t.name: t for t in previous.topics} if previous else {}
    before_subs = {_key(s): s for s in previous.subscriptions} if previous else {}

    published: dict[str, float | None] = {}
    topics = []
    for topic in current.topics:
        before = before_topics.get(topic.name)
        rate = _rate(_published(topic), _published(before) if before else None, elapsed_ms)
        published[topic.name] = rate
        topics.append(_topic_line(topic, rate, current.subscriptions))

    subscriptions = []
    for sub in current.subscriptions:
        if is_internal(sub.stats.subscription):
            continue  # Roost's own (a redrive's, a CLI peek's): not a queue to watch
        was = before_subs.get(_key(sub))
        then = _sum(was.counters) if was is not None else None
        rates = _rates(published.get(sub.stats.topic), _sum(sub.counters), then, elapsed_ms)
        subscriptions.append(SubscriptionLine(sub.stats, rates))
    return Snapshot(current.now_ms, elapsed_ms, topics, subscriptions)


def _topic_line(
    topic: TopicReading, published_per_s: float | None, subs: Iterable[SubscriptionReading]
) -> TopicLine:
    return TopicLine(
        topic.name,
        topic.partitions,
        sum(p.end_offset - p.start_offset for p in topic.partitions),
        sum(p.size_bytes for p in topic.partitions),
        published_per_s,
        [s.stats.subscription for s in subs if s.stats.topic == topic.name],
    )


def _key(sub: SubscriptionReading) -> tuple[str, str]:
    return sub.stats.topic, sub.stats.subscription


def _published(topic: TopicReading) -> int:
    return sum(p.published for p in topic.partitions)


def _sum(counters: Iterable[Counters]) -> Counters:
    total = Counters()
    for c in counters:
        total = Counters(
            total.delivered + c.delivered,
            total.redelivered + c.redelivered,
            total.acked + c.acked,
            total.nacked + c.nacked,
            total.expired + c.expired,
            total.dead_lettered + c.dead_lettered,
        )
    return total


def _rates(
    published_per_s: float | None, now: Counters, then: Counters | None, elapsed_ms: int | None
) -> Rates:
    def rate(field: str) -> float | None:
        before = None if then is None else getattr(then, field)
        return _rate(getattr(now, field), before, elapsed_ms)

    return Rates(published_per_s, rate("delivered"), rate("acked"), rate("dead_lettered"))


def _rate(now: int, then: int | None, elapsed_ms: int | None) -> float | None:
    if then is None or elapsed_ms is None or now < then:
        return None
    return (now - then) * 1000 / elapsed_ms
