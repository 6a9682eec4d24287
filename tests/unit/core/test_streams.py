"""Stream subscriptions: consumer groups reading in order, committing, seeking, resuming."""

from __future__ import annotations

import pytest

from roost.clock import ManualClock
from roost.core.broker import Broker
from roost.core.model import SubscriptionSpec
from roost.core.publishing import Outgoing
from roost.core.streams import FetchedBatches
from roost.errors import (
    InvalidRequest,
    NotOwner,
    OffsetOutOfRange,
    StaleGeneration,
    UnknownMember,
)
from roost.storage import LocalEngine, TopicConfig
from roost.storage import batch as batch_format


@pytest.fixture
def broker(engine: LocalEngine, clock: ManualClock) -> Broker:
    broker = Broker.open(engine, clock)
    broker.create_topic("clicks", TopicConfig(partitions=4, durability="never"))
    return broker


def stream(broker: Broker, start: str = "earliest") -> SubscriptionSpec:
    return broker.create_subscription(
        SubscriptionSpec(name="analytics", topic="clicks", mode="stream", start=start)  # type: ignore[arg-type]
    )


def publish(broker: Broker, count: int, partition: int | None = None) -> None:
    broker.publish("clicks", [Outgoing(value=b"%d" % i, partition=partition) for i in range(count)])


def test_one_member_reads_every_partition_in_order(broker: Broker) -> None:
    publish(broker, 40)
    stream(broker)
    group = broker.stream("clicks", "analytics")
    member = group.join(client="a")
    assert member.partitions == (0, 1, 2, 3)
    records = group.fetch(member.member_id, member.generation, max_records=100)
    assert len(records) == 40
    for partition in range(4):
        offsets = [r.offset for r in records if r.partition == partition]
        assert offsets == sorted(offsets) == list(range(len(offsets)))
    assert group.fetch(member.member_id, member.generation) == []


def test_latest_start_skips_history(broker: Broker) -> None:
    publish(broker, 8)
    stream(broker, start="latest")
    group = broker.stream("clicks", "analytics")
    member = group.join()
    assert group.fetch(member.member_id, member.generation) == []
    publish(broker, 4)
    assert len(group.fetch(member.member_id, member.generation)) == 4


def test_commit_and_resume_after_restart(data_dir: str, clock: ManualClock) -> None:
    engine = LocalEngine.open(data_dir, clock)
    broker = Broker.open(engine, clock)
    broker.create_topic("clicks", TopicConfig(partitions=1, durability="never"))
    publish(broker, 10)
    stream(broker)
    group = broker.stream("clicks", "analytics")
    member = group.join()
    records = group.fetch(member.member_id, member.generation, max_records=6)
    group.commit(member.member_id, member.generation, {0: records[-1].offset + 1})
    engine.close(clean=False)

    engine = LocalEngine.open(data_dir, clock)
    broker = Broker.open(engine, clock)
    group = broker.stream("clicks", "analytics")
    member = group.join()
    assert [r.offset for r in group.fetch(member.member_id, member.generation)] == [6, 7, 8, 9]
    stats = broker.stats("clicks", "analytics")
    assert stats.lag == 4  # type: ignore[union-attr]
    engine.close()


def test_rebalance_moves_partitions_and_fences_the_old_owner(broker: Broker) -> None:
    publish(broker, 40)
    stream(broker)
    group = broker.stream("clicks", "analytics")
    first = group.join(client="a")
    group.fetch(first.member_id, first.generation, max_records=100)
    group.commit(first.member_id, first.generation, {p: 5 for p in range(4)})
    second = group.join(client="b")
    assert len(second.partitions) == 2
    with pytest.raises(StaleGeneration):
        group.commit(first.member_id, first.generation, {0: 9})
    first = group.heartbeat(first.member_id, first.generation)
    assert set(first.partitions) | set(second.partitions) == {0, 1, 2, 3}
    moved = second.partitions[0]
    with pytest.raises(NotOwner):
        group.commit(first.member_id, first.generation, {moved: 9})
    records = group.fetch(second.member_id, second.generation, max_records=100)
    assert min(r.offset for r in records if r.partition == moved) == 5, "resumes at the commit"


def test_a_silent_member_is_removed_after_its_session(broker: Broker, clock: ManualClock) -> None:
    stream(broker)
    group = broker.stream("clicks", "analytics")
    quiet = group.join(client="quiet")
    busy = group.join(client="busy")
    clock.advance(6_000)
    group.heartbeat(busy.member_id, busy.generation)
    clock.advance(4_001)
    broker.tick()
    assert group.group.members() == [busy.member_id]
    with pytest.raises(UnknownMember):
        group.fetch(quiet.member_id, quiet.generation)
    assert group.heartbeat(busy.member_id, busy.generation).partitions == (0, 1, 2, 3)


def test_seek_to_offsets_times_earliest_latest(broker: Broker, clock: ManualClock) -> None:
    broker.create_topic("one", TopicConfig(durability="never"))
    for i in range(10):
        broker.publish("one", [Outgoing(value=b"%d" % i)])
        clock.advance(100)
    broker.create_subscription(
        SubscriptionSpec(name="s", topic="one", mode="stream", start="earliest")
    )
    group = broker.stream("one", "s")
    member = group.join()
    m, g = member.member_id, member.generation
    assert group.seek(m, g, 0, 7) == 7
    assert [r.offset for r in group.fetch(m, g)] == [7, 8, 9]
    assert group.seek(m, g, 0, "earliest") == 0
    assert group.fetch(m, g, max_records=1)[0].offset == 0
    assert group.seek(m, g, 0, "latest") == 10
    assert group.fetch(m, g) == []
    start = clock.now_ms() - 1000
    assert group.seek_to_timestamp(m, g, 0, start + 350) == 4
    with pytest.raises(OffsetOutOfRange):
        group.seek(m, g, 0, 11)
    with pytest.raises(OffsetOutOfRange):
        group.commit(m, g, {0: 12})


def test_a_partition_that_comes_back_resumes_from_the_commit(broker: Broker) -> None:
    broker.create_topic("two", TopicConfig(partitions=2, durability="never"))
    for p in (0, 1):
        broker.publish("two", [Outgoing(value=b"%d" % i, partition=p) for i in range(10)])
    spec = SubscriptionSpec(name="s", topic="two", mode="stream", start="earliest")
    broker.create_subscription(spec)
    group = broker.stream("two", "s")
    a = group.join(client="a")
    assert len(group.fetch(a.member_id, a.generation, max_records=100)) == 20  # not committed
    b = group.join(client="b")
    [moved] = b.partitions
    group.leave(b.member_id)
    a = group.heartbeat(a.member_id, a.generation)
    again = group.fetch(a.member_id, a.generation, max_records=100)
    assert [r.offset for r in again if r.partition == moved] == list(range(10)), (
        "back from another owner: from the commit, not the old position"
    )
    assert [r for r in again if r.partition != moved] == [], "the kept partition goes on"


def unpacked(fetched: list[FetchedBatches]) -> list[tuple[int, int, bytes]]:
    """(partition, offset, value) of the records a ``fetch_batches`` answer hands out."""
    return [
        (part.partition, record.offset, record.value)
        for part in fetched
        for position, header in batch_format.iter_batches(part.data)
        for record in batch_format.decode_records(part.data, position, header)
        if part.first_offset <= record.offset < part.next_offset
    ]


def test_fetch_batches_hands_out_what_fetch_does(broker: Broker) -> None:
    for _ in range(6):  # batches of 5 per partition, so cuts fall inside them
        publish(broker, 20)
    broker.create_subscription(
        SubscriptionSpec(name="plain", topic="clicks", mode="stream", start="earliest")
    )
    stream(broker)
    plain, raw = broker.stream("clicks", "plain"), broker.stream("clicks", "analytics")
    p, r = plain.join(), raw.join()
    for size in (7, 1, 13, 100, 3):
        expected = plain.fetch(p.member_id, p.generation, max_records=size)
        fetched = raw.fetch_batches(r.member_id, r.generation, max_records=size)
        assert unpacked(fetched) == [(m.partition, m.offset, m.value) for m in expected]
        assert sum(f.next_offset - f.first_offset for f in fetched) == len(expected) <= size
        for part in fetched:
            assert raw.position(r.member_id, part.partition) == part.next_offset
    assert raw.fetch_batches(r.member_id, r.generation) == []
    with pytest.raises(InvalidRequest):
        raw.fetch_batches(r.member_id, r.generation, max_records=0)


def test_fetch_batches_stops_at_the_confirmed_offset(
    engine: LocalEngine, clock: ManualClock
) -> None:
    broker = Broker.open(engine, clock)
    broker.create_topic("durable", TopicConfig(durability="always"))
    broker.publish("durable", [Outgoing(value=b"a"), Outgoing(value=b"b")])
    engine.topic("durable").log(0).flush()
    broker.publish("durable", [Outgoing(value=b"not yet durable")])
    broker.create_subscription(
        SubscriptionSpec(name="s", topic="durable", mode="stream", start="earliest")
    )
    group = broker.stream("durable", "s")
    member = group.join()
    [part] = group.fetch_batches(member.member_id, member.generation)
    assert (part.first_offset, part.next_offset) == (0, 2)
    assert [h.base_offset for _, h in batch_format.iter_batches(part.data)] == [0]
    assert group.fetch_batches(member.member_id, member.generation) == []
    engine.topic("durable").log(0).flush()
    [part] = group.fetch_batches(member.member_id, member.generation)
    assert (part.first_offset, part.next_offset) == (2, 3)


def test_fetch_batches_bounds_the_whole_answer_by_max_bytes(broker: Broker) -> None:
    for partition in range(4):
        broker.publish("clicks", [Outgoing(value=b"x" * 1000, partition=partition)])
        broker.publish("clicks", [Outgoing(value=b"y" * 1000, partition=partition)])
    stream(broker)
    group = broker.stream("clicks", "analytics")
    member = group.join()
    fetched = group.fetch_batches(member.member_id, member.generation, max_bytes=2500)
    assert [(f.partition, f.next_offset) for f in fetched] == [(0, 2), (1, 1)], (
        "partition 0 takes two batches, partition 1 the one batch it must get, then no room"
    )
    assert sum(len(f.data) for f in fetched) < 2500 + 1100
