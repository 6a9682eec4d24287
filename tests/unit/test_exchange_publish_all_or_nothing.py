"""A publish routed to several topics is all-or-nothing: every destination is checked before
any is appended to, and an append that still fails says exactly what was stored (issue 15,
bug 3)."""

from __future__ import annotations

import errno

import pytest

import roost
from roost.clock import ManualClock
from roost.core.broker import Broker
from roost.core.publishing import Outgoing
from roost.core.routing import BindingSpec, ExchangeSpec
from roost.errors import InvalidRequest, RecordTooLarge, StorageFailure
from roost.storage import LocalEngine, TopicConfig
from tests.embedded_support import run
from tests.fault_fs import FaultFS


def test_a_topic_refusing_the_record_leaves_every_topic_without_it(
    data_dir: str, clock: ManualClock
) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        await broker.create_topic("big")
        await broker.create_topic("small", max_record_bytes=100)
        for name in ("big", "small"):
            await broker.create_subscription(name, "reader", start="earliest")
        await broker.declare_exchange("fan", "fanout")
        await broker.bind("fan", "big")
        await broker.bind("fan", "small")
        with pytest.raises(RecordTooLarge) as refused:
            await broker.publish_to_exchange("fan", "", b"x" * 200)
        assert refused.value.topic == "small"
        for name in ("big", "small"):
            assert (await broker.describe_topic(name)).partitions[0].end_offset == 0, name
            assert await broker.receive(name, "reader") == []
        # The producer's retry, smaller, lands once everywhere.
        await broker.publish_to_exchange("fan", "", b"x" * 50)
        for name in ("big", "small"):
            assert len(await broker.receive(name, "reader", max_messages=10)) == 1, name

    run(data_dir, clock, body)


@pytest.fixture
def faulty(data_dir: str, clock: ManualClock) -> tuple[Broker, FaultFS]:
    fs = FaultFS()
    return Broker.open(LocalEngine.open(data_dir, clock, fs=fs), clock), fs


def fanout(broker: Broker, *topics: str, **config: object) -> None:
    broker.declare_exchange(ExchangeSpec("fan", "fanout"))
    for name in topics:
        broker.create_topic(name, TopicConfig(durability="never", **config))  # type: ignore[arg-type]
        broker.bind(BindingSpec("fan", name))


def test_a_batch_too_large_for_one_topic_is_refused_before_any_append(
    faulty: tuple[Broker, FaultFS],
) -> None:
    broker, _ = faulty
    fanout(broker, "a")
    broker.create_topic("b", TopicConfig(segment_max_bytes=4096, max_record_bytes=2048))
    broker.bind(BindingSpec("fan", "b"))
    with pytest.raises(InvalidRequest, match="segment_max_bytes"):
        broker.publish_to_exchange("fan", "", [Outgoing(value=b"y" * 1500)] * 3)
    assert broker.describe_topic("a").partitions[0].end_offset == 0


def test_a_write_failing_after_the_checks_says_what_was_stored(
    faulty: tuple[Broker, FaultFS],
) -> None:
    broker, fs = faulty
    fanout(broker, "a", "b")
    fs.arm("pwrite", errno.EIO, match="/topics/b/")
    with pytest.raises(StorageFailure) as failed:
        broker.publish_to_exchange("fan", "", [Outgoing(value=b"v")])
    assert failed.value.stored == ["a/0@0"]  # type: ignore[attr-defined]
    assert "a/0@0" in str(failed.value)
    assert broker.describe_topic("a").partitions[0].end_offset == 1
