"""Power loss under expired and overflow dead letters (issue 15, items 3 and 9): a message the
broker counts as done without a consumer having acked it has a copy in the dead-letter topic,
before and after any power cut — twice perhaps, never zero times.

The machine publishes to a queue (``always``, a default TTL, a small backlog bound that drops
the oldest with ``dead_letter_dropped``) with and without TTLs of their own, lets time pass,
ticks, syncs the logs and journals in any order (as the flusher would), and cuts the power
between steps, over ``PowerLossFS`` (tests/property/power_loss_fs.py). Nothing ever
receives: every message done is done by expiry or by overflow, so each needs its copy.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from roost.clock import ManualClock
from roost.core.broker import Broker
from roost.core.policies import TopicPolicy
from roost.core.publishing import Outgoing
from roost.core.subscription import QueueSubscription
from roost.storage import LocalEngine
from tests.property.power_loss_fs import PowerLossFS

QUEUE, DLQ = "jobs", "jobs.dlq"
QUEUE_TTL_MS = 5_000


class DeadLetterPowerLoss(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = tempfile.mkdtemp(prefix="roost-power-dlq-")
        self.fs = PowerLossFS(self.root)
        self.path = os.path.join(self.root, "data")
        self.clock = ManualClock(now_ms=1_700_000_000_000)
        self.counter = 0
        self.engine: LocalEngine | None = None
        self.broker: Broker | None = None

    @initialize()
    def start(self) -> None:
        self._open()
        assert self.broker is not None and self.engine is not None
        policy = TopicPolicy(
            max_backlog_messages=6, overflow="drop_oldest", dead_letter_dropped=True,
            retain_until_consumed=True,
        )  # fmt: skip
        self.broker.create_queue(
            QUEUE, max_deliveries=None, message_ttl_ms=QUEUE_TTL_MS, policy=policy
        )
        for log in self.engine.logs():  # the queue is made: nothing to lose about it
            log.flush()

    def _open(self) -> None:
        self.engine = LocalEngine.open(self.path, self.clock, self.fs)
        self.broker = Broker.open(self.engine, self.clock)

    # -- steps ----------------------------------------------------------------------------

    @rule(
        count=st.integers(1, 5),
        ttl=st.sampled_from([None, 1_000, 60_000]),
        confirmed=st.booleans(),
    )
    def publish(self, count: int, ttl: int | None, confirmed: bool) -> None:
        """``confirmed``: its log synced, as the host confirms a publish; else a power cut may
        take it back (what it dropped stays dropped, and dead-lettered)."""
        assert self.broker is not None and self.engine is not None
        messages = []
        for _ in range(count):
            self.counter += 1
            messages.append(Outgoing(value=b"m%d" % self.counter, ttl_ms=ttl))
        self.broker.publish(QUEUE, messages)
        if confirmed:
            self.engine.topic(QUEUE).log(0).flush()

    @rule(ms=st.sampled_from([0, 999, 1_000, 5_000, 60_000]))
    def time_passes(self, ms: int) -> None:
        assert self.broker is not None
        self.clock.advance(ms)
        self.broker.tick()

    @rule(queue=st.booleans(), dead_letters=st.booleans(), journals=st.booleans())
    def sync(self, queue: bool, dead_letters: bool, journals: bool) -> None:
        """What the flusher does, for some of the logs, in any order; then a tick, as the
        host's after a round (it settles the dead letters now durable)."""
        assert self.engine is not None and self.broker is not None
        for log in self.engine.logs():
            wanted = {QUEUE: queue, DLQ: dead_letters}.get(log.topic, journals)
            if wanted:
                log.flush()
        self.broker.tick()

    @rule(seed=st.integers(0, 2**32))
    def cut_the_power(self, seed: int) -> None:
        assert self.engine is not None
        self.fs.cut_after(1)
        self.engine.close(clean=False)
        self.fs.close_all()
        self.fs.power_cut(random.Random(seed))
        self._open()

    # -- checks ---------------------------------------------------------------------------

    @invariant()
    def whatever_is_done_has_its_dead_letter(self) -> None:
        if self.broker is None or self.engine is None:
            return
        [sub] = [s for s in self.broker.subscriptions() if isinstance(s, QueueSubscription)]
        acks = sub.partition_state(0).acks
        log = self.engine.topic(QUEUE).log(0)
        letters = self.engine.topic(DLQ).log(0)
        copied: dict[int, bytes] = {}
        for letter in letters.read(letters.start_offset, max_records=100_000):
            headers = dict(letter.headers)
            assert headers["x-roost-death-reason"] in (b"expired", b"overflow")
            copied[int(headers["x-roost-source-offset"])] = letter.value
        start = max(log.start_offset, 0)
        for record in log.read(start, max_records=100_000):
            if record.offset in acks:
                assert copied.get(record.offset) == record.value, (
                    f"offset {record.offset} is done without its dead letter"
                )

    def teardown(self) -> None:
        if self.engine is not None:
            self.engine.close(clean=False)
        self.fs.close_all()
        shutil.rmtree(self.root, ignore_errors=True)


DeadLetterPowerLoss.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestDeadLetterPowerLoss = DeadLetterPowerLoss.TestCase
