"""The batching producer: batches by linger and size, and survives a broker restart without
storing anything twice (its retries are idempotent)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import roost
from roost.client.producer import Producer
from roost.clock import ManualClock
from tests.e2e.test_serve import Server


def test_sends_are_batched_and_confirmed_in_order(tmp_path: Path) -> None:
    async def main() -> None:
        async with roost.open(str(tmp_path / "data"), clock=ManualClock()) as broker:
            await broker.create_topic("clicks", partitions=3)
            producer = await Producer.start(broker, "clicks", linger=0.01, max_batch=50)
            placed = await asyncio.gather(
                *(producer.send(b"%d" % i, key=b"user-%d" % (i % 7)) for i in range(200))
            )
            await producer.aclose()
            info = await broker.describe_topic("clicks")
            assert sum(p.end_offset for p in info.partitions) == 200
            by_key: dict[bytes, list[tuple[int, int]]] = {}
            for i, p in enumerate(placed):
                by_key.setdefault(b"user-%d" % (i % 7), []).append((p.partition, p.offset))
            for spots in by_key.values():
                assert len({partition for partition, _ in spots}) == 1, "a key keeps a partition"
                assert [o for _, o in spots] == sorted(o for _, o in spots), "in send order"

    asyncio.run(main())


def test_a_broker_restart_mid_stream_stores_each_message_once(tmp_path: Path) -> None:
    server = Server.restartable(tmp_path / "data")
    port = server.port

    async def main() -> None:
        nonlocal server
        async with roost.connect(f"roost://127.0.0.1:{port}") as broker:
            await broker.create_topic("events")
            producer = await Producer.start(broker, "events", linger=0.002, max_batch=20)
            sends = [asyncio.create_task(producer.send(b"%d" % i)) for i in range(400)]
            await asyncio.sleep(0.05)
            server = server.restart()  # SIGTERM: a clean stop mid-stream; the client reconnects
            placed = await asyncio.wait_for(asyncio.gather(*sends), 60)
            await producer.aclose()
            assert sorted(p.offset for p in placed) == list(range(400)), "each stored once"
            info = await broker.describe_topic("events")
            assert info.partitions[0].end_offset == 400

    try:
        asyncio.run(main())
    finally:
        server.stop()
