"""Closing a subscriber puts back what arrived and was never handed out without counting a
delivery of it: short-lived subscribers do not push unhandled messages into the dead-letter
topic (issue 15, bug 7)."""

from __future__ import annotations

from pathlib import Path

import pytest

import roost
from roost.clock import ManualClock
from roost.core.broker import Broker
from roost.core.publishing import Outgoing
from roost.storage import LocalEngine
from tests.embedded_support import run, run_over_the_network


async def two_short_lived_subscribers(broker: roost.Client) -> None:
    await broker.create_queue("q", max_deliveries=2)
    for value in (b"a", b"b", b"c"):
        await broker.publish("q", value)
    counts = {}
    for _ in range(2):  # each takes one message, handles it, and goes
        async with broker.subscribe("q", prefetch=3) as deliveries:
            delivery = await anext(deliveries)
            counts[delivery.message.value] = delivery.message.delivery_count
            await delivery.ack()
    assert counts == {b"a": 1, b"b": 1}, "b was put back by the first, never handled"
    [last] = await broker.receive("q", max_messages=10)
    assert (last.value, last.delivery_count) == (b"c", 1)
    stats = await broker.stats("q")
    assert stats.dead_letters == 0  # type: ignore[union-attr]


def test_embedded(data_dir: str, clock: ManualClock) -> None:
    run(data_dir, clock, two_short_lived_subscribers)


def test_over_the_network(tmp_path: Path) -> None:
    run_over_the_network(tmp_path, two_short_lived_subscribers)


# -- the core: a return undoes the delivery's count, durably ---------------------------------


@pytest.fixture
def broker(engine: LocalEngine, clock: ManualClock) -> Broker:
    broker = Broker.open(engine, clock)
    broker.create_queue("q", max_deliveries=2, durability="never")
    broker.publish("q", [Outgoing(value=b"x")])
    return broker


def test_a_returned_message_keeps_its_count_across_a_restart(
    broker: Broker, data_dir: str, clock: ManualClock
) -> None:
    [first] = broker.receive("q", "q")
    broker.nack("q", "q", [first.receipt], delay_ms=0)
    [second] = broker.receive("q", "q")
    assert second.delivery_count == 2
    assert broker.nack("q", "q", [second.receipt], undelivered=True) == []
    broker.engine.close()
    reopened = Broker.open(LocalEngine.open(data_dir, clock), clock)
    [again] = reopened.receive("q", "q")
    assert again.delivery_count == 2, "the one delivery returned unseen is not counted"
    reopened.engine.close()


def test_a_return_of_a_lease_that_is_gone_is_refused(broker: Broker, clock: ManualClock) -> None:
    [message] = broker.receive("q", "q", visibility_ms=1_000)
    clock.advance(1_000)
    assert broker.nack("q", "q", [message.receipt], undelivered=True) == [message.receipt]
