"""``publish_to_exchange`` honours ``overflow="block"`` as ``publish`` does: it waits for room
(bounded by the topic's ``block_timeout``) instead of raising ``BacklogFull`` (issue 15,
bug 5)."""

from __future__ import annotations

import asyncio

import pytest

import roost
from roost.clock import ManualClock
from roost.errors import BacklogFull
from tests.embedded_support import run


async def bound_queue(broker: roost.EmbeddedBroker, block_timeout: float) -> None:
    await broker.create_queue("q", max_backlog=1, overflow="block", block_timeout=block_timeout)
    await broker.create_topic("audit")
    await broker.create_subscription("audit", "reader", start="earliest")
    await broker.declare_exchange("fan", "fanout")
    await broker.bind("fan", "q")
    await broker.bind("fan", "audit")
    await broker.publish_to_exchange("fan", "", b"1")


def test_an_exchange_publish_waits_for_room_then_publishes(
    data_dir: str, clock: ManualClock
) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        await bound_queue(broker, block_timeout=10)
        blocked = asyncio.create_task(broker.publish_to_exchange("fan", "", b"2"))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not blocked.done(), blocked
        assert len(await broker.receive("audit", "reader", max_messages=10)) == 1, (
            "nothing of the blocked publish is stored while it waits"
        )
        [first] = await broker.receive("q")
        await first.ack()
        published = await asyncio.wait_for(blocked, 5)
        assert sorted((p.topic, p.offset) for p in published) == [("audit", 1), ("q", 1)]

    run(data_dir, clock, body)


def test_an_exchange_publish_gives_up_after_the_block_timeout(
    data_dir: str, clock: ManualClock
) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        await bound_queue(broker, block_timeout=0.05)
        with pytest.raises(BacklogFull) as full:
            await broker.publish_to_exchange("fan", "", b"2")
        assert full.value.topic == "q"
        assert (await broker.describe_topic("audit")).partitions[0].end_offset == 1

    run(data_dir, clock, body)
