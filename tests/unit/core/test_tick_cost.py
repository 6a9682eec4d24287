"""The tick costs what is due: idle subscriptions are not visited, retention looks only where
a floor moved, and one topic's subscriptions are found without scanning the others'."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from roost.clock import ManualClock
from roost.core import state_codec
from roost.core.broker import Broker
from roost.core.model import SubscriptionSpec
from roost.core.policies import TopicPolicy
from roost.core.publishing import Outgoing
from roost.core.subscription import QueueSubscription
from roost.server.host import Host
from roost.storage import LocalEngine, TopicConfig

NEVER = TopicConfig(durability="never")
SMALL = TopicConfig(durability="never", segment_max_bytes=4096, max_record_bytes=2048)
UNTIL_CONSUMED = TopicPolicy(retain_until_consumed=True)


@pytest.fixture
def broker(engine: LocalEngine, clock: ManualClock) -> Broker:
    return Broker.open(engine, clock)


def queue(broker: Broker, name: str) -> None:
    broker.create_queue(name, dead_letter=None, max_deliveries=None, durability="never")


def subscribe(broker: Broker, topic: str, name: str, mode: str = "queue") -> None:
    broker.create_subscription(
        SubscriptionSpec(name=name, topic=topic, mode=mode, start="earliest", max_deliveries=None)  # type: ignore[arg-type]
    )


def fill(broker: Broker, topic: str, count: int, size: int = 500) -> None:
    for _ in range(count):
        broker.publish(topic, [Outgoing(value=b"x" * size)])


def expired(broker: Broker, name: str) -> int:
    """Leases of queue ``name`` that ran out, as its metrics count them."""
    [sub] = [s for s in broker.subscriptions() if s.spec.topic == name]
    assert isinstance(sub, QueueSubscription)
    return sum(sub.partition_state(p).expired for p in range(len(sub.topic.partitions)))


def start_offset(engine: LocalEngine, topic: str) -> int:
    return engine.topic(topic).describe().partitions[0].start_offset


# -- timers ---------------------------------------------------------------------------------


def test_a_tick_visits_only_the_subscriptions_with_something_due(
    broker: Broker, clock: ManualClock
) -> None:
    for i in range(20):
        queue(broker, f"q{i}")
    broker.tick()  # each is looked at once after it is opened
    broker.visits = Counter()
    for _ in range(5):
        clock.advance(1_000)
        broker.tick()
    assert broker.visits == {}

    fill(broker, "q7", 1)
    [message] = broker.receive("q7", "q7", 1, visibility_ms=3_000)
    tick = broker.tick()
    assert tick.next_deadline_ms == clock.now_ms() + 3_000
    assert broker.visits == {}  # nothing is due yet
    clock.advance(3_000)
    tick = broker.tick()
    assert broker.visits == {("q7", "q7"): 1}
    assert "q7" in tick.topics
    assert broker.stats("q7", "q7").in_flight == 0  # the lease expired, once
    assert expired(broker, "q7") == 1
    assert tick.next_deadline_ms is None
    assert message.offset == 0


def test_a_nack_with_a_delay_is_due_at_its_end(broker: Broker, clock: ManualClock) -> None:
    queue(broker, "a")
    queue(broker, "b")
    broker.tick()
    broker.visits = Counter()
    fill(broker, "a", 1)
    [message] = broker.receive("a", "a", 1, visibility_ms=60_000)
    broker.nack("a", "a", [message.receipt], delay_ms=2_000)
    assert broker.tick().next_deadline_ms == clock.now_ms() + 2_000
    assert broker.stats("a", "a").delayed == 1
    clock.advance(2_000)
    broker.tick()
    assert broker.visits == {("a", "a"): 1}
    assert broker.stats("a", "a").delayed == 0
    assert [m.offset for m in broker.receive("a", "a", 1)] == [0]


def test_an_extended_lease_is_due_at_its_new_deadline(broker: Broker, clock: ManualClock) -> None:
    queue(broker, "a")
    fill(broker, "a", 1)
    [message] = broker.receive("a", "a", 1, visibility_ms=60_000)
    broker.extend("a", "a", [message.receipt], 1_000)  # shorter: due earlier
    assert broker.tick().next_deadline_ms == clock.now_ms() + 1_000
    clock.advance(1_000)
    broker.tick()
    assert broker.stats("a", "a").in_flight == 0


def test_a_group_member_expires_when_its_session_ends(broker: Broker, clock: ManualClock) -> None:
    broker.create_topic("t", NEVER)
    subscribe(broker, "t", "g", mode="stream")
    broker.tick()
    broker.visits = Counter()
    stream = broker.stream("t", "g")
    stream.join("m1")
    timeout = stream.group.session_timeout_ms
    deadline = broker.tick().next_deadline_ms
    assert deadline == clock.now_ms() + timeout + 1  # expire takes members past the deadline
    clock.advance(timeout)
    broker.tick()
    assert stream.group.members() == ["m1"] and broker.visits == {}
    clock.advance(1)
    broker.tick()
    assert stream.group.members() == [] and broker.visits == {("t", "g"): 1}


def test_a_deleted_subscription_is_never_visited(broker: Broker, clock: ManualClock) -> None:
    broker.visits = Counter()
    queue(broker, "a")
    fill(broker, "a", 1)
    broker.receive("a", "a", 1, visibility_ms=1_000)
    broker.delete_queue("a")
    clock.advance(1_000)
    tick = broker.tick()
    assert broker.visits == {} and tick.next_deadline_ms is None


# -- retention by change --------------------------------------------------------------------


def test_retention_deletes_where_an_ack_moved_the_floor(
    broker: Broker, engine: LocalEngine
) -> None:
    broker.create_topic("q", SMALL, UNTIL_CONSUMED)
    subscribe(broker, "q", "s")
    fill(broker, "q", 40)
    broker.tick()
    assert start_offset(engine, "q") == 0
    broker.ack("q", "s", [m.receipt for m in broker.receive("q", "s", 30)])
    broker.tick()
    assert 0 < start_offset(engine, "q") <= 30


def test_retention_never_passes_the_slowest_subscription(
    broker: Broker, engine: LocalEngine
) -> None:
    broker.create_topic("q", SMALL, UNTIL_CONSUMED)
    subscribe(broker, "q", "fast")
    subscribe(broker, "q", "slow")
    fill(broker, "q", 40)
    broker.ack("q", "fast", [m.receipt for m in broker.receive("q", "fast", 40)])
    broker.ack("q", "slow", [m.receipt for m in broker.receive("q", "slow", 5)])
    broker.tick()
    assert start_offset(engine, "q") <= 5
    assert [m.offset for m in broker.receive("q", "slow", 1)] == [5]
    # Deleting the slow one lifts the floor to the fast one's: retention catches up.
    broker.delete_subscription("q", "slow")
    broker.tick()
    assert start_offset(engine, "q") > 5


def test_retention_keeps_what_a_quarantined_subscription_had_not_consumed(
    data_dir: str, clock: ManualClock
) -> None:
    engine = LocalEngine.open(data_dir, clock)
    broker = Broker.open(engine, clock)
    broker.create_topic("q", SMALL, UNTIL_CONSUMED)
    subscribe(broker, "q", "fast")
    subscribe(broker, "q", "slow")
    fill(broker, "q", 40)
    broker.ack("q", "slow", [m.receipt for m in broker.receive("q", "slow", 5)])
    [slow] = [s for s in broker.subscriptions() if s.spec.name == "slow"]
    journal = Path(data_dir) / "journals" / slow.spec.journal / "log"
    engine.close()
    [segment] = journal.glob("*.log")
    data = bytearray(segment.read_bytes())
    data[40] ^= 0x40  # its first entry: after a clean shutdown, damage, not a torn tail
    segment.write_bytes(data)

    engine = LocalEngine.open(data_dir, clock)
    try:
        broker = Broker.open(engine, clock)
        assert ("q", "slow") in broker.quarantined_subscriptions()
        broker.ack("q", "fast", [m.receipt for m in broker.receive("q", "fast", 40)])
        broker.tick()
        assert start_offset(engine, "q") == 0, "nothing the quarantined one may need is gone"
        # Deleting it is the operator's way out: retention catches up with the fast one.
        broker.delete_subscription("q", "slow")
        broker.tick()
        assert start_offset(engine, "q") > 5
    finally:
        engine.close()


def test_a_segment_rolled_after_everything_was_consumed_is_deleted(
    broker: Broker, engine: LocalEngine
) -> None:
    broker.create_topic("q", SMALL, UNTIL_CONSUMED)
    subscribe(broker, "q", "s")
    log = engine.topic("q").log(0)
    while True:  # fill the first segment, consuming everything as it comes
        fill(broker, "q", 1)
        if log.segment_count > 1:
            break
        broker.ack("q", "s", [m.receipt for m in broker.receive("q", "s", 1)])
        broker.tick()
        assert start_offset(engine, "q") == 0  # the active segment stays
    # The last publish rolled: the first segment is wholly consumed, and no ack follows.
    broker.tick()
    assert start_offset(engine, "q") == log.end_offset - 1


def test_a_stream_commit_moves_its_floor(broker: Broker, engine: LocalEngine) -> None:
    broker.create_topic("q", SMALL, UNTIL_CONSUMED)
    subscribe(broker, "q", "g", mode="stream")
    fill(broker, "q", 40)
    stream = broker.stream("q", "g")
    member = stream.join("m")
    broker.tick()
    assert start_offset(engine, "q") == 0
    stream.commit("m", member.generation, {0: 30})
    broker.tick()
    assert 0 < start_offset(engine, "q") <= 30


def test_one_topics_floor_ignores_other_topics(broker: Broker) -> None:
    for name in ("a", "b"):
        broker.create_topic(name, NEVER, UNTIL_CONSUMED)
        subscribe(broker, name, "s")
        fill(broker, name, 3, size=10)
    broker.ack("a", "s", [m.receipt for m in broker.receive("a", "s", 3)])
    assert broker.floor("a", 0) == 3
    assert broker.floor("b", 0) == 0
    assert broker.backlog("b", 0) == 3
    assert [s.name for s in broker.list_subscriptions("a")] == ["s"]
    broker.delete_topic("a")
    assert broker.floor("a", 0) is None
    assert broker.topics_with_subscriptions() == {"b"}


def test_a_subscription_whose_tick_fails_keeps_no_other_waiting(
    broker: Broker, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = ["a", "b", "c", "d"]
    for name in names:
        queue(broker, name)
        fill(broker, name, 1)
        broker.receive(name, name, 1, visibility_ms=1_000)
    [broken] = [s for s in broker.subscriptions() if s.spec.name == "b"]

    def fail() -> int | None:
        raise RuntimeError("a bug in one subscription")

    monkeypatch.setattr(broken, "tick", fail)
    clock.advance(1_000)
    for _ in range(2):  # the host retries a failed tick
        with pytest.raises(RuntimeError):
            broker.tick()
    assert [broker.stats(n, n).in_flight for n in names] == [0, 1, 0, 0]
    monkeypatch.undo()
    broker.tick()  # still due: it is visited once it works again
    assert broker.stats("b", "b").in_flight == 0


# -- snapshots ------------------------------------------------------------------------------


def test_only_journals_due_a_snapshot_are_listed(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(state_codec, "SNAPSHOT_EVERY", 3)
    for name in ("a", "b"):
        queue(broker, name)
    broker.create_topic("t", NEVER)
    subscribe(broker, "t", "g", mode="stream")
    assert broker.journals_due() == []
    fill(broker, "a", 3, size=10)
    for message in broker.receive("a", "a", 3):  # one entry
        broker.ack("a", "a", [message.receipt])  # one entry each
    [due] = broker.journals_due()
    assert due.spec.name == "a"
    due.snapshot()
    assert broker.journals_due() == []

    fill(broker, "t", 1, size=10)
    stream = broker.stream("t", "g")
    member = stream.join("m")
    stream.commit("m", member.generation, {0: 1})
    stream.commit("m", member.generation, {0: 1})
    assert broker.journals_due() == []
    stream.commit("m", member.generation, {0: 1})
    assert [s.spec.name for s in broker.journals_due()] == ["g"]


def test_the_host_snapshots_a_journal_when_it_is_due(
    data_dir: str, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(state_codec, "SNAPSHOT_EVERY", 3)

    async def body() -> None:
        host = await Host.start(data_dir, clock)
        try:
            broker = host._broker
            queue(broker, "a")
            queue(broker, "b")
            fill(broker, "a", 3, size=10)
            for message in broker.receive("a", "a", 3):
                broker.ack("a", "a", [message.receipt])
            [due] = broker.journals_due()
            await host._snapshot_journals()
            assert due.journal.recover()[0] is not None, "a snapshot was written"
            assert broker.journals_due() == []
        finally:
            await host.aclose()

    asyncio.run(body())
