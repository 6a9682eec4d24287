"""Deleting a topic an exchange binds removes those bindings, so the exchange keeps serving
the topics that are left — also after a restart, and for data directories that already hold
bindings to deleted topics (issue 15, bug 2)."""

from __future__ import annotations

import logging

import pytest

import roost
from roost.clock import ManualClock
from roost.core.broker import Broker
from roost.core.publishing import Outgoing
from roost.core.routing import BindingSpec, ExchangeSpec
from roost.errors import Unroutable
from roost.storage import LocalEngine
from tests.embedded_support import run


def test_an_exchange_serves_the_topics_left_after_one_is_deleted(
    data_dir: str, clock: ManualClock
) -> None:
    async def first(broker: roost.EmbeddedBroker) -> None:
        for name in ("a", "b"):
            await broker.create_topic(name)
            await broker.create_subscription(name, "reader", start="earliest")
        await broker.declare_exchange("fan", "fanout")
        await broker.bind("fan", "a")
        await broker.bind("fan", "b")
        await broker.delete_topic("a")
        assert [b.topic for b in await broker.list_bindings("fan")] == ["b"]
        published = await broker.publish_to_exchange("fan", "", b"one")
        assert [p.topic for p in published] == ["b"]

    async def after_restart(broker: roost.EmbeddedBroker) -> None:
        assert [b.topic for b in await broker.list_bindings("fan")] == ["b"]
        await broker.publish_to_exchange("fan", "", b"two")
        values = [m.value for m in await broker.receive("b", "reader", max_messages=10)]
        assert values == [b"one", b"two"]

    run(data_dir, clock, first)
    run(data_dir, clock, after_restart)


def test_an_exchange_whose_only_topic_went_is_unroutable(data_dir: str, clock: ManualClock) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        await broker.create_topic("a")
        await broker.declare_exchange("direct", "direct")
        await broker.bind("direct", "a", key="k")
        await broker.delete_topic("a")
        with pytest.raises(Unroutable):
            await broker.publish_to_exchange("direct", "k", b"x")

    run(data_dir, clock, body)


def test_open_drops_bindings_to_topics_that_are_gone(
    data_dir: str, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A data directory written before the fix: the topic went, its binding stayed."""
    engine = LocalEngine.open(data_dir, clock)
    broker = Broker.open(engine, clock)
    for name in ("a", "b"):
        broker.create_topic(name)
    broker.declare_exchange(ExchangeSpec("fan", "fanout"))
    broker.bind(BindingSpec("fan", "a"))
    broker.bind(BindingSpec("fan", "b"))
    engine.delete_topic("a")  # behind the broker's back, as the old delete_topic left it
    engine.close()

    with caplog.at_level(logging.WARNING):
        engine = LocalEngine.open(data_dir, clock)
        broker = Broker.open(engine, clock)
    assert [b.topic for b in broker.list_bindings("fan")] == ["b"]
    assert any("fan" in r.message and "'a'" in r.message for r in caplog.records), caplog.text
    outcome = broker.publish_to_exchange("fan", "", [Outgoing(value=b"x")])
    assert [p.topic for p in outcome.published] == ["b"]
    engine.close()

    engine = LocalEngine.open(data_dir, clock)  # the drop was stored, not redone each start
    assert [b.topic for b in Broker.open(engine, clock).list_bindings("fan")] == ["b"]
    engine.close()
