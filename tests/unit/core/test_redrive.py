"""Redrive: dead letters back to their source, all or filtered, at a bounded rate."""

from __future__ import annotations

import asyncio

import roost
from roost.clock import ManualClock
from tests.embedded_support import run


async def poison(broker: roost.EmbeddedBroker, queue: str, values: list[bytes]) -> None:
    """Publish ``values`` and fail each once (max_deliveries=1): all end up dead-lettered."""
    for value in values:
        await broker.publish(queue, value, key=value[:1], headers=[("trace", value)])
    for message in await broker.receive(queue, max_messages=len(values)):
        await message.nack(error=f"bad {message.value.decode()}")
    for _ in range(400):  # the timer finishes the originals once the DLQ appends are durable
        if (await broker.stats(queue)).backlog == 0:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("dead letters were not settled")


def test_redrive_moves_everything_back_with_original_headers(
    data_dir: str, clock: ManualClock
) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        await broker.create_queue("q", max_deliveries=1)
        await poison(broker, "q", [b"a1", b"b2", b"a3"])
        assert await broker.redrive("q.dlq") == 3
        back = await broker.receive("q", max_messages=10)
        assert sorted(m.value for m in back) == [b"a1", b"a3", b"b2"]
        for message in back:
            assert message.delivery_count == 1, "a moved message starts over"
            assert dict(message.headers) == {"trace": message.value}, "x-roost-* stripped"
            assert message.key == message.value[:1]
        assert await broker.redrive("q.dlq") == 0, "a moved dead letter is not moved again"

    run(data_dir, clock, body)


def test_filtered_redrive_leaves_the_rest_for_later(data_dir: str, clock: ManualClock) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        await broker.create_queue("q", max_deliveries=1)
        await poison(broker, "q", [b"a1", b"b2", b"a3"])
        assert await broker.redrive("q.dlq", key=b"a") == 2
        assert sorted(m.value for m in await broker.receive("q", max_messages=10)) == [
            b"a1",
            b"a3",
        ]
        assert await broker.redrive("q.dlq", error_contains="bad b2") == 1
        assert await broker.redrive("q.dlq") == 0

    run(data_dir, clock, body)


def test_redrive_to_another_topic(data_dir: str, clock: ManualClock) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        await broker.create_queue("q", max_deliveries=1)
        await broker.create_queue("repair")
        await poison(broker, "q", [b"x"])
        assert await broker.redrive("q.dlq", to="repair", rate=1000) == 1
        [message] = await broker.receive("repair")
        assert message.value == b"x"

    run(data_dir, clock, body)


def test_redriven_dead_letters_leave_the_count(data_dir: str, clock: ManualClock) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        await broker.create_queue("q", max_deliveries=1)
        await poison(broker, "q", [b"a1", b"b2"])
        assert (await broker.stats("q")).dead_letters == 2
        await broker.redrive("q.dlq", key=b"a")
        assert (await broker.stats("q")).dead_letters == 1

    run(data_dir, clock, body)


def test_a_letter_that_names_no_source_does_not_stop_a_source_filtered_redrive(
    data_dir: str, clock: ManualClock
) -> None:
    """A record in a dead-letter topic that Roost did not dead-letter (no source header) does
    not match a source filter: it stays, and the letters that do match move, at once."""

    async def body(broker: roost.EmbeddedBroker) -> None:
        await broker.create_queue("q", max_deliveries=1)
        await broker.publish("q.dlq", b"stray")  # no x-roost-source-topic
        await poison(broker, "q", [b"a1"])
        assert await broker.redrive("q.dlq", source_topic="q") == 1
        assert [m.value for m in await broker.receive("q", max_messages=10)] == [b"a1"]
        assert await broker.redrive("q.dlq", source_topic="q") == 0

    run(data_dir, clock, body)
