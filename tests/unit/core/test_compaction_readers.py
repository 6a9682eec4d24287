"""Readers of a compacted topic (storage/compaction.py): a queue subscription with leases and
retries behind the compacted range, a stream group reading from the start, until-consumed
retention, and time retention on ``compact,delete``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from roost.clock import ManualClock
from roost.core.broker import Broker
from roost.core.model import SubscriptionSpec
from roost.core.policies import TopicPolicy
from roost.core.publishing import Outgoing
from roost.storage import LocalEngine, TopicConfig
from roost.storage.compaction import Compactor, compacted_logs

DAY_MS = 24 * 3600 * 1000


@pytest.fixture
def broker(engine: LocalEngine, clock: ManualClock) -> Iterator[Broker]:
    yield Broker.open(engine, clock)


def _topic(
    broker: Broker, name: str = "t", policy: TopicPolicy | None = None, **settings: object
) -> None:
    config = TopicConfig(
        cleanup=settings.pop("cleanup", "compact"),  # type: ignore[arg-type]
        segment_max_bytes=1 << 20,
        max_record_bytes=1024,
        **settings,  # type: ignore[arg-type]
    )
    broker.create_topic(name, config, policy)


def _publish(broker: Broker, pairs: list[tuple[str, str]], topic: str = "t") -> None:
    for key, value in pairs:
        broker.publish(topic, [Outgoing(key=key.encode(), value=value.encode(), partition=0)])
    broker.engine.topic(topic).log(0).flush()


def _compact(broker: Broker, clock: ManualClock, topic: str = "t") -> int:
    """Seal the active segment and compact; the records the pass removed."""
    log = broker.engine.topic(topic).log(0)
    log.roll()
    log.flush()
    job = Compactor(lambda: compacted_logs(broker.engine), clock).compact(log)
    return job.records_dropped if job is not None else 0


def test_a_queue_behind_the_compacted_range_gets_the_latest_values_only(
    broker: Broker, clock: ManualClock
) -> None:
    _topic(broker)
    broker.create_subscription(
        SubscriptionSpec(name="q", topic="t", start="earliest", max_deliveries=None)
    )
    _publish(broker, [("a", "1"), ("b", "1"), ("a", "2"), ("b", "2"), ("c", "1")])
    leased = broker.receive("t", "q", max_messages=1)  # a=1 leased, then superseded
    assert [m.offset for m in leased] == [0]

    assert _compact(broker, clock) == 2
    broker.nack("t", "q", [leased[0].receipt])
    got = []
    while messages := broker.receive("t", "q", max_messages=10):
        got += [(m.offset, m.key, m.value) for m in messages]
        assert not broker.ack("t", "q", [m.receipt for m in messages])

    # Offset 1 was read ahead before the pass and may still come (at least the latest value
    # per key, as in Kafka); offset 0, leased and superseded, is never delivered again.
    assert 0 not in [offset for offset, _, _ in got]
    assert {(2, b"a", b"2"), (3, b"b", b"2"), (4, b"c", b"1")} <= set(got)
    assert broker.stats("t", "q").depth == 0


def test_a_stream_group_from_the_start_sees_every_latest_value_at_its_offset(
    broker: Broker, clock: ManualClock
) -> None:
    _topic(broker)
    broker.create_subscription(
        SubscriptionSpec(name="g", topic="t", mode="stream", start="earliest")
    )
    _publish(broker, [("a", "1"), ("a", "2"), ("b", "1"), ("a", "3"), ("b", "")])
    assert _compact(broker, clock) == 3
    _publish(broker, [("c", "1")])

    stream = broker.stream("t", "g")
    member = stream.join()
    got = []
    for _ in range(10):  # bounded: each fetch returns at least one record or the end
        messages = stream.fetch(member.member_id, member.generation)
        if not messages:
            break
        got += [(m.offset, m.value) for m in messages]
        stream.commit(member.member_id, member.generation, {0: messages[-1].offset + 1})
    assert got == [(3, b"3"), (4, b""), (5, b"1")], "the tombstone is seen within its retention"
    # A read stops at the end of a segment: the sealed one holds 3 and 4.
    assert [m.offset for m in broker.read("t", 0, offset=0, max_messages=10)] == [3, 4]


def test_until_consumed_retention_deletes_compacted_segments_once_acked(
    broker: Broker, clock: ManualClock
) -> None:
    _topic(broker, policy=TopicPolicy(retain_until_consumed=True))
    broker.create_subscription(
        SubscriptionSpec(name="q", topic="t", start="earliest", max_deliveries=None)
    )
    _publish(broker, [("a", "1"), ("a", "2"), ("a", "3")])
    assert _compact(broker, clock) == 2
    _publish(broker, [("b", "1")])
    messages = broker.receive("t", "q", max_messages=10)
    assert [m.offset for m in messages] == [2, 3]
    broker.ack("t", "q", [m.receipt for m in messages])
    log = broker.engine.topic("t").log(0)
    assert log.delete_below(broker.floor("t", 0) or 0) == 1
    assert (log.start_offset, log.end_offset) == (3, 4)


def test_time_retention_still_deletes_segments_of_a_compact_delete_topic(
    broker: Broker, clock: ManualClock
) -> None:
    _topic(broker, cleanup="compact,delete", retention_ms=DAY_MS)
    _publish(broker, [("a", "1"), ("a", "2")])
    assert _compact(broker, clock) == 1
    _publish(broker, [("b", "1")])
    log = broker.engine.topic("t").log(0)
    clock.advance(DAY_MS + 1)
    assert log.enforce_retention() == 1
    assert [r.value for r in log.read(log.start_offset)] == [b"1"]
