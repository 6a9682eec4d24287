"""The storage watch: free space against the watermark, and repair of failed logs.

The host runs ``check`` about once a second (in its own task): it reads free space (publishes
stop below the watermark and resume above it, server/disk_space.py) and, while logs have
failed, writes a probe file; once that succeeds it repairs them in place (storage/repair.py),
each log that keeps failing less and less often. ``repair_now`` is the operator's repair
(``roost repair``): at once, no probe, no back-off.

After a repair the host makes what remembers offsets or entries of the log agree with it
(``Host._after_repair``): this module never holds the core.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from roost.clock import Clock
from roost.errors import StorageFailure
from roost.server.disk_space import DiskWatermark
from roost.storage import LocalEngine
from roost.storage.journal import JOURNAL_CONFIG
from roost.storage.log import PartitionLog
from roost.storage.repair import FailedLog, RepairReport, RepairResult

#: Repairs kept for the admin API and metrics (the newest).
MAX_REPAIRS_KEPT = 100
#: A log that fails again soon after its automatic repair waits this long before the next,
#: doubling each time up to the maximum: a bad sector under one file must not make the
#: broker rescan that log every second.
REPAIR_BACKOFF_MS = 1_000
MAX_REPAIR_BACKOFF_MS = 60_000

log = logging.getLogger("roost.host")

#: The host's: make what remembers offsets or entries of a repaired log agree with it.
AfterRepair = Callable[[PartitionLog, RepairReport], Awaitable[None]]


class StorageWatch:
    def __init__(
        self,
        engine: LocalEngine,
        clock: Clock,
        after_repair: AfterRepair,
        min_free_bytes: int | None = None,
    ) -> None:
        self.engine = engine
        self._clock = clock
        self._after_repair = after_repair
        #: Publishes stop while free space is below its watermark (server/disk_space.py).
        self.disk = DiskWatermark(engine.path, min_free_bytes)
        #: The newest repairs of failed logs, oldest first; ``repairs_total`` counts them all.
        self.repairs: deque[RepairReport] = deque(maxlen=MAX_REPAIRS_KEPT)
        self.repairs_total = 0
        self._backoff: dict[str, tuple[int, int]] = {}  # log -> (repaired at, wait) ms

    async def check(self) -> None:
        """Read the free space (publishes stop or resume by it) and, when logs have failed and
        a probe write succeeds, repair them."""
        free = await asyncio.to_thread(self.disk.read)
        if self.disk.update(free, self._largest_segment_bytes()):
            if self.disk.low:
                log.warning(
                    "roost: %s bytes free in %s, below the watermark of %s: publishes are "
                    "refused until space is freed (acks and receives go on)",
                    free, self.engine.path, self.disk.min_free_bytes,
                )  # fmt: skip
            else:
                log.warning("roost: %s bytes free in %s: publishes resume", free, self.engine.path)
        if self.engine.metadata.failure is not None:
            try:
                await asyncio.to_thread(self.engine.probe_write)
            except StorageFailure:
                return
            self.engine.metadata.repair()  # one truncate and sync; nothing else runs meanwhile
        now_ms = self._clock.monotonic_ms()
        due = [
            failed
            for failed in self.engine.failed_logs()
            if now_ms >= sum(self._backoff.get(failed.name, (0, 0)))
        ]
        if due:
            try:
                await asyncio.to_thread(self.engine.probe_write)
            except StorageFailure:
                return  # the disk still refuses writes: try again on the next check
            await self.repair(due)
            for failed in due:  # repaired or not: the next try waits (longer, if it was soon)
                self._back_off(failed.name, now_ms)

    def _back_off(self, name: str, now_ms: int) -> None:
        repaired_ms, wait_ms = self._backoff.get(name, (0, 0))
        recent = wait_ms and now_ms - repaired_ms < 2 * MAX_REPAIR_BACKOFF_MS
        wait_ms = min(MAX_REPAIR_BACKOFF_MS, 2 * wait_ms) if recent else REPAIR_BACKOFF_MS
        self._backoff[name] = (now_ms, wait_ms)

    def _largest_segment_bytes(self) -> int:
        return max(JOURNAL_CONFIG.segment_max_bytes, self.engine.largest_segment_bytes())

    async def repair(self, logs: Sequence[PartitionLog] | None = None) -> list[RepairReport]:
        """Reopen every failed log (or those of ``logs``) in place (storage/repair.py), each
        verified from disk and cut back to what was confirmed; returns a report per log
        repaired. A log whose flush job still runs, or whose repair fails again, stays failed
        (the error is logged) and is tried again by the next check. Other logs serve
        throughout."""
        reports = []
        for failed in self.engine.failed_logs() if logs is None else logs:
            job = failed.begin_repair()
            if job is None:
                continue
            try:
                await asyncio.to_thread(job.run)
            except OSError as e:
                failed.end_repair(job, e)
                log.warning(
                    "roost: repair of %s failed, it still refuses writes: %s", failed.name, e
                )
                continue
            if not failed.end_repair(job):
                continue
            report = job.report
            try:
                await self._after_repair(failed, report)
            except StorageFailure as e:  # a snapshot failed: the journal keeps every entry
                log.warning("roost: after repairing %s: %s", failed.name, e)
            log.warning(
                "roost: repaired %s (it failed with: %s): end offset %d, %d unconfirmed "
                "records cut, %d records the disk lost",
                report.log, report.cause, report.end_offset, report.records_cut,
                report.records_lost,
            )  # fmt: skip
            self.repairs.append(report)
            self.repairs_total += 1
            reports.append(report)
        return reports

    async def repair_now(self) -> RepairResult:
        """``repair``, asked by an operator: without waiting for a probe write (the repair
        itself writes; if the disk still refuses, the log stays failed and says why)."""
        repaired = await self.repair()
        still = [FailedLog(f.name, str(f.failure)) for f in self.engine.failed_logs()]
        metadata = self.engine.metadata
        if not metadata.repair() and metadata.failure is not None:
            still.append(FailedLog("metadata journal", str(metadata.failure)))
        return RepairResult(repaired, still)
