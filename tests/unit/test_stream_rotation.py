"""A stream member's fetches rotate over its partitions, so a busy partition does not starve a
quiet one (issue 15, bug 4)."""

from __future__ import annotations

import pytest

import roost
from roost import Outgoing
from roost.clock import ManualClock
from roost.core.broker import Broker
from roost.core.model import SubscriptionSpec
from roost.storage import LocalEngine, TopicConfig
from tests.embedded_support import run

BUSY = 5_000


def test_a_quiet_partition_is_served_beside_a_busy_one(data_dir: str, clock: ManualClock) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        await broker.create_topic("t", partitions=2, durability="never")
        await broker.publish_batch("t", [Outgoing(value=b"b", partition=0)] * BUSY)
        await broker.publish("t", b"quiet", partition=1)
        await broker.create_subscription("t", "g", mode="stream", start="earliest")
        member = await broker.join("t", "g")
        assert member.partitions == (0, 1)
        fetches = [{m.partition for m in await member.fetch(max_records=100)} for _ in range(3)]
        assert 1 in fetches[0] | fetches[1], f"partitions per fetch: {fetches}"
        assert all(0 in partitions for partitions in fetches), "the busy one is served too"

    run(data_dir, clock, body)


@pytest.fixture
def broker(engine: LocalEngine, clock: ManualClock) -> Broker:
    broker = Broker.open(engine, clock)
    broker.create_topic("t", TopicConfig(partitions=3, durability="never"))
    for partition in range(3):
        broker.publish("t", [Outgoing(value=b"b", partition=partition)] * 1000)
    broker.create_subscription(
        SubscriptionSpec(name="g", topic="t", mode="stream", start="earliest")  # type: ignore[arg-type]
    )
    return broker


def test_fetch_starts_after_the_partition_that_last_returned_records(broker: Broker) -> None:
    group = broker.stream("t", "g")
    member = group.join()
    order = []
    for _ in range(4):
        records = group.fetch(member.member_id, member.generation, max_records=10)
        order.append(sorted({r.partition for r in records}))
    assert order == [[0], [1], [2], [0]]


def test_fetch_batches_rotates_as_fetch_does(broker: Broker) -> None:
    group = broker.stream("t", "g")
    member = group.join()
    order = []
    for _ in range(4):
        fetched = group.fetch_batches(member.member_id, member.generation, max_records=10)
        order.append([f.partition for f in fetched])
    assert order == [[0], [1], [2], [0]]
