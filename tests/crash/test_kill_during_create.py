"""SIGKILL a real ``roost serve`` while clients create queues; restart it on the same data
directory; every create a client saw confirmed is there and works, and nothing is half made.

Each round starts the server, and ``CREATORS`` tasks in this process, each on its own
connection, create queues one after another (``create_queue`` with its defaults: a topic, its
dead-letter topic ``<name>.dlq`` and the subscription: one metadata record). A queue counts
as confirmed once ``create_queue`` returned. Once the round has seen a seeded number of
confirms, the task that saw the last one SIGKILLs the server at once: the others have creates
in flight, and record nothing for them. After the last round the server starts once more, and:

1. every confirmed queue is listed, with its dead-letter topic, and a message published to it
   is received and acked;
2. every queue listed was attempted, and every topic is a listed queue or its dead-letter
   topic: a create the kill interrupted is there whole (it works like the others) or not at
   all;
3. a create (a declare) of a name the kill interrupted returns the queue it left or makes it.

The kill points come from a fixed seed; where a kill lands in the server's work still varies.
"""

from __future__ import annotations

import asyncio
import random
import signal
from pathlib import Path

import roost
from roost.errors import ConnectionClosed, ConnectionLost, StorageClosed
from tests.crash.test_kill_server import Running

SEED = 0xC4EA7E
ROUNDS = 4
CREATORS = 3
KILL_AFTER_CONFIRMS = (1, 40)
LOST = (ConnectionClosed, StorageClosed, ConnectionLost, ConnectionError)


class Ledger:
    def __init__(self) -> None:
        self.attempted: set[str] = set()
        self.confirmed: set[str] = set()
        self.round_confirms = 0
        self.kill_at = 0


async def _creator(url: str, prefix: str, ledger: Ledger, server: Running) -> None:
    try:
        async with roost.connect(url, reconnect=False) as client:
            for i in range(10_000):
                name = f"{prefix}-{i}"
                ledger.attempted.add(name)
                await client.create_queue(name)
                ledger.confirmed.add(name)
                ledger.round_confirms += 1
                if ledger.round_confirms == ledger.kill_at:
                    server.kill()
                    return
    except LOST:
        return


def test_every_confirmed_create_survives_a_kill_and_none_is_half_made(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    data = tmp_path / "data"
    ledger = Ledger()
    for round_ in range(ROUNDS):
        server = Running(data)
        try:
            ledger.round_confirms = 0
            ledger.kill_at = rng.randint(*KILL_AFTER_CONFIRMS)

            async def creators(server: Running = server, round_: int = round_) -> None:
                await asyncio.wait_for(
                    asyncio.gather(
                        *(_creator(server.url, f"r{round_}c{c}", ledger, server)
                          for c in range(CREATORS))
                    ),
                    timeout=60,
                )  # fmt: skip

            asyncio.run(creators())
            server.wait(-signal.SIGKILL)
        finally:
            server.close()
    assert len(ledger.confirmed) >= ROUNDS, "every round confirmed some creates"
    assert ledger.attempted - ledger.confirmed, "some kills landed with creates in flight"

    server = Running(data)
    try:
        asyncio.run(_check(server.url, ledger))
        server.stop()
    finally:
        server.close()


async def _check(url: str, ledger: Ledger) -> None:
    async with roost.connect(url, reconnect=False) as client:
        queues = {spec.name for spec in await client.list_subscriptions()}
        topics = set(await client.list_topics())
        assert ledger.confirmed <= queues, f"confirmed, then lost: {ledger.confirmed - queues}"
        assert queues <= ledger.attempted, f"never asked for: {queues - ledger.attempted}"
        assert topics == queues | {f"{name}.dlq" for name in queues}, "half a create left"
        for name in sorted(queues):
            await client.publish(name, name.encode())
            [message] = await client.receive(name, max_messages=10)
            assert message.value == name.encode()
            await message.ack()
        for name in sorted(ledger.attempted - ledger.confirmed):
            # A declare: the whole queue the kill left is returned as it is, or made now.
            spec = await client.create_queue(name)
            assert (spec.topic, spec.mode, spec.dead_letter) == (name, "queue", f"{name}.dlq")
        assert {s.name for s in await client.list_subscriptions()} == queues | (
            ledger.attempted - ledger.confirmed
        )
