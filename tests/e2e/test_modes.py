"""Over the network: keyed order, delays, dead letters, and a consumer group rebalanced across
two client processes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import roost
from tests.e2e.test_serve import Server


def test_keyed_delays_and_dead_letters(server: Server) -> None:
    async def body() -> None:
        async with roost.connect(server.url) as broker:
            await broker.create_queue("orders", fifo=True, max_deliveries=2)
            for i in range(3):
                await broker.publish("orders", b"a%d" % i, key=b"a")
            await broker.publish("orders", b"b0", key=b"b")
            first = await broker.receive("orders", max_messages=10)
            assert sorted(m.value for m in first) == [b"a0", b"b0"], "one in flight per key"
            a0 = next(m for m in first if m.value == b"a0")
            await a0.nack(delay=0, error="bad")
            [again] = await broker.receive("orders", max_messages=10)
            assert again.value == b"a0", "the head of its key comes back before a1"
            await again.nack(delay=0, error="still bad")  # second delivery: dead-lettered
            # The key unblocks once the dead-letter append is durable (the broker's timer).
            [a1] = await broker.receive("orders", max_messages=10, wait=5)
            assert a1.value == b"a1", "the dead letter unblocked its key"
            assert (await broker.stats("orders")).dead_letters == 1

            await broker.create_queue("later")
            await broker.publish("later", b"soon", delay=0.3)
            assert await broker.receive("later") == []
            [late] = await broker.receive("later", wait=5)
            assert late.value == b"soon"

    asyncio.run(body())


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    import roost

    async def main(url):
        async with roost.connect(url) as broker:
            member = await broker.join("clicks", "analytics", client="child")
            print("joined", *member.partitions, flush=True)
            sys.stdin.readline()              # the parent says when to leave
            await member.leave()

    asyncio.run(main(sys.argv[1]))
    """
)


def test_a_consumer_group_rebalances_across_two_processes(server: Server) -> None:
    async def body() -> None:
        async with roost.connect(server.url) as broker:
            await broker.create_topic("clicks", partitions=4)
            await broker.create_subscription("clicks", "analytics", mode="stream",
                                             start="earliest")  # fmt: skip
            me = await broker.join("clicks", "analytics", client="parent")
            assert me.partitions == (0, 1, 2, 3)
            child = subprocess.Popen(
                [sys.executable, "-c", CHILD, server.url],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            try:
                assert child.stdout is not None and child.stdin is not None
                line = await asyncio.to_thread(child.stdout.readline)
                theirs = {int(p) for p in line.split()[1:]}
                mine = set((await me.heartbeat()).partitions)
                assert len(theirs) == len(mine) == 2 and not theirs & mine, "shared, balanced"
                child.stdin.write("\n")
                child.stdin.flush()
                assert await asyncio.to_thread(child.wait, 30) == 0
                assert (await me.heartbeat()).partitions == (0, 1, 2, 3), "all back after leave"
            finally:
                if child.poll() is None:
                    child.kill()
                    child.wait()
                for pipe in (child.stdin, child.stdout):
                    if pipe is not None:
                        pipe.close()

    asyncio.run(body())
