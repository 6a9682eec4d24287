"""Model-based test of message TTL (issue 15, item 3) against a dictionary model.

The broker's core (``Broker``) on a driven clock, a plain or a fifo queue: publish with or
without a TTL of its own (and a queue default, or none), advance the clock, receive, ack,
nack, crash-and-reopen. Checked
after every step: nothing is delivered at or after its expiry, nor while it waits for a nack's
delay; an ack of a message leased before it expired still counts (a lease is never revoked);
``stats`` says the model's depth, in flight, delayed and backlog, without a receive having
reached what expired; and the dead-letter topic holds each expired message exactly once, with
``x-roost-death-reason: expired`` (none at all without a dead-letter topic: done then).
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
from roost.core.broker import Broker
from roost.core.model import Message
from roost.core.publishing import Outgoing
from roost.core.retry import RetryPolicy
from roost.core.stats import SubscriptionStats
from roost.storage import LocalEngine

VISIBILITY_MS = 1_000
QUEUE_TTL_MS = [None, 700, 3_000]
OWN_TTL_MS = [None, None, 300, 1_500, 10_000]
NACK_DELAYS_MS = [0, 400]
KEYS = [None, b"a", b"b"]
FAST_RETRY = RetryPolicy(kind="fixed", base_ms=100, max_ms=100, jitter=0.0)


@dataclass
class Expected:
    value: bytes
    expires_at: int | None
    key: bytes | None = None
    deliveries: int = 0
    acked: bool = False
    expired: bool = False
    leased: int | None = None  # the delivery count of the live lease
    lease_deadline: int = 0
    visible_at: int = 0

    @property
    def finished(self) -> bool:
        return self.acked or self.expired


@dataclass
class Model:
    messages: dict[int, Expected] = field(default_factory=dict)  # offset -> message


class TtlMachine(RuleBasedStateMachine):
    leases = Bundle("leases")

    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp()
        self.clock = ManualClock()
        self.model = Model()
        self.serial = 0

    @initialize(
        queue_ttl=st.sampled_from(QUEUE_TTL_MS), dead_letters=st.booleans(), fifo=st.booleans()
    )
    def start(self, queue_ttl: int | None, dead_letters: bool, fifo: bool) -> None:
        self.queue_ttl = queue_ttl
        self.dead_letters = dead_letters
        self.fifo = fifo
        self.engine = LocalEngine.open(self.directory, self.clock)
        self.broker = Broker.open(self.engine, self.clock)
        self.broker.create_queue(
            "jobs", visibility_timeout_ms=VISIBILITY_MS, max_deliveries=None,
            dead_letter="" if dead_letters else None, durability="never", retry=FAST_RETRY,
            message_ttl_ms=queue_ttl, fifo=fifo,
        )  # fmt: skip

    def teardown(self) -> None:
        if hasattr(self, "engine"):
            self.engine.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    # -- steps ----------------------------------------------------------------------------

    @rule(ttl=st.sampled_from(OWN_TTL_MS), count=st.integers(1, 3), key=st.sampled_from(KEYS))
    def publish(self, ttl: int | None, count: int, key: bytes | None) -> None:
        now = self.clock.now_ms()
        messages = []
        for _ in range(count):
            self.serial += 1
            messages.append(Outgoing(value=b"v%d" % self.serial, ttl_ms=ttl, key=key))
        outcome = self.broker.publish("jobs", messages)
        candidates = [now + t for t in (ttl, self.queue_ttl) if t is not None]
        for message, placed in zip(messages, outcome.published, strict=True):
            self.model.messages[placed.offset] = Expected(
                message.value, min(candidates) if candidates else None, key
            )

    @rule(target=leases, n=st.integers(1, 4))
    def receive(self, n: int) -> object:
        self.settle()
        messages = self.broker.receive("jobs", "jobs", n)
        assert len(messages) <= n
        for message in messages:
            self.check_delivery(message)
        return multiple(*messages)

    def check_delivery(self, message: Message) -> None:
        now = self.clock.now_ms()
        expected = self.model.messages[message.offset]
        assert message.value == expected.value
        assert not expected.finished, f"{message.offset} delivered after it was finished"
        assert expected.expires_at is None or now < expected.expires_at, "delivered expired"
        assert expected.leased is None, f"{message.offset} delivered while leased"
        assert expected.visible_at <= now, f"{message.offset} delivered during its delay"
        assert self.is_head(message.offset), "fifo: delivered before an earlier one of its key"
        assert message.delivery_count == expected.deliveries + 1
        expected.deliveries += 1
        expected.leased = message.delivery_count
        expected.lease_deadline = now + VISIBILITY_MS

    @rule(message=consumes(leases))
    def ack(self, message: Message) -> None:
        self.settle()
        expected = self.model.messages[message.offset]
        refused = self.broker.ack("jobs", "jobs", [message.receipt])
        if expected.leased == message.delivery_count:
            assert refused == [], "a lease is never revoked by its message's TTL"
            expected.acked, expected.leased = True, None
        else:
            assert refused == [message.receipt]
        self.settle()  # (fifo: the key's next message is promoted by the tick)

    @rule(message=consumes(leases), delay=st.sampled_from(NACK_DELAYS_MS))
    def nack(self, message: Message, delay: int) -> None:
        self.settle()
        expected = self.model.messages[message.offset]
        refused = self.broker.nack("jobs", "jobs", [message.receipt], delay_ms=delay)
        if expected.leased == message.delivery_count:
            assert refused == []
            self.release(expected, self.clock.now_ms() + delay)
        else:
            assert refused == [message.receipt]
        self.settle()

    @rule(ms=st.sampled_from([1, 99, 299, 300, 700, 1000, 3000]))
    def advance(self, ms: int) -> None:
        self.clock.advance(ms)
        self.settle()

    @precondition(lambda self: hasattr(self, "broker"))
    @rule()
    def crash_and_reopen(self) -> None:
        self.engine.close(clean=False)
        self.engine = LocalEngine.open(self.directory, self.clock)
        self.broker = Broker.open(self.engine, self.clock)
        now = self.clock.now_ms()
        for expected in self.model.messages.values():
            if expected.leased is not None:  # leases die with the process
                self.release(expected, now)
        self.settle()

    # -- the model's side of time ---------------------------------------------------------

    def settle(self) -> None:
        """The broker's tick (leases that ran out, what expired, dead letters to settle), and
        the model's."""
        now = self.clock.now_ms()
        for expected in self.model.messages.values():
            if expected.leased is not None and expected.lease_deadline <= now:
                self.release(expected, expected.lease_deadline)
        self.broker.tick()
        for expected in self.model.messages.values():
            due = expected.expires_at is not None and expected.expires_at <= now
            if due and not expected.finished and expected.leased is None:
                expected.expired = True

    def release(self, expected: Expected, visible_at: int) -> None:
        expected.leased = None
        expected.visible_at = visible_at
        now = self.clock.now_ms()
        if expected.expires_at is not None and expected.expires_at <= now:
            expected.expired = True

    def is_head(self, offset: int) -> bool:
        """Not fifo, or no earlier message of its key is left."""
        if not self.fifo:
            return True
        key = self.model.messages[offset].key
        return not any(
            o < offset and e.key == key and not e.finished for o, e in self.model.messages.items()
        )

    # -- checks ---------------------------------------------------------------------------

    @invariant()
    def stats_are_the_models(self) -> None:
        if not hasattr(self, "broker"):
            return
        now = self.clock.now_ms()
        stats = self.broker.stats("jobs", "jobs")
        assert isinstance(stats, SubscriptionStats)
        live = {o: e for o, e in self.model.messages.items() if not e.finished}
        leased = sum(1 for e in live.values() if e.leased is not None)
        ready = sum(
            1 for o, e in live.items()
            if e.leased is None and e.visible_at <= now and self.is_head(o)
        )  # fmt: skip
        if self.fifo:
            # A message behind an earlier one of its key is known to wait (not depth) only
            # once a receive has read it: fifo stats are exact in backlog and in flight.
            assert (stats.backlog, stats.in_flight) == (len(live), leased), live
            return
        assert (stats.backlog, stats.in_flight, stats.delayed, stats.depth) == (
            len(live), leased, len(live) - leased - ready, ready,
        ), live  # fmt: skip

    @invariant()
    def each_expired_message_is_dead_lettered_once(self) -> None:
        if not hasattr(self, "broker"):
            return
        letters: list[int] = []
        if self.dead_letters:
            log = self.engine.topic("jobs.dlq").log(0)
            for record in log.read(log.start_offset, max_records=10_000):
                headers = dict(record.headers)
                assert headers["x-roost-death-reason"] == b"expired"
                assert "x-roost-expires-at" not in headers, "a dead letter does not expire"
                letters.append(int(headers["x-roost-source-offset"]))
        assert len(letters) == len(set(letters)), "dead-lettered twice"
        expired = {o for o, e in self.model.messages.items() if e.expired}
        assert set(letters) == (expired if self.dead_letters else set())


TtlMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
test_ttl_model = TtlMachine.TestCase
