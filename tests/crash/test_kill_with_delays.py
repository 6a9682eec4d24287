"""SIGKILL a real ``roost serve`` holding many delayed messages; none is lost, none comes early.

Round 1: a queue gets ``BATCHES`` confirmed publishes of ``BATCH`` delayed messages (an hour and
more, each its own time; half by ``delay``, half by ``deliver_at``), with a few plain messages
between them; some plain ones are received and nacked with a delay of three hours. Then one more
delayed batch is sent and the server is SIGKILLed without waiting for its confirm.

Round 2, restarted on the same directory: the stats count every delayed and nacked message as
delayed, never as depth (before any receive has read them), and a receive takes exactly the
plain messages not nacked: nothing delayed is delivered early. It is SIGKILLed again.

Last, the directory is opened in this process on a clock four hours ahead: every confirmed
message arrives, byte for byte (the unconfirmed batch may or may not).

The servers run on the wall clock; every delay is far longer than the test, so no check depends
on how long anything takes.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import roost
from roost.clock import ManualClock
from roost.core.stats import SubscriptionStats
from tests.e2e.test_serve import Server

QUEUE = "later"
BATCHES = 40
BATCH = 500
PLAIN_EVERY = 8  # a batch of plain messages after this many delayed ones
PLAIN_BATCH = 10
NACKED = 12
HOUR_MS = 3600 * 1000


def delayed_batch(number: int, now_ms: int) -> list[roost.Outgoing]:
    values = [b"d%d.%d" % (number, i) for i in range(BATCH)]
    if number % 2:
        return [roost.Outgoing(value=v, delay_ms=HOUR_MS + i) for i, v in enumerate(values)]
    return [
        roost.Outgoing(value=v, deliver_at_ms=now_ms + 2 * HOUR_MS + i)
        for i, v in enumerate(values)
    ]


async def fill(url: str, server: Server) -> tuple[set[bytes], set[bytes], set[bytes]]:
    """Round 1: (delayed confirmed, plain not nacked, nacked)."""
    delayed: set[bytes] = set()
    plain: set[bytes] = set()
    async with roost.connect(url, reconnect=False) as client:
        await client.create_queue(QUEUE, dead_letter=None, max_deliveries=None)
        for number in range(BATCHES):
            batch = delayed_batch(number, int(time.time() * 1000))
            await client.publish_batch(QUEUE, batch)
            delayed.update(m.value for m in batch)
            if number % PLAIN_EVERY == PLAIN_EVERY - 1:
                values = [b"p%d.%d" % (number, i) for i in range(PLAIN_BATCH)]
                await client.publish_batch(QUEUE, [roost.Outgoing(value=v) for v in values])
                plain.update(values)
        received = await client.receive(QUEUE, max_messages=NACKED)
        assert len(received) == NACKED and {m.value for m in received} <= plain
        await client.nack(QUEUE, QUEUE, [m.receipt for m in received], delay=3 * 3600)
        nacked = {m.value for m in received}
        last = asyncio.ensure_future(
            client.publish_batch(QUEUE, delayed_batch(BATCHES, int(time.time() * 1000)))
        )
        await asyncio.sleep(0)  # sent, not confirmed
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(30)
        await asyncio.gather(last, return_exceptions=True)
    return delayed, plain - nacked, nacked


async def after_restart(url: str, delayed: int, plain: set[bytes], nacked: int) -> None:
    async with roost.connect(url, reconnect=False) as client:
        stats = await client.stats(QUEUE)
        assert isinstance(stats, SubscriptionStats)
        # The unconfirmed batch may have been kept: delayed too, never depth.
        assert delayed + nacked <= stats.delayed <= delayed + nacked + BATCH, stats
        assert stats.depth == len(plain), stats
        got = await client.receive(QUEUE, max_messages=len(plain) + 100)
        assert {m.value for m in got} == plain, "exactly the plain messages: none delayed"
        assert len(got) == len(plain)
        await client.ack(QUEUE, QUEUE, [m.receipt for m in got])
        assert await client.receive(QUEUE, max_messages=10) == []


async def drain_later(data_dir: Path, expected: set[bytes]) -> None:
    clock = ManualClock(int(time.time() * 1000) + 4 * HOUR_MS)
    seen: set[bytes] = set()
    async with roost.open(str(data_dir), clock=clock) as broker:
        for _ in range(200):
            got = await broker.receive(QUEUE, max_messages=1000)
            if not got:
                break
            seen.update(m.value for m in got)
            await broker.ack(QUEUE, QUEUE, [m.receipt for m in got])
        stats = await broker.stats(QUEUE)
        assert isinstance(stats, SubscriptionStats)
        assert (stats.depth, stats.delayed, stats.in_flight) == (0, 0, 0), stats
    assert expected <= seen, f"{len(expected - seen)} confirmed messages lost"
    assert not {v for v in seen - expected if not v.startswith(b"d%d." % BATCHES)}


def test_delayed_messages_survive_kills(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = Server.restartable(data_dir)
    try:
        delayed, plain, nacked = asyncio.run(fill(server.url, server))
    finally:
        killed(server)
    server = Server(data_dir, server.port)
    try:
        asyncio.run(after_restart(server.url, len(delayed), plain, len(nacked)))
    finally:
        killed(server)
    asyncio.run(drain_later(data_dir, delayed | nacked))


def killed(server: Server) -> None:
    """SIGKILL ``server`` if it still runs (a failed check must not leave it behind)."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGKILL)
    server.process.communicate(timeout=30)
