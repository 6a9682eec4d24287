"""``roost bench breadth``: what many idle queues cost a broker, against one, in the same run.

One ``roost serve`` (a temp directory, 127.0.0.1) with one queue, ``probe``:

1. baseline: the broker's CPU over ``idle_s`` seconds with nothing to do (utime + stime, every
   thread, from /proc), then a paced publisher on ``probe`` (``rate`` publishes a second for
   ``paced_s`` seconds, one message each, each awaited): the p50 and p99 of the time from when
   each publish was due to its confirm;
2. ``queues`` more queues are created, one after another (their create latencies: the first
   ten's and the last ten's mean, and creates a second overall);
3. the same idle and paced measurements, now among ``queues`` others.

``fds`` says what the queues cost in file descriptors: the broker's open descriptors with one
queue and with all of them (/proc), per idle queue, and the ceiling storage keeps its files under
(``max_open_files``, from the broker's log) beside the process's open files limit.

The ratios (``idle_cpu_ratio``, ``paced_p99_ratio``) are the figures to judge: the broker's
work once a second must not grow with queues nobody uses, and a publisher on one queue must not
wait behind it. Queues are made without a dead-letter topic (one topic each: creating them is
still O(existing queues), see issue 14) and ``probe`` is ``durability=never`` by default, so
that the p99 shows event-loop stalls rather than the disk's fsync latency.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any, Literal

from roost.bench.broker_process import BrokerProcess
from roost.bench.e2e import cpu_seconds

PROBE = "probe"
Durability = Literal["always", "interval", "never"]
CEILING = re.compile(r"at most (\d+) storage files open")


def run_breadth_bench(
    directory: str | None,
    queues: int,
    idle_s: float,
    paced_s: float,
    rate: float,
    durability: Durability = "never",
    progress: Callable[[str], None] = lambda _: None,
    max_open_files: int | None = None,
) -> dict[str, Any]:
    root = tempfile.mkdtemp(prefix="roost-breadth-", dir=directory)
    serve_args = [] if max_open_files is None else ["--max-open-files", str(max_open_files)]
    broker = BrokerProcess(os.path.join(root, "data"), os.path.join(root, "serve.log"), serve_args)
    try:
        broker.start()
        return asyncio.run(_measure(broker, queues, idle_s, paced_s, rate, durability, progress))
    finally:
        broker.kill()
        shutil.rmtree(root, ignore_errors=True)


async def _measure(
    broker: BrokerProcess,
    queues: int,
    idle_s: float,
    paced_s: float,
    rate: float,
    durability: Durability,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    import roost

    figures: dict[str, Any] = {"queues": queues, "idle_s": idle_s, "paced_s": paced_s}
    async with roost.connect(broker.url, reconnect=False) as client:
        await client.create_queue(
            PROBE, max_deliveries=None, dead_letter=None, durability=durability
        )
        progress("idle broker, 1 queue")
        base_cpu = await _idle_cpu(broker.pid, idle_s)
        progress("paced publisher, 1 queue")
        base_p50, base_p99 = await _paced(client, paced_s, rate)
        base_rss, base_fds = broker.rss_bytes(), broker.fds()

        create_ms: list[float] = []
        started = time.monotonic()
        for i in range(queues):
            if i % 100 == 0:
                progress(f"creating queues: {i:,} of {queues:,}")
            before = time.monotonic()
            await client.create_queue(f"idle-{i}", max_deliveries=None, dead_letter=None)
            create_ms.append((time.monotonic() - before) * 1000)
        create_s = time.monotonic() - started

        progress(f"idle broker, {queues + 1:,} queues")
        many_cpu = await _idle_cpu(broker.pid, idle_s)
        progress(f"paced publisher, {queues + 1:,} queues")
        many_p50, many_p99 = await _paced(client, paced_s, rate)
    first, last = create_ms[:10], create_ms[-10:]
    figures.update(
        create_s=round(create_s, 2),
        creates_per_s=round(queues / create_s, 1) if create_s else None,
        create_ms_first10=round(sum(first) / len(first), 2) if first else None,
        create_ms_last10=round(sum(last) / len(last), 2) if last else None,
        idle_cpu_1=round(base_cpu, 4),
        idle_cpu_n=round(many_cpu, 4),
        idle_cpu_ratio=_ratio(many_cpu, base_cpu),
        paced_p50_ms_1=round(base_p50, 3),
        paced_p99_ms_1=round(base_p99, 3),
        paced_p50_ms_n=round(many_p50, 3),
        paced_p99_ms_n=round(many_p99, 3),
        paced_p99_ratio=_ratio(many_p99, base_p99),
        rss_bytes_1=base_rss,
        rss_bytes_n=broker.rss_bytes(),
        fds_1=base_fds,
        fds_n=broker.fds(),
    )
    figures["fds"] = _fds(broker, base_fds, figures["fds_n"], queues)
    return figures


def _fds(broker: BrokerProcess, at_1: int, at_n: int, queues: int) -> dict[str, Any]:
    """What the queues cost in descriptors, and the bounds that hold them."""
    with open(broker.log_path, errors="replace") as f:
        found = CEILING.findall(f.read())
    with open(f"/proc/{broker.pid}/limits") as f:
        limits = [line for line in f if line.startswith("Max open files")]
    return {
        "at_1": at_1,
        "at_n": at_n,
        "per_idle_queue": round((at_n - at_1) / queues, 3),
        "max_open_files": int(found[-1]) if found else None,  # None: a broker without a pool
        "open_files_limit": int(limits[0].split()[3]) if limits else None,
    }


async def _idle_cpu(pid: int, seconds: float) -> float:
    """The broker's CPU (cores) over ``seconds`` with nothing asked of it."""
    await asyncio.sleep(min(1.0, seconds))  # what the last command left behind settles first
    before, started = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    return (cpu_seconds(pid) - before) / (time.monotonic() - started)


async def _paced(client: Any, seconds: float, rate: float) -> tuple[float, float]:
    """Publish one message every 1/``rate`` s for ``seconds``, each awaited; p50, p99 (ms).

    A latency counts from when the publish was due, not from when it was sent: a broker that
    stalls delays every publish due meanwhile, not only the one it held (coordinated omission).
    """
    interval = 1 / rate
    latencies: list[float] = []
    due = time.monotonic()
    end = due + seconds
    value = bytes(64)
    while due < end:
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await client.publish(PROBE, value)
        latencies.append((time.monotonic() - due) * 1000)
        due += interval
    latencies.sort()
    return _percentile(latencies, 50), _percentile(latencies, 99)


def _percentile(ordered: list[float], p: float) -> float:
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def _ratio(value: float, baseline: float) -> float | None:
    return round(value / baseline, 3) if baseline > 0 else None
