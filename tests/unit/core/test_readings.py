"""``read_broker``: the one reading /metrics and the dashboard share (roost.core.readings).

A real ``Broker`` over a ``LocalEngine`` on a ``ManualClock``; topics are ``durability="never"``
so appends are readable at once. Nothing sleeps.
"""

from __future__ import annotations

from roost.clock import ManualClock
from roost.core.broker import Broker
from roost.core.model import SubscriptionSpec
from roost.core.publishing import Outgoing
from roost.core.readings import Counters, read_broker
from roost.core.stats import StreamStats, SubscriptionStats
from roost.storage import LocalEngine, TopicConfig


def test_a_reading_holds_broker_stats_and_the_counters(
    engine: LocalEngine, clock: ManualClock
) -> None:
    broker = Broker.open(engine, clock)
    broker.create_queue("jobs", durability="never", partitions=2, max_deliveries=1)
    broker.create_topic("log", TopicConfig(durability="never"))
    broker.create_subscription(
        SubscriptionSpec(name="g", topic="log", mode="stream", start="earliest")
    )
    broker.publish("jobs", [Outgoing(value=b"%d" % i, partition=i % 2) for i in range(5)])
    broker.publish("log", [Outgoing(value=b"x")] * 3)
    clock.advance(1_500)
    taken = broker.receive("jobs", "jobs", max_messages=3)
    broker.ack("jobs", "jobs", [taken[0].receipt])
    broker.nack("jobs", "jobs", [taken[1].receipt], delay_ms=0, error="boom")
    broker.tick()  # the dead-letter append is confirmed (never): the original is done
    member = broker.stream("log", "g").join()
    broker.stream("log", "g").fetch(member.member_id, member.generation, max_records=2)

    reading = read_broker(broker)
    assert (reading.now_ms, reading.monotonic_ms) == (clock.now_ms(), clock.monotonic_ms())
    assert [t.name for t in reading.topics] == ["jobs", "jobs.dlq", "log"]
    jobs = reading.topics[0]
    assert [(p.published, p.start_offset, p.end_offset) for p in jobs.partitions] == [
        (3, 0, 3),
        (2, 0, 2),
    ]
    assert all(p.size_bytes > 0 and not p.write_failed for p in jobs.partitions)

    queue, stream = reading.subscriptions
    assert queue.stats == broker.stats("jobs", "jobs"), "the gauges are Broker.stats, as is"
    assert isinstance(queue.stats, SubscriptionStats)
    assert stream.stats == broker.stats("log", "g")
    assert isinstance(stream.stats, StreamStats)
    assert sum(c.delivered for c in queue.counters) == 3
    assert sum(c.acked for c in queue.counters) == 1
    assert sum(c.nacked for c in queue.counters) == 1
    assert sum(c.dead_lettered for c in queue.counters) == 1, "max_deliveries=1: nack kills"
    assert len(queue.counters) == 2
    assert stream.counters == [Counters(delivered=2)]


def test_a_reading_is_a_copy_later_traffic_does_not_change(
    engine: LocalEngine, clock: ManualClock
) -> None:
    broker = Broker.open(engine, clock)
    broker.create_queue("jobs", durability="never")
    before = read_broker(broker)
    broker.publish("jobs", [Outgoing(value=b"a")])
    broker.receive("jobs", "jobs", max_messages=1)
    after = read_broker(broker)
    assert before.topics[0].partitions[0].published == 0
    assert before.subscriptions[0].counters[0].delivered == 0
    assert after.subscriptions[0].counters[0].delivered == 1
    assert after.subscriptions[0].stats.in_flight == 1  # type: ignore[union-attr]
