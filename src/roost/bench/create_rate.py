"""``roost bench breadth --creates N``: how fast a broker creates queues, and whether the
N-th create costs what the 10th did.

One ``roost serve`` (a temp directory, 127.0.0.1); one client creates ``creates`` queues one
after another, each awaited, each the whole thing an application asks for: a topic, its
dead-letter topic ``<name>.dlq`` and the subscription (``create_queue`` with its defaults).
The creates are timed one by one and in batches of ``batch``:

- ``creates_per_s``: over the whole run; ``creates_per_s_first`` and ``creates_per_s_last``:
  over the first and the last batch, so a cost that grows with the number of queues shows as
  their ratio (``last_batch_ratio``, the first batch's rate over the last's: 1.0 is flat);
- ``create_ms_10th`` and ``create_ms_nth``: the 10th create and the N-th, each as the median of
  the ``batch`` creates around it (one create alone is a single disk sync: noise), and their
  ratio ``nth_over_10th``;
- the broker's CPU seconds over the run per create (``broker_cpu_ms_per_create``): what the
  broker itself spent, apart from waiting on the disk;
- ``create_ms_p99`` and ``create_ms_max``, and ``slowest_create`` (which create it was): a
  stall of the event loop (a metadata snapshot written inline, a collection) shows here, where
  the medians do not see it.

With ``clients`` > 1, that many clients (each its own connection) create at once, each its
share one after another: what the broker does with concurrent creates (their metadata records
each synced, or several sharing a sync). The latencies are then in the order the creates
finished, each including its wait behind the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from roost.bench.broker_process import BrokerProcess
from roost.bench.e2e import cpu_seconds


def run_create_bench(
    directory: str | None,
    creates: int,
    batch: int,
    progress: Callable[[str], None] = lambda _: None,
    max_open_files: int | None = None,
    clients: int = 1,
) -> dict[str, Any]:
    root = tempfile.mkdtemp(prefix="roost-creates-", dir=directory)
    serve_args = [] if max_open_files is None else ["--max-open-files", str(max_open_files)]
    broker = BrokerProcess(os.path.join(root, "data"), os.path.join(root, "serve.log"), serve_args)
    try:
        broker.start()
        return asyncio.run(_measure(broker, creates, batch, progress, clients))
    finally:
        broker.kill()
        shutil.rmtree(root, ignore_errors=True)


async def _measure(
    broker: BrokerProcess,
    creates: int,
    batch: int,
    progress: Callable[[str], None],
    clients: int,
) -> dict[str, Any]:
    import roost

    batch = max(1, min(batch, creates))
    clients = max(1, min(clients, creates))
    create_ms: list[float] = []  # in the order the creates finished

    async def creator(client: roost.Client, number: int) -> None:
        for i in range(number, creates, clients):
            if len(create_ms) % batch == 0:
                progress(f"creating queues: {len(create_ms):,} of {creates:,}")
            before = time.monotonic()
            await client.create_queue(f"q-{i}")
            create_ms.append((time.monotonic() - before) * 1000)

    async with contextlib.AsyncExitStack() as stack:
        connected = [
            await stack.enter_async_context(roost.connect(broker.url, reconnect=False))
            for _ in range(clients)
        ]
        cpu_before = cpu_seconds(broker.pid)
        started = time.monotonic()
        await asyncio.gather(*(creator(client, c) for c, client in enumerate(connected)))
        create_s = time.monotonic() - started
        broker_cpu_s = cpu_seconds(broker.pid) - cpu_before
    first, last = create_ms[:batch], create_ms[-batch:]
    tenth = _median_around(create_ms, min(9, creates - 1), batch)
    nth = _median_around(create_ms, creates - 1, batch)
    slowest = max(range(creates), key=create_ms.__getitem__)
    return {
        "creates": creates,
        "clients": clients,
        "batch": batch,
        "create_s": round(create_s, 3),
        "creates_per_s": round(creates / create_s, 1),
        "creates_per_s_first": round(len(first) / (sum(first) / 1000), 1),
        "creates_per_s_last": round(len(last) / (sum(last) / 1000), 1),
        "last_batch_ratio": round(sum(last) / sum(first), 3),
        "create_ms_10th": round(tenth, 3),
        "create_ms_nth": round(nth, 3),
        "nth_over_10th": round(nth / tenth, 3) if tenth > 0 else None,
        "broker_cpu_ms_per_create": round(broker_cpu_s * 1000 / creates, 3),
        "create_ms_p99": round(sorted(create_ms)[int(creates * 0.99)], 3),
        "create_ms_max": round(create_ms[slowest], 3),
        "slowest_create": slowest + 1,
    }


def _median_around(values: list[float], index: int, width: int) -> float:
    """The median of the ``width`` values nearest ``index`` (inside the list)."""
    start = max(0, min(index - width // 2, len(values) - width))
    return statistics.median(values[start : start + width])
