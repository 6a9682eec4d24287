"""Model-based test of `queue` and `keyed` subscriptions against a dictionary-and-set model.

Steps: publish, receive, ack, nack (with or without a delay), extend, advance the clock, and
crash-and-reopen. Checked after every step: every delivery count is exact, nothing is delivered
while leased, keyed order and at most one in flight per key. At the end the subscription is
drained: every message was acked exactly once or dead-lettered after exactly max_deliveries
deliveries — nothing lost.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from roost.clock import ManualClock
from roost.core.model import Message, SubscriptionSpec
from roost.core.retry import RetryPolicy
from roost.core.subscription import QueueSubscription
from roost.storage import LocalEngine, Record, TopicConfig

PARTITIONS = 2
MAX_DELIVERIES = 3
VISIBILITY_MS = 1_000
KEYS = [b"a", b"b", b"c", None]
FAST_RETRY = RetryPolicy(kind="fixed", base_ms=100, max_ms=100, jitter=0.0)


@dataclass
class Expected:
    key: bytes | None
    value: bytes
    deliveries: int = 0
    acked: bool = False
    leased: int | None = None  # the delivery count of the live lease
    lease_deadline: int = 0
    dead: bool = False


@dataclass
class Model:
    messages: dict[tuple[int, int], Expected] = field(default_factory=dict)

    def key_of(self, pid: tuple[int, int]) -> tuple[int, bytes]:
        return pid[0], self.messages[pid].key or b""


class QueueMachine(RuleBasedStateMachine):
    leases = Bundle("leases")

    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp()
        self.clock = ManualClock()
        self.model = Model()
        self.serial = 0

    @initialize(keyed=st.booleans())
    def start(self, keyed: bool) -> None:
        self.keyed = keyed
        self.engine = LocalEngine.open(self.directory, self.clock)
        never = TopicConfig(partitions=PARTITIONS, durability="never")
        self.engine.create_topic("jobs", never)
        self.engine.create_topic("dlq", TopicConfig(durability="never"))
        self.spec = SubscriptionSpec(
            name="w", topic="jobs", mode="keyed" if keyed else "queue", start="earliest",
            visibility_timeout_ms=VISIBILITY_MS, max_deliveries=MAX_DELIVERIES,
            dead_letter="dlq", retry=FAST_RETRY, journal="sub-w",
        )  # fmt: skip
        self.open_subscription()

    def open_subscription(self) -> None:
        self.sub = QueueSubscription.open(
            self.spec,
            self.engine.topic("jobs"),
            self.engine.journal("sub-w"),
            self.clock,
            self.engine.topic("dlq"),
        )

    def teardown(self) -> None:
        self.engine.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    # -- steps ----------------------------------------------------------------------------

    @rule(key=st.sampled_from(KEYS))
    def publish(self, key: bytes | None) -> None:
        partition = 0 if key in (b"a", None) else 1  # a key always lands on one partition
        self.serial += 1
        value = b"v%d" % self.serial
        result = self.engine.topic("jobs").append(partition, [Record(value=value, key=key)])
        self.model.messages[(partition, result.base_offset)] = Expected(key, value)

    @rule(target=leases, n=st.integers(1, 5))
    def receive(self, n: int) -> object:
        self.expire_in_model()
        messages = self.sub.receive(n)
        assert len(messages) <= n
        for message in messages:
            self.check_delivery(message)
        return multiple(*messages)

    def check_delivery(self, message: Message) -> None:
        pid = (message.partition, message.offset)
        expected = self.model.messages[pid]
        assert (message.key, message.value) == (expected.key, expected.value)
        assert not expected.acked and not expected.dead
        assert expected.leased is None, f"{pid} delivered while leased"
        assert message.delivery_count == expected.deliveries + 1, "delivery counts are exact"
        if self.keyed:
            key = self.model.key_of(pid)
            for other, e in self.model.messages.items():
                if self.model.key_of(other) != key or other == pid:
                    continue
                assert e.leased is None, f"two of key {key} in flight"
                if other[1] < pid[1]:
                    assert e.acked or e.dead, f"{pid} delivered before {other} of its key"
        expected.deliveries += 1
        expected.leased = message.delivery_count
        expected.lease_deadline = self.clock.now_ms() + VISIBILITY_MS

    @rule(message=consumes(leases))
    def ack(self, message: Message) -> None:
        self.expire_in_model()
        expected = self.model.messages[(message.partition, message.offset)]
        refused = self.sub.ack([message.receipt])
        if expected.leased == message.delivery_count:
            assert refused == []
            expected.acked, expected.leased = True, None
        else:
            assert refused == [message.receipt], "an ack for an expired lease is refused"

    @rule(message=consumes(leases), delay=st.sampled_from([None, 0, 50, 5000]))
    def nack(self, message: Message, delay: int | None) -> None:
        self.expire_in_model()
        expected = self.model.messages[(message.partition, message.offset)]
        refused = self.sub.nack([message.receipt], delay_ms=delay, error="failed")
        if expected.leased == message.delivery_count:
            assert refused == []
            self.release_in_model(expected)
        else:
            assert refused == [message.receipt]

    @rule(message=leases)
    def extend(self, message: Message) -> None:
        self.expire_in_model()
        expected = self.model.messages[(message.partition, message.offset)]
        refused = self.sub.extend([message.receipt], VISIBILITY_MS)
        if expected.leased == message.delivery_count:
            assert refused == []
            expected.lease_deadline = self.clock.now_ms() + VISIBILITY_MS
        else:
            assert refused == [message.receipt]

    @rule(ms=st.sampled_from([1, 99, 100, 999, 1000, 5000]))
    def advance(self, ms: int) -> None:
        self.clock.advance(ms)
        self.expire_in_model()
        self.sub.tick()

    @precondition(lambda self: hasattr(self, "sub"))
    @rule()
    def crash_and_reopen(self) -> None:
        self.engine.close(clean=False)
        self.engine = LocalEngine.open(self.directory, self.clock)
        self.open_subscription()
        for expected in self.model.messages.values():
            if expected.leased is not None:  # leases die with the process; counts survive
                self.release_in_model(expected)

    # -- the model's side of time ---------------------------------------------------------

    def expire_in_model(self) -> None:
        self.sub.tick()
        now = self.clock.now_ms()
        for expected in self.model.messages.values():
            if expected.leased is not None and expected.lease_deadline <= now:
                self.release_in_model(expected)

    def release_in_model(self, expected: Expected) -> None:
        expected.leased = None
        if expected.deliveries >= MAX_DELIVERIES:
            expected.dead = True

    def dead_lettered(self) -> set[tuple[int, int]]:
        """Source ids in the dead-letter topic (a crash may have put one there twice)."""
        dlq = self.engine.topic("dlq")
        dead_ids = set()
        for record in dlq.read(0, 0, max_records=10_000) if dlq.end_offset(0) else []:
            headers = dict(record.headers)
            pid = (int(headers["x-roost-source-partition"]), int(headers["x-roost-source-offset"]))
            assert int(headers["x-roost-delivery-count"]) == MAX_DELIVERIES
            assert headers["x-roost-last-error"] in (
                b"failed",
                b"lease expired",
                b"lease lost in a broker restart",
            )
            assert record.value == self.model.messages[pid].value
            dead_ids.add(pid)
        return dead_ids

    @invariant()
    def dead_letters_only_after_max_deliveries(self) -> None:
        if hasattr(self, "engine"):
            for pid in self.dead_lettered():
                assert self.model.messages[pid].dead, f"{pid} dead-lettered early"

    def teardown_check_nothing_lost(self) -> None:
        """Drain: everything not acked or dead arrives, gets acked; then all are accounted."""
        for _ in range(50):
            self.clock.advance(10_000)
            self.expire_in_model()
            for message in self.sub.receive(100):
                self.check_delivery(message)
                assert self.sub.ack([message.receipt]) == []
                self.model.messages[(message.partition, message.offset)].acked = True
                self.model.messages[(message.partition, message.offset)].leased = None
        for pid, expected in self.model.messages.items():
            assert expected.acked or expected.dead, f"{pid} lost"
            assert not (expected.acked and expected.dead)
        assert self.dead_lettered() == {p for p, e in self.model.messages.items() if e.dead}


class DrainingQueueMachine(QueueMachine):
    def teardown(self) -> None:
        try:
            if hasattr(self, "sub"):
                self.teardown_check_nothing_lost()
        finally:
            super().teardown()


DrainingQueueMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None
)
TestQueueModel = DrainingQueueMachine.TestCase
