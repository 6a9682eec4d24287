"""``roost bench breadth --active N``: W1-style traffic over N queues against the same over 4.

Each case is a fresh ``roost serve`` (a temp directory, 127.0.0.1, the admin API on a free port
for its /metrics) holding ``queues`` durable queues (durability ``always``, no dead-letter
topic), one producer process and one consumer process, the same in both cases:

- the producer keeps ``inflight`` messages unconfirmed at most, as ``inflight / batch`` tasks
  that each ``publish_batch`` ``batch`` values of 1 KiB and await the confirm; batch ``k`` goes
  to queue ``k % queues`` (round-robin), so with many queues every batch in flight lands in a
  queue of its own;
- before either starts, one message passes through each queue, and the run waits until the
  broker's flushes stop (the first flushes of a new queue sync its directories: a cost of
  creating it, not of the traffic);
- the consumer subscribes to every queue with ``prefetch`` per subscription and acks each pushed
  batch in the background, until it has seen every message.

Per case: ``msgs_per_s`` (first publish .. last receive), ``broker_cpu_us_per_msg`` (the
broker's CPU over the run, every thread), and from the broker's /metrics the flush rounds, the
device writes and syncs (``roost_fsyncs_total``: O_DSYNC writes, fdatasyncs, directory fsyncs)
per second and per round, and the WAL checkpoints done during the run. ``ratio`` is N's
msgs/s over 4's: the target is >= 0.8. Cases of each round run in a rotated order, so that a
disturbed stretch of the run does not always fall on the same side of the ratio; each figure
is the median over ``rounds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from roost.bench.broker_process import BrokerProcess
from roost.bench.e2e import (
    HEADER,
    VALUE_BYTES,
    cpu_seconds,
    go_and_collect,
    timed_publishers,
    wait_ready,
)

BASELINE_QUEUES = 4
PREFIX = "active"
#: The /metrics counters read before and after each run.
COUNTERS = (
    "roost_flush_rounds_total",
    "roost_flush_rounds_on_loop_total",
    "roost_fsyncs_total",
    "roost_flushed_records_total",
    "roost_flush_wal_writes_total",
    "roost_flush_wal_checkpoints_total",
)


def run_active_bench(
    directory: str | None,
    active: int,
    messages: int,
    batch: int,
    inflight: int,
    prefetch: int,
    rounds: int = 1,
    timeout_s: float = 600.0,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """The figures of the module doc: N = ``active`` queues against ``BASELINE_QUEUES``."""
    cases = [BASELINE_QUEUES, active]
    runs: dict[int, list[dict[str, Any]]] = {queues: [] for queues in cases}
    for round_ in range(rounds):
        for queues in cases[round_ % 2 :] + cases[: round_ % 2]:
            progress(f"round {round_ + 1} of {rounds}: {queues:,} active queues")
            runs[queues].append(
                _case(directory, queues, messages, batch, inflight, prefetch, timeout_s, progress)
            )
    base, many = _medians(runs[BASELINE_QUEUES]), _medians(runs[active])
    return {
        "active": active,
        "baseline_queues": BASELINE_QUEUES,
        "msgs_per_s_base": base["msgs_per_s"],
        "msgs_per_s_n": many["msgs_per_s"],
        "ratio": round(many["msgs_per_s"] / base["msgs_per_s"], 3),
        "broker_cpu_us_per_msg_base": base["broker_cpu_us_per_msg"],
        "broker_cpu_us_per_msg_n": many["broker_cpu_us_per_msg"],
        "syncs_per_s_base": base["syncs_per_s"],
        "syncs_per_s_n": many["syncs_per_s"],
        "base": base,
        "n": many,
        "settings": {
            "messages": messages, "value_bytes": VALUE_BYTES, "batch": batch,
            "inflight": inflight, "prefetch_per_queue": prefetch, "durability": "always",
            "rounds": rounds, "producers": 1, "consumers": 1,
        },
    }  # fmt: skip


def _medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {name: statistics.median(run[name] for run in runs) for name in runs[0]}


def _case(
    directory: str | None,
    queues: int,
    messages: int,
    batch: int,
    inflight: int,
    prefetch: int,
    timeout_s: float,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    root = tempfile.mkdtemp(prefix="roost-active-", dir=directory)
    admin_port = _free_port()
    broker = BrokerProcess(
        os.path.join(root, "data"),
        os.path.join(root, "serve.log"),
        ["--admin", "--admin-listen", "127.0.0.1", "--admin-port", str(admin_port)],
    )
    clients: list[subprocess.Popen[str]] = []
    try:
        broker.start()
        progress(f"creating {queues:,} queues")
        asyncio.run(_create_queues(broker.url, queues))
        metrics_url = f"http://127.0.0.1:{admin_port}/metrics"
        _settle(metrics_url)
        clients = [
            _spawn("producer", broker.url, queues, messages, batch, inflight),
            _spawn("consumer", broker.url, queues, messages, batch, prefetch),
        ]
        wait_ready(clients)
        progress(f"{messages:,} messages over {queues:,} queues")
        before, cpu_before = _scrape(metrics_url), cpu_seconds(broker.pid)
        results = go_and_collect(clients, timeout_s)
        cpu_s = cpu_seconds(broker.pid) - cpu_before
        after = _scrape(metrics_url)
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
                client.wait()
        broker.kill()
        shutil.rmtree(root, ignore_errors=True)
    sent, got = results
    seconds = max(got["t_last"] - sent["t_start"], 1) / 1e9
    delta = {name: after.get(name, 0.0) - before.get(name, 0.0) for name in COUNTERS}
    flush_rounds = delta["roost_flush_rounds_total"]
    return {
        "msgs_per_s": round(messages / seconds, 1),
        "broker_cpu_us_per_msg": round(cpu_s / messages * 1e6, 2),
        "producer_cpu_us_per_msg": round(sent["cpu_s"] / messages * 1e6, 2),
        "consumer_cpu_us_per_msg": round(got["cpu_s"] / messages * 1e6, 2),
        "flush_rounds_per_s": round(flush_rounds / seconds, 1),
        "flush_rounds_on_loop_share": round(
            delta["roost_flush_rounds_on_loop_total"] / flush_rounds, 3
        )
        if flush_rounds
        else 0.0,
        "syncs_per_s": round(delta["roost_fsyncs_total"] / seconds, 1),
        "syncs_per_round": round(delta["roost_fsyncs_total"] / flush_rounds, 2)
        if flush_rounds
        else 0.0,
        "wal_writes_per_s": round(delta["roost_flush_wal_writes_total"] / seconds, 1),
        # Each fdatasyncs every file the WAL wrote since the last: over 1,000 queues ~2,000
        # files. A run of 64,000 messages of 1 KiB fills about one WAL file, so whether one
        # falls inside the run is chance: compare runs that did as many.
        "wal_checkpoints": delta["roost_flush_wal_checkpoints_total"],
        "records_per_round": round(delta["roost_flushed_records_total"] / flush_rounds, 1)
        if flush_rounds
        else 0.0,
        "received": got["received"],
    }


#: How long the warm-up's flushes may take to end before the run starts anyway.
SETTLE_MAX_S = 120.0
#: How long ``roost_fsyncs_total`` must stand still to count as settled. A round's syncs are
#: counted when it ends, and one round of the warm-up's directory syncs (1,000 queues') ran
#: for seconds under load: two readings half a second apart agreed in the middle of it, and
#: ~2,500 syncs then fell inside the measured run (session 11).
SETTLE_QUIET_S = 3.0


def _settle(url: str) -> None:
    """Wait until the broker's flushes stop (the warm-up's journals sync their new directories
    up to 100 ms after their last entry, 1,000 queues' worth taking seconds): readings of
    ``roost_fsyncs_total`` half a second apart that agree for ``SETTLE_QUIET_S``."""
    deadline = time.monotonic() + SETTLE_MAX_S
    last = _scrape(url).get("roost_fsyncs_total")
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = _scrape(url).get("roost_fsyncs_total")
        if now != last:
            last, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= SETTLE_QUIET_S:
            return


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _scrape(url: str) -> dict[str, float]:
    """The unlabelled samples of ``COUNTERS`` in the broker's /metrics (absent ones: 0)."""
    with urllib.request.urlopen(url, timeout=30) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in COUNTERS:
            values[name] = float(value)
    return values


def queue_name(index: int) -> str:
    return f"{PREFIX}-{index}"


async def _create_queues(url: str, queues: int) -> None:
    """Create the queues, then pass one message through each (published, received, acked):
    a new queue's first flushes sync the directory entries its creation left unsynced, a
    cost of creating it that the steady traffic measured next must not carry."""
    import roost

    async with roost.connect(url, reconnect=False) as client:
        for index in range(queues):
            await client.create_queue(
                queue_name(index), durability="always", max_deliveries=None, dead_letter=None
            )
        warm = bytes(HEADER.size)
        await asyncio.gather(*(client.publish(queue_name(i), warm) for i in range(queues)))
        for index in range(queues):
            for delivery in await client.receive(queue_name(index), wait=5.0):
                await delivery.ack()


def _spawn(
    role: str, url: str, queues: int, messages: int, batch: int, window: int
) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "roost.bench.active_queues", role, url, str(queues),
            str(messages), str(batch), str(window)]  # fmt: skip
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


# -- the two client processes -------------------------------------------------------------


async def _produce(url: str, queues: int, messages: int, batch: int, inflight: int) -> Any:
    import roost
    from roost.core.publishing import Outgoing

    client = await roost.connect(url, reconnect=False)
    filler = bytearray((b"0123456789abcdef" * (VALUE_BYTES // 16 + 1))[:VALUE_BYTES])
    batches = iter(enumerate(range(0, messages, batch)))

    async def publisher() -> None:
        for index, first in batches:
            out = []
            for seq in range(first, min(first + batch, messages)):
                HEADER.pack_into(filler, 0, seq, time.monotonic_ns())
                out.append(Outgoing(value=bytes(filler)))
            await client.publish_batch(queue_name(index % queues), out)

    return await timed_publishers(client, publisher, max(1, inflight // batch))


async def _consume(url: str, queues: int, messages: int, prefetch: int) -> Any:
    import roost

    client = await roost.connect(url, reconnect=False)
    seen = bytearray(messages)
    state = {"unique": 0, "received": 0, "t_first": 0}
    done = asyncio.Event()
    acking: set[asyncio.Task[Any]] = set()

    async def drain(deliveries: Any) -> None:
        while True:
            got = await deliveries.batch()
            state["t_first"] = state["t_first"] or time.monotonic_ns()
            state["received"] += len(got)
            for delivery in got:
                seq = HEADER.unpack_from(delivery.value)[0]
                if not seen[seq]:
                    seen[seq] = 1
                    state["unique"] += 1
            ack = asyncio.create_task(deliveries.ack(got))
            acking.add(ack)
            ack.add_done_callback(acking.discard)
            if state["unique"] >= messages:
                done.set()

    async with contextlib.AsyncExitStack() as stack:
        subscribers = [
            await stack.enter_async_context(client.subscribe(queue_name(i), prefetch=prefetch))
            for i in range(queues)
        ]
        await _ready()
        cpu0 = cpu_seconds()
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(drain(subscriber)) for subscriber in subscribers]
            await done.wait()
            t_last = time.monotonic_ns()
            await asyncio.gather(*acking)
            for task in tasks:
                task.cancel()
        cpu1 = cpu_seconds()
    await client.aclose()
    return {"t_first": state["t_first"], "t_last": t_last, "cpu_s": cpu1 - cpu0,
            "received": state["received"]}  # fmt: skip


async def _ready() -> None:
    """Tell the parent we are connected; start when it says go (a line on stdin)."""
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


def _client_main(argv: list[str]) -> None:
    from roost.bench.e2e import _run

    role, url, queues, messages, batch, window = argv
    if role == "producer":
        work = _produce(url, int(queues), int(messages), int(batch), int(window))
    else:
        work = _consume(url, int(queues), int(messages), int(window))
    print(json.dumps(_run(work)), flush=True)


if __name__ == "__main__":
    _client_main(sys.argv[1:])
