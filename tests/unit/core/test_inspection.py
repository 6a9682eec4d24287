"""What operators do to a broker besides producing and consuming (roost.core.inspection and
the Broker's peek, read, purge, describe_group and reset_group).

A real ``Broker`` over a ``LocalEngine`` in a temporary directory with a ``ManualClock``; topics
are ``durability="never"`` so appends are readable at once. Nothing sleeps.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from roost.clock import ManualClock
from roost.core.broker import Broker
from roost.core.inspection import MAX_PEEK_MESSAGES, MAX_PEEK_SCAN
from roost.core.model import SubscriptionSpec
from roost.core.publishing import Outgoing
from roost.core.redrive import RedriveFilter
from roost.core.streams import AtTime
from roost.errors import (
    GroupActive,
    InvalidRequest,
    OffsetOutOfRange,
    UnknownPartition,
    UnknownSubscription,
)
from roost.storage import LocalEngine, TopicConfig

NEVER = TopicConfig(durability="never")


@pytest.fixture
def broker(engine: LocalEngine, clock: ManualClock) -> Iterator[Broker]:
    yield Broker.open(engine, clock)


def publish(broker: Broker, topic: str, *values: bytes, partition: int = 0, **kw: object) -> None:
    broker.publish(topic, [Outgoing(value=v, partition=partition, **kw) for v in values])  # type: ignore[arg-type]


def queue(broker: Broker, name: str = "q", partitions: int = 1) -> None:
    broker.create_queue(name, durability="never", partitions=partitions, max_deliveries=2)


def stream(broker: Broker, partitions: int = 2) -> None:
    broker.create_topic("log", TopicConfig(durability="never", partitions=partitions))
    broker.create_subscription(
        SubscriptionSpec(name="g", topic="log", mode="stream", start="earliest")
    )


# -- peek: queue subscriptions ------------------------------------------------------------------


def test_peek_shows_what_is_not_done_without_taking_it(broker: Broker) -> None:
    queue(broker)
    publish(broker, "q", b"a", b"b", b"c")
    assert [p.message.value for p in broker.peek("q", "q")] == [b"a", b"b", b"c"]
    assert [p.state for p in broker.peek("q", "q")] == ["pending"] * 3
    [first] = broker.receive("q", "q", max_messages=1)
    assert first.delivery_count == 1, "peeking counted no delivery"
    broker.ack("q", "q", [first.receipt])
    assert [p.message.offset for p in broker.peek("q", "q")] == [1, 2]
    assert broker.stats("q", "q").depth == 2  # type: ignore[union-attr]


def test_peek_tells_leased_delayed_and_pending_apart(broker: Broker, clock: ManualClock) -> None:
    queue(broker)
    publish(broker, "q", b"leased", b"retry")
    publish(broker, "q", b"later", delay_ms=60_000)
    publish(broker, "q", b"now")
    _, retry = broker.receive("q", "q", max_messages=2, visibility_ms=5_000)
    broker.nack("q", "q", [retry.receipt], delay_ms=7_000)
    now = clock.now_ms()
    peeked = {p.message.value: p for p in broker.peek("q", "q")}
    assert (peeked[b"leased"].state, peeked[b"leased"].until_ms) == ("leased", now + 5_000)
    assert (peeked[b"retry"].state, peeked[b"retry"].until_ms) == ("delayed", now + 7_000)
    assert peeked[b"retry"].message.delivery_count == 1, "the deliveries so far"
    assert peeked[b"later"].state == "delayed"
    assert (peeked[b"now"].state, peeked[b"now"].until_ms) == ("pending", None)
    assert peeked[b"now"].message.delivery_count == 0
    clock.advance(60_000)
    assert {p.state for p in broker.peek("q", "q")} == {"pending"}, "expired leases are pending"


def test_peek_limits_and_partitions(broker: Broker) -> None:
    queue(broker, partitions=2)
    publish(broker, "q", b"a0", b"b0", partition=0)
    publish(broker, "q", b"a1", partition=1)
    assert [p.message.value for p in broker.peek("q", "q", max_messages=2)] == [b"a0", b"b0"]
    assert [p.message.value for p in broker.peek("q", "q", partition=1)] == [b"a1"]
    with pytest.raises(UnknownPartition):
        broker.peek("q", "q", partition=2)
    for bad in (0, MAX_PEEK_MESSAGES + 1):
        with pytest.raises(InvalidRequest):
            broker.peek("q", "q", max_messages=bad)
    with pytest.raises(UnknownSubscription):
        broker.peek("q", "nobody")


def test_peek_reads_a_bounded_number_of_records(broker: Broker) -> None:
    queue(broker)
    publish(broker, "q", *[b"x"] * (MAX_PEEK_SCAN + 5))
    broker.receive("q", "q", max_messages=1)  # offset 0 stays leased: the floor holds there
    acked = broker.receive("q", "q", max_messages=1000)
    for _ in range(MAX_PEEK_SCAN // 1000):
        broker.ack("q", "q", [m.receipt for m in acked])
        acked = broker.receive("q", "q", max_messages=1000)
    peeked = broker.peek("q", "q", max_messages=1000)
    assert [p.message.offset for p in peeked][:1] == [0]
    assert all(p.message.offset < MAX_PEEK_SCAN for p in peeked), "stopped within the scan"


# -- peek: streams, logs, dead letters ----------------------------------------------------------


def test_peek_a_stream_from_its_commits(broker: Broker) -> None:
    stream(broker)
    publish(broker, "log", b"a", b"b", partition=0)
    publish(broker, "log", b"c", partition=1)
    member = broker.stream("log", "g").join()
    broker.stream("log", "g").commit(member.member_id, member.generation, {0: 1})
    assert [p.message.value for p in broker.peek("log", "g")] == [b"b", b"c"]


def test_read_the_raw_log(broker: Broker) -> None:
    broker.create_topic("t", NEVER)
    publish(broker, "t", b"a", b"b", b"c")
    assert [m.value for m in broker.read("t", 0)] == [b"a", b"b", b"c"]
    assert [m.offset for m in broker.read("t", 0, offset=1, max_messages=1)] == [1]
    assert broker.read("t", 0, offset=3) == []
    with pytest.raises(OffsetOutOfRange):
        broker.read("t", 0, offset=4)
    with pytest.raises(UnknownPartition):
        broker.read("t", 1)


def test_peek_dead_letters_before_and_during_redrive(broker: Broker) -> None:
    queue(broker)
    publish(broker, "q", b"a", b"b")
    for _ in range(2):
        messages = broker.receive("q", "q", max_messages=2)
        broker.nack("q", "q", [m.receipt for m in messages], delay_ms=0, error="boom")
    broker.tick()
    dead = broker.peek_dead_letters("q.dlq")
    assert [p.message.value for p in dead] == [b"a", b"b"]
    assert dead[0].message.header("x-roost-last-error") == b"boom"
    batch, _ = broker.redrive_batch("q.dlq", where=RedriveFilter(), max_messages=1)
    broker.finish_redrive("q.dlq", batch.moved)
    assert [p.message.value for p in broker.peek_dead_letters("q.dlq")] == [b"b"]


# -- purge ----------------------------------------------------------------------------------------


def test_purge_finishes_every_confirmed_message_even_leased(broker: Broker) -> None:
    queue(broker, partitions=2)
    publish(broker, "q", b"a", b"b", partition=0)
    publish(broker, "q", b"c", partition=1)
    publish(broker, "q", b"d", partition=1, delay_ms=60_000)
    [leased] = broker.receive("q", "q", max_messages=1)
    assert broker.purge("q", "q") == 4
    stats = broker.stats("q", "q")
    assert (stats.backlog, stats.in_flight, stats.delayed) == (0, 0, 0)  # type: ignore[union-attr]
    assert broker.ack("q", "q", [leased.receipt]) == [leased.receipt], "its ack is refused"
    publish(broker, "q", b"e")
    assert [m.value for m in broker.receive("q", "q", max_messages=10)] == [b"e"]
    assert broker.purge("q", "q") == 1, "a leased message is purged too"


def test_purge_a_stream_commits_at_the_end(broker: Broker) -> None:
    stream(broker)
    publish(broker, "log", b"a", b"b", partition=0)
    publish(broker, "log", b"c", partition=1)
    assert broker.purge("log", "g") == 3
    assert broker.stream("log", "g").committed == {0: 2, 1: 1}
    assert broker.purge("log", "g") == 0


# -- consumer groups ------------------------------------------------------------------------------


def test_describe_group_shows_members_positions_and_lag(broker: Broker, clock: ManualClock) -> None:
    stream(broker)
    publish(broker, "log", b"a", b"b", b"c", partition=0)
    empty = broker.describe_group("log", "g")
    assert (empty.members, empty.lag) == ([], 3)
    assert [(p.owner, p.position) for p in empty.partitions] == [(None, None)] * 2
    group = broker.stream("log", "g")
    me = group.join("m1")
    group.fetch("m1", me.generation, max_records=2)  # a fetch is a heartbeat too
    clock.advance(1_000)
    described = broker.describe_group("log", "g")
    [member] = described.members
    assert (member.member_id, member.partitions) == ("m1", (0, 1))
    assert member.session_expires_in_ms == me.session_timeout_ms - 1_000
    assert [(p.committed, p.position, p.lag, p.owner) for p in described.partitions] == [
        (0, 2, 3, "m1"),
        (0, 0, 0, "m1"),
    ]
    assert described.generation == 1


def test_reset_group_moves_commits_only_while_it_is_empty(
    broker: Broker, clock: ManualClock
) -> None:
    stream(broker)
    publish(broker, "log", b"a", b"b", partition=0)
    clock.advance(10_000)
    publish(broker, "log", b"c", partition=0)
    group = broker.stream("log", "g")
    assert broker.reset_group("log", "g", "latest") == {0: 3, 1: 0}
    assert broker.reset_group("log", "g", "earliest", [0]) == {0: 0}
    assert broker.reset_group("log", "g", 2, [0]) == {0: 2}
    assert broker.reset_group("log", "g", AtTime(clock.now_ms()), [0]) == {0: 2}
    assert broker.reset_group("log", "g", AtTime(clock.now_ms() + 1), [0]) == {0: 3}
    with pytest.raises(OffsetOutOfRange):
        broker.reset_group("log", "g", 1, [1])
    assert group.committed == {0: 3, 1: 0}, "a refused reset moves nothing"
    with pytest.raises(UnknownPartition):
        broker.reset_group("log", "g", "earliest", [2])
    member = group.join("m1")
    with pytest.raises(GroupActive):
        broker.reset_group("log", "g", "earliest")
    group.leave(member.member_id)
    broker.reset_group("log", "g", 1, [0])
    member = group.join("m1")
    assert [m.value for m in group.fetch("m1", member.generation)] == [b"b", b"c"]


def test_a_reset_survives_a_restart(
    broker: Broker, engine: LocalEngine, clock: ManualClock
) -> None:
    stream(broker)
    publish(broker, "log", b"a", b"b", partition=0)
    broker.reset_group("log", "g", "latest")
    engine.close()
    reopened = LocalEngine.open(engine.path, clock)
    try:
        assert Broker.open(reopened, clock).stream("log", "g").committed == {0: 2, 1: 0}
    finally:
        reopened.close()
