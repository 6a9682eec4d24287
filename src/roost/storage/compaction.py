"""Log compaction (Kafka's ``cleanup.policy=compact``): keep the latest record per key.

How it works, per partition of a compacted topic:

- Only **sealed** segments are compacted, never the active one, and only those a crash can no
  longer change: durable, no flush job holding them. They form a prefix of the log. The
  shared WAL's replay writes at fixed positions, so before a swap the old file is fdatasynced
  and the WAL's records for it voided (a forget marker): old bytes never land in a new file.
- The **clean point** (``CLEANED`` in the partition directory, a hint) says up to which offset
  the log was compacted. The segments past it are *dirty*; a pass runs when dirty bytes are at
  least ``min_dirty_ratio`` of the compactable bytes, or when a kept tombstone's retention has
  run out. A lost or stale hint costs work, never records.
- A pass (``CompactionJob.run``, in a thread) walks the compactable segments **newest
  first**, reading each once: a record is kept unless a newer record of its key was seen (the
  keys seen so far are one set, at most ``max_keys``: past that the older segments wait, and
  memory stays bounded). Only a segment that drops something is rewritten; the rewrite reads
  again only the batches it keeps (a batch kept whole is copied byte for byte, a split one
  decoded). A **tombstone** (a keyed record with an empty value) is kept until
  ``tombstone_retention_ms`` after its batch was appended, so that a consumer that catches
  up in time sees the delete; then it goes too. Records without a key (which a compacted
  topic refuses, but a log may hold from before) are always kept. Unlike Kafka's cleaner,
  which maps the dirty section's keys first and then rewrites, newest first needs one read
  per segment and one set operation per record.
- A rewritten segment keeps its base offset and its offsets: the records kept are written as
  batches of dense runs, and each run of dropped offsets becomes one **gap batch** (batch.py),
  so the file is still a dense run of batches that every reader, index, scan and check knows.
  It is written as ``<base>.compacted.tmp``, fsynced, and swapped in when it dropped records
  (and its size differs: how the scrub tells a replaced file from the one it was reading).
- The **swap** (``Compactor.swap``, on the loop, a rename and no fsync) replaces the file and
  the in-memory segment together, after checking the segment is still the one read. Then
  ``CompactionJob.settle`` (a thread) fsyncs the directory, closes the old files' last
  descriptor (freeing their blocks, off the loop), writes the new index files (a hint) and the
  clean point. A crash before the rename leaves a ``*.tmp`` that recovery removes; after
  it, the new file or (without the directory fsync) the old one, both whole and valid.

The I/O is paced at ``bytes_per_second`` (reads and writes counted), by pauses in the thread.
Concurrency: ``next_job``, ``swap`` and ``finish`` run on the loop; ``run`` and ``settle`` in a
thread, touching only files and the new segments they made.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Generator
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import compress
from operator import attrgetter
from typing import NamedTuple

import msgspec

from roost.clock import Clock
from roost.storage import batch as batch_format
from roost.storage.batch import HEADER_SIZE, BatchHeader, CorruptBatch, StoredRecord
from roost.storage.engine import LocalEngine
from roost.storage.fd_pool import FdPool
from roost.storage.fs import LocalFS
from roost.storage.log import PartitionLog
from roost.storage.segment import SCAN_CHUNK_BYTES, Segment

log = logging.getLogger("roost.compaction")

#: The clean point's file in a partition directory (JSON; a hint).
CLEAN_POINT_NAME = "CLEANED"
TEMP_SUFFIX = ".compacted.tmp"
#: Kafka's ``min.cleanable.dirty.ratio`` default.
DEFAULT_MIN_DIRTY_RATIO = 0.5
DEFAULT_MAX_KEYS = 1_000_000
#: Kept records are written in batches of about this many bytes.
OUTPUT_BATCH_BYTES = 256 * 1024


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


def read_clean_point(fs: LocalFS, directory: str) -> CleanPoint:
    path = os.path.join(directory, CLEAN_POINT_NAME)
    try:
        data = json.loads(fs.read_file(path))
        return CleanPoint(int(data["cleaned_offset"]), data.get("tombstones_due_ms"))
    except (OSError, ValueError, KeyError, TypeError):
        return CleanPoint()  # no hint, or a damaged one: everything counts as dirty


def clean_point(log: PartitionLog) -> CleanPoint:
    """The log's clean point, read from its hint file the first time it is asked."""
    point = log.clean_point
    if point is None:
        point = read_clean_point(log.fs, log.directory) if log.on_disk else CleanPoint()
        log.clean_point = point
    return point


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

    def _sync(self, out: _Output, old_fd: int, old_named_by_wal: bool) -> None:
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
            plan = [_planned(position, header, rows) for position, header, _, rows in batches]
        decisions = [self._decide(planned, seen) for planned in reversed(plan)][::-1]
        if all(keep is None or all(keep) for keep in decisions):
            return None  # nothing to drop: the segment stays as it is, unread again
        temp_path = segment.path[: -len(".log")] + TEMP_SUFFIX
        out = _Output(self.fs, temp_path, segment, self.index_interval_bytes)
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

    def _decide(self, planned: _Planned, seen: dict[bytes, None]) -> list[bool] | None:
        """Per record of a batch, newest first: kept unless a newer record of its key was
        seen (its key then joins ``seen``); a kept tombstone (an empty value) goes once
        ``tombstone_retention_ms`` have passed since its batch was appended. None for a gap
        batch. Two common batches are decided whole, in C: every key new and distinct (the
        newest data), every key seen (data since replaced)."""
        _, header, rows = planned
        if header.is_gap:
            return None
        keys: list[bytes | None] = list(map(_key_of, rows))
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
            if len(rows[i].value) <= _MAX_EMPTY and _is_empty(rows[i].value)
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
        self, out: _Output, fd: int, planned: _Planned, keep: list[bool] | None
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
    ) -> Generator[tuple[int, BatchHeader, memoryview, list[_Row]], None, None]:
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
                    yield position + offset, header, data, _rows(data, header)
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


class _Output:
    """The rewritten segment being written: kept runs as batches, dropped runs as gaps. Its
    ``segment`` accounts every batch written (offsets, index, times), for the path the file
    will have once swapped in; its descriptors are never opened here."""

    def __init__(self, fs: LocalFS, path: str, old: Segment, index_interval_bytes: int) -> None:
        self.fs = fs
        self.path = path
        self.segment = Segment(fs, old.directory, old.base_offset, FdPool(fs))
        self.segment.sealed = True
        self._interval = index_interval_bytes
        self._fd = fs.open_rw(path)
        fs.truncate(self._fd, 0)
        self._run: list[StoredRecord] = []
        self._run_bytes = 0
        self._run_time_ms = 0
        self._gap: tuple[int, int, int] | None = None  # (base, count, append time)
        self.size = 0

    def whole(self, data: memoryview, header: BatchHeader) -> int:
        """A batch kept whole: its bytes as they are (offsets are absolute)."""
        written = self._write_run() + self._write_gap()
        return written + self._append(data, header)

    def keep(self, record: StoredRecord, append_time_ms: int) -> None:
        self._write_gap()
        self._run.append(record)
        self._run_bytes += len(record.value) + len(record.key or b"") + 24
        self._run_time_ms = max(self._run_time_ms, append_time_ms)

    def drop(self, offset: int, count: int, append_time_ms: int) -> None:
        self._write_run()
        if self._gap is None:
            self._gap = (offset, count, append_time_ms)
        else:
            base, gap_count, time_ms = self._gap
            self._gap = (base, gap_count + count, max(time_ms, append_time_ms))

    def flush_if_full(self) -> int:
        return self._write_run() if self._run_bytes >= OUTPUT_BATCH_BYTES else 0

    def finish(self) -> int:
        return self._write_run() + self._write_gap()

    def _write_run(self) -> int:
        if not self._run:
            return 0
        data, header = batch_format.encode_stored(self._run, self._run_time_ms)
        self._run, self._run_bytes, self._run_time_ms = [], 0, 0
        return self._append(data, header)

    def _write_gap(self) -> int:
        if self._gap is None:
            return 0
        data, header = batch_format.encode_gap(*self._gap)
        self._gap = None
        return self._append(data, header)

    def _append(self, data: bytes | memoryview, header: BatchHeader) -> int:
        self.fs.pwrite(self._fd, data, self.size)
        self.segment.account(self.size, header, self._interval)
        self.size += len(data)
        return len(data)

    def sync(self) -> None:
        self.fs.fsync(self._fd)
        self.fs.close(self._fd)
        self._fd = -1

    def remove(self) -> None:
        if self._fd >= 0:
            self.fs.close(self._fd)
            self._fd = -1
        with contextlib.suppress(OSError):
            self.fs.remove(self.path)
        self.segment.close()


class _Row(msgspec.Struct, array_like=True, gc=False):
    """A record decoded light: the value left raw, the headers skipped (an array-like
    struct ignores trailing elements it does not name)."""

    offset: int
    timestamp_ms: int
    key: bytes | None
    value: msgspec.Raw


_ROWS = msgspec.msgpack.Decoder(list[_Row])
_key_of = attrgetter("key")
#: An empty MessagePack bin (a tombstone's value) as encoded: bin 8, 16 or 32 of length 0.
_EMPTY_VALUES = (b"\xc4\x00", b"\xc5\x00\x00", b"\xc6\x00\x00\x00\x00")
_MAX_EMPTY = 5


#: What a pass knows of a batch once read: position, header, its records decoded light (their
#: values point into the chunk read: a segment's plan holds at most that segment's bytes).
_Planned = tuple[int, BatchHeader, list[_Row]]


def _planned(position: int, header: BatchHeader, rows: list[_Row]) -> _Planned:
    return position, header, rows


def _rows(data: memoryview, header: BatchHeader) -> list[_Row]:
    if header.is_gap:
        return []
    try:
        rows = _ROWS.decode(data[HEADER_SIZE:])
    except (ValueError, RecursionError) as e:
        raise CorruptBatch(f"undecodable payload: {e}") from e
    if len(rows) != header.record_count:
        raise CorruptBatch(f"header says {header.record_count} records, payload has {len(rows)}")
    return rows


def _is_empty(value: msgspec.Raw) -> bool:
    return len(value) <= _MAX_EMPTY and bytes(value) in _EMPTY_VALUES


def _no_pause(seconds: float) -> None:
    return None


class Compactor:
    """Chooses the next partition to compact and applies what a pass did. Loop-side, but
    ``CompactionJob.run``/``settle``. ``logs`` lists the logs of compacted topics now."""

    def __init__(
        self,
        logs: Callable[[], list[PartitionLog]],
        clock: Clock,
        settings: CompactionSettings | None = None,
    ) -> None:
        self._logs = logs
        self._clock = clock
        self.settings = settings or CompactionSettings()
        self._cursor = 0
        #: Metrics: passes finished, segments swapped, bytes and records reclaimed.
        self.runs = 0
        self.segments_compacted = 0
        self.bytes_reclaimed = 0
        self.records_removed = 0
        self.last_run_ms = 0
        self.damage_found = 0

    def next_job(self) -> CompactionJob | None:
        """A pass for the next partition (round robin) that needs one; None if none does."""
        logs = self._logs()
        now_ms = self._clock.now_ms()
        for step in range(len(logs)):
            log = logs[(self._cursor + step) % len(logs)]
            job = self.job_for(log, now_ms)
            if job is not None:
                self._cursor = (self._cursor + step + 1) % len(logs)
                return job
        return None

    def job_for(self, log: PartitionLog, now_ms: int) -> CompactionJob | None:
        """A pass for ``log`` if its dirty ratio or a due tombstone calls for one."""
        segments = log.compactable_segments()
        if not segments:
            return None
        point = clean_point(log)
        total = sum(s.size for s in segments)
        dirty = sum(s.size for s in segments if s.next_offset > point.cleaned_offset)
        due = point.tombstones_due_ms is not None and point.tombstones_due_ms <= now_ms
        if not due and not (dirty and dirty >= total * self.settings.min_dirty_ratio):
            return None
        return CompactionJob(log, segments, point, now_ms, self.settings, self._clock)

    def swap(self, job: CompactionJob) -> None:
        """Swap the rewritten segments in (loop; renames, no fsync). A segment that changed
        since the pass read it (retention deleted it, the log failed) keeps its file."""
        if job.damage is not None:
            self.damage_found += 1
            job.log.quarantine(f"compaction found a bad batch: {job.damage}")
            return
        swapped: list[Swap] = []
        compactable = job.log.compactable_segments()
        try:
            job.log.forget_in_wal([swap.old for swap in job.swaps if swap.old in compactable])
        except OSError as e:  # nothing swapped: the next pass tries again
            log.warning("%s: compaction could not write to the WAL: %s", job.log.name, e)
            job.discard()
            job.cleanable_end = job.point.cleaned_offset  # not compacted: the point stays
            return
        for swap in job.swaps:
            old_size = swap.old.size
            if job.log.swap_segment(swap.old, swap.new, swap.temp_path):
                # Dropping one record in the middle of a batch splits it in three: a file
                # of tiny records may grow a little, the records dropped still go.
                self.bytes_reclaimed += max(0, old_size - swap.new.size)
                self.segments_compacted += 1
                swapped.append(swap)
            else:
                swap.new.close()
                with contextlib.suppress(OSError):
                    job.fs.close(swap.old_fd)
                    job.fs.remove(swap.temp_path)
                job.cleanable_end = job.point.cleaned_offset  # that one waits: try it again
        job.swaps = swapped

    def finish(self, job: CompactionJob) -> None:
        """After ``settle``: the clean point moves on and the pass counts."""
        if job.damage is None:
            job.log.clean_point = CleanPoint(job.cleanable_end, job.tombstones_due_ms)
        self.records_removed += job.records_dropped
        self.runs += 1
        self.last_run_ms = self._clock.monotonic_ms() - job.started_ms

    def compact(self, log: PartitionLog) -> CompactionJob | None:
        """One pass over ``log`` now, every step inline (blocking): for tests and tools."""
        job = self.job_for(log, self._clock.now_ms())
        if job is None:
            return None
        job.run()
        self.swap(job)
        job.settle()
        self.finish(job)
        return job


def compacted_logs(engine: LocalEngine) -> list[PartitionLog]:
    """Every partition log of the engine's compacted topics."""
    logs: list[PartitionLog] = []
    for name in engine.topic_names():
        topic = engine.topic(name)
        if topic.config.compacted:
            logs.extend(topic.partitions)
    return logs


class CompactedLogs:
    """``compacted_logs(engine)``, looked for again only when a definition changed (the
    metadata's version moved): the host asks every few seconds, and 100,000 queues must not
    cost a walk over every topic each time."""

    def __init__(self, engine: LocalEngine) -> None:
        self._engine = engine
        self._version = -1
        self._logs: list[PartitionLog] = []

    def __call__(self) -> list[PartitionLog]:
        version = self._engine.metadata.version
        if version != self._version:
            self._logs, self._version = compacted_logs(self._engine), version
        return [log for log in self._logs if not log.closed]
