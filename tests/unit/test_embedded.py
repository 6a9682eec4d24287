"""``roost.open``: the embedded broker end to end, on one event loop, with a driven clock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import roost
from roost import Outgoing
from roost.clock import ManualClock
from roost.errors import (
    InvalidConfig,
    LeaseExpired,
    StorageClosed,
    SubscriptionExists,
    UnknownSubscription,
    UnknownTopic,
    Unroutable,
)
from tests.embedded_support import run


def test_queue_publish_receive_ack(data_dir: str, clock: ManualClock) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        await broker.create_queue("emails")
        published = await broker.publish("emails", b"hello", key=b"c7", headers=[("h", b"1")])
        assert (published.topic, published.partition, published.offset) == ("emails", 0, 0)
        [message] = await broker.receive("emails", max_messages=10)
        assert (message.value, message.key, message.headers) == (b"hello", b"c7", (("h", b"1"),))
        assert message.delivery_count == 1
        await message.ack()
        assert await broker.receive("emails") == []
        stats = await broker.stats("emails")
        assert (stats.backlog, stats.in_flight, stats.depth) == (0, 0, 0)

    run(data_dir, clock, body)


def test_publish_is_confirmed_only_when_durable(data_dir: str, clock: ManualClock) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        await broker.create_queue("q")
        await broker.publish_batch("q", [Outgoing(value=b"%d" % i) for i in range(50)])
        info = await broker.describe_topic("q")
        assert info.partitions[0].durable_offset == info.partitions[0].end_offset == 50

    run(data_dir, clock, body)


def test_long_poll_wakes_on_publish(data_dir: str, clock: ManualClock) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        await broker.create_queue("q")
        waiting = asyncio.create_task(broker.receive("q", wait=20))
        await asyncio.sleep(0)
        assert not waiting.done()
        await broker.publish("q", b"now")
        [message] = await asyncio.wait_for(waiting, 5)
        assert message.value == b"now"

    run(data_dir, clock, body)


def test_receive_without_wait_returns_at_once(data_dir: str, clock: ManualClock) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        await broker.create_queue("q")
        assert await broker.receive("q") == []
        with pytest.raises(InvalidConfig):
            await broker.receive("q", wait=21)

    run(data_dir, clock, body)


def test_nack_delay_and_redelivery(data_dir: str, clock: ManualClock) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        await broker.create_queue("q")
        await broker.publish("q", b"job")
        [first] = await broker.receive("q")
        await first.nack(delay=5, error="smtp down")
        assert await broker.receive("q") == []
        clock.advance(5_000)
        [second] = await broker.receive("q")
        assert second.delivery_count == 2
        with pytest.raises(LeaseExpired):
            await first.ack()
        await second.ack()

    run(data_dir, clock, body)


def test_lease_expiry_and_extend(data_dir: str, clock: ManualClock) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        await broker.create_queue("q", visibility_timeout=10)
        await broker.publish("q", b"job")
        [message] = await broker.receive("q")
        clock.advance(9_000)
        await message.extend(10)
        clock.advance(9_000)
        assert await broker.receive("q") == [], "extended: still leased"
        clock.advance(1_000 + 5 * 60_000)
        [again] = await broker.receive("q")
        assert again.delivery_count == 2
        with pytest.raises(LeaseExpired):
            await message.ack()

    run(data_dir, clock, body)


def test_dead_letters_after_max_deliveries(data_dir: str, clock: ManualClock) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        await broker.create_queue("q", max_deliveries=2)
        await broker.publish("q", b"poison", key=b"k")
        for _ in range(2):
            [message] = await broker.receive("q")
            await message.nack(delay=0, error="bad input")
        assert await broker.receive("q") == []
        # The timer finishes the original once the dead-letter append is durable (an fsync in
        # the flusher's thread): poll for it, bounded.
        for _ in range(400):
            if (await broker.stats("q")).backlog == 0:
                break
            await asyncio.sleep(0.005)
        stats = await broker.stats("q")
        assert (stats.backlog, stats.dead_letters) == (0, 1)
        await broker.create_subscription("q.dlq", "inspect", start="earliest")
        [dead] = await broker.receive("q.dlq", "inspect")
        assert (dead.value, dead.key) == (b"poison", b"k")
        headers = dict(dead.headers)
        assert headers["x-roost-delivery-count"] == b"2"
        assert headers["x-roost-last-error"] == b"bad input"

    run(data_dir, clock, body)


def test_fifo_queue_orders_per_key(data_dir: str, clock: ManualClock) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        await broker.create_queue("orders", fifo=True)
        for i in range(3):
            await broker.publish("orders", b"a%d" % i, key=b"a")
            await broker.publish("orders", b"b%d" % i, key=b"b")
        batch = await broker.receive("orders", max_messages=10)
        assert sorted(m.value for m in batch) == [b"a0", b"b0"], "one in flight per key"
        for message in batch:
            await message.ack()
        assert sorted(m.value for m in await broker.receive("orders", max_messages=10)) == [
            b"a1",
            b"b1",
        ]

    run(data_dir, clock, body)


def test_exchange_routing_and_fan_out(data_dir: str, clock: ManualClock) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        await broker.create_topic("events")
        await broker.create_subscription("events", "audit", start="earliest")
        await broker.create_subscription("events", "billing", start="earliest")
        await broker.declare_exchange("ex", "topic")
        await broker.bind("ex", "events", key="order.#")
        published = await broker.publish_to_exchange("ex", "order.created.eu", b"o1")
        assert [p.topic for p in published] == ["events"]
        for name in ("audit", "billing"):
            [message] = await broker.receive("events", name)
            assert message.value == b"o1"
        with pytest.raises(Unroutable):
            await broker.publish_to_exchange("ex", "invoice.paid", b"x")

    run(data_dir, clock, body)


def test_definitions_and_state_survive_restart(data_dir: str, clock: ManualClock) -> None:
    async def first(broker: roost.EmbeddedBroker) -> None:
        await broker.create_queue("q")
        await broker.declare_exchange("ex", "direct")
        await broker.bind("ex", "q", key="k")
        await broker.publish_to_exchange("ex", "k", b"one")
        await broker.publish("q", b"two")
        [message] = await broker.receive("q")
        await message.ack()

    async def second(broker: roost.EmbeddedBroker) -> None:
        assert [s.name for s in await broker.list_subscriptions()] == ["q"]
        assert [b.key for b in await broker.list_bindings("ex")] == ["k"]
        [message] = await broker.receive("q", max_messages=10)
        assert message.value == b"two"

    run(data_dir, clock, first)
    run(data_dir, clock, second)


def test_errors_for_bad_names(data_dir: str, clock: ManualClock) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        with pytest.raises(UnknownTopic):
            await broker.publish("nope", b"x")
        with pytest.raises(UnknownTopic):
            await broker.receive("nope")
        await broker.create_topic("t")
        with pytest.raises(UnknownSubscription):
            await broker.receive("t", "nobody")
        first = await broker.create_subscription("t", "s")
        assert await broker.create_subscription("t", "s") == first  # a declare
        with pytest.raises(SubscriptionExists):
            await broker.create_subscription("t", "s", visibility_timeout=5)
        with pytest.raises(InvalidConfig):
            await broker.create_queue("q2", visibility_timeout=13 * 3600)
        with pytest.raises(InvalidConfig):
            await broker.create_queue("q3", dead_letter=None)

    run(data_dir, clock, body)


def test_consume_respects_its_credit(data_dir: str, clock: ManualClock) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        await broker.create_queue("q")
        await broker.publish_batch("q", [Outgoing(value=b"%d" % i) for i in range(10)])
        stream = broker.consume("q", prefetch=3)
        held = [await anext(stream) for _ in range(3)]
        stats = await broker.stats("q")
        assert stats.in_flight == 3, "no more than the credit is leased"
        fourth = asyncio.create_task(anext(stream))
        await asyncio.sleep(0)
        assert not fourth.done()
        await held[0].ack()
        assert (await asyncio.wait_for(fourth, 5)).value == b"3"
        await stream.aclose()

    run(data_dir, clock, body)


def test_closing_the_broker_ends_a_waiting_consumer(data_dir: str, clock: ManualClock) -> None:
    """A closing broker answers long polls at once and empty; the consumer must stop asking,
    not spin on the loop the close needs."""

    async def main() -> None:
        broker = await roost.open(data_dir, clock=clock)
        await broker.create_queue("q")
        consuming = broker.consume("q", prefetch=2000)  # more than one poll asks for
        waiting = asyncio.create_task(anext(consuming))
        await asyncio.sleep(0)
        await asyncio.wait_for(broker.aclose(), 10)
        with pytest.raises((StopAsyncIteration, StorageClosed)):
            await asyncio.wait_for(waiting, 10)

    asyncio.run(main())


def test_delete_queue_and_retention(data_dir: str, clock: ManualClock) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        await broker.create_queue("q", retention=60)
        assert (await broker.describe_topic("q")).config.retention_ms == 60_000
        await broker.delete_queue("q")
        assert "q" not in await broker.list_topics()
        assert "q.dlq" in await broker.list_topics()

    run(data_dir, clock, body)


def test_subscriptions_dead_letter_by_default_and_retry_forever_only_when_told(
    data_dir: str, clock: ManualClock
) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        await broker.create_topic("t")
        spec = await broker.create_subscription("t", "workers")
        assert (spec.dead_letter, spec.max_deliveries) == ("t.workers.dlq", 10)
        assert "t.workers.dlq" in await broker.list_topics()
        with pytest.raises(InvalidConfig, match="max_deliveries=None"):
            await broker.create_subscription("t", "careless", dead_letter=None)
        forever = await broker.create_subscription(
            "t", "stubborn", dead_letter=None, max_deliveries=None
        )
        assert forever.max_deliveries is None

    run(data_dir, clock, body)


def test_closing_consume_gives_back_what_it_never_handed_out(
    data_dir: str, clock: ManualClock
) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        await broker.create_queue("q")
        await broker.publish_batch("q", [Outgoing(value=b"%d" % i) for i in range(10)])
        stream = broker.consume("q", prefetch=10)
        first = await anext(stream)
        await stream.aclose()
        assert (await broker.stats("q")).in_flight == 1, "only the handed-out one stays leased"
        assert len(await broker.receive("q", max_messages=20)) == 9
        await first.ack()

    run(data_dir, clock, body)


def test_a_refused_queue_leaves_nothing_behind(data_dir: str, clock: ManualClock) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        with pytest.raises(InvalidConfig):
            await broker.create_queue("q", visibility_timeout=-1)
        assert await broker.list_topics() == []
        await broker.create_queue("q")

    run(data_dir, clock, body)


def test_a_fetch_is_a_heartbeat_that_learns_the_rebalance(
    data_dir: str, clock: ManualClock
) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        await broker.create_topic("clicks", partitions=2)
        await broker.create_subscription("clicks", "analytics", mode="stream", start="earliest")
        for partition in (0, 1):
            await broker.publish("clicks", b"p%d" % partition, partition=partition)
        first = await broker.join("clicks", "analytics")
        assert first.partitions == (0, 1)
        second = await broker.join("clicks", "analytics")
        sent: list[str] = []
        call = broker.call

        async def counting(request: Any, answer: Any) -> Any:
            sent.append(type(request).__name__)
            return await call(request, answer)

        broker.call = counting  # type: ignore[method-assign]
        records = await first.fetch()
        assert sent == ["FetchBatches"], "one round trip"
        assert first.membership.generation == second.membership.generation, "no heartbeat call"
        assert set(first.partitions) | set(second.partitions) == {0, 1}
        assert {r.partition for r in records} == set(first.partitions)
        await first.commit()
        assert [r.partition for r in await second.fetch()] == list(second.partitions)

    run(data_dir, clock, body)


def test_an_ack_that_waits_for_no_answer_settles_at_once(data_dir: str, clock: ManualClock) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        await broker.create_queue("emails")
        await broker.publish_batch("emails", [Outgoing(value=b"a"), Outgoing(value=b"b")])
        async with broker.subscribe("emails", prefetch=2) as deliveries:
            got = await deliveries.batch()
            while len(got) < 2:
                got += await deliveries.batch()
            assert await deliveries.ack(got, wait=False) == []
            assert (await broker.stats("emails")).in_flight == 0
            assert deliveries.unsettled == 0

    run(data_dir, clock, body)
