"""Model test of delays: publish delays and nack delays from none to most of a year, against a
dictionary of when each message may be delivered.

Steps: publish (``delay_ms`` or ``deliver_at_ms``, from 0 to 200 days), receive, ack, nack
with a delay (up to 300 days), advance the clock (1 ms to 100 days), tick, a snapshot of the
subscription's journal, a clean restart and a crash-and-reopen of the whole broker. Checked
at every step: nothing is delivered before its time, and every receive takes exactly as many
messages as are due (so everything is delivered after its time); the stats (depth, delayed,
in flight) match the model, before a receive has read a delayed record and after a restart
alike. At the end the clock jumps past every delay and the queue is drained: every message
is delivered, nothing lost.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from roost.clock import ManualClock
from roost.core.broker import Broker
from roost.core.model import Message
from roost.core.publishing import Outgoing
from roost.core.stats import SubscriptionStats
from roost.storage import LocalEngine

HOUR_MS = 3600 * 1000
DAY_MS = 24 * HOUR_MS
VISIBILITY_MS = 30_000
PUBLISH_DELAYS = [None, 0, 1, 500, 60_000, 25 * HOUR_MS, 3 * DAY_MS, 200 * DAY_MS]
NACK_DELAYS = [0, 1_000, 30 * HOUR_MS, 300 * DAY_MS]
STEPS_MS = [1, 499, 1_000, 60_000, HOUR_MS, 25 * HOUR_MS, 100 * DAY_MS]


@dataclass
class Expected:
    visible_at_ms: int
    leased_until_ms: int | None = None
    message: Message | None = None
    acked: bool = False


class DelayMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp()
        self.clock = ManualClock()
        self.model: dict[int, Expected] = {}
        self.serial = 0

    @initialize()
    def start(self) -> None:
        self.engine = LocalEngine.open(self.directory, self.clock)
        self.broker = Broker.open(self.engine, self.clock)
        self.broker.create_queue(
            "q", dead_letter=None, max_deliveries=None, durability="never",
            visibility_timeout_ms=VISIBILITY_MS,
        )  # fmt: skip

    def teardown(self) -> None:
        self.engine.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def now(self) -> int:
        return self.clock.now_ms()

    def expire_in_model(self) -> None:
        """Leases past their deadline: visible again from the deadline (as the broker does)."""
        for expected in self.model.values():
            until = expected.leased_until_ms
            if until is not None and until <= self.now():
                expected.visible_at_ms, expected.leased_until_ms = until, None
                expected.message = None

    def waiting(self) -> list[Expected]:
        return [e for e in self.model.values() if not e.acked and e.leased_until_ms is None]

    # -- steps ----------------------------------------------------------------------------

    @rule(
        delays=st.lists(st.sampled_from(PUBLISH_DELAYS), min_size=1, max_size=4),
        absolute=st.booleans(),
    )
    def publish(self, delays: list[int | None], absolute: bool) -> None:
        now = self.now()
        messages = []
        for delay in delays:
            self.serial += 1
            if absolute and delay is not None:
                messages.append(Outgoing(value=b"%d" % self.serial, deliver_at_ms=now + delay))
            else:
                messages.append(Outgoing(value=b"%d" % self.serial, delay_ms=delay))
        outcome = self.broker.publish("q", messages)
        for placed, delay in zip(outcome.published, delays, strict=True):
            self.model[placed.offset] = Expected(now + (delay or 0))

    @rule(count=st.integers(1, 6))
    def receive(self, count: int) -> None:
        self.expire_in_model()
        now = self.now()
        due = [e for e in self.waiting() if e.visible_at_ms <= now]
        messages = self.broker.receive("q", "q", count)
        assert len(messages) == min(count, len(due)), "every message due is deliverable"
        for message in messages:
            expected = self.model[message.offset]
            assert expected.visible_at_ms <= now, (
                f"offset {message.offset} delivered {expected.visible_at_ms - now} ms early"
            )
            assert not expected.acked and expected.leased_until_ms is None
            expected.leased_until_ms, expected.message = now + VISIBILITY_MS, message

    def leased(self) -> list[Expected]:
        self.expire_in_model()
        return [e for e in self.model.values() if e.leased_until_ms is not None]

    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        leased = self.leased()
        if not leased:
            return
        chosen = data.draw(st.sampled_from(leased))
        assert chosen.message is not None
        assert self.broker.ack("q", "q", [chosen.message.receipt]) == []
        chosen.acked, chosen.leased_until_ms, chosen.message = True, None, None

    @rule(data=st.data(), delay_ms=st.sampled_from(NACK_DELAYS))
    def nack(self, data: st.DataObject, delay_ms: int) -> None:
        leased = self.leased()
        if not leased:
            return
        chosen = data.draw(st.sampled_from(leased))
        assert chosen.message is not None
        assert self.broker.nack("q", "q", [chosen.message.receipt], delay_ms=delay_ms) == []
        chosen.visible_at_ms = self.now() + delay_ms
        chosen.leased_until_ms, chosen.message = None, None

    @rule(ms=st.sampled_from(STEPS_MS))
    def advance(self, ms: int) -> None:
        self.clock.advance(ms)

    @rule()
    def tick(self) -> None:
        self.broker.tick()

    @rule()
    def snapshot(self) -> None:
        """What the host does every ``SNAPSHOT_EVERY`` journal entries: the state, whole."""
        for sub in self.broker.subscriptions():
            sub.journal.snapshot(sub.snapshot())

    @rule(crash=st.booleans())
    def restart(self, crash: bool) -> None:
        """Leases die with the process: what was leased is visible again at once."""
        self.engine.close(clean=not crash)
        self.engine = LocalEngine.open(self.directory, self.clock)
        self.broker = Broker.open(self.engine, self.clock)
        for expected in self.model.values():
            if expected.leased_until_ms is not None:
                expected.visible_at_ms, expected.leased_until_ms = self.now(), None
                expected.message = None

    # -- checks ---------------------------------------------------------------------------

    @invariant()
    def stats_match(self) -> None:
        if not hasattr(self, "broker"):
            return
        self.broker.tick()  # what the host's timer does when a lease or delay is due
        self.expire_in_model()
        now = self.now()
        stats = self.broker.stats("q", "q")
        assert isinstance(stats, SubscriptionStats)
        waiting = self.waiting()
        delayed = sum(1 for e in waiting if e.visible_at_ms > now)
        leased = sum(1 for e in self.model.values() if e.leased_until_ms is not None)
        assert (stats.depth, stats.delayed, stats.in_flight) == (
            len(waiting) - delayed, delayed, leased,
        ), stats  # fmt: skip

    def teardown_drain(self) -> None:
        """Past every delay, everything not acked arrives."""
        self.clock.advance(400 * DAY_MS)
        for expected in self.leased():
            assert expected.message is not None
            self.broker.ack("q", "q", [expected.message.receipt])
            expected.acked = True
            expected.leased_until_ms = None
        for _ in range(100):
            messages = self.broker.receive("q", "q", 50)
            if not messages:
                break
            for message in messages:
                assert not self.model[message.offset].acked
                self.model[message.offset].acked = True
            assert self.broker.ack("q", "q", [m.receipt for m in messages]) == []
        lost = [offset for offset, e in self.model.items() if not e.acked]
        assert not lost, f"never delivered: {lost}"


class DrainedDelayMachine(DelayMachine):
    def teardown(self) -> None:
        try:
            if hasattr(self, "broker"):
                self.teardown_drain()
        finally:
            super().teardown()


DrainedDelayMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None
)
test_delays = DrainedDelayMachine.TestCase
