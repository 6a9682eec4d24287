"""The dashboard's snapshot: readings in, rates out (roost.admin.dashboard.snapshot).

Readings are made by a real broker on a driven clock, so the rates are exact and nothing waits.
"""

from __future__ import annotations

import pytest

from roost.admin.dashboard.snapshot import Rates, snapshot
from roost.clock import ManualClock
from roost.core.broker import Broker
from roost.core.publishing import Outgoing
from roost.core.readings import read_broker
from roost.storage import LocalEngine


@pytest.fixture
def broker(engine: LocalEngine, clock: ManualClock) -> Broker:
    broker = Broker.open(engine, clock)
    broker.create_queue("jobs", durability="never", partitions=2, max_deliveries=1)
    return broker


def publish(broker: Broker, n: int) -> None:
    broker.publish("jobs", [Outgoing(value=b"%d" % i, partition=i % 2) for i in range(n)])


def test_the_first_snapshot_has_gauges_and_no_rates(broker: Broker) -> None:
    publish(broker, 3)
    first = snapshot(None, read_broker(broker))
    assert first.interval_ms is None
    [jobs, dlq] = first.topics
    assert (jobs.name, jobs.records, [p.published for p in jobs.partitions]) == ("jobs", 3, [2, 1])
    assert (jobs.subscriptions, jobs.published_per_s) == (["jobs"], None)
    assert (dlq.name, dlq.records, dlq.subscriptions) == ("jobs.dlq", 0, [])
    [line] = first.subscriptions
    assert line.stats == broker.stats("jobs", "jobs"), "depth & co. exactly as roost stats"
    assert line.rates == Rates()


def test_rates_are_counter_increases_over_the_time_between_readings(
    broker: Broker, clock: ManualClock
) -> None:
    before = read_broker(broker)
    clock.advance(2_000)
    publish(broker, 10)
    taken = broker.receive("jobs", "jobs", max_messages=6)
    broker.ack("jobs", "jobs", [m.receipt for m in taken[:4]])
    broker.nack("jobs", "jobs", [taken[4].receipt], delay_ms=0, error="boom")
    broker.tick()  # the dead letter is confirmed (never): the original is done
    after = snapshot(before, read_broker(broker))
    assert after.interval_ms == 2_000
    assert after.at_ms == clock.now_ms()
    assert after.topics[0].published_per_s == 5.0
    assert after.topics[1].published_per_s == 0.5, "the dead letter was published to the DLQ"
    assert after.subscriptions[0].rates == Rates(
        published=5.0, delivered=3.0, acked=2.0, dead_lettered=0.5
    )
    assert after.subscriptions[0].stats.dead_letters == 1  # type: ignore[union-attr]


def test_rates_are_unknown_rather_than_wrong(
    broker: Broker, clock: ManualClock, engine: LocalEngine
) -> None:
    publish(broker, 4)
    broker.receive("jobs", "jobs", max_messages=4)
    busy = read_broker(broker)
    assert snapshot(busy, busy).subscriptions[0].rates == Rates(), "no time passed"

    clock.advance(1_000)
    broker.delete_queue("jobs")
    broker.delete_topic("jobs.dlq")
    broker.create_queue("jobs", durability="never", max_deliveries=1)
    broker.create_queue("new", durability="never")
    publish(broker, 1)
    remade = snapshot(busy, read_broker(broker))
    jobs = next(t for t in remade.topics if t.name == "jobs")
    assert jobs.published_per_s is None, "the counter went down: made again"
    lines = {line.stats.subscription: line.rates for line in remade.subscriptions}
    assert lines["jobs"].delivered is None
    assert lines["new"] == Rates(), "new since the last reading: no counters then"
    assert next(t for t in remade.topics if t.name == "new").published_per_s is None


def test_roosts_own_subscriptions_are_not_listed_as_queues(broker: Broker) -> None:
    from roost.core.model import SubscriptionSpec
    from roost.core.redrive import REDRIVE_SUBSCRIPTION

    for name in (REDRIVE_SUBSCRIPTION, "roost-peek-3f2a", "audit"):
        broker.create_subscription(SubscriptionSpec(name=name, topic="jobs.dlq", mode="stream"))
    seen = snapshot(None, read_broker(broker))
    assert [(s.stats.topic, s.stats.subscription) for s in seen.subscriptions] == [
        ("jobs", "jobs"), ("jobs.dlq", "audit"),
    ]  # fmt: skip
    dlq = next(t for t in seen.topics if t.name == "jobs.dlq")
    assert sorted(dlq.subscriptions) == ["audit", "roost-peek-3f2a", "roost-redrive"]
