"""``StreamMember.stream`` over the network, against a real ``roost serve``: protocol version 2
(``FetchBatches``), a fetch really in flight while the reader works, and a rebalance."""

from __future__ import annotations

import asyncio

import pytest

import roost
from roost import Outgoing
from roost.core.model import Message
from roost.core.stats import StreamStats
from roost.errors import StaleGeneration
from tests.e2e.test_serve import Server

WAIT_S = 0.2  # the long poll of a fetch that finds nothing; a data arrival ends it at once


async def fill(broker: roost.Client, partitions: int, per_partition: int) -> None:
    await broker.create_topic("clicks", partitions=partitions)
    await broker.create_subscription("clicks", "analytics", mode="stream", start="earliest")
    for partition in range(partitions):
        for start in range(0, per_partition, 50):
            await broker.publish_batch("clicks", [
                Outgoing(value=b"%d:%d" % (partition, i), partition=partition)
                for i in range(start, min(start + 50, per_partition))
            ])  # fmt: skip


def check_in_order(records: list[Message]) -> dict[int, list[int]]:
    """Offsets per partition; each partition's must be consecutive and carry their values."""
    found: dict[int, list[int]] = {}
    for r in records:
        found.setdefault(r.partition, []).append(r.offset)
        assert r.value == b"%d:%d" % (r.partition, r.offset)
    for got in found.values():
        assert got == list(range(got[0], got[0] + len(got)))
    return found


def test_every_record_once_in_order_over_the_network(server: Server) -> None:
    async def body() -> None:
        async with roost.connect(server.url) as broker:
            assert broker.protocol_version >= 2  # FetchBatches
            await fill(broker, 3, 1_000)
            member = await broker.join("clicks", "analytics")
            seen: list[Message] = []
            async with member.stream(max_records=128, wait=WAIT_S) as batches:
                async for batch in batches:
                    seen += batch
                    if len(seen) >= 3_000:
                        break
            assert check_in_order(seen) == {p: list(range(1_000)) for p in range(3)}
            assert len(seen) == 3_000, "exactly once"

    asyncio.run(body())


def test_a_rebalance_while_streaming_loses_nothing_and_commits_only_owned(
    server: Server,
) -> None:
    async def body() -> None:
        async with roost.connect(server.url) as a_conn, roost.connect(server.url) as b_conn:
            await fill(a_conn, 2, 600)
            a = await a_conn.join("clicks", "analytics", client="a")
            async with a.stream(max_records=400, wait=WAIT_S) as batches:
                first = await anext(batches)
                assert check_in_order(first) == {0: list(range(400))}
                await a.commit()
                # The next fetch went out before `first` was handed out and was answered as
                # generation 1 (a owns both partitions); b joining now moves partition 1.
                b = await b_conn.join("clicks", "analytics", client="b")
                assert b.partitions == (1,)
                # Fetches rotate: the one after partition 0's starts at partition 1.
                second = await anext(batches)
                assert check_in_order(second) == {1: list(range(400))}
                with pytest.raises(StaleGeneration):
                    await a.commit()  # it would commit partition 1, which a no longer owns
                await b_conn.publish("clicks", b"0:600", partition=0)
                rest: list[Message] = []
                for _ in range(5):  # partition 0's 400..599, then 600 (maybe in one answer)
                    rest += await anext(batches)
                    if rest and rest[-1].offset == 600:
                        break
                assert a.partitions == (0,), "a learnt the rebalance from an answer"
                assert check_in_order(rest) == {0: list(range(400, 601))}
                await a.commit()
            stats = await a_conn.stats("clicks", "analytics")
            assert isinstance(stats, StreamStats)
            assert {p.partition: p.committed for p in stats.partitions} == {0: 601, 1: 0}
            b_seen = await b.fetch(max_records=1_000)
            assert check_in_order(b_seen) == {1: list(range(600))}, (
                "b takes partition 1 over from its commit: nothing lost"
            )

    asyncio.run(body())
