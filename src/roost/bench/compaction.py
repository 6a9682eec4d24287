"""``roost bench compaction``: a compaction pass against a sequential read of the same log.

Each round writes a compacted topic's partition (1 KiB values over ``keys`` keys, 100 records
per append, 8 MiB segments, all sealed), then, moments apart in the same process, reads every
record of it from the start (``PartitionLog.read``: CRC-checked and decoded, as a consumer
replaying the topic reads) and compacts it (one pass: every key mapped, every segment
rewritten). Rounds alternate which goes first; medians are reported.

Fields:
  log_mb             megabytes of sealed segments each round compacts
  read_mbps          the sequential read, MB of log per second
  compaction_mbps    the pass, MB of log (its input) per second
  compaction_ratio   per round, read time / compaction time (= compaction_mbps / read_mbps
                     of that round); the median over rounds (the goal: >= 0.5)
  read_cpu_s, compaction_cpu_s  process CPU seconds of each (medians; the kernel's share
                     included, so the blocks freed by the swap count)
  cpu_ratio          the same ratio in process CPU time, which a shared machine's other
                     work disturbs less than the wall clock
  reclaimed_ratio    bytes freed / bytes before
  host_pass_s        once per run, a broker (``Host``) on the same log: its background pass,
                     paced at the default ``compaction_bytes_per_s``, seconds
  loop_lag_p99_ms, loop_lag_max_ms   how late the event loop woke from 1 ms sleeps during
                     that pass (what a publish or read waiting for the loop would wait)
  idle_loop_lag_p99_ms, idle_loop_lag_max_ms   the same for as long once the pass is over
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from roost.clock import SystemClock
from roost.server.host import Host
from roost.storage import LocalEngine, Record, TopicConfig
from roost.storage.compaction import CompactionSettings, Compactor, compacted_logs
from roost.storage.log import PartitionLog

VALUE_BYTES = 1024
BATCH_RECORDS = 100
MB = 1_000_000
#: The broker's pass (paced at 32 MiB/s by default) must end within this.
PASS_LIMIT_S = 120.0
#: 8 MiB segments (the default is 64 MiB: fewer, larger files, less per-file cost).
#: Durability ``always``, flushed before anything is measured: the segments are on disk, as
#: a broker's sealed segments are by the time compaction reaches them.
CONFIG = TopicConfig(cleanup="compact", segment_max_bytes=8 * 1024 * 1024)


def _write(engine: LocalEngine, records: int, keys: int) -> PartitionLog:
    log = engine.create_topic("kv", CONFIG).log(0)
    value = os.urandom(VALUE_BYTES)
    for start in range(0, records, BATCH_RECORDS):
        log.append(
            [
                Record(key=b"key-%06d" % (n % keys), value=value)
                for n in range(start, min(start + BATCH_RECORDS, records))
            ]
        )
    log.roll()
    log.flush()
    return log


def _read_all(log: PartitionLog) -> int:
    count, offset = 0, log.start_offset
    while offset < log.end_offset:
        records = log.read(offset)
        if not records:
            break
        count += len(records)
        offset = records[-1].offset + 1
    return count


def _timed(body: Callable[[PartitionLog], object], log: PartitionLog) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    body(log)
    return time.perf_counter() - wall, time.process_time() - cpu


def _lags(lags_ms: list[float]) -> tuple[float, float]:
    ordered = sorted(lags_ms)
    return ordered[int(0.99 * (len(ordered) - 1))], ordered[-1]


async def _probe(until: Callable[[], bool], limit_s: float) -> list[float]:
    """How late each 1 ms sleep of the event loop wakes (ms), until ``until()`` or
    ``limit_s``: what a publish or a read waiting for the loop would wait."""
    lags: list[float] = []
    deadline = time.perf_counter() + limit_s
    while not until() and time.perf_counter() < deadline:  # bounded
        start = time.perf_counter()
        await asyncio.sleep(0.001)
        lags.append((time.perf_counter() - start - 0.001) * 1000)
    return lags


def measure_loop_lag(directory: str | None, records: int, keys: int) -> dict[str, float]:
    """A broker (``Host``) on a prepared compacted log: the event loop's lag while its
    background task runs a pass (paced as by default), then while idle for as long."""
    root = tempfile.mkdtemp(prefix="roost-bench-compaction-", dir=directory)
    path = os.path.join(root, "data")
    try:
        engine = LocalEngine.open(path, SystemClock())
        _write(engine, records, keys)
        engine.close()

        async def main() -> dict[str, float]:
            host = await Host.start(path)
            try:
                started = time.perf_counter()
                during = await _probe(lambda: host.compactor.runs > 0, PASS_LIMIT_S)
                if host.compactor.runs == 0:
                    raise RuntimeError(f"no compaction pass ended within {PASS_LIMIT_S} s")
                pass_s = time.perf_counter() - started
                idle = await _probe(lambda: False, pass_s)
            finally:
                await host.aclose()
            p99, worst = _lags(during)
            idle_p99, idle_worst = _lags(idle)
            return {
                "host_pass_s": round(pass_s, 2),
                "loop_lag_p99_ms": round(p99, 2),
                "loop_lag_max_ms": round(worst, 2),
                "idle_loop_lag_p99_ms": round(idle_p99, 2),
                "idle_loop_lag_max_ms": round(idle_worst, 2),
            }

        return asyncio.run(main())
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_compaction_bench(
    directory: str | None,
    records: int,
    keys: int,
    rounds: int,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    reads: list[tuple[float, float]] = []
    passes: list[tuple[float, float]] = []
    log_bytes = reclaimed = 0
    for round_ in range(rounds):
        root = tempfile.mkdtemp(prefix="roost-bench-compaction-", dir=directory)
        clock = SystemClock()
        engine = LocalEngine.open(os.path.join(root, "data"), clock)
        try:
            log = _write(engine, records, keys)
            log_bytes = sum(s.size for s in log.compactable_segments())
            compactor = Compactor(
                partial(compacted_logs, engine), clock, CompactionSettings(min_dirty_ratio=0.0)
            )
            order = ["read", "compaction"] if round_ % 2 == 0 else ["compaction", "read"]
            for name in order:
                progress(f"round {round_ + 1}/{rounds}: {name}")
                if name == "read":
                    reads.append(_timed(_read_all, log))
                else:
                    passes.append(_timed(compactor.compact, log))
            reclaimed = compactor.bytes_reclaimed
        finally:
            engine.close()
            shutil.rmtree(root, ignore_errors=True)
    progress("a pass run by a broker, paced: the event loop's lag")
    lag = measure_loop_lag(directory, records, keys)
    read_s = statistics.median(wall for wall, _ in reads)
    pass_s = statistics.median(wall for wall, _ in passes)
    read_cpu_s = statistics.median(cpu for _, cpu in reads)
    pass_cpu_s = statistics.median(cpu for _, cpu in passes)
    read_mbps = log_bytes / MB / read_s
    compaction_mbps = log_bytes / MB / pass_s
    return {
        "records": records,
        "keys": keys,
        "log_mb": round(log_bytes / MB, 2),
        "read_mbps": round(read_mbps, 1),
        "compaction_mbps": round(compaction_mbps, 1),
        # Each round's pair, measured moments apart, then the median: what a burst of other
        # work on a shared machine does to one pair does not move the others.
        "compaction_ratio": round(
            statistics.median(r[0] / p[0] for r, p in zip(reads, passes, strict=True)), 3
        ),
        "reclaimed_ratio": round(reclaimed / log_bytes, 3) if log_bytes else 0.0,
        "read_cpu_s": round(read_cpu_s, 3),
        "compaction_cpu_s": round(pass_cpu_s, 3),
        **lag,
        "cpu_ratio": round(
            statistics.median(r[1] / p[1] for r, p in zip(reads, passes, strict=True) if p[1]), 3
        ),
    }
