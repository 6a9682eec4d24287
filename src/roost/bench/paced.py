"""``roost bench paced``: the broker's CPU per message when messages come at a set rate.

A broker under full load spreads each loop cycle's fixed work (its wake-up, a flush round, a
socket write) over many messages; a paced publisher gives it one or a few messages per cycle,
so what a cycle costs is paid per message. This bench measures that, as the peer harness's W2
does: one ``roost serve`` (a temp directory, 127.0.0.1), and per case a fresh durable queue
(durability ``always``), a producer process and a consumer process (each uvloop and
``roost.connect``). The producer publishes ``rate`` messages a second for ``seconds``, each its
own ``publish`` (sent per 1 ms tick, what is due in it, confirms awaited asynchronously, at
most ``INFLIGHT`` unconfirmed); the consumer subscribes with prefetch ``PREFETCH`` and acks
each pushed batch without waiting for an answer (the last ack is answered).

Per case, over the window from "go" to the consumer's last message:
  broker_cpu_us_per_msg     the broker's CPU (every thread, /proc) per message
  broker_cpu_us_per_kib     the same per KiB of payload (what copies cost, for large values)
  broker_cores              the broker's CPU / wall time
  broker_wakeups_per_msg    times its threads were put on a CPU (schedstat), per message
  broker_cpu_us_per_wakeup  its CPU per wake-up: what one turn of its loop costs
  p50_ms, p99_ms            receive time - send stamp (CLOCK_MONOTONIC, shared by processes)
  producer_cpu_us_per_msg, consumer_cpu_us_per_msg   each client's own CPU per message

The baselines, measured in the same run against the same broker: ``idle_cores``, its CPU over
``seconds`` with nothing to do (each case's ``net_cpu_us_per_msg`` takes that off); and the
first rate again on a queue with durability ``never`` (figures ``<case>_never_...``), whose
difference from the same rate under ``always`` is ``<case>_sync_cpu_us_per_msg``: what the
durable writes cost (on this VM an ``O_DSYNC`` write of 1 KiB takes ~100 us of CPU, in the
kernel, whatever else the broker does). Cases: ``rates`` with VALUE_BYTES values, then
``large_rate`` with ``large_bytes`` values, then the ``never`` baseline.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

from roost.bench.broker_process import BrokerProcess
from roost.bench.e2e import cpu_seconds

VALUE_BYTES = 1024
LARGE_BYTES = 256 * 1024
HEADER = struct.Struct("<Qq")  # sequence, send time (monotonic ns)
TICK_S = 0.001
INFLIGHT = 256
PREFETCH = 256
Durability = Literal["always", "interval", "never"]
#: A case whose consumer has not seen every message this long after the producer's end fails.
DRAIN_TIMEOUT_S = 60.0


def run_paced_bench(
    directory: str | None,
    rates: Sequence[float],
    seconds: float,
    large_rate: float,
    large_bytes: int = LARGE_BYTES,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    root = tempfile.mkdtemp(prefix="roost-paced-", dir=directory)
    broker = BrokerProcess(os.path.join(root, "data"), os.path.join(root, "serve.log"))
    figures: dict[str, Any] = {"seconds": seconds, "value_bytes": VALUE_BYTES}
    try:
        broker.start()
        progress("idle broker")
        idle = _idle_cores(broker.pid, seconds)
        figures["idle_cores"] = round(idle, 4)
        cases = [(f"r{rate:g}", rate, VALUE_BYTES) for rate in rates]
        if large_rate > 0:
            cases.append((f"large_r{large_rate:g}", large_rate, large_bytes))
            figures["large_bytes"] = large_bytes
        for name, rate, size in cases:
            progress(f"{name}: {rate:g} msg/s of {size:,} bytes for {seconds:g} s")
            case = _case(broker, f"paced-{name}", rate, seconds, size, idle)
            figures.update({f"{name}_{key}": value for key, value in case.items()})
        # The disk's share: the first rate again with nothing synced (durability never).
        name, rate, size = cases[0]
        progress(f"{name}_never: {rate:g} msg/s, durability never")
        case = _case(broker, f"paced-{name}-never", rate, seconds, size, idle, "never")
        figures.update({f"{name}_never_{key}": value for key, value in case.items()})
        always = figures[f"{name}_broker_cpu_us_per_msg"]
        figures[f"{name}_sync_cpu_us_per_msg"] = round(always - case["broker_cpu_us_per_msg"], 1)
    finally:
        broker.kill()
        shutil.rmtree(root, ignore_errors=True)
    return figures


def wakeups(pid: int) -> int:
    """How many times the threads of process ``pid`` were put on a CPU so far (the third
    field of each thread's ``schedstat``): a broker that sleeps between messages pays each
    wake-up's cost (a context switch, caches refilled) per message."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[2])
        except (OSError, IndexError, ValueError):
            continue  # a thread that ended meanwhile
    return total


def _idle_cores(pid: int, seconds: float) -> float:
    time.sleep(min(1.0, seconds))  # what starting left behind settles first
    before, started = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / (time.monotonic() - started)


def _case(
    broker: BrokerProcess,
    queue: str,
    rate: float,
    seconds: float,
    size: int,
    idle: float,
    durability: Durability = "always",
) -> dict[str, Any]:
    asyncio.run(_create(broker.url, queue, durability))
    messages = int(rate * seconds)
    consumer = _spawn("consumer", broker.url, queue, rate, seconds, size)
    producer = _spawn("producer", broker.url, queue, rate, seconds, size)
    try:
        for client in (consumer, producer):
            assert client.stdout is not None
            if client.stdout.readline().strip() != "ready":
                raise RuntimeError(f"a {queue} client failed to connect")
        cpu0, t0 = cpu_seconds(broker.pid), time.monotonic()
        wakes0 = wakeups(broker.pid)
        for client in (consumer, producer):
            assert client.stdin is not None
            client.stdin.write("go\n")
            client.stdin.flush()
        timeout = seconds + DRAIN_TIMEOUT_S
        consumed_out, _ = consumer.communicate(timeout=timeout)
        cpu1, t1 = cpu_seconds(broker.pid), time.monotonic()
        wakes = wakeups(broker.pid) - wakes0
        produced_out, _ = producer.communicate(timeout=timeout)
        if consumer.returncode or producer.returncode:
            raise RuntimeError(f"a {queue} client failed")
    finally:
        for client in (consumer, producer):
            if client.poll() is None:
                client.kill()
                client.wait()
    consumed = json.loads(consumed_out.strip().splitlines()[-1])
    produced = json.loads(produced_out.strip().splitlines()[-1])
    asyncio.run(_delete(broker.url, queue))
    cpu_s, wall_s = cpu1 - cpu0, t1 - t0
    return {
        "messages": messages,
        "broker_cores": round(cpu_s / wall_s, 4),
        "broker_cpu_us_per_msg": round(cpu_s / messages * 1e6, 1),
        "net_cpu_us_per_msg": round(max(0.0, cpu_s - idle * wall_s) / messages * 1e6, 1),
        "broker_cpu_us_per_kib": round(cpu_s / (messages * size / 1024) * 1e6, 3),
        "broker_wakeups_per_msg": round(wakes / messages, 2),
        "broker_cpu_us_per_wakeup": round(cpu_s / wakes * 1e6, 1) if wakes else None,
        "p50_ms": consumed["p50_ms"],
        "p99_ms": consumed["p99_ms"],
        "producer_cpu_us_per_msg": round(produced["cpu_s"] / messages * 1e6, 1),
        "consumer_cpu_us_per_msg": round(consumed["cpu_s"] / messages * 1e6, 1),
    }


async def _create(url: str, queue: str, durability: Durability) -> None:
    import roost

    async with roost.connect(url, reconnect=False) as client:
        await client.create_queue(
            queue, durability=durability, max_deliveries=None, dead_letter=None
        )


async def _delete(url: str, queue: str) -> None:
    import roost

    async with roost.connect(url, reconnect=False) as client:
        await client.delete_queue(queue)


def _spawn(role: str, url: str, queue: str, rate: float, seconds: float, size: int) -> Any:
    argv = [sys.executable, "-m", "roost.bench.paced", role, url, queue, str(rate),
            str(seconds), str(size)]  # fmt: skip
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


# -- the two client processes -----------------------------------------------------------


async def _produce(url: str, queue: str, rate: float, seconds: float, size: int) -> dict[str, Any]:
    import roost

    client = await roost.connect(url, reconnect=False)
    messages = int(rate * seconds)
    filler = bytearray(size)
    window = asyncio.Semaphore(INFLIGHT)
    pending: set[asyncio.Task[None]] = set()

    async def publish(value: bytes) -> None:
        try:
            await client.publish(queue, value)
        finally:
            window.release()

    await _ready()
    cpu0 = cpu_seconds()
    period_ns = int(1e9 / rate)
    start_ns = time.monotonic_ns()
    sent = 0
    while sent < messages:
        due = min(messages, (time.monotonic_ns() - start_ns) // period_ns + 1)
        while sent < due:
            await window.acquire()
            HEADER.pack_into(filler, 0, sent, time.monotonic_ns())
            task = asyncio.ensure_future(publish(bytes(filler)))
            pending.add(task)
            task.add_done_callback(pending.discard)
            sent += 1
        delay_s = (start_ns + sent * period_ns - time.monotonic_ns()) / 1e9
        await asyncio.sleep(max(delay_s, TICK_S))  # timers are ~1 ms coarse: never spin
    if pending:
        await asyncio.gather(*pending)
    cpu1 = cpu_seconds()
    await client.aclose()
    return {"cpu_s": cpu1 - cpu0, "sent": sent}


async def _consume(url: str, queue: str, rate: float, seconds: float, size: int) -> dict[str, Any]:
    import roost

    client = await roost.connect(url, reconnect=False)
    messages = int(rate * seconds)
    seen = bytearray(messages)
    unique = 0
    latencies: list[int] = []
    await _ready()
    cpu0 = cpu_seconds()
    async with client.subscribe(queue, prefetch=PREFETCH) as deliveries:
        while unique < messages:
            got = await deliveries.batch()
            now = time.monotonic_ns()
            for delivery in got:
                seq, sent_ns = HEADER.unpack_from(delivery.value)
                latencies.append(now - sent_ns)
                if not seen[seq]:
                    seen[seq] = 1
                    unique += 1
            if unique < messages:
                # Sent, not answered (as the peer harness's adapter acks): the next pushed
                # batch is handled at once.
                await deliveries.ack(got, wait=False)
            else:
                await deliveries.ack(got)  # the last is answered: everything is settled
    cpu1 = cpu_seconds()
    await client.aclose()
    latencies.sort()
    return {"cpu_s": cpu1 - cpu0, "p50_ms": _percentile(latencies, 50),
            "p99_ms": _percentile(latencies, 99)}  # fmt: skip


def _percentile(ordered: list[int], p: float) -> float:
    return round(ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] / 1e6, 3)


async def _ready() -> None:
    """Tell the parent we are connected; start when it says go (a line on stdin)."""
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


def _client_main(argv: list[str]) -> None:
    role, url, queue, rate, seconds, size = argv
    work = _produce if role == "producer" else _consume
    coroutine = work(url, queue, float(rate), float(seconds), int(size))
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        result = asyncio.run(coroutine)
    else:
        result = uvloop.run(coroutine)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    _client_main(sys.argv[1:])
