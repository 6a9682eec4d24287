"""Time and size retention run by themselves: after a segment roll, on the host's timer, and
at start — not only when a test calls ``Topic.enforce_retention()`` (issue 15, bug 1)."""

from __future__ import annotations

import asyncio

import pytest

import roost
from roost.clock import ManualClock
from roost.core.broker import Broker
from roost.core.publishing import Outgoing
from roost.core.readings import read_broker
from roost.storage import LocalEngine, TopicConfig
from tests.embedded_support import run

DAY_MS = 24 * 3600 * 1000


async def first_tick() -> None:
    """Let the host's timer task run its first tick (it ticks at once when started)."""
    for _ in range(10):
        await asyncio.sleep(0)


def test_a_roll_applies_time_and_size_retention(data_dir: str, clock: ManualClock) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        await broker.create_topic("t", retention=60, retention_bytes=1)
        await broker.publish("t", b"old")
        clock.advance(8 * DAY_MS)
        await broker.publish("t", b"new")  # the active segment is 8 days old: it rolls
        [partition] = (await broker.describe_topic("t")).partitions
        assert (partition.start_offset, partition.segments) == (1, 1), partition

    run(data_dir, clock, body)


def test_time_retention_applies_at_start(data_dir: str, clock: ManualClock) -> None:
    async def first(broker: roost.EmbeddedBroker) -> None:
        await broker.create_topic("t", retention=60)
        for value in (b"a", b"b", b"c"):
            await broker.publish("t", value)

    async def eight_days_later(broker: roost.EmbeddedBroker) -> None:
        await first_tick()
        [partition] = (await broker.describe_topic("t")).partitions
        # Even the active segment goes once all of it is past retention (as Kafka rolls it).
        assert (partition.start_offset, partition.end_offset) == (3, 3), partition
        await broker.publish("t", b"d")
        await broker.create_subscription("t", "reader", start="earliest")
        [message] = await broker.receive("t", "reader", max_messages=10)
        assert (message.offset, message.value) == (3, b"d")

    run(data_dir, clock, first)
    clock.advance(8 * DAY_MS)
    run(data_dir, clock, eight_days_later)


def test_queue_retention_deletes_unconsumed_messages(data_dir: str, clock: ManualClock) -> None:
    """SQS's retention period: a queue's messages older than ``retention`` are gone."""

    async def first(broker: roost.EmbeddedBroker) -> None:
        await broker.create_queue("q", retention=3600)
        await broker.publish("q", b"stale")

    async def later(broker: roost.EmbeddedBroker) -> None:
        await first_tick()
        assert await broker.receive("q", max_messages=10) == []
        assert (await broker.stats("q")).depth == 0

    run(data_dir, clock, first)
    clock.advance(3600 * 1000 + 1)
    run(data_dir, clock, later)


# -- the tick: what is due, and only that ----------------------------------------------------


@pytest.fixture
def broker(engine: LocalEngine, clock: ManualClock) -> Broker:
    return Broker.open(engine, clock)


SMALL = dict(durability="never", segment_max_bytes=4096, max_record_bytes=2048)


def test_the_tick_deletes_segments_when_they_expire(broker: Broker, clock: ManualClock) -> None:
    broker.create_topic("t", TopicConfig(retention_ms=60_000, **SMALL))  # type: ignore[arg-type]
    for _ in range(20):
        broker.publish("t", [Outgoing(value=b"o" * 500)])
    clock.advance(30_000)
    for _ in range(20):
        broker.publish("t", [Outgoing(value=b"n" * 500)])
    log = broker.engine.topic("t").log(0)
    tick = broker.tick()
    assert log.start_offset == 0
    assert tick.next_deadline_ms is not None and tick.next_deadline_ms <= clock.now_ms() + 30_001
    clock.advance(tick.next_deadline_ms - clock.now_ms())
    tick = broker.tick()
    assert 0 < log.start_offset <= 20, "the old segments went, the new ones stay"
    assert "t" in tick.topics
    assert broker.retention_deleted_segments("t", 0) > 0


def test_a_topic_without_retention_keeps_everything(broker: Broker, clock: ManualClock) -> None:
    broker.create_topic("t", TopicConfig(**SMALL))  # type: ignore[arg-type]
    for _ in range(40):
        broker.publish("t", [Outgoing(value=b"x" * 500)])
    clock.advance(365 * DAY_MS)
    assert broker.tick().next_deadline_ms is None
    assert broker.engine.topic("t").log(0).start_offset == 0


def test_size_retention_applies_when_a_segment_rolls(broker: Broker) -> None:
    broker.create_topic("t", TopicConfig(retention_bytes=10_000, **SMALL))  # type: ignore[arg-type]
    for _ in range(100):
        broker.publish("t", [Outgoing(value=b"s" * 500)])
    info = broker.describe_topic("t").partitions[0]
    assert info.start_offset > 0
    assert 10_000 <= info.size_bytes < 10_000 + 4096
    assert broker.retention_deleted_segments("t", 0) > 0


def test_deleted_segments_are_counted_for_the_metrics(broker: Broker, clock: ManualClock) -> None:
    broker.create_topic("t", TopicConfig(retention_ms=1_000, **SMALL))  # type: ignore[arg-type]
    for _ in range(20):
        broker.publish("t", [Outgoing(value=b"x" * 500)])
    segments = broker.describe_topic("t").partitions[0].segments
    assert segments > 1
    clock.advance(1_001)
    broker.tick()
    [partition] = next(t for t in read_broker(broker).topics if t.name == "t").partitions
    assert (partition.start_offset, partition.end_offset) == (20, 20), "every record expired"
    assert partition.retention_deleted_segments == segments, "the active one rolled and went"
