"""``roost bench storage``: the engine against the machine's own raw baselines, in one run.

Every Roost figure is paired with a plain-file baseline doing the same I/O (same bytes, same
batch sizes) measured moments apart in the same process, and the pairs alternate over a few
rounds; the reported figure is the median. Ratios, not absolutes, are what compares across
machines and across noisy minutes on a shared one.

Fields (1 KiB values):
  raw_write_mbps      plain ``os.write`` of the encoded batches, no fsync
  never_mbps          ``append`` of the same records, durability ``never``
  never_ratio         never_mbps / raw_write_mbps
  raw_fsyncs_per_s    plain 1 KiB write + fdatasync, back to back
  always_1_rps        one appender, one record per append, each awaited durable
  always_64_rps       64 concurrent appenders, one record per append, each awaited durable
  group_commit_ratio  always_64_rps / (64 x raw_fsyncs_per_s)
  raw_read_mbps       plain ``pread`` of the log file in chunks of one batch
  read_batches_mbps   ``read_batches`` of one batch at a time (CRC-verified, not decoded)
  read_batches_ratio  read_batches_mbps / raw_read_mbps
  read_records_rps    ``read`` decoding every record, 100 at a time
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from roost.clock import SystemClock
from roost.server.flusher import Flusher
from roost.storage import LocalEngine, Record, TopicConfig
from roost.storage import batch as batch_format

VALUE_BYTES = 1024
BATCH_RECORDS = 100
MB = 1_000_000


class StorageBench:
    def __init__(self, directory: str, batches: int = 600, rounds: int = 3) -> None:
        self.directory = directory
        self.batches = batches
        self.rounds = rounds
        self.value = os.urandom(VALUE_BYTES)
        self.batch = [Record(value=self.value) for _ in range(BATCH_RECORDS)]
        self._run = 0

    def run(self, progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
        samples: dict[str, list[float]] = {}

        def sample(name: str, value: float) -> None:
            samples.setdefault(name, []).append(value)

        for round_number in range(1, self.rounds + 1):
            progress(f"round {round_number}/{self.rounds}: writes")
            sample("raw_write_mbps", self.raw_write_mbps())
            sample("never_mbps", self.never_mbps())
            progress(f"round {round_number}/{self.rounds}: fsyncs")
            sample("raw_fsyncs_per_s", self.raw_fsyncs_per_s())
            sample("always_1_rps", self.always_rps(appenders=1, appends_each=1500))
            sample("always_64_rps", self.always_rps(appenders=64, appends_each=400))
            progress(f"round {round_number}/{self.rounds}: reads")
            raw_read, read_batches, read_records = self.reads()
            sample("raw_read_mbps", raw_read)
            sample("read_batches_mbps", read_batches)
            sample("read_records_rps", read_records)
        result: dict[str, Any] = {k: round(statistics.median(v), 1) for k, v in samples.items()}
        # A ratio is taken within each round, whose two figures were measured moments apart,
        # then the median across rounds: noise that hits both sides of a pair cancels.
        ratios = {
            "never_ratio": ("never_mbps", "raw_write_mbps", 1),
            "group_commit_ratio": ("always_64_rps", "raw_fsyncs_per_s", 64),
            "read_batches_ratio": ("read_batches_mbps", "raw_read_mbps", 1),
            "always_64_vs_1": ("always_64_rps", "always_1_rps", 1),
        }
        for name, (figure, baseline, scale) in ratios.items():
            result[name] = round(
                statistics.median(
                    f / (scale * b) for f, b in zip(samples[figure], samples[baseline], strict=True)
                ),
                3,
            )
        result["samples"] = samples
        result["settings"] = {
            "value_bytes": VALUE_BYTES,
            "batch_records": BATCH_RECORDS,
            "batches": self.batches,
            "rounds": self.rounds,
            "cpus": os.cpu_count(),
        }
        return result

    # -- writes ---------------------------------------------------------------------------

    def raw_write_mbps(self) -> float:
        encoded = [
            batch_format.encode(i * BATCH_RECORDS, self.batch, 0)[0] for i in range(self.batches)
        ]
        path = os.path.join(self._fresh_dir(), "raw.log")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        start = time.perf_counter()
        for data in encoded:
            os.write(fd, data)
        elapsed = time.perf_counter() - start
        os.close(fd)
        return sum(map(len, encoded)) / elapsed / MB

    def never_mbps(self) -> float:
        engine = LocalEngine.open(self._fresh_dir())
        topic = engine.create_topic("bench", TopicConfig(durability="never"))
        log = topic.log(0)
        start = time.perf_counter()
        for _ in range(self.batches):
            log.append(self.batch)
        elapsed = time.perf_counter() - start
        written = log.size_bytes
        engine.close()
        return written / elapsed / MB

    def raw_fsyncs_per_s(self, count: int = 1500) -> float:
        path = os.path.join(self._fresh_dir(), "fsync.log")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        data = os.urandom(VALUE_BYTES + 64)
        start = time.perf_counter()
        for i in range(count):
            os.pwrite(fd, data, i * len(data))
            os.fdatasync(fd)
        elapsed = time.perf_counter() - start
        os.close(fd)
        return count / elapsed

    def always_rps(self, appenders: int, appends_each: int) -> float:
        engine = LocalEngine.open(self._fresh_dir())
        log = engine.create_topic("bench").log(0)
        record = [Record(value=self.value)]

        async def appender(flusher: Flusher) -> None:
            for _ in range(appends_each):
                result = log.append(record)
                await flusher.wait_durable(log, result.next_offset)

        async def main() -> float:
            flusher = Flusher(SystemClock())
            engine.on_dirty = flusher.notify
            start = time.perf_counter()
            await asyncio.gather(*(appender(flusher) for _ in range(appenders)))
            elapsed = time.perf_counter() - start
            await flusher.aclose()
            return elapsed

        elapsed = _event_loop_run(main())
        engine.close()
        return appenders * appends_each / elapsed

    # -- reads ----------------------------------------------------------------------------

    def reads(self) -> tuple[float, float, float]:
        """Raw pread, read_batches and read of one log, in the page cache, in that order."""
        directory = self._fresh_dir()
        engine = LocalEngine.open(directory)
        topic = engine.create_topic("bench", TopicConfig(durability="never"))
        log = topic.log(0)
        for _ in range(self.batches):
            log.append(self.batch)
        batch_bytes = log.size_bytes // self.batches
        partition_dir = os.path.join(directory, "topics", "bench", "0")
        segment_paths = [
            os.path.join(partition_dir, name)
            for name in sorted(os.listdir(partition_dir))
            if name.endswith(".log")
        ]

        size = 0
        start = time.perf_counter()
        for path in segment_paths:
            fd = os.open(path, os.O_RDONLY)
            position = 0
            while chunk := os.pread(fd, batch_bytes, position):
                position += len(chunk)
            os.close(fd)
            size += position
        raw_elapsed = time.perf_counter() - start

        start = time.perf_counter()
        offset = total = 0
        while offset < log.end_offset:
            raw = log.read_batches(offset, max_bytes=batch_bytes)
            total += len(raw.data)
            offset = raw.next_offset
        batches_elapsed = time.perf_counter() - start

        start = time.perf_counter()
        offset = count = 0
        while offset < log.end_offset:
            records = log.read(offset, max_records=BATCH_RECORDS)
            count += len(records)
            offset = records[-1].offset + 1
        records_elapsed = time.perf_counter() - start
        engine.close()
        return size / raw_elapsed / MB, total / batches_elapsed / MB, count / records_elapsed

    def _fresh_dir(self) -> str:
        self._run += 1
        path = os.path.join(self.directory, f"run-{self._run}")
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
        return path


def _event_loop_run(main: Any) -> float:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        return asyncio.run(main)  # type: ignore[no-any-return]
    return uvloop.run(main)  # type: ignore[no-any-return]


def run_storage_bench(
    directory: str | None, batches: int, rounds: int, progress: Callable[[str], None]
) -> dict[str, Any]:
    if directory is not None:
        os.makedirs(directory, exist_ok=True)
    parent = tempfile.mkdtemp(prefix="roost-bench-", dir=directory)
    try:
        return StorageBench(parent, batches, rounds).run(progress)
    finally:
        shutil.rmtree(parent, ignore_errors=True)
