"""One compaction pass over one partition (storage/compaction.py says when, and why so).

    job = CompactionJob(log, segments, point, now_ms, settings, clock)   # on the loop
    job.run()            # in a thread: read newest first, decide, write the temporary files
    compactor.swap(job)  # on the loop: the WAL forget marker, a rename per segment
    job.settle()         # in a thread: directory fsync, old files let go, hints
    compactor.finish(job)

``run`` reads each compactable segment once, newest first: a record is kept unless a newer
record of its key was seen; a kept tombstone goes once its retention has passed. Only a
segment that drops something is rewritten (compaction_output.py); each rewritten file is
fsynced (in a second thread while the next segment is read) before ``run`` returns.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Generator
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import compress
from typing import NamedTuple

from roost.clock import Clock
from roost.storage import batch as batch_format
from roost.storage.batch import HEADER_SIZE, BatchHeader, CorruptBatch
from roost.storage.compaction_output import (
    Planned,
    Row,
    SegmentRewrite,
    is_empty,
    key_of,
    read_rows,
)
from roost.storage.log import PartitionLog
from roost.storage.segment import SCAN_CHUNK_BYTES, Segment

#: The clean point's file in a partition directory (JSON; a hint).
CLEAN_POINT_NAME = "CLEANED"
TEMP_SUFFIX = ".compacted.tmp"
#: Kafka's ``min.cleanable.dirty.ratio`` default.
DEFAULT_MIN_DIRTY_RATIO = 0.5
DEFAULT_MAX_KEYS = 1_000_000


class CompactionStopped(Exception):
    """The broker is closing: the pass gave up (its temporary file is removed)."""


class CleanPoint(NamedTuple):
    #: Every segment ending at or below this offset was compacted.
    cleaned_offset: int = 0
    #: When the oldest tombstone kept by the last pass may go (None: none kept).
    tombstones_due_ms: int | None = None


class CompactionSettings(NamedTuple):
    min_dirty_ratio: float = DEFAULT_MIN_DIRTY_RATIO
    #: Reads and writes of a pass per second; None: as fast as the disk goes.
    bytes_per_second: int | None = None
    max_keys: int = DEFAULT_MAX_KEYS
    #: Fsync each rewritten segment in a second thread while the next one is read (all
    #: before any swap). False: in turn, as tests that count file system calls need.
    sync_aside: bool = True


class Swap(NamedTuple):
    old: Segment
    temp_path: str
    new: Segment
    #: A descriptor of the old file, held from the rewrite to ``settle``: the last close of
    #: a replaced file frees its blocks (tens of ms for a large one), in the pass's thread
    #: rather than on the loop where the swap closes the segment.
    old_fd: int


class CompactionJob:
    """One pass over one partition: ``run`` (thread), ``Compactor.swap`` (loop), ``settle``
    (thread), ``Compactor.finish`` (loop)."""

    def __init__(
        self,
        log: PartitionLog,
        segments: list[Segment],
        point: CleanPoint,
        now_ms: int,
        settings: CompactionSettings,
        clock: Clock,
    ) -> None:
        self.log = log
        self.fs = log.fs
        self.segments = segments
        self.point = point
        self.now_ms = now_ms
        self.settings = settings
        self._clock = clock
        self.tombstone_retention_ms = log.config.tombstone_retention_ms
        #: Base offsets of the segments the shared WAL still names (read on the loop, here):
        #: the only ones not already synced in their own file.
        wal = log.wal
        self.wal_named = {
            s.base_offset for s in segments if wal is not None and wal.mentions(s.path)
        }
        self.index_interval_bytes = log.config.index_interval_bytes
        #: Set from the loop to make ``run`` give up at its next chunk.
        self.stopped = False
        self.pause: Callable[[float], None] = _no_pause
        # What ``run`` found.
        self.cleanable_end = point.cleaned_offset
        self.swaps: list[Swap] = []
        self.tombstones_due_ms: int | None = None
        self.bytes_read = 0
        self.bytes_written = 0
        self.records_dropped = 0
        self.damage: str | None = None
        self.started_ms = clock.monotonic_ms()
        self._io_bytes = 0
        self._syncer: ThreadPoolExecutor | None = None
        self._syncs: list[Future[None]] = []

    # -- in a thread -------------------------------------------------------------------

    def run(self) -> None:
        """Compact the segments newest first, in one read each: a record is kept unless a
        newer one of its key was seen. Blocking; a bad batch ends the pass with ``damage``
        set and nothing swapped."""
        seen: dict[bytes, None] = {}
        syncer = (
            ThreadPoolExecutor(1, "roost-compaction-sync") if self.settings.sync_aside else None
        )
        self._syncer = syncer
        try:
            for segment in reversed(self.segments):
                swap = self._compact(segment, seen)
                if swap is not None:
                    self.swaps.append(swap)
                if len(seen) >= self.settings.max_keys:
                    break  # the older segments wait: memory stays bounded
            self._wait_for_syncs()
            self.cleanable_end = self.segments[-1].next_offset
        except CorruptBatch as e:
            self._wait_for_syncs(failed=True)
            self.damage = str(e)
            self.discard()
        except BaseException:
            self._wait_for_syncs(failed=True)
            self.discard()
            raise
        finally:
            if syncer is not None:
                syncer.shutdown()

    def _sync(self, out: SegmentRewrite, old_fd: int, old_named_by_wal: bool) -> None:
        out.sync()
        if old_named_by_wal:
            # Its bytes may be durable only in the shared WAL, whose records for it the swap
            # voids: on disk in its own file first, should the rename not survive a crash.
            self.fs.fdatasync(old_fd)

    def _wait_for_syncs(self, failed: bool = False) -> None:
        """Every sync handed to the second thread has ended (raising the first error, unless
        the pass ``failed`` already: then only waiting, so nothing syncs a file removed)."""
        syncs, self._syncs = self._syncs, []
        for sync in syncs:
            if failed:
                with contextlib.suppress(BaseException):
                    sync.result()
            else:
                sync.result()

    def _compact(self, segment: Segment, seen: dict[bytes, None]) -> Swap | None:
        """Decide for every record of ``segment`` (``seen``: the keys of newer records, to
        which its own are added), then write what it keeps, if it drops anything."""
        with contextlib.closing(self._batches(segment)) as batches:
            plan = [(position, header, rows) for position, header, _, rows in batches]
        decisions = [self._decide(planned, seen) for planned in reversed(plan)][::-1]
        if all(keep is None or all(keep) for keep in decisions):
            return None  # nothing to drop: the segment stays as it is, unread again
        temp_path = segment.path[: -len(".log")] + TEMP_SUFFIX
        out = SegmentRewrite(self.fs, temp_path, segment, self.index_interval_bytes)
        dropped = 0
        fd = self.fs.open_ro(segment.path)
        try:
            for planned, keep in zip(plan, decisions, strict=True):
                dropped += self._write_batch(out, fd, planned, keep)
            self._written(out.finish())
            if out.size == segment.size:
                # The same size, which a scrub reading the file could not tell from the
                # old one (rare): this segment waits for the next pass.
                out.remove()
                return None
            old_fd = self.fs.open_ro(segment.path)
            named = segment.base_offset in self.wal_named
            if self._syncer is None:
                self._sync(out, old_fd, named)
            else:  # the disk flushes while the next segment is read: ended before any swap
                self._syncs.append(self._syncer.submit(self._sync, out, old_fd, named))
        except BaseException:
            out.remove()
            raise
        finally:
            self.fs.close(fd)
        self.records_dropped += dropped
        return Swap(segment, temp_path, out.segment, old_fd)

    def _decide(self, planned: Planned, seen: dict[bytes, None]) -> list[bool] | None:
        """Per record of a batch, newest first: kept unless a newer record of its key was
        seen (its key then joins ``seen``); a kept tombstone (an empty value) goes once
        ``tombstone_retention_ms`` have passed since its batch was appended. None for a gap
        batch. Two common batches are decided whole, in C: every key new and distinct (the
        newest data), every key seen (data since replaced)."""
        _, header, rows = planned
        if header.is_gap:
            return None
        keys: list[bytes | None] = list(map(key_of, rows))
        count = len(keys)
        if all(map(seen.__contains__, keys)):
            return [False] * count
        fresh = dict.fromkeys(keys)
        if len(fresh) == count and None not in fresh and seen.keys().isdisjoint(fresh):
            seen.update(fresh)  # type: ignore[arg-type]  # no None among them
            keep = [True] * count
        else:
            keep = [True] * count
            for i in range(count - 1, -1, -1):
                key = keys[i]
                if key is not None:
                    if key in seen:
                        keep[i] = False
                    else:
                        seen[key] = None
        tombstones = [
            i for i in compress(range(count), keep)
            if is_empty(rows[i].value)
            and keys[i] is not None
        ]  # fmt: skip
        if tombstones:
            due_ms = header.append_time_ms + self.tombstone_retention_ms
            if due_ms <= self.now_ms:
                for i in tombstones:
                    keep[i] = False
            elif self.tombstones_due_ms is None or due_ms < self.tombstones_due_ms:
                self.tombstones_due_ms = due_ms
        return keep

    def _write_batch(
        self, out: SegmentRewrite, fd: int, planned: Planned, keep: list[bool] | None
    ) -> int:
        """Write what ``out`` keeps of one batch (read again at its position if it keeps
        any); returns how many records it dropped."""
        position, header, _ = planned
        if keep is None:
            out.drop(header.base_offset, header.record_count, header.append_time_ms)
            return 0
        kept = sum(keep)
        if not kept:
            out.drop(header.base_offset, header.record_count, header.append_time_ms)
            return len(keep)
        data = self._read_batch(fd, position, header)
        if kept == len(keep):  # the batch as it is: no decode, no encode
            self._written(out.whole(data, header))
            return 0
        records = batch_format.decode_records(data, 0, header)
        for record, keeps in zip(records, keep, strict=True):
            if keeps:
                out.keep(record, header.append_time_ms)
            else:
                out.drop(record.offset, 1, header.append_time_ms)
        self._written(out.flush_if_full())
        return len(keep) - kept

    def _read_batch(self, fd: int, position: int, header: BatchHeader) -> memoryview:
        """A batch the map read before, read again and verified again."""
        self._check_stopped()
        data = self.fs.pread(fd, header.size, position)
        self._paced(len(data))
        self.bytes_read += len(data)
        if batch_format.parse_header(data) != header:
            raise CorruptBatch(f"the batch at byte {position} changed since it was mapped")
        batch_format.verify(data, 0, header)
        return memoryview(data)

    def _batches(
        self, segment: Segment
    ) -> Generator[tuple[int, BatchHeader, memoryview, list[Row]], None, None]:
        """The batches of ``segment``'s file, CRC-verified, with their records decoded light
        (values and headers left as raw MessagePack), read in chunks."""
        fd = self.fs.open_ro(segment.path)
        try:
            position, size = 0, segment.size
            while position < size:
                self._check_stopped()
                chunk = self.fs.pread(fd, min(SCAN_CHUNK_BYTES, size - position), position)
                self._paced(len(chunk))
                self.bytes_read += len(chunk)
                offset = 0
                while len(chunk) - offset >= HEADER_SIZE:
                    header = batch_format.parse_header(chunk, offset)
                    if offset + header.size > len(chunk):
                        if offset == 0:  # one batch larger than a chunk: read it whole
                            chunk = self.fs.pread(fd, header.size, position)
                            self.bytes_read += len(chunk)
                            continue
                        break
                    batch_format.verify(chunk, offset, header)
                    data = memoryview(chunk)[offset : offset + header.size]
                    yield position + offset, header, data, read_rows(data, header)
                    offset += header.size
                if offset == 0:
                    raise CorruptBatch(f"segment {segment.base_offset}: torn at byte {position}")
                position += offset
        finally:
            self.fs.close(fd)

    def _written(self, count: int) -> None:
        self.bytes_written += count
        self._paced(count)

    def _paced(self, count: int) -> None:
        """Keep the pass's reads and writes to ``bytes_per_second`` (a pause when ahead)."""
        rate = self.settings.bytes_per_second
        if not rate:
            return
        self._io_bytes += count
        elapsed_s = (self._clock.monotonic_ms() - self.started_ms) / 1000
        ahead_s = self._io_bytes / rate - elapsed_s
        if ahead_s > 0:
            self.pause(ahead_s)

    def _check_stopped(self) -> None:
        if self.stopped:
            raise CompactionStopped(f"compaction of {self.log.name} stopped")

    def discard(self) -> None:
        """Remove the temporary files of segments not swapped in."""
        for swap in self.swaps:
            swap.new.close()
            with contextlib.suppress(OSError):
                self.fs.close(swap.old_fd)
                self.fs.remove(swap.temp_path)
        self.swaps = []

    def settle(self) -> None:
        """After the swap: make the renames durable, then write the hints (index files and
        the clean point), which may only describe what is on disk. Blocking."""
        for swap in self.swaps:
            self.fs.close(swap.old_fd)
        if self.swaps:
            self.fs.fsync_dir(self.log.directory)
            for swap in self.swaps:
                with contextlib.suppress(OSError):  # a hint: a missing one costs a scan
                    swap.new.write_index()
        point = CleanPoint(self.cleanable_end, self.tombstones_due_ms)
        path = os.path.join(self.log.directory, CLEAN_POINT_NAME)
        with contextlib.suppress(OSError):
            # A hint, so no fsync: a crash may leave the old one, or an empty or torn one,
            # which reads as "nothing compacted" (a pass more, never a record less).
            self.fs.write_file(f"{path}.tmp", json.dumps(point._asdict()).encode())
            self.fs.rename(f"{path}.tmp", path)


def _no_pause(seconds: float) -> None:
    return None
