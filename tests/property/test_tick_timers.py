"""Model test of the broker's timers: a tick does the due work, once, and nothing else.

Several queues; random publishes (some delayed: a queue knows those from the publish on),
receives (with a visibility timeout), acks, nacks with a delay, clock moves and ticks. The
model knows each message's state and, per queue, every deadline the queue was told about
since the tick last visited it. Checked at every tick:

- every queue with a lease past its deadline or a delay at its end is visited, and after the
  tick no such work is left anywhere;
- a queue is visited only if it was told of a deadline that has come (a lease acked early
  still counts: its deadline was reported; a queue that was never used is never visited);
- each lease expires exactly once (the expiry counters match the model's), in-flight and
  delayed counts match, and ``next_deadline_ms`` is never later than the earliest due work.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from roost.clock import ManualClock
from roost.core.broker import Broker
from roost.core.model import Message
from roost.core.publishing import Outgoing
from roost.core.subscription import QueueSubscription
from roost.storage import LocalEngine

QUEUES = ["q0", "q1", "q2", "q3"]


@dataclass
class Expected:
    state: str = "unread"  # unread | ready | leased | delayed | acked
    due_ms: int = 0  # the lease deadline, or when the delay ends (unread: its deliver-at)
    message: Message | None = None  # the live delivery, to ack or nack


@dataclass
class QueueModel:
    messages: dict[int, Expected] = field(default_factory=dict)
    #: Deadlines the queue was told of since the tick last visited it.
    told: list[int] = field(default_factory=list)
    expired: int = 0

    def due(self, now_ms: int) -> bool:
        return any(m.state in ("leased", "delayed") and m.due_ms <= now_ms for m in self)

    def do_due_work(self, now_ms: int) -> None:
        for expected in self:
            if expected.state in ("leased", "delayed") and expected.due_ms <= now_ms:
                if expected.state == "leased":
                    self.expired += 1
                expected.state, expected.message = "ready", None

    def count(self, state: str) -> int:
        return sum(1 for m in self if m.state == state)

    def __iter__(self) -> Iterator[Expected]:
        return iter(self.messages.values())


class TimersMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp()
        self.clock = ManualClock()
        self.models = {name: QueueModel() for name in QUEUES}

    @initialize()
    def start(self) -> None:
        self.engine = LocalEngine.open(self.directory, self.clock)
        self.broker = Broker.open(self.engine, self.clock)
        for name in QUEUES:
            self.broker.create_queue(
                name, dead_letter=None, max_deliveries=None, durability="never"
            )
        self.broker.tick()  # a new subscription is looked at once
        self.broker.visits = Counter()

    def teardown(self) -> None:
        self.engine.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def now(self) -> int:
        return self.clock.now_ms()

    # -- steps ----------------------------------------------------------------------------

    @rule(
        name=st.sampled_from(QUEUES),
        count=st.integers(1, 3),
        delay_ms=st.sampled_from([None, None, 0, 700, 2_000]),
    )
    def publish(self, name: str, count: int, delay_ms: int | None) -> None:
        outcome = self.broker.publish(name, [Outgoing(value=b"m", delay_ms=delay_ms)] * count)
        model = self.models[name]
        for published in outcome.published:
            if delay_ms:  # known delayed from the publish on (core/scheduled.py): told now
                model.messages[published.offset] = Expected("delayed", self.now() + delay_ms)
                model.told.append(self.now() + delay_ms)
            else:
                model.messages[published.offset] = Expected(due_ms=self.now())

    @rule(
        name=st.sampled_from(QUEUES),
        count=st.integers(1, 4),
        visibility_ms=st.sampled_from([1, 500, 1_000, 2_500]),
    )
    def receive(self, name: str, count: int, visibility_ms: int) -> None:
        model, now = self.models[name], self.now()
        model.do_due_work(now)  # a receive does its own queue's due work first
        # Redeliveries first, lowest offset first; then the log is read on in order: a
        # delayed record is set aside (its delay's end told), the others taken, up to count.
        ready = sorted(o for o, m in model.messages.items() if m.state == "ready")
        taken = ready[:count]
        for offset, expected in sorted(model.messages.items()):
            if expected.state != "unread" or len(taken) == count:
                continue
            if expected.due_ms > now:
                expected.state = "delayed"
                model.told.append(expected.due_ms)
            else:
                taken.append(offset)
        messages = self.broker.receive(name, name, count, visibility_ms)
        assert sorted(m.offset for m in messages) == sorted(taken)
        deadline = now + visibility_ms
        for message in messages:
            expected = model.messages[message.offset]
            expected.state, expected.due_ms, expected.message = "leased", deadline, message
        if messages:
            model.told.append(deadline)

    def leased(self, name: str) -> list[Expected]:
        return [m for m in self.models[name] if m.state == "leased"]

    @rule(name=st.sampled_from(QUEUES), data=st.data())
    def ack(self, name: str, data: st.DataObject) -> None:
        leased = self.leased(name)
        if not leased:
            return
        chosen = data.draw(st.lists(st.sampled_from(leased), min_size=1, unique_by=id))
        receipts = [e.message.receipt for e in chosen if e.message is not None]
        refused = self.broker.ack(name, name, receipts)
        late = [e for e in chosen if e.due_ms <= self.now()]
        assert sorted(r.offset for r in refused) == sorted(
            e.message.offset for e in late if e.message is not None
        )
        for expected in chosen:
            if expected not in late:
                expected.state, expected.message = "acked", None

    @rule(name=st.sampled_from(QUEUES), data=st.data(), delay_ms=st.sampled_from([0, 300, 2_000]))
    def nack(self, name: str, data: st.DataObject, delay_ms: int) -> None:
        leased = self.leased(name)
        if not leased:
            return
        expected = data.draw(st.sampled_from(leased))
        assert expected.message is not None
        refused = self.broker.nack(name, name, [expected.message.receipt], delay_ms=delay_ms)
        if expected.due_ms <= self.now():
            assert refused == [expected.message.receipt]
            return
        assert refused == []
        expected.state, expected.due_ms, expected.message = "delayed", self.now() + delay_ms, None
        self.models[name].told.append(expected.due_ms)

    @rule(ms=st.sampled_from([1, 250, 999, 1_000, 3_000]))
    def advance(self, ms: int) -> None:
        self.clock.advance(ms)

    @rule()
    def tick(self) -> None:
        now = self.now()
        due = {name for name, model in self.models.items() if model.due(now)}
        told = {name for name, model in self.models.items() if any(t <= now for t in model.told)}
        visits = self.broker.visits
        assert visits is not None
        before = visits.copy()
        tick = self.broker.tick()
        visited = {topic for (topic, _), n in visits.items() if n > before[(topic, _)]}
        assert due <= visited, f"due {due} but visited only {visited}"
        assert visited <= told, f"visited {visited - told} with nothing due or told"
        for name in visited:
            model = self.models[name]
            model.do_due_work(now)
            model.told = [t for t in model.told if t > now]
        pending = [
            m.due_ms
            for model in self.models.values()
            for m in model
            if m.state in ("leased", "delayed")
        ]
        if pending:
            assert tick.next_deadline_ms is not None
            assert now < tick.next_deadline_ms <= min(pending)

    # -- checks ---------------------------------------------------------------------------

    @invariant()
    def counts_match(self) -> None:
        """Work is done exactly once: each lease expired once, nothing delayed too long."""
        for sub in self.broker.subscriptions():
            assert isinstance(sub, QueueSubscription)
            model = self.models[sub.spec.name]
            state = sub.partition_state(0)
            assert state.expired == model.expired, sub.spec.name
            assert state.in_flight == model.count("leased"), sub.spec.name
            assert state.delayed == model.count("delayed"), sub.spec.name


TimersMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
test_timers = TimersMachine.TestCase
