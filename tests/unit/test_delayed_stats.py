"""``stats()`` never counts a delayed message as ready depth: not before a receive happened to
read it, not after a restart (issue 15, bug 6)."""

from __future__ import annotations

import roost
from roost.clock import ManualClock
from roost.core.stats import SubscriptionStats
from tests.embedded_support import run

HOUR_S = 3600


async def depth_and_delayed(broker: roost.EmbeddedBroker, queue: str = "q") -> tuple[int, int]:
    stats = await broker.stats(queue)
    assert isinstance(stats, SubscriptionStats)
    assert stats.depth + stats.delayed + stats.in_flight == stats.backlog, stats
    return stats.depth, stats.delayed


def test_delayed_publishes_are_not_depth(data_dir: str, clock: ManualClock) -> None:
    async def first(broker: roost.EmbeddedBroker) -> None:
        await broker.create_queue("q")
        for i in range(3):
            await broker.publish("q", b"later%d" % i, delay=60)
        await broker.publish("q", b"now")
        assert await depth_and_delayed(broker) == (1, 3)

    async def after_restart(broker: roost.EmbeddedBroker) -> None:
        assert await depth_and_delayed(broker) == (1, 3)
        clock.advance(60_000)
        assert await depth_and_delayed(broker) == (4, 0), "due now: ready"
        assert len(await broker.receive("q", max_messages=10)) == 4

    run(data_dir, clock, first)
    run(data_dir, clock, after_restart)


def test_a_long_nack_delay_is_not_depth_after_a_restart(data_dir: str, clock: ManualClock) -> None:
    async def first(broker: roost.EmbeddedBroker) -> None:
        await broker.create_queue("q")
        await broker.publish("q", b"job")
        [message] = await broker.receive("q")
        await message.nack(delay=HOUR_S)
        assert await depth_and_delayed(broker) == (0, 1)

    async def after_restart(broker: roost.EmbeddedBroker) -> None:
        assert await depth_and_delayed(broker) == (0, 1)
        clock.advance(HOUR_S * 1000)
        assert await depth_and_delayed(broker) == (1, 0)

    run(data_dir, clock, first)
    run(data_dir, clock, after_restart)


def test_a_queue_delay_is_not_depth(data_dir: str, clock: ManualClock) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        await broker.create_queue("q", delay=30)
        await broker.publish("q", b"a")
        clock.advance(10_000)
        await broker.publish("q", b"b")
        assert await depth_and_delayed(broker) == (0, 2)
        clock.advance(20_000)
        assert await depth_and_delayed(broker) == (1, 1)
        assert [m.value for m in await broker.receive("q", max_messages=10)] == [b"a"]
        assert await depth_and_delayed(broker) == (0, 1)

    run(data_dir, clock, body)
