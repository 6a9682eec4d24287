"""The well-behaved client of ``roost bench faults``, in a process of its own.

``python -m roost.bench.faults_probe URL SPEC`` (SPEC a JSON object) publishes 1 KiB messages
to its own queue ``topic`` (``batch`` per publish, ``inflight`` publishes in flight) for
``seconds`` and prints its confirmed rate and the CPU time it took as one JSON line
(``{"result": ...}``); with ``announce`` it first prints ``{"publishing": true}``, once
connected and about to publish, so that the bench times other processes over the same
window. With ``rate`` it paces its publishes to that many messages a second instead,
consumes them too (``subscribe``, ack), and reports the end-to-end latency p99 of each
``window_s``: a producer that falls behind its pace catches up (the run then takes longer
than ``seconds``). With
``consume`` and no ``rate`` it does the same work unpaced: the rate it reaches is the
capacity that the soak's pace is half of.
"""

from __future__ import annotations

import asyncio
import json
import struct
import sys
import time
from typing import Any

VALUE_BYTES = 1024
STAMP = struct.Struct("<q")  # send time, monotonic ns
#: How long the soak's consumer may take to catch up once the producer is done.
DRAIN_S = 60.0


async def _probe(url: str, spec: dict[str, Any]) -> dict[str, Any]:
    import roost

    topic, seconds, batch = spec["topic"], spec["seconds"], spec["batch"]
    async with roost.connect(url, reconnect=False) as client:
        await client.create_queue(topic, max_deliveries=None, dead_letter=None)
        if spec.get("rate"):
            return await _paced(client, topic, seconds, batch, spec["rate"], spec["window_s"])
        if spec.get("consume"):
            return await _paced(client, topic, seconds, batch, None, seconds)
        confirmed = 0
        if spec.get("announce"):
            print(json.dumps({"publishing": True}), flush=True)
        cpu_started = time.process_time()
        deadline = time.monotonic() + seconds
        value = bytes(VALUE_BYTES)

        async def publisher() -> None:
            nonlocal confirmed
            while time.monotonic() < deadline:
                await client.publish_batch(topic, [roost.Outgoing(value=value)] * batch)
                confirmed += batch

        started = time.monotonic()
        await asyncio.gather(*(publisher() for _ in range(spec["inflight"])))
        took = time.monotonic() - started
        cpu_s = time.process_time() - cpu_started
        await client.delete_queue(topic)
    return {"confirmed": confirmed, "msgs_per_s": round(confirmed / took, 1),
            "took_s": round(took, 3), "cpu_s": round(cpu_s, 3)}  # fmt: skip


async def _paced(
    client: Any, topic: str, seconds: float, batch: int, rate: float | None, window_s: float
) -> dict[str, Any]:
    """Publish ``rate`` messages a second and consume them; p99 of each window's latencies.

    With ``rate`` None it publishes one batch after another for ``seconds`` instead:
    ``msgs_per_s`` received is then this client's capacity for the same work.

    The consumer stops once it has everything published, or ``DRAIN_S`` after the producer
    finished: what it did not get then is ``undelivered`` (a figure, not a crash, so that an
    hour's run always reports).
    """
    import roost

    windows: list[list[int]] = []
    started = time.monotonic_ns()
    filler = bytearray(VALUE_BYTES)
    published = received = 0
    behind_s = 0.0
    produced = asyncio.Event()

    async def produce() -> None:
        nonlocal published, behind_s
        interval = batch / rate if rate else 0.0
        next_at = time.monotonic()
        end = next_at + seconds
        try:
            while next_at < end if rate else time.monotonic() < end:
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                behind_s = max(behind_s, time.monotonic() - next_at)
                out = []
                for _ in range(batch):
                    STAMP.pack_into(filler, 0, time.monotonic_ns())
                    out.append(roost.Outgoing(value=bytes(filler)))
                await client.publish_batch(topic, out)
                published += batch
                next_at += interval
        finally:
            produced.set()

    async def consume() -> None:
        nonlocal received
        async with client.subscribe(topic, prefetch=1000) as deliveries:
            while not produced.is_set() or received < published:
                delivered = await deliveries.batch()
                now = time.monotonic_ns()
                window = int((now - started) / 1e9 / window_s)
                while len(windows) <= window:
                    windows.append([])
                windows[window] += [now - STAMP.unpack_from(d.value)[0] for d in delivered]
                received += len(delivered)
                await deliveries.ack(delivered)

    async def drain(consumer: asyncio.Task[None]) -> None:
        await produced.wait()
        try:
            await asyncio.wait_for(asyncio.shield(consumer), DRAIN_S)
        except TimeoutError:
            consumer.cancel()

    consumer = asyncio.create_task(consume())
    await asyncio.gather(produce(), drain(consumer))
    took = (time.monotonic_ns() - started) / 1e9
    p99 = []
    for latencies in windows:
        latencies.sort()
        p99.append(round(latencies[int(0.99 * (len(latencies) - 1))] / 1e6, 3) if latencies
                   else None)  # fmt: skip
    return {"window_s": window_s, "p99_ms": p99, "published": published,
            "received": received, "undelivered": max(0, published - received),
            "producer_behind_max_s": round(behind_s, 3),
            "msgs_per_s": round(received / took, 1)}  # fmt: skip


def main(argv: list[str]) -> None:
    url, spec = argv[0], json.loads(argv[1])
    try:
        import uvloop

        result = uvloop.run(_probe(url, spec))
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        result = asyncio.run(_probe(url, spec))
    print(json.dumps({"result": result}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
