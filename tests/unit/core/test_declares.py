"""Declares (roost.core.declares): creating what exists with the same settings returns it,
other settings raise a ``ConfigConflict`` naming each one and change nothing.

Pinned per kind (queue, topic, subscription, exchange), per setting a caller can give, in the
core and through the Python client over the network (the error's details survive the wire);
and that a declare after a restart compares against what was stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

import roost
from roost.clock import ManualClock
from roost.core.broker import Broker
from roost.core.model import SubscriptionSpec
from roost.core.policies import QUEUE_POLICY, TopicPolicy
from roost.core.retry import RetryPolicy
from roost.core.routing import BindingSpec, ExchangeSpec
from roost.errors import (
    AlreadyExists,
    ConfigConflict,
    ExchangeExists,
    SubscriptionExists,
    TopicExists,
)
from roost.storage import LocalEngine, TopicConfig
from tests.embedded_support import WAYS, run_either

NEVER = TopicConfig(durability="never")


@pytest.fixture
def broker(engine: LocalEngine, clock: ManualClock) -> Broker:
    return Broker.open(engine, clock)


# -- queues ---------------------------------------------------------------------------------

#: A queue's settings, each changed from what ``create_queue("q", durability="never")`` has,
#: with the setting the conflict must name and the values it must report.
QUEUE_CHANGES: list[tuple[dict[str, Any], str, object, object]] = [
    ({"visibility_timeout_ms": 60_000}, "visibility_timeout_ms", 30_000, 60_000),
    ({"max_deliveries": 3}, "max_deliveries", 10, 3),
    ({"dead_letter": "other.dlq"}, "dead_letter", "q.dlq", "other.dlq"),
    ({"delay_ms": 5_000}, "delay_ms", 0, 5_000),
    ({"fifo": True}, "mode", "queue", "keyed"),
    ({"partitions": 4}, "partitions", 1, 4),
    ({"durability": "always"}, "durability", "never", "always"),
    ({"retention_ms": 3_600_000}, "retention_ms", None, 3_600_000),
    ({"retry": RetryPolicy(base_ms=500)}, "retry.base_ms", 1_000, 500),
    (
        {"policy": TopicPolicy(max_backlog_messages=10, retain_until_consumed=True)},
        "max_backlog_messages",
        None,
        10,
    ),
]


def test_a_queue_declared_again_with_the_same_settings_is_returned(broker: Broker) -> None:
    first = broker.create_queue("q", durability="never", visibility_timeout_ms=5_000)
    again = broker.create_queue("q", durability="never", visibility_timeout_ms=5_000)
    assert again == first
    assert [s.name for s in broker.list_subscriptions("q")] == ["q"]


@pytest.mark.parametrize(("change", "setting", "existing", "requested"), QUEUE_CHANGES)
def test_a_queue_declared_with_another_setting_names_it(
    broker: Broker, change: dict[str, Any], setting: str, existing: object, requested: object
) -> None:
    if change.get("dead_letter"):
        broker.create_topic(change["dead_letter"], NEVER)
    before = broker.create_queue("q", durability="never")
    options: dict[str, Any] = {"durability": "never", **change}
    with pytest.raises(ConfigConflict) as raised:
        broker.create_queue("q", **options)
    conflict = raised.value
    assert (conflict.kind, conflict.name) == ("queue", "q")
    assert conflict.settings == [setting]
    assert (conflict.existing, conflict.requested) == ([existing], [requested])
    said = [
        f"{v!r} ({v / 1000:g} s)" if setting.endswith("_ms") and type(v) is int else repr(v)
        for v in (existing, requested)
    ]  # a time in ms says its seconds too, as a client gives it
    assert f"{setting} is {said[0]}, not {said[1]}" in str(conflict)
    assert isinstance(conflict, AlreadyExists)
    # Nothing changed.
    assert broker.list_subscriptions("q") == [before]
    assert broker.describe_topic("q").config.durability == "never"
    assert broker.policy("q") == QUEUE_POLICY


def test_every_differing_setting_is_named_at_once(broker: Broker) -> None:
    broker.create_queue("q", durability="never")
    with pytest.raises(ConfigConflict) as raised:
        broker.create_queue("q", durability="always", delay_ms=10, partitions=2)
    assert sorted(raised.value.settings) == ["delay_ms", "durability", "partitions"]


def test_a_topic_that_is_not_a_queue_is_a_conflict(broker: Broker) -> None:
    broker.create_topic("q", NEVER, QUEUE_POLICY)
    with pytest.raises(ConfigConflict) as raised:
        broker.create_queue("q", durability="never")
    assert raised.value.settings == ["kind"]
    assert (raised.value.existing, raised.value.requested) == (["topic"], ["queue"])
    assert broker.list_subscriptions("q") == []


def test_a_declare_after_a_restart_compares_with_what_was_stored(
    engine: LocalEngine, clock: ManualClock, data_dir: str
) -> None:
    first = Broker.open(engine, clock)
    spec = first.create_queue("q", durability="never", retry=RetryPolicy(base_ms=250))
    engine.close()
    reopened = Broker.open(LocalEngine.open(data_dir, clock), clock)
    try:
        assert reopened.create_queue("q", durability="never", retry=RetryPolicy(base_ms=250)) == (
            spec
        )
        with pytest.raises(ConfigConflict):
            reopened.create_queue("q", durability="never")
    finally:
        reopened.engine.close()


# -- topics, subscriptions, exchanges -------------------------------------------------------


def test_topics_declare(broker: Broker) -> None:
    policy = TopicPolicy(max_backlog_messages=100)
    info = broker.create_topic("t", TopicConfig(durability="never", partitions=2), policy)
    assert broker.create_topic("t", TopicConfig(durability="never", partitions=2), policy) == info
    with pytest.raises(TopicExists) as raised:
        broker.create_topic("t", TopicConfig(durability="never", partitions=3), policy)
    assert raised.value.settings == ["partitions"]
    assert raised.value.topic == "t"
    with pytest.raises(TopicExists) as raised:
        broker.create_topic("t", TopicConfig(durability="never", partitions=2))
    assert raised.value.settings == ["max_backlog_messages"]


def test_a_default_topic_declares_again_with_no_settings(broker: Broker) -> None:
    info = broker.create_topic("t")
    assert broker.create_topic("t") == info
    assert broker.create_topic("t", TopicConfig()) == info


def test_subscriptions_declare(broker: Broker) -> None:
    broker.create_topic("t", NEVER)
    spec = SubscriptionSpec(name="s", topic="t", start="earliest", max_deliveries=None)
    stored = broker.create_subscription(spec)
    assert broker.create_subscription(spec) == stored
    with pytest.raises(SubscriptionExists) as raised:
        broker.create_subscription(msgspec.structs.replace(spec, start="latest"))
    assert (raised.value.topic, raised.value.subscription) == ("t", "s")
    assert raised.value.settings == ["start"]
    assert broker.list_subscriptions("t") == [stored]


def test_exchanges_declare_and_bindings_are_idempotent(broker: Broker) -> None:
    broker.create_topic("t", NEVER)
    assert broker.declare_exchange(ExchangeSpec("x", "direct")) == ExchangeSpec("x", "direct")
    assert broker.declare_exchange(ExchangeSpec("x", "direct")) == ExchangeSpec("x", "direct")
    with pytest.raises(ExchangeExists) as raised:
        broker.declare_exchange(ExchangeSpec("x", "fanout", alternate="y"))
    assert raised.value.settings == ["kind", "alternate"]
    assert raised.value.existing == ["direct", None]
    assert broker.bind(BindingSpec("x", "t", key="k")) is True
    assert broker.bind(BindingSpec("x", "t", key="k")) is False  # already there: nothing new
    assert broker.list_bindings("x") == [BindingSpec("x", "t", key="k")]


# -- over the network -----------------------------------------------------------------------


@pytest.mark.parametrize("where", WAYS)
def test_a_conflict_reaches_the_client_with_its_settings(
    where: str, tmp_path: Path, clock: ManualClock
) -> None:
    async def body(client: roost.EmbeddedBroker) -> None:
        first = await client.create_queue("q", durability="never")
        assert await client.create_queue("q", durability="never") == first
        with pytest.raises(ConfigConflict) as raised:
            await client.create_queue("q", durability="never", visibility_timeout=60)
        assert raised.value.code == "config_conflict"
        assert raised.value.settings == ["visibility_timeout_ms"]
        assert (raised.value.existing, raised.value.requested) == ([30_000], [60_000])
        with pytest.raises(TopicExists) as topic_raised:
            await client.create_topic("q", partitions=3, durability="never")
        assert "partitions" in topic_raised.value.settings

    run_either(where, tmp_path, clock, body)
