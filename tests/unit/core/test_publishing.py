"""Publishing: partitioning, idempotent producers, the dedup window, result order."""

from __future__ import annotations

import pytest

from roost.clock import ManualClock
from roost.core.broker import Broker
from roost.core.policies import TopicPolicy
from roost.core.publishing import Outgoing, partition_for_key
from roost.errors import InvalidRequest, OutOfOrderSequence, UnknownPartition, UnknownProducer
from roost.storage import LocalEngine, TopicConfig

NEVER4 = TopicConfig(partitions=4, durability="never")


@pytest.fixture
def broker(engine: LocalEngine, clock: ManualClock) -> Broker:
    broker = Broker.open(engine, clock)
    broker.create_topic("t", NEVER4)
    return broker


def test_results_come_back_in_message_order(broker: Broker) -> None:
    messages = [Outgoing(value=b"%d" % i, key=b"k%d" % (i % 3)) for i in range(12)]
    published = broker.publish("t", messages).published
    assert [p.partition for p in published] == [partition_for_key(m.key, 4) for m in messages]  # type: ignore[arg-type]
    for message, placed in zip(messages, published, strict=True):
        [record] = broker.engine.topic("t").read(placed.partition, placed.offset, max_records=1)
        assert record.value == message.value


def test_keys_stick_to_a_partition_and_explicit_partitions_win(broker: Broker) -> None:
    first = broker.publish("t", [Outgoing(value=b"a", key=b"user-1")]).published[0]
    again = broker.publish("t", [Outgoing(value=b"b", key=b"user-1")]).published[0]
    assert first.partition == again.partition
    assert (
        broker.publish("t", [Outgoing(value=b"c", key=b"user-1", partition=3)])
        .published[0]
        .partition
        == 3
    )
    with pytest.raises(UnknownPartition):
        broker.publish("t", [Outgoing(value=b"d", partition=4)])


def test_keyless_messages_go_round_robin(broker: Broker) -> None:
    published = broker.publish("t", [Outgoing(value=b"x") for _ in range(8)]).published
    assert sorted(p.partition for p in published) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_a_retried_idempotent_batch_is_confirmed_with_its_first_offsets(broker: Broker) -> None:
    batch = [Outgoing(value=b"%d" % i, key=b"k") for i in range(3)]
    first = broker.publish("t", batch, producer_id="p1", sequence=0)
    retry = broker.publish("t", batch, producer_id="p1", sequence=0)
    assert retry.published == first.published
    nxt = broker.publish("t", batch, producer_id="p1", sequence=3)
    assert nxt.published[0].offset == first.published[-1].offset + 1
    with pytest.raises(OutOfOrderSequence) as raised:
        broker.publish("t", batch, producer_id="p1", sequence=9)
    assert (raised.value.expected, raised.value.got) == (6, 9)
    with pytest.raises(UnknownProducer):
        broker.publish("t", batch, producer_id="p2", sequence=5)
    with pytest.raises(InvalidRequest, match="one partition"):
        broker.publish("t", [Outgoing(value=b"a"), Outgoing(value=b"b")], producer_id="p3",
                       sequence=0)  # fmt: skip


def test_dedup_ids_within_the_window_are_not_appended_twice(
    broker: Broker, clock: ManualClock
) -> None:
    first = broker.publish("t", [Outgoing(value=b"x", dedup_id="order-1")]).published[0]
    again = broker.publish("t", [Outgoing(value=b"other", dedup_id="order-1")]).published[0]
    assert again == first
    twice = broker.publish(
        "t", [Outgoing(value=b"y", dedup_id="order-2"), Outgoing(value=b"y", dedup_id="order-2")]
    ).published
    assert twice[0] == twice[1]
    clock.advance(5 * 60_000)
    later = broker.publish("t", [Outgoing(value=b"x", dedup_id="order-1")]).published[0]
    assert later != first, "after the window an id is new again"


def test_content_dedup(engine: LocalEngine, clock: ManualClock) -> None:
    broker = Broker.open(engine, clock)
    broker.create_topic("c", TopicConfig(durability="never"), TopicPolicy(content_dedup=True))
    a = broker.publish("c", [Outgoing(value=b"same", key=b"k")]).published[0]
    b = broker.publish("c", [Outgoing(value=b"same", key=b"k")]).published[0]
    c = broker.publish("c", [Outgoing(value=b"same", key=b"other")]).published[0]
    assert a == b != c


def test_producer_and_dedup_state_survive_a_crash(data_dir: str, clock: ManualClock) -> None:
    engine = LocalEngine.open(data_dir, clock)
    broker = Broker.open(engine, clock)
    broker.create_topic("t", NEVER4)
    batch = [Outgoing(value=b"v", key=b"k")]
    first = broker.publish("t", batch, producer_id="p1", sequence=0).published
    placed = broker.publish("t", [Outgoing(value=b"d", dedup_id="id-1")]).published
    engine.close(clean=False)

    engine = LocalEngine.open(data_dir, clock)
    broker = Broker.open(engine, clock)
    assert broker.publish("t", batch, producer_id="p1", sequence=0).published == first
    assert broker.publish("t", [Outgoing(value=b"d", dedup_id="id-1")]).published == placed
    engine.close()


def test_an_idempotent_batch_is_appended_whole(engine: LocalEngine, clock: ManualClock) -> None:
    broker = Broker.open(engine, clock)
    broker.create_topic("c", TopicConfig(durability="never"), TopicPolicy(content_dedup=True))
    same = [Outgoing(value=b"same"), Outgoing(value=b"same")]
    first = broker.publish("c", same, producer_id="p", sequence=0).published
    assert [p.offset for p in first] == [0, 1], "no content dedup inside an idempotent batch"
    assert broker.publish("c", same, producer_id="p", sequence=0).published == first
    assert [p.offset for p in broker.publish("c", same, producer_id="p", sequence=2).published] == [
        2,
        3,
    ]
    with pytest.raises(InvalidRequest, match="dedup ids"):
        broker.publish("c", [Outgoing(value=b"x", dedup_id="d")], producer_id="p", sequence=4)
