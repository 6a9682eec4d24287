"""A state journal whose bytes are intact (every CRC holds) but whose entries are not state
entries: the subscription is out of service, named, and everything else serves."""

from __future__ import annotations

import msgspec
import pytest

from roost.clock import ManualClock
from roost.core.broker import Broker
from roost.core.publishing import Outgoing
from roost.errors import SubscriptionQuarantined
from roost.storage import LocalEngine


def test_a_foreign_entry_in_a_journal_quarantines_only_its_subscription(
    data_dir: str, clock: ManualClock
) -> None:
    engine = LocalEngine.open(data_dir, clock)
    broker = Broker.open(engine, clock)
    broker.create_queue("jobs", durability="never")
    broker.create_queue("mail", durability="never")
    [jobs] = [s for s in broker.list_subscriptions() if s.name == "jobs"]
    engine.journal(jobs.journal).append([msgspec.msgpack.encode([99, 0, "no such entry"])])
    engine.close()

    engine = LocalEngine.open(data_dir, clock)
    try:
        broker = Broker.open(engine, clock)
        with pytest.raises(SubscriptionQuarantined, match="jobs/jobs"):
            broker.receive("jobs", "jobs")
        assert ("jobs", "jobs") in broker.quarantined_subscriptions()
        broker.publish("mail", [Outgoing(value=b"hi")])
        [message] = broker.receive("mail", "mail")
        assert message.value == b"hi"
    finally:
        engine.close()
