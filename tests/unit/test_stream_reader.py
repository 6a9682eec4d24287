"""``StreamMember.stream``: the pipelined reader, embedded (``roost.open``), on a driven clock.

In-process the fetch in flight runs as soon as it is sent, so each test knows exactly where the
broker's positions are: one answer ahead of what was handed out.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import roost
from roost import Outgoing
from roost.client.api import Client
from roost.client.embedded import LocalBackend
from roost.clock import ManualClock
from roost.core.model import Message
from roost.core.stats import StreamStats
from roost.errors import InvalidRequest, StaleGeneration
from roost.server.host import Host
from tests.embedded_support import run


async def publish(broker: roost.EmbeddedBroker, partition: int, first: int, count: int) -> None:
    """Values ``b"<partition>:<i>"`` for i in [first, first + count), in batches of 3."""
    for start in range(first, first + count, 3):
        await broker.publish_batch("clicks", [
            Outgoing(value=b"%d:%d" % (partition, i), partition=partition)
            for i in range(start, min(start + 3, first + count))
        ])  # fmt: skip


async def committed(broker: roost.EmbeddedBroker) -> dict[int, int]:
    stats = await broker.stats("clicks", "analytics")
    assert isinstance(stats, StreamStats)
    return {p.partition: p.committed for p in stats.partitions}


async def stream_topic(broker: roost.EmbeddedBroker, partitions: int) -> None:
    await broker.create_topic("clicks", partitions=partitions)
    await broker.create_subscription("clicks", "analytics", mode="stream", start="earliest")


def offsets(records: list[Message], partition: int) -> list[int]:
    return [r.offset for r in records if r.partition == partition]


def test_every_record_once_in_order_per_partition(data_dir: str, clock: ManualClock) -> None:
    counts = {0: 40, 1: 7, 2: 23}

    async def body(broker: roost.EmbeddedBroker) -> None:
        await stream_topic(broker, 3)
        for partition, count in counts.items():
            await publish(broker, partition, 0, count)
        member = await broker.join("clicks", "analytics")
        seen: list[Message] = []
        async with member.stream(max_records=8, wait=0) as batches:
            async for batch in batches:
                assert 0 < len(batch) <= 8
                seen += batch
                if len(seen) >= sum(counts.values()):
                    break
        for partition, count in counts.items():
            assert offsets(seen, partition) == list(range(count))
            values = [r.value for r in seen if r.partition == partition]
            assert values == [b"%d:%d" % (partition, i) for i in range(count)]
        assert all(r.topic == "clicks" and r.delivery_count == 1 for r in seen)

    run(data_dir, clock, body)


def test_commit_covers_what_was_handed_out_and_close_gives_the_rest_back(
    data_dir: str, clock: ManualClock
) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        await stream_topic(broker, 1)
        await publish(broker, 0, 0, 20)
        member = await broker.join("clicks", "analytics")
        batches = member.stream(max_records=5, wait=0)
        first = await anext(batches)  # records 5..9 are fetched already, not handed out
        assert offsets(first, 0) == [0, 1, 2, 3, 4]
        with pytest.raises(InvalidRequest, match="stream"):
            await member.fetch()
        with pytest.raises(InvalidRequest, match="stream"):
            await member.seek(0, "earliest")
        await member.commit()
        assert await committed(broker) == {0: 5}, "not the fetch in flight"
        await batches.aclose()
        assert offsets(await member.fetch(max_records=100), 0) == list(range(5, 20)), (
            "closing puts the position back where the handed-out records end"
        )
        assert [b async for b in batches] == [], "a closed stream hands out nothing"

    run(data_dir, clock, body)


def test_a_partition_lost_mid_pipeline_is_not_committed(data_dir: str, clock: ManualClock) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        await stream_topic(broker, 2)
        await publish(broker, 0, 0, 30)
        await publish(broker, 1, 0, 30)
        a = await broker.join("clicks", "analytics", client="a")
        batches = a.stream(max_records=25, wait=0)
        assert offsets(await anext(batches), 0) == list(range(25))
        # {0: 25}; in flight: 1[0, 25) (fetches rotate: it starts after partition 0), fetched
        # as generation 1
        await a.commit()
        b = await broker.join("clicks", "analytics", client="b")
        assert b.partitions == (1,), "a keeps partition 0 (sticky), b takes 1"

        second = await anext(batches)  # the answer from before the rebalance
        assert (offsets(second, 0), offsets(second, 1)) == ([], list(range(25)))
        with pytest.raises(StaleGeneration):
            await a.commit()  # would commit partition 1: refused, the generation moved on
        third = await anext(batches)  # a learns the rebalance, then gets partition 0's rest
        assert a.partitions == (0,)
        assert (offsets(third, 0), offsets(third, 1)) == (list(range(25, 30)), [])
        await a.commit()
        assert await committed(broker) == {0: 30, 1: 0}, "partition 1 never committed by a"
        await batches.aclose()
        assert offsets(await b.fetch(max_records=100), 1) == list(range(30)), (
            "b reads partition 1 from its commit: at-least-once"
        )

    run(data_dir, clock, body)


def test_a_version_1_connection_streams_with_plain_fetches(
    data_dir: str, clock: ManualClock
) -> None:
    sent: list[str] = []

    class Version1(LocalBackend):
        protocol_version = 1

        async def call(self, request: Any) -> Any:
            sent.append(type(request).__name__)
            return await super().call(request)

    async def main() -> None:
        broker = Client(Version1(await Host.start(data_dir, clock)))
        try:
            await stream_topic(broker, 2)
            await publish(broker, 0, 0, 10)
            await publish(broker, 1, 0, 4)
            member = await broker.join("clicks", "analytics")
            batches = member.stream(max_records=6, wait=0)
            first = await anext(batches)
            assert offsets(first, 0) == list(range(6))
            await member.commit()
            await batches.aclose()
            rest = await member.fetch(max_records=100)
            assert (offsets(rest, 0), offsets(rest, 1)) == (list(range(6, 10)), list(range(4)))
            assert "FetchBatches" not in sent and "Fetch" in sent
            assert await committed(broker) == {0: 6, 1: 0}
        finally:
            await broker.aclose()

    asyncio.run(main())
