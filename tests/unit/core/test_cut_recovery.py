"""A log cut below what its subscriptions had seen (roost.core.broker ``continue_past_seen``).

The case: records were appended, delivered and acked (or a group committed past them), and the
acks reached the state journal, but the records did not survive: a power failure took the
unsynced suffix of an ``interval`` log, or recovery cut a damaged tail. Before the fix, new
publishes took the lost records' offsets, so a queue counted them as acked and never delivered
them (a negative backlog), and a group that committed past the new end failed with
``OffsetOutOfRange`` for good.

Each test builds that state on a real engine (a crash is ``close(clean=False)``, the loss a
truncation of the segment file at a batch boundary), reopens the broker and checks that new
records are delivered, offsets are never reused, and the skip is reported.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from roost.clock import ManualClock
from roost.core.broker import Broker
from roost.core.model import SubscriptionSpec
from roost.core.publishing import Outgoing
from roost.storage import LocalEngine, TopicConfig
from roost.storage.batch import iter_batches
from roost.storage.segment import LOG_SUFFIX

BATCH = 10


class Node:
    """A broker on a data directory that can crash and lose a suffix of a log."""

    def __init__(self, data_dir: str, clock: ManualClock) -> None:
        self.data_dir = data_dir
        self.clock = clock
        self.engine = LocalEngine.open(data_dir, clock)
        self.broker = Broker.open(self.engine, clock)

    def publish(self, topic: str, count: int, first: int = 0) -> list[int]:
        """``count`` records in batches of ``BATCH`` (one stored batch each); their offsets."""
        offsets: list[int] = []
        for start in range(first, first + count, BATCH):
            values = [b"m%d" % n for n in range(start, min(start + BATCH, first + count))]
            outcome = self.broker.publish(topic, [Outgoing(value=v, partition=0) for v in values])
            offsets += [p.offset for p in outcome.published]
        return offsets

    def drain(self, topic: str, subscription: str) -> list[bytes]:
        got: list[bytes] = []
        while messages := self.broker.receive(topic, subscription, max_messages=100):
            got += [m.value for m in messages]
            assert not self.broker.ack(topic, subscription, [m.receipt for m in messages])
        return got

    def crash_losing(self, topic: str, keep: int) -> None:
        """Crash, then lose every record of ``topic``/0 from offset ``keep`` on, as a power
        failure takes an unsynced suffix: the file simply ends at a batch boundary."""
        self.engine.close(clean=False)
        directory = os.path.join(self.data_dir, "topics", topic, "0")
        [segment] = sorted(f for f in os.listdir(directory) if f.endswith(LOG_SUFFIX))
        path = os.path.join(directory, segment)
        with open(path, "rb") as f:
            data = f.read()
        cut = next(p for p, h in iter_batches(data) if h.base_offset == keep)
        os.truncate(path, cut)

    def reopen(self) -> None:
        self.engine = LocalEngine.open(self.data_dir, self.clock)
        self.broker = Broker.open(self.engine, self.clock)

    def close(self) -> None:
        self.engine.close()


@pytest.fixture
def node(data_dir: str, clock: ManualClock) -> Iterator[Node]:
    node = Node(data_dir, clock)
    yield node
    node.close()


def test_new_records_after_a_cut_below_the_acks_are_delivered(node: Node) -> None:
    node.broker.create_queue("jobs", durability="interval")
    node.publish("jobs", 50)
    assert len(node.drain("jobs", "jobs")) == 50
    node.crash_losing("jobs", keep=10)  # the acks of 10..49 survived, the records did not
    node.reopen()

    offsets = node.publish("jobs", 10, first=100)

    assert offsets == list(range(50, 60)), "offsets seen before the cut are never reused"
    assert node.drain("jobs", "jobs") == [b"m%d" % n for n in range(100, 110)]
    stats = node.broker.stats("jobs", "jobs")
    assert stats.backlog == 0
    log = node.engine.topic("jobs").log(0)
    assert log.recovery.offsets_skipped == 40
    assert log.recovery.lost_data
    assert any("offsets 10..49 skipped" in p and "jobs" in p for p in log.recovery.problems)


def test_backlog_counts_new_records_only(node: Node) -> None:
    node.broker.create_queue("jobs", durability="interval")
    node.publish("jobs", 50)
    node.drain("jobs", "jobs")
    node.crash_losing("jobs", keep=10)
    node.reopen()

    node.publish("jobs", 10, first=100)

    assert node.broker.stats("jobs", "jobs").backlog == 10


def test_unacked_records_below_the_cut_are_still_delivered(node: Node) -> None:
    node.broker.create_queue("jobs", durability="interval")
    node.publish("jobs", 30)
    received = node.broker.receive("jobs", "jobs", max_messages=30)
    # Only 20..29 are acked: 0..19 stay leased, and are redelivered after the restart.
    node.broker.ack("jobs", "jobs", [m.receipt for m in received[20:]])
    node.crash_losing("jobs", keep=20)
    node.reopen()

    node.publish("jobs", 5, first=100)

    got = node.drain("jobs", "jobs")
    assert sorted(got) == sorted(
        [b"m%d" % n for n in range(20)] + [b"m%d" % n for n in range(100, 105)]
    )


def test_a_group_committed_past_the_cut_reads_the_new_records(node: Node) -> None:
    node.broker.create_topic("events", TopicConfig(durability="interval"))
    node.broker.create_subscription(
        SubscriptionSpec(topic="events", name="audit", mode="stream", start="earliest")
    )
    node.publish("events", 50)
    stream = node.broker.stream("events", "audit")
    member = stream.join()
    fetched = stream.fetch(member.member_id, member.generation, max_records=100)
    stream.commit(member.member_id, member.generation, {0: fetched[-1].offset + 1})
    node.crash_losing("events", keep=20)
    node.reopen()

    node.publish("events", 5, first=100)

    stream = node.broker.stream("events", "audit")
    member = stream.join()
    fetched = stream.fetch(member.member_id, member.generation, max_records=100)
    assert [m.value for m in fetched] == [b"m%d" % n for n in range(100, 105)]
    assert [m.offset for m in fetched] == list(range(50, 55))
    batches = stream.fetch_batches(member.member_id, member.generation, max_records=100)
    assert batches == [], "nothing more to read, and no OffsetOutOfRange"


def test_a_new_subscription_reads_across_the_gap(node: Node) -> None:
    node.broker.create_queue("jobs", durability="interval")
    node.publish("jobs", 50)
    node.drain("jobs", "jobs")
    node.crash_losing("jobs", keep=10)
    node.reopen()
    node.publish("jobs", 5, first=100)

    node.broker.create_subscription(
        SubscriptionSpec(topic="jobs", name="late", mode="queue", start="earliest",
                         max_deliveries=None)
    )  # fmt: skip

    assert node.drain("jobs", "late") == [b"m%d" % n for n in [*range(10), *range(100, 105)]]
    assert node.broker.stats("jobs", "late").backlog == 0


def test_a_stream_reader_from_the_start_skips_the_gap(node: Node) -> None:
    node.broker.create_queue("jobs", durability="interval")
    node.publish("jobs", 50)
    node.drain("jobs", "jobs")
    node.crash_losing("jobs", keep=10)
    node.reopen()
    node.publish("jobs", 5, first=100)

    records = node.broker.read("jobs", 0, 0, max_messages=100)
    later = node.broker.read("jobs", 0, 25, max_messages=100)

    assert [m.offset for m in records] == [*range(10), *range(50, 55)]
    assert [m.offset for m in later] == list(range(50, 55)), "an offset in the gap reads on"


def test_the_gap_survives_restarts_and_is_written_once(node: Node) -> None:
    node.broker.create_queue("jobs", durability="interval")
    node.publish("jobs", 50)
    node.drain("jobs", "jobs")
    node.crash_losing("jobs", keep=10)
    node.reopen()
    node.close()
    node.reopen()  # clean this time

    log = node.engine.topic("jobs").log(0)
    assert log.end_offset == 50
    assert log.recovery.offsets_skipped == 0, "nothing left to skip"
    assert node.publish("jobs", 1, first=7) == [50]
    assert node.drain("jobs", "jobs") == [b"m7"]


def test_an_idempotent_retry_of_a_lost_publish_is_appended_again(node: Node) -> None:
    node.broker.create_queue("jobs", durability="interval")
    node.publish("jobs", 10)
    lost = node.broker.publish(
        "jobs", [Outgoing(value=b"lost", partition=0)], producer_id="p1", sequence=0
    )
    assert lost.published[0].offset == 10
    node.drain("jobs", "jobs")
    node.crash_losing("jobs", keep=10)  # the record is gone, its placement journaled
    node.reopen()

    retry = node.broker.publish(
        "jobs", [Outgoing(value=b"lost", partition=0)], producer_id="p1", sequence=0
    )

    assert retry.published[0].offset == 11, "appended again, past the acked offset 10"
    assert node.drain("jobs", "jobs") == [b"lost"]
