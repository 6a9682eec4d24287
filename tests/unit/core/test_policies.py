"""Backlog limits (reject, block, drop_oldest) and retention until consumed."""

from __future__ import annotations

import asyncio

import pytest

import roost
from roost.clock import ManualClock
from roost.core.broker import Broker
from roost.core.model import SubscriptionSpec
from roost.core.policies import TopicPolicy
from roost.core.publishing import Outgoing
from roost.errors import BacklogFull, InvalidConfig
from roost.storage import LocalEngine, TopicConfig

NEVER = TopicConfig(durability="never")


@pytest.fixture
def broker(engine: LocalEngine, clock: ManualClock) -> Broker:
    return Broker.open(engine, clock)


def subscribe(broker: Broker, topic: str, name: str = "s") -> None:
    broker.create_subscription(
        SubscriptionSpec(name=name, topic=topic, start="earliest", max_deliveries=None)
    )


def fill(broker: Broker, topic: str, count: int) -> None:
    broker.publish(topic, [Outgoing(value=b"%d" % i) for i in range(count)])


def test_reject_refuses_past_the_limit_and_appends_nothing(broker: Broker) -> None:
    broker.create_topic("t", NEVER, TopicPolicy(max_backlog_messages=5))
    subscribe(broker, "t")
    fill(broker, "t", 5)
    with pytest.raises(BacklogFull) as raised:
        fill(broker, "t", 1)
    assert raised.value.retriable
    assert "max_backlog_messages=5" in str(raised.value)
    assert broker.describe_topic("t").partitions[0].end_offset == 5
    messages = broker.receive("t", "s", 2)
    broker.ack("t", "s", [m.receipt for m in messages])
    fill(broker, "t", 2)  # room again


def test_a_topic_without_subscriptions_has_no_backlog(broker: Broker) -> None:
    broker.create_topic("t", NEVER, TopicPolicy(max_backlog_messages=1))
    fill(broker, "t", 10)


def test_the_slowest_subscription_sets_the_backlog(broker: Broker) -> None:
    broker.create_topic("t", NEVER, TopicPolicy(max_backlog_messages=3))
    subscribe(broker, "t", "fast")
    subscribe(broker, "t", "slow")
    fill(broker, "t", 3)
    fast = broker.receive("t", "fast", 3)
    broker.ack("t", "fast", [m.receipt for m in fast])
    with pytest.raises(BacklogFull):
        fill(broker, "t", 1)


def test_drop_oldest_makes_room_for_every_subscription(broker: Broker) -> None:
    broker.create_topic("t", NEVER, TopicPolicy(max_backlog_messages=4, overflow="drop_oldest"))
    subscribe(broker, "t")
    fill(broker, "t", 4)
    leased = broker.receive("t", "s", 1)
    fill(broker, "t", 2)
    values = [m.value for m in broker.receive("t", "s", 10)]
    assert values == [b"2", b"3", b"0", b"1"], "the two oldest were dropped, newest kept"
    assert broker.ack("t", "s", [leased[0].receipt]) == [leased[0].receipt], "its lease went too"


def test_drop_oldest_never_drops_what_is_not_durable_yet(
    broker: Broker, engine: LocalEngine
) -> None:
    """A record not yet fsynced may be gone after a crash, and the next one written at its
    offset would then count as dropped: only durable records are dropped."""
    always = TopicConfig(durability="always")
    broker.create_topic("t", always, TopicPolicy(max_backlog_messages=4, overflow="drop_oldest"))
    subscribe(broker, "t")
    fill(broker, "t", 4)
    log = engine.topic("t").log(0)
    fill(broker, "t", 2)  # over the limit, but nothing is durable: nothing may go
    assert broker.floor("t", 0) == 0
    job = log.begin_flush()
    assert job is not None
    job.run()
    log.end_flush(job, None)
    assert log.confirmed_offset == 6
    fill(broker, "t", 1)  # now the oldest durable ones make room
    assert broker.floor("t", 0) == 3


def test_queues_delete_consumed_segments(broker: Broker, engine: LocalEngine) -> None:
    small = TopicConfig(durability="never", segment_max_bytes=4096, max_record_bytes=2048)
    broker.create_topic("q", small, TopicPolicy(retain_until_consumed=True))
    subscribe(broker, "q")
    for _ in range(40):
        broker.publish("q", [Outgoing(value=b"x" * 500)])
    topic = engine.topic("q")
    assert topic.describe().partitions[0].segments > 3
    messages = broker.receive("q", "s", 30)
    broker.ack("q", "s", [m.receipt for m in messages])
    broker.tick()
    info = topic.describe().partitions[0]
    assert 0 < info.start_offset <= 30
    assert info.end_offset == 40
    assert [m.offset for m in broker.receive("q", "s", 20)] == list(range(30, 40))


def test_plain_topics_keep_consumed_segments(broker: Broker, engine: LocalEngine) -> None:
    small = TopicConfig(durability="never", segment_max_bytes=4096, max_record_bytes=2048)
    broker.create_topic("t", small)
    subscribe(broker, "t")
    for _ in range(40):
        broker.publish("t", [Outgoing(value=b"x" * 500)])
    broker.ack("t", "s", [m.receipt for m in broker.receive("t", "s", 40)])
    broker.tick()
    assert engine.topic("t").describe().partitions[0].start_offset == 0


def test_bad_policies_name_the_field() -> None:
    with pytest.raises(InvalidConfig, match="overflow"):
        TopicPolicy(overflow="explode")  # type: ignore[arg-type]
    with pytest.raises(InvalidConfig, match="max_backlog_messages"):
        TopicPolicy(max_backlog_messages=0)


def test_policies_survive_restart(data_dir: str, clock: ManualClock) -> None:
    engine = LocalEngine.open(data_dir, clock)
    Broker.open(engine, clock).create_topic("t", NEVER, TopicPolicy(max_backlog_messages=7))
    engine.close()
    engine = LocalEngine.open(data_dir, clock)
    assert Broker.open(engine, clock).policy("t").max_backlog_messages == 7
    engine.close()


def test_block_waits_for_room_then_publishes(data_dir: str, clock: ManualClock) -> None:
    async def main() -> None:
        async with roost.open(data_dir, clock=clock) as broker:
            await broker.create_queue("q", max_backlog=2, overflow="block", block_timeout=10)
            await broker.publish("q", b"1")
            await broker.publish("q", b"2")
            blocked = asyncio.create_task(broker.publish("q", b"3"))
            await asyncio.sleep(0.01)
            assert not blocked.done()
            [first] = await broker.receive("q")
            await first.ack()
            published = await asyncio.wait_for(blocked, 5)
            assert published.offset == 2

    asyncio.run(main())


def test_block_gives_up_after_its_timeout(data_dir: str, clock: ManualClock) -> None:
    async def main() -> None:
        async with roost.open(data_dir, clock=clock) as broker:
            await broker.create_queue("q", max_backlog=1, overflow="block", block_timeout=0.05)
            await broker.publish("q", b"1")
            with pytest.raises(BacklogFull):
                await broker.publish("q", b"2")

    asyncio.run(main())


def test_acked_messages_above_a_stuck_one_do_not_count_as_backlog(broker: Broker) -> None:
    broker.create_topic("t", NEVER, TopicPolicy(max_backlog_messages=3))
    subscribe(broker, "t")
    fill(broker, "t", 3)
    stuck, *rest = broker.receive("t", "s", 3)
    broker.ack("t", "s", [m.receipt for m in rest])
    assert broker.stats("t", "s").backlog == 1
    fill(broker, "t", 2)  # backlog 3: fits, though the floor is still at offset 0
    with pytest.raises(BacklogFull):
        fill(broker, "t", 1)
    del stuck


def test_an_exchange_publish_refused_by_one_topic_appends_to_none(broker: Broker) -> None:
    from roost.core.routing import BindingSpec, ExchangeSpec

    broker.create_topic("full", NEVER, TopicPolicy(max_backlog_messages=1))
    broker.create_topic("roomy", NEVER)
    subscribe(broker, "full")
    broker.declare_exchange(ExchangeSpec("all", "fanout"))
    broker.bind(BindingSpec("all", "full"))
    broker.bind(BindingSpec("all", "roomy"))
    broker.publish_to_exchange("all", "", [Outgoing(value=b"1")])
    for _ in range(3):
        with pytest.raises(BacklogFull):
            broker.publish_to_exchange("all", "", [Outgoing(value=b"x")])
    assert broker.describe_topic("roomy").partitions[0].end_offset == 1
