"""Delays up to a year, bounded by the topic's retention, at a cost that does not grow with how
many wait (issue 15, item 4)."""

from __future__ import annotations

import pytest

import roost
from roost.clock import ManualClock
from roost.core.broker import Broker
from roost.core.model import MAX_DELAY_MS, SubscriptionSpec
from roost.core.publishing import Outgoing
from roost.core.stats import SubscriptionStats
from roost.errors import InvalidRequest
from roost.storage import LocalEngine, TopicConfig
from tests.embedded_support import run

DAY_MS = 24 * 3600 * 1000
HOUR_MS = 3600 * 1000


def stats_of(broker: Broker, queue: str = "q") -> tuple[int, int, int]:
    stats = broker.stats(queue, queue)
    assert isinstance(stats, SubscriptionStats)
    return stats.depth, stats.delayed, stats.in_flight


def test_one_receive_finds_a_ready_message_behind_50_000_delayed(
    engine: LocalEngine, clock: ManualClock
) -> None:
    """More delayed records ahead than a receive used to read (MAX_SCAN_PER_RECEIVE)."""
    broker = Broker.open(engine, clock)
    broker.create_queue("q", durability="never")
    for first in range(0, 50_000, 1_000):
        broker.publish("q", [Outgoing(value=b"later", delay_ms=DAY_MS + first + i)
                             for i in range(1_000)])  # fmt: skip
    broker.publish("q", [Outgoing(value=b"now")])
    assert stats_of(broker) == (1, 50_000, 0)
    [message] = broker.receive("q", "q", 10)
    assert message.value == b"now"
    assert broker.receive("q", "q", 10) == []
    clock.advance(DAY_MS + 999)
    assert len(broker.receive("q", "q", 1_000)) == 1_000, "due in order of their times"


def test_a_year_long_delay_is_kept_across_restarts_and_snapshots(
    data_dir: str, clock: ManualClock
) -> None:
    year_s = MAX_DELAY_MS / 1000

    async def publish(broker: roost.EmbeddedBroker) -> None:
        await broker.create_queue("q")
        await broker.publish("q", b"in a year", delay=year_s)
        await broker.publish("q", b"at new year", deliver_at_ms=clock.now_ms() + 200 * DAY_MS)
        await broker.publish("q", b"now")

    async def snapshot_and_nack(broker: roost.EmbeddedBroker) -> None:
        assert await depth_delayed(broker) == (1, 2)
        [message] = await broker.receive("q")
        await message.nack(delay=300 * 24 * 3600)
        assert await depth_delayed(broker) == (0, 3)

    async def check(broker: roost.EmbeddedBroker, expected: tuple[int, int]) -> None:
        assert await depth_delayed(broker) == expected

    run(data_dir, clock, publish)
    run(data_dir, clock, snapshot_and_nack)
    engine = LocalEngine.open(data_dir, clock)  # compact the journal into a snapshot
    for sub in Broker.open(engine, clock).subscriptions():
        sub.journal.snapshot(sub.snapshot())
    engine.close()
    clock.advance(200 * DAY_MS - 1)
    run(data_dir, clock, lambda broker: check(broker, (0, 3)))
    clock.advance(1)
    run(data_dir, clock, lambda broker: check(broker, (1, 2)))
    clock.advance(100 * DAY_MS)
    run(data_dir, clock, lambda broker: check(broker, (2, 1)))
    clock.advance(MAX_DELAY_MS - 300 * DAY_MS)
    run(data_dir, clock, lambda broker: check(broker, (3, 0)))


async def depth_delayed(broker: roost.EmbeddedBroker) -> tuple[int, int]:
    stats = await broker.stats("q")
    assert isinstance(stats, SubscriptionStats)
    return stats.depth, stats.delayed


def test_a_delay_past_the_topics_retention_is_refused_naming_both(
    engine: LocalEngine, clock: ManualClock
) -> None:
    broker = Broker.open(engine, clock)
    broker.create_queue("q", durability="never", retention_ms=HOUR_MS)
    too_long = [
        Outgoing(value=b"x", delay_ms=HOUR_MS + 1),
        Outgoing(value=b"x", deliver_at_ms=clock.now_ms() + 2 * HOUR_MS),
    ]
    for message in too_long:
        with pytest.raises(InvalidRequest, match=r"retention_ms=3600000") as refused:
            broker.publish("q", [Outgoing(value=b"fine"), message])
        assert "'q'" in str(refused.value)
    assert engine.topic("q").end_offset(0) == 0, "nothing of a refused publish is appended"
    broker.publish("q", [Outgoing(value=b"x", delay_ms=HOUR_MS)])
    broker.publish("q", [Outgoing(value=b"y")])
    [message] = broker.receive("q", "q")
    with pytest.raises(InvalidRequest, match=r"3600001 ms .* \(retention_ms=3600000\)"):
        broker.nack("q", "q", [message.receipt], delay_ms=HOUR_MS + 1)
    assert broker.nack("q", "q", [message.receipt], delay_ms=HOUR_MS) == []


def test_a_delay_past_a_year_is_refused(engine: LocalEngine, clock: ManualClock) -> None:
    broker = Broker.open(engine, clock)
    broker.create_queue("q", durability="never")
    for message in (
        Outgoing(value=b"x", delay_ms=MAX_DELAY_MS + 1),
        Outgoing(value=b"x", deliver_at_ms=clock.now_ms() + MAX_DELAY_MS + 1),
    ):
        with pytest.raises(InvalidRequest, match="365 days"):
            broker.publish("q", [message])
    broker.publish("q", [Outgoing(value=b"x", delay_ms=MAX_DELAY_MS)])
    assert stats_of(broker) == (0, 1, 0)


def test_purge_takes_scheduled_delays_too(engine: LocalEngine, clock: ManualClock) -> None:
    broker = Broker.open(engine, clock)
    broker.create_queue("q", durability="never")
    broker.publish("q", [Outgoing(value=b"x", delay_ms=HOUR_MS) for _ in range(5)])
    broker.publish("q", [Outgoing(value=b"y")])
    assert stats_of(broker) == (1, 5, 0)
    assert broker.purge("q", "q") == 6
    assert stats_of(broker) == (0, 0, 0)
    clock.advance(HOUR_MS)
    assert broker.receive("q", "q", 10) == [], "purged: never delivered"


def test_a_delayed_publish_confirmed_again_is_scheduled_once(
    engine: LocalEngine, clock: ManualClock
) -> None:
    """A dedup hit or an idempotent producer's retry appends nothing: nothing more waits."""
    broker = Broker.open(engine, clock)
    broker.create_queue("q", durability="never")
    for _ in range(2):
        broker.publish("q", [Outgoing(value=b"x", delay_ms=HOUR_MS, dedup_id="once")])
        broker.publish("q", [Outgoing(value=b"y", delay_ms=HOUR_MS)], producer_id="p", sequence=0)
    assert stats_of(broker) == (0, 2, 0)
    clock.advance(HOUR_MS)
    assert sorted(m.value for m in broker.receive("q", "q", 10)) == [b"x", b"y"]
    assert broker.receive("q", "q", 10) == []
    assert stats_of(broker) == (0, 0, 2)


def test_a_new_subscription_finds_the_delays_published_before_it(
    engine: LocalEngine, clock: ManualClock
) -> None:
    broker = Broker.open(engine, clock)
    broker.create_topic("t", TopicConfig(durability="never"))
    broker.publish("t", [Outgoing(value=b"later", delay_ms=HOUR_MS), Outgoing(value=b"now")])
    broker.create_subscription(
        SubscriptionSpec(name="s", topic="t", start="earliest", max_deliveries=None)
    )
    stats = broker.stats("t", "s")
    assert isinstance(stats, SubscriptionStats)
    assert (stats.depth, stats.delayed) == (1, 1)
    [message] = broker.receive("t", "s", 10)
    assert message.value == b"now"
    assert broker.ack("t", "s", [message.receipt]) == []
    clock.advance(HOUR_MS)
    assert [m.value for m in broker.receive("t", "s", 10)] == [b"later"]


def test_a_fifo_queue_keeps_long_delays_in_key_order_across_a_restart(
    data_dir: str, clock: ManualClock
) -> None:
    """`keyed` reads delays in order (a delayed message holds its key's later ones)."""

    async def publish(broker: roost.EmbeddedBroker) -> None:
        await broker.create_queue("q", fifo=True)
        await broker.publish("q", b"a1", key=b"a", delay=200 * 24 * 3600)
        await broker.publish("q", b"a2", key=b"a")
        await broker.publish("q", b"b1", key=b"b")

    async def before(broker: roost.EmbeddedBroker) -> None:
        assert (await depth_delayed(broker))[1] >= 1, "a1 is delayed from the start"
        [message] = await broker.receive("q", max_messages=10)
        assert message.value == b"b1", "a2 waits behind a1"
        await message.ack()
        assert await depth_delayed(broker) == (0, 2)

    async def after(broker: roost.EmbeddedBroker) -> None:
        [message] = await broker.receive("q", max_messages=10)
        assert message.value == b"a1"
        await message.ack()
        assert [m.value for m in await broker.receive("q", max_messages=10)] == [b"a2"]

    run(data_dir, clock, publish)
    run(data_dir, clock, before)
    clock.advance(200 * DAY_MS)
    run(data_dir, clock, after)


def test_under_always_a_delayed_publish_is_confirmed_with_its_schedule(
    engine: LocalEngine, clock: ManualClock
) -> None:
    """The confirm awaits the subscription journal's ``DELAYED`` entry too, so a confirmed
    delay is known after a power loss without reading the log."""
    broker = Broker.open(engine, clock)
    broker.create_queue("q")  # durability always
    [sub] = [s for s in broker.subscriptions() if s.spec.name == "q"]
    plain = broker.publish("q", [Outgoing(value=b"now")])
    assert [log for log, _ in plain.durability] == [engine.topic("q").log(0)]
    delayed = broker.publish("q", [Outgoing(value=b"later", delay_ms=HOUR_MS)])
    waits = dict(delayed.durability)
    assert waits[sub.journal.log] == sub.journal.log.end_offset
    assert engine.topic("q").log(0) in waits
