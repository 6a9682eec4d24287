"""Repairing a failed log in place: reopen its files, verify, cut back to what was confirmed.

A log fails when a write or an fsync fails (log.py). After an EIO the kernel may have dropped
the dirty pages it could not write, so the in-memory view of the log is no longer what is on
disk; after an ENOSPC the disk holds a torn batch, or batches whose publishes got an error.
Either way the log stops taking writes, and a repair brings it back without a restart:

1. ``PartitionLog.begin_repair`` (on the loop) captures ``keep``, the end of what producers were
   (or may have been) told is stored (``confirmed_offset``), and ``verified_below``, the end of
   what was known durable.
2. ``LogRepair.run`` (in a thread) opens the segment files afresh, as recovery does at start,
   but scans every segment holding records at or past ``verified_below`` (CRC by CRC) instead
   of trusting its index; then cuts the log back to ``keep``: records past it got an error, and
   a retry must not find them stored twice. It fsyncs what it kept, so that all of it is
   durable from the moment the log takes writes again.
3. ``PartitionLog.end_repair`` (on the loop) swaps the new segments in and clears the failure.

What was found goes in a ``RepairReport``: records cut (never confirmed), records lost (below
``keep`` but missing or damaged on disk: the disk lost them), and the recovery details.
"""

from __future__ import annotations

import msgspec

from roost.errors import TooManyOpenFiles
from roost.storage.fd_pool import FdPool
from roost.storage.fs import LocalFS
from roost.storage.recovery import LogRecovery, open_segments
from roost.storage.segment import Segment


class RepairReport(msgspec.Struct, kw_only=True):
    log: str
    #: What the log failed with.
    cause: str
    #: Records appended past the last confirmed offset (their publishes got an error), cut,
    #: whether they had reached the disk or not, so that a retry does not duplicate them.
    records_cut: int = 0
    #: Records below the last confirmed offset that the disk no longer held intact.
    records_lost: int = 0
    end_offset: int = 0
    recovery: LogRecovery | None = None


class FailedLog(msgspec.Struct, frozen=True):
    """A log that refuses writes, and why."""

    log: str
    error: str


class RepairResult(msgspec.Struct, frozen=True):
    """What a repair did: the logs it reopened, and those that still refuse writes."""

    repaired: list[RepairReport]
    still_failed: list[FailedLog]


class LogRepair:
    """The blocking half of a repair; ``PartitionLog.end_repair`` adopts its segments."""

    def __init__(
        self,
        fs: LocalFS,
        directory: str,
        index_interval_bytes: int,
        report: RepairReport,
        keep: int,
        verified_below: int,
        appended_end: int,
        sync_all: bool = False,
    ) -> None:
        self.fs = fs
        #: Sync every segment kept, not only those past ``verified_below``: with a shared WAL
        #: (wal.py) bytes below it may be durable only there, and the repair voids its records.
        self.sync_all = sync_all
        self.directory = directory
        self.index_interval_bytes = index_interval_bytes
        self.report = report
        self.keep = keep
        self.verified_below = verified_below
        self.appended_end = appended_end
        self.segments: list[Segment] = []
        # Opened in the repair's thread: not in the engine's pool, which belongs to the loop
        # (fd_pool.py). ``PartitionLog.end_repair`` moves them there.
        self.pool = FdPool(fs)
        #: The files were cut: the log's old view of them is stale, so its segments must be
        #: these even if a later step (an fsync) fails and the log stays failed.
        self.cut_done = False

    def run(self) -> None:
        """Open, verify, cut back and fsync. Raises ``OSError``: with no segment left open, or
        (``cut_done``) with the cut segments for the log to adopt, still failed."""
        recovery = LogRecovery(log=self.report.log, clean_shutdown=False)
        self.report.recovery = recovery
        try:
            segments = open_segments(
                self.fs,
                self.directory,
                self.index_interval_bytes,
                recovery,
                verify_from=self.verified_below,
                pool=self.pool,
            )
            if not segments:
                segments = [Segment.create(self.fs, self.directory, self.keep, self.pool)]
            self.segments = segments
            cut = self._cut_back(recovery)
            self.cut_done = True
            for segment in segments:
                if self.sync_all or segment.next_offset > self.verified_below or segment is cut:
                    self.fs.fdatasync(segment.fd)  # kept unsynced records, or a new size
            self.fs.fsync_dir(self.directory)
        except BaseException as e:
            if not self.cut_done:
                self.discard()
            if isinstance(e, TooManyOpenFiles) and isinstance(e.__cause__, OSError):
                raise e.__cause__ from None  # out of descriptors: try again later, as for EIO
            raise
        end = self.segments[-1].next_offset
        self.report.end_offset = end
        self.report.records_cut = max(0, self.appended_end - max(self.keep, end))
        self.report.records_lost = max(0, self.keep - end)

    def _cut_back(self, recovery: LogRecovery) -> Segment | None:
        """Cut everything at or past ``keep``; the segment whose file was truncated, if any."""
        segments = self.segments
        keep = max(self.keep, segments[0].base_offset)
        end = segments[-1].next_offset
        if end <= keep:
            return None
        while len(segments) > 1 and segments[-1].base_offset >= keep:
            segments.pop().delete()
            recovery.segments_dropped += 1
        last = segments[-1]
        if last.next_offset <= keep:
            return None
        position, header = last.find_batch(keep)
        if header is not None and header.base_offset < keep:
            # ``keep`` inside a batch cannot happen (confirmed offsets end batches); were it to,
            # keeping the whole batch duplicates a few records where cutting it would lose some.
            position += header.size
        recovery.bytes_truncated += last.size - position
        recovery.problems.append(
            f"segment {last.base_offset}: cut {last.size - position} bytes at byte {position} "
            "(records past the last confirmed offset, whose publishes got an error)"
        )
        last.truncate(position)
        last.remove_index()
        last.scan(self.index_interval_bytes)
        return last

    def discard(self) -> None:
        """Close what ``run`` opened (it failed, or the log no longer wants it)."""
        for segment in self.segments:
            segment.close()
        self.segments = []
