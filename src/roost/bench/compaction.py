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
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from roost.clock import SystemClock
from roost.storage import LocalEngine, Record, TopicConfig
from roost.storage.compaction import CompactionSettings, Compactor, compacted_logs
from roost.storage.log import PartitionLog

VALUE_BYTES = 1024
BATCH_RECORDS = 100
MB = 1_000_000
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
        "cpu_ratio": round(
            statistics.median(r[1] / p[1] for r, p in zip(reads, passes, strict=True) if p[1]), 3
        ),
    }
