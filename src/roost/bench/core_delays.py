"""``roost bench core``'s delayed phase: the queue path with many delayed records ahead.

A queue gets ``delayed`` records (16-byte values) published with a delay of a day, each with
its own time (a day plus its index in ms: one run per record in the delay wheel, its worst
case), in publishes of ``FILL_BATCH``. Then, on that queue:

  delayed_first_receive_ms  one plain message is published and received: the receive that has
                            every delayed record ahead of it (they are skipped, not read)
  delayed_queue_rps         the queue phase (publish, receive, ack of ``messages`` 1 KiB
                            messages), as ``queue_rps`` measures it on an empty queue
  delayed_baseline_rps      the same phase on a plain queue, run just before and just after
                            it (the mean of the two): the baseline, measured beside it, on
                            a machine whose load changes
  delayed_vs_queue_ratio    delayed_queue_rps / delayed_baseline_rps (target >= 0.8)
  delayed_queue_cpu_us_per_msg, delayed_baseline_cpu_us_per_msg
                            process CPU per message of those phases (the baseline's the mean
                            of the two plain ones): steadier than rates on a shared machine
  delayed_rss_mb            the process's resident memory with the delayed records waiting
                            (the broker runs in this process)
  delayed_rss_bytes_per_msg what the resident memory grew by while they were published,
                            per delayed record
  delayed_fill_s            how long publishing them took
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from roost.core.publishing import Outgoing
from roost.server.access import TRUSTED

if TYPE_CHECKING:
    from roost.bench.core import CoreBench

DELAY_MS = 24 * 3600 * 1000
FILL_BATCH = 1000
FILLER = b"delayed-payload!"


def rss_bytes() -> int:
    """This process's resident memory (Linux ``/proc``; 0 where there is none)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


async def delayed_phase(
    bench: CoreBench, delayed: int, progress: Callable[[str], None]
) -> dict[str, Any]:
    name = "delayed"
    door = bench.host.door(TRUSTED)
    door.create_queue(name, durability="always")
    progress(f"delayed: publishing {delayed:,} delayed records")
    rss_before = rss_bytes()
    started = time.perf_counter()
    for first in range(0, delayed, FILL_BATCH):
        count = min(FILL_BATCH, delayed - first)
        await door.publish(
            name, [Outgoing(value=FILLER, delay_ms=DELAY_MS + first + i) for i in range(count)]
        )
    fill_s = time.perf_counter() - started
    rss_after = rss_bytes()
    progress("delayed: one receive past them")
    await door.publish(name, [Outgoing(value=bench.value)])
    started = time.perf_counter()
    [message] = await door.receive(name, name, 1, 0.0)
    first_receive_ms = (time.perf_counter() - started) * 1000
    door.ack(name, name, [message.receipt])
    progress("delayed: publish, receive, ack with them ahead, between two plain queues")
    before = await bench.queue_phase("plain-before", fifo=False)
    phase = await bench.queue_phase(name, fifo=False, create=False)
    after = await bench.queue_phase("plain-after", fifo=False)
    baseline_rps = (before.rps + after.rps) / 2
    return {
        "delayed_records": delayed,
        "delayed_first_receive_ms": round(first_receive_ms, 3),
        "delayed_queue_rps": round(phase.rps, 1),
        "delayed_baseline_rps": round(baseline_rps, 1),
        "delayed_vs_queue_ratio": round(phase.rps / baseline_rps, 3),
        "delayed_queue_cpu_us_per_msg": round(phase.cpu_us_per_msg, 2),
        "delayed_baseline_cpu_us_per_msg": round(
            (before.cpu_us_per_msg + after.cpu_us_per_msg) / 2, 2
        ),
        "delayed_rss_mb": round(rss_after / 2**20, 1),
        "delayed_rss_bytes_per_msg": round((rss_after - rss_before) / max(1, delayed), 1),
        "delayed_fill_s": round(fill_s, 2),
    }
