"""Power loss under a broker: what is published after a restart is delivered, whatever was lost.

An ``interval`` queue loses its unsynced suffix in a power cut, by design, while the acks that
its subscription journaled (and synced) survive. Before broker open continued such a log past
the offsets its subscriptions had seen, new records took the lost ones' offsets and were never
delivered (a queue counted them as acked) or never fetched (a group had committed past them).

The machine below publishes, receives and acks, fetches and commits, syncs the logs or the
journals (as the flusher would, in any order), and cuts the power between steps, over
``PowerLossFS`` (tests/property/power_loss_fs.py). After each restart it checks:

- no backlog is negative;
- every record published since the last restart is delivered to the queue exactly as far as it
  was not acked, and fetched by the group, before anything older that survived counts.
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
from roost.core.model import SubscriptionSpec
from roost.core.publishing import Outgoing
from roost.storage import LocalEngine
from tests.property.power_loss_fs import PowerLossFS

TOPIC, GROUP = "jobs", "audit"
#: More rounds of 100 than a run can publish: a drain that needs more never ends.
ROUNDS = 100


class BrokerPowerLoss(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = tempfile.mkdtemp(prefix="roost-power-broker-")
        self.fs = PowerLossFS(self.root)
        self.path = os.path.join(self.root, "data")
        self.clock = ManualClock(now_ms=1_700_000_000_000)
        self.counter = 0
        self.engine: LocalEngine | None = None
        self.broker: Broker | None = None
        #: Published since the last restart and not yet acked by the queue / fetched by the group.
        self.unacked: set[bytes] = set()
        self.unfetched: set[bytes] = set()

    @initialize()
    def start(self) -> None:
        self._open()
        assert self.broker is not None
        self.broker.create_queue(
            TOPIC, durability="interval", max_deliveries=None, dead_letter=None
        )
        self.broker.create_subscription(
            SubscriptionSpec(topic=TOPIC, name=GROUP, mode="stream", start="earliest")
        )

    def _open(self) -> None:
        self.engine = LocalEngine.open(self.path, self.clock, self.fs)
        self.broker = Broker.open(self.engine, self.clock)

    # -- steps ----------------------------------------------------------------------------

    @rule(count=st.integers(1, 12))
    def publish(self, count: int) -> None:
        assert self.broker is not None
        values = []
        for _ in range(count):
            self.counter += 1
            values.append(b"m%d" % self.counter)
        self.broker.publish(TOPIC, [Outgoing(value=v) for v in values])
        self.unacked.update(values)
        self.unfetched.update(values)

    @rule(count=st.integers(1, 30))
    def receive_and_ack(self, count: int) -> None:
        assert self.broker is not None
        messages = self.broker.receive(TOPIC, TOPIC, max_messages=count)
        assert not self.broker.ack(TOPIC, TOPIC, [m.receipt for m in messages])
        self.unacked.difference_update(m.value for m in messages)

    @rule(count=st.integers(1, 30))
    def fetch_and_commit(self, count: int) -> None:
        assert self.broker is not None
        stream = self.broker.stream(TOPIC, GROUP)
        member = stream.join()
        fetched = stream.fetch(member.member_id, member.generation, max_records=count)
        if fetched:
            stream.commit(member.member_id, member.generation, {0: fetched[-1].offset + 1})
        stream.leave(member.member_id)
        self.unfetched.difference_update(m.value for m in fetched)

    @rule(logs=st.booleans(), journals=st.booleans())
    def sync(self, logs: bool, journals: bool) -> None:
        """What the flusher does on its timer, for the topic's log, the journals, or both."""
        assert self.engine is not None
        for log in self.engine.logs():
            is_journal = log.topic != TOPIC
            if (journals and is_journal) or (logs and not is_journal):
                log.flush()

    @rule(ms=st.integers(0, 60_000))
    def time_passes(self, ms: int) -> None:
        self.clock.advance(ms)

    @rule(seed=st.integers(0, 2**32))
    def cut_the_power(self, seed: int) -> None:
        assert self.engine is not None
        self.fs.cut_after(1)
        self.engine.close(clean=False)
        self.fs.close_all()
        self.fs.power_cut(random.Random(seed))
        self._open()
        self.unacked.clear()  # older records may be lost, by the interval policy
        self.unfetched.clear()

    # -- checks ---------------------------------------------------------------------------

    @invariant()
    def no_backlog_is_negative(self) -> None:
        if self.broker is None:
            return
        assert self.broker.stats(TOPIC, TOPIC).backlog >= 0

    @rule()
    def drain(self) -> None:
        """Everything published since the restart and not settled comes out."""
        assert self.broker is not None
        self.clock.advance(3_600_000)  # every lease ends: redeliveries count too
        got: set[bytes] = set()
        for _ in range(ROUNDS):
            messages = self.broker.receive(TOPIC, TOPIC, max_messages=100)
            if not messages:
                break
            assert not self.broker.ack(TOPIC, TOPIC, [m.receipt for m in messages])
            got.update(m.value for m in messages)
        else:
            raise AssertionError(f"the queue still delivers after {ROUNDS} rounds")
        assert self.unacked <= got, f"published, never acked, not delivered: {self.unacked - got}"
        self.unacked.clear()
        stream = self.broker.stream(TOPIC, GROUP)
        member = stream.join()
        fetched: set[bytes] = set()
        for _ in range(ROUNDS):
            batch = stream.fetch(member.member_id, member.generation, max_records=100)
            if not batch:
                break
            stream.commit(member.member_id, member.generation, {0: batch[-1].offset + 1})
            fetched.update(m.value for m in batch)
        else:
            raise AssertionError(f"the group still fetches after {ROUNDS} rounds")
        stream.leave(member.member_id)
        assert self.unfetched <= fetched, f"never fetched: {self.unfetched - fetched}"
        self.unfetched.clear()

    def teardown(self) -> None:
        if self.engine is not None:
            self.engine.close(clean=False)
        self.fs.close_all()
        shutil.rmtree(self.root, ignore_errors=True)


BrokerPowerLoss.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestBrokerPowerLoss = BrokerPowerLoss.TestCase
