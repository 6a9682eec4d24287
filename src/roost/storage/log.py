"""A partition log: an ordered run of segments with dense offsets.

How it works:

- ``append`` validates, encodes one batch, rolls the active segment when it is full or old,
  and writes the batch to the OS. It never fsyncs: it returns the offsets at once, and the
  records are durable when ``durable_offset`` has passed them.
- Durability is a three-step flush so that the fsync can run off the event loop:
  ``begin_flush()`` (on the loop) captures which files to sync, the batches held back to write
  with them (write-behind, see segment.py: under ``always`` with a flusher attached) and the
  offset that sync covers; ``FlushJob.run()`` (in a thread) writes and syncs; ``end_flush()``
  (on the loop) advances ``durable_offset`` or, on error, fails the log. Appends made while a
  job runs wait for the next job: that is group commit. ``flush()`` does all three inline.
- After a failed write or fsync the log refuses every write until it is repaired (repair.py:
  reopened in place, verified from disk, cut back to what was confirmed): it never confirms what
  may not be on disk. An ENOSPC on a write made at once (a journal entry, a ``never`` or
  ``interval`` topic, a segment roll) fails only that append: nothing of it was accounted, the
  torn bytes are cut, and the log goes on.
- Damage found on disk (by recovery, by a read whose batch fails its CRC, or by the scrub)
  **quarantines** the log: every read and write raises ``PartitionQuarantined`` naming the
  damage, nothing is cut, and a ``QUARANTINE`` file keeps it so across restarts (recovery.py).
  Kept apart from the failed state above: a failure is the disk refusing now, a quarantine is
  bytes already wrong.
- ``on_dirty`` tells the flusher there is something to sync: at once under ``always``, when the
  record threshold is crossed under ``interval`` (its timer covers the rest), never under ``never``.
- **Lazy creation**: a log opened with ``made_under`` whose directory does not exist is empty
  and has no files. Its first write (``append``, ``skip_to``; a journal's first snapshot)
  makes its directories and first segment, none of their entries synced; its first flush syncs
  them (``unsynced_directories``) before anything in it counts as durable. So a queue created
  and never written costs no ``mkdir``, and a power loss that takes the entries loses nothing
  confirmed. Until then ``on_disk`` is False, and nothing was ever written for it to the WAL.

Concurrency: every method runs on one thread (the event loop) except ``FlushJob.run``, which only
fsyncs file descriptors that stay open until ``end_flush``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

from roost.clock import Clock
from roost.errors import (
    DiskFull,
    InvalidRequest,
    OffsetOutOfRange,
    PartitionQuarantined,
    StorageClosed,
    StorageFailure,
    TooManyOpenFiles,
)
from roost.storage import batch as batch_format
from roost.storage.batch import HEADER_SIZE, CorruptBatch, Record, StoredRecord
from roost.storage.config import TopicConfig
from roost.storage.fd_pool import OUT_OF_DESCRIPTORS, FdPool
from roost.storage.flush import FlushJob
from roost.storage.fs import LocalFS
from roost.storage.recovery import LogRecovery, open_segments, write_quarantine_marker
from roost.storage.repair import LogRepair, RepairReport
from roost.storage.segment import LOG_SUFFIX, TAIL_BYTES, Segment, file_name
from roost.storage.validation import check_records
from roost.storage.wal import Wal, write_checkpoints

if TYPE_CHECKING:
    from roost.storage.compaction_pass import CleanPoint

DEFAULT_MAX_READ_BYTES = 1024 * 1024
#: Idle files closed so that a round can open the directory it could not sync.
DIRECTORY_ROOM = 8
#: Errors that say the disk has no room (a quota counts): transient, unlike an EIO.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def storage_error(what: str, error: OSError) -> StorageFailure:
    """``error`` as the Roost error a caller sees: ``DiskFull`` for want of space,
    ``TooManyOpenFiles`` for want of descriptors (an open failed: nothing was written)."""
    if error.errno in NO_SPACE_ERRNOS:
        return DiskFull(what)
    if error.errno in OUT_OF_DESCRIPTORS:
        reason = errno.errorcode.get(error.errno or 0, str(error.errno))
        return TooManyOpenFiles(what, f"{reason} ({error.strerror})")
    return StorageFailure(what, error)


log = logging.getLogger("roost.storage")


class AppendResult(NamedTuple):
    base_offset: int
    next_offset: int

    @property
    def last_offset(self) -> int:
        return self.next_offset - 1


class RawBatches(NamedTuple):
    """Whole batches as stored, CRC-verified, for serving without decoding.

    ``data`` holds whole batches only. It may begin with records below the requested offset and
    end with records at or past ``next_offset`` (a batch is never split); the reader skips
    both. ``next_offset`` is where the next read continues: the records meant for the reader
    are exactly ``[first_offset, next_offset)``, dense.
    """

    data: bytes
    next_offset: int
    #: Where the records meant for the reader begin: the offset asked for, or the end of the
    #: gap batches skipped at the start (gaps hold no records; see batch.py).
    first_offset: int = -1


class PartitionLog:
    def __init__(
        self,
        topic: str,
        partition: int,
        directory: str,
        config: TopicConfig,
        clock: Clock,
        fs: LocalFS,
        segments: list[Segment],
        recovery: LogRecovery,
        pool: FdPool | None = None,
    ) -> None:
        self.topic = topic
        self.partition = partition
        #: How health, metrics and errors name this log (a journal says it is one).
        self.name = f"{topic}/{partition}"
        self.directory = directory
        self.config = config
        self.recovery = recovery
        self.on_dirty: Callable[[PartitionLog, bool], None] | None = None
        #: Told when this log fails (refuses writes until repaired): the engine keeps the
        #: failed logs without looking at every log for them.
        self.on_failure: Callable[[PartitionLog], None] | None = None
        self._clock = clock
        self._fs = fs
        #: Where this log's segments get their descriptors (shared by every log of an engine).
        self._pool = pool or (segments[0].pool if segments else FdPool(fs))
        self._segments = segments
        self._bases = [s.base_offset for s in segments]
        self._unsynced: dict[int, Segment] = {}  # by base offset
        self._directory_changed = False
        #: Directories whose entries leading to this log were made without a sync (a new
        #: topic or journal: engine.py): its first flush syncs them before anything in it
        #: counts as durable, so that creating the log costs no sync of its own.
        self._directories_to_sync: list[str] = []
        #: Lazy creation: the existing directory this log's own is made under, with every
        #: directory between, by its first write; None once its files exist (``on_disk``).
        self._made_under: str | None = None
        #: A job could not sync the directory (no descriptor to open it with): until one
        #: does, no job's end counts as durable (a new segment's entry may not be on disk).
        self._directory_owed = False
        # Jobs begun and not yet finished, in the order they were begun. Several may run at
        # once (the flusher overlaps rounds); they are finished strictly in this order.
        self._flushing: deque[FlushJob] = deque()
        self._failure: StorageFailure | None = None
        self._repairing = False  # a LogRepair runs in a thread: no segment may be deleted
        self._closed = False
        self.unflushed_records = 0
        self.durable_offset = self.end_offset
        #: Records appended since the log was opened are ``end_offset - opened_end_offset``
        #: (offsets are dense): a counter for /metrics that costs the append path nothing.
        self.opened_end_offset = self.end_offset
        self._scratch = bytearray()  # the batch being appended, reused
        self._always = config.durability == "always"
        #: Hold batches back for the flusher to write with its fsync (``always`` with a
        #: flusher attached). False makes every append reach the OS at once, so a process
        #: crash loses nothing appended: state journals want that for every entry.
        self.write_behind = True
        #: Newest bytes of the active segment kept in memory for readers (``Segment.append``);
        #: 0 for a log nobody reads while it is written (a state journal).
        self.tail_bytes = TAIL_BYTES
        self._never = config.durability == "never"
        #: The engine's shared write-ahead log (wal.py), once attached: a flush begun with
        #: ``use_wal`` makes this log's bytes durable through it, and files that may come
        #: back with other content are forgotten in it first.
        self.wal: Wal | None = None
        #: Up to where compaction has cleaned this log (storage/compaction.py): read from its
        #: hint file when compaction first looks at the log.
        self.clean_point: CleanPoint | None = None
        for segment in segments:
            self._adopt(segment)

    def attach_wal(self, wal: Wal) -> None:
        """Flush through ``wal`` from now on (when the flusher asks); before any append."""
        self.wal = wal
        for segment in self._segments:
            segment.keep_written = not self._never

    def _adopt(self, segment: Segment) -> None:
        """Make ``segment`` one of this log's: in its pool, with its durability's rules."""
        if segment.pool is not self._pool:
            segment.move_to(self._pool)
        segment.keep_open_until_synced = not self._never
        segment.keep_written = self.wal is not None and not self._never

    @classmethod
    def open(
        cls,
        topic: str,
        partition: int,
        directory: str,
        config: TopicConfig,
        clock: Clock,
        fs: LocalFS,
        clean_shutdown: bool = False,
        repair: bool = False,
        pool: FdPool | None = None,
        unsynced_directories: Sequence[str] = (),
        made_under: str | None = None,
        absent: bool = False,
    ) -> PartitionLog:
        """Open (creating if needed) the log in ``directory``, recovering its tail.

        Blocking: after an unclean shutdown it fsyncs what recovery kept (and the directory, if
        it dropped segments), so that ``durable_offset`` is honest from the first moment. Call
        it off the event loop. Damage that is not a torn tail quarantines the log, unless
        ``repair`` (cut there and drop what follows; see recovery.py). Descriptors come from
        ``pool`` (the engine's; None: a pool of the log's own, without a ceiling).

        ``unsynced_directories``: for a new log whose directory (and its parents) were made
        without syncing their entries, those directories, its own last: its first segment is
        made without a sync too, and its first flush syncs them all before its own.

        ``made_under``: an existing ancestor of ``directory`` (the engine's ``topics/`` or
        ``journals/``). If ``directory`` does not exist, the log opens empty without making
        anything: its first write makes the directories from there down and its first
        segment (lazy creation, see the module docstring). Without it a missing directory is
        made at once, synced. ``absent``: the caller knows ``directory`` does not exist (it
        just removed what was there): not looked for.
        """
        pool = pool or FdPool(fs)
        recovery = LogRecovery(log=f"{topic}/{partition}", clean_shutdown=clean_shutdown)
        if made_under is not None and (absent or not fs.exists(directory)):
            segment = Segment.open(fs, directory, 0, pool)  # its file is made by the first write
            log = cls(topic, partition, directory, config, clock, fs, [segment], recovery, pool)
            log._made_under = made_under
            return log
        fs.makedirs(directory)
        segments = open_segments(
            fs, directory, config.index_interval_bytes, recovery, repair, pool=pool
        )
        if recovery.quarantined:
            write_quarantine_marker(fs, directory, recovery.quarantined)
        if not segments:
            segments = [Segment.create(fs, directory, 0, pool)]
            if not unsynced_directories:
                fs.fsync_dir(directory)
        if not clean_shutdown:
            for segment in segments:
                fs.fdatasync(segment.fd)
            if recovery.segments_dropped:
                # Or a second power loss may bring dropped segments back, and one that now
                # continues the log exactly would return records recovery reported lost.
                fs.fsync_dir(directory)
        log = cls(topic, partition, directory, config, clock, fs, segments, recovery, pool)
        log._directories_to_sync = list(unsynced_directories)
        return log

    # -- offsets --------------------------------------------------------------------------

    @property
    def start_offset(self) -> int:
        return self._segments[0].base_offset

    @property
    def end_offset(self) -> int:
        """The offset the next appended record will get."""
        return self._segments[-1].next_offset

    @property
    def confirmed_offset(self) -> int:
        """The end of what a producer has been (or may be) told is stored: under ``always``
        what is durable, otherwise everything appended. Readers that must not see what a
        crash could undo read up to here."""
        return self.durable_offset if self._always else self.end_offset

    @property
    def size_bytes(self) -> int:
        return sum(s.size for s in self._segments)

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    @property
    def oldest_segment_end(self) -> int:
        """One past the last offset of the oldest segment: ``delete_below`` an offset at or
        above it deletes that segment, unless it is the active one or a flush holds it."""
        return self._segments[0].next_offset

    @property
    def oldest_segment_last_append_ms(self) -> int:
        """When the oldest segment (the active one, if it is the only one) was last appended
        to: time retention deletes it once that is older than ``retention_ms``."""
        return self._segments[0].last_append_time_ms

    def sealed_segments(self) -> dict[int, int]:
        """Base offset -> size in bytes of every segment but the active one (they no longer
        change until deleted whole): what the scrub verifies (scrub.py)."""
        return {s.base_offset: s.size for s in self._segments[:-1]}

    @property
    def failure(self) -> StorageFailure | None:
        return self._failure

    @property
    def quarantined(self) -> str:
        """The damage that put this log out of service; "" while it serves."""
        return self.recovery.quarantined

    def quarantine(self, damage: str) -> PartitionQuarantined:
        """Take the log out of service for ``damage`` found on disk (see the module docstring);
        returns the error for the caller to raise. The first damage found is the one kept."""
        if not self.recovery.quarantined:
            self.recovery.quarantined = damage
            self.recovery.problems.append(f"quarantined, nothing cut: {damage}")
            log.error(
                "%s quarantined, reads and writes refused: %s; "
                "run `roost check` on the data directory once the broker is stopped",
                self.recovery.owner or f"partition {self.topic}/{self.partition}", damage,
            )  # fmt: skip
            try:
                write_quarantine_marker(self._fs, self.directory, damage)
            except OSError as e:  # the damage is found again on the next open's read
                log.warning("could not write the quarantine file in %s: %s", self.directory, e)
        return self._quarantined_error()

    def _quarantined_error(self) -> PartitionQuarantined:
        return PartitionQuarantined(self.topic, self.partition, self.recovery.quarantined)

    @property
    def closed(self) -> bool:
        """Closed or deleted: what it did not make durable by then, it never will."""
        return self._closed

    # -- append ---------------------------------------------------------------------------

    def append(self, records: Sequence[Record]) -> AppendResult:
        """Append ``records`` as one batch; returns their offsets. Not yet durable."""
        self._check_writable()
        check_records(records, self.config.max_record_bytes, self.topic, self.config.compacted)
        now_ms = self._clock.now_ms()
        active = self._segments[-1]
        buffer = self._scratch
        header = batch_format.encode_into(buffer, active.next_offset, records, now_ms)
        config = self.config
        if len(buffer) > config.segment_max_bytes:
            raise InvalidRequest(
                f"a batch of {len(buffer)} bytes exceeds segment_max_bytes "
                f"({config.segment_max_bytes}); append fewer records at once"
            )
        if active.size and (
            active.size + len(buffer) > config.segment_max_bytes
            or now_ms - active.first_append_time_ms >= config.segment_max_age_ms
        ):
            active = self._roll()
        if self._made_under is not None:
            self._make_files()
        on_dirty = self.on_dirty
        try:
            active.append(
                buffer,
                header,
                config.index_interval_bytes,
                self._always and self.write_behind and on_dirty is not None,
                self.tail_bytes,
            )
        except OSError as e:
            if e.errno in NO_SPACE_ERRNOS and self._cut_torn_append(active):
                raise DiskFull(f"an append to {self.name}") from e
            raise self._fail("append", e) from e
        self._unsynced[active.base_offset] = active
        self.unflushed_records += len(records)
        if on_dirty is not None and not self._never:
            on_dirty(
                self,
                self._always or self.unflushed_records >= config.flush_interval_records,
            )
        return AppendResult(header.base_offset, header.base_offset + len(records))

    @property
    def fs(self) -> LocalFS:
        return self._fs

    @property
    def on_disk(self) -> bool:
        """Whether this log's files exist: False until the first write of a log opened
        without its directory (lazy creation, see the module docstring)."""
        return self._made_under is None

    def make_files(self) -> None:
        """Make this log's directories and first segment now if they do not exist yet (lazy
        creation): none of their entries is synced here; the next flush (or a journal's
        snapshot job) syncs them first. Raises ``DiskFull``, ``TooManyOpenFiles`` or
        ``StorageFailure`` for the one operation that wanted them: the log stays empty, with
        nothing written, and the next write tries again."""
        if self._made_under is not None:
            self._make_files()

    def _make_files(self) -> None:
        root = self._made_under
        assert root is not None
        chain = [root]
        try:
            for name in os.path.relpath(self.directory, root).split(os.sep):
                chain.append(os.path.join(chain[-1], name))
                with contextlib.suppress(FileExistsError):  # a partition's topic directory
                    self._fs.mkdir(chain[-1])
            segment = self._segments[-1]
            # Opening makes the file; emptied in case a failed attempt left one behind.
            self._fs.truncate(segment.fd, 0)
        except OSError as e:  # a directory left made is harmless: the next attempt adopts it
            raise storage_error(f"making the files of {self.name}", e) from e
        self._made_under = None
        self._directories_to_sync = [*chain, *self._directories_to_sync]

    def skip_to(self, offset: int) -> int:
        """Move the end to ``offset`` with a gap batch, made durable inline (blocking);
        returns how many offsets were skipped (0 if the end is already there or past it).

        For recovery: after a cut, the offsets that subscriptions had seen must never name a
        new record (see batch.py's gap batch and docs/durability.md).
        """
        self._check_writable()
        count = offset - self.end_offset
        if count <= 0:
            return 0
        data, header = batch_format.encode_gap(self.end_offset, count, self._clock.now_ms())
        if self._made_under is not None:
            self._make_files()
        active = self._segments[-1]
        try:
            active.append(data, header, self.config.index_interval_bytes, False, self.tail_bytes)
        except OSError as e:
            raise self._fail("append", e) from e
        self._unsynced[active.base_offset] = active
        self.flush()
        return count

    def reset(self, offset: int) -> None:
        """Delete every segment and start empty at ``offset`` (blocking: fsyncs the directory).

        For a journal whose snapshot covers everything below ``offset``; never for topics.
        """
        self._check_writable()
        if self._flushing:
            raise StorageFailure(f"reset of {self.topic}/{self.partition} during a flush")
        if self._made_under is not None:  # no files yet: the first write makes the new one
            segment = Segment.open(self._fs, self.directory, offset, self._pool)
            self._adopt(segment)
            self._segments, self._bases = [segment], [offset]
            self.durable_offset = offset
            return
        if self.wal is not None:
            # The new segment may take an old one's name: no record may replay into it.
            self.wal.forget(self.directory)
        for segment in self._segments:
            segment.delete()
        segment = Segment.create(self._fs, self.directory, offset, self._pool)
        self._adopt(segment)
        self._segments, self._bases = [segment], [offset]
        self._unsynced.clear()
        self._fs.fsync_dir(self.directory)
        self.durable_offset = offset

    def roll(self) -> None:
        """Start a new segment now, if the active one holds anything."""
        self._check_writable()
        if self._segments[-1].size:
            self._roll()

    def _roll(self) -> Segment:
        previous = self._segments[-1]
        previous.drop_tail()
        try:
            previous.write_index()
            previous.sealed = True
            segment = Segment.create(self._fs, self.directory, previous.next_offset, self._pool)
        except OSError as e:
            # Nothing in memory changed: once the half-made file is gone, only the append
            # failed. Left behind, it would not continue the log once later appends land in
            # the previous segment, and recovery would drop it and every segment after it.
            if e.errno in NO_SPACE_ERRNOS and self._remove_unborn(previous.next_offset):
                raise DiskFull(f"a segment roll of {self.name}") from e
            if e.errno in OUT_OF_DESCRIPTORS and self._remove_unborn(previous.next_offset):
                # The index hint could not be written (it is rebuilt if missing).
                raise TooManyOpenFiles(f"a segment roll of {self.name}", str(e)) from e
            raise self._fail("segment roll", e) from e
        self._adopt(segment)
        self._segments.append(segment)
        self._bases.append(segment.base_offset)
        self._directory_changed = True
        return segment

    # -- read -----------------------------------------------------------------------------

    def read(
        self,
        offset: int,
        max_bytes: int = DEFAULT_MAX_READ_BYTES,
        max_records: int | None = None,
    ) -> list[StoredRecord]:
        """Records from ``offset`` on, at most ``max_records`` and about ``max_bytes``.

        Returns at least one record when any exists at ``offset`` or after it (gap batches
        are skipped), even one larger than ``max_bytes``; an empty list at the end of the log.
        Reads stop at a segment boundary, so a caller wanting more continues from the last
        offset + 1. With ``max_records``, only
        about that many records' bytes are read (by the log's average record size), and only
        the batches decoded are CRC-checked: asking for few records costs little.
        """
        self._check_readable(offset)
        if max_records is not None:
            max_bytes = min(max_bytes, self._bytes_for(max_records))
        records: list[StoredRecord] = []
        # A second read only when the first held nothing but gap batches: what follows a gap
        # is what the caller asked for, and an empty answer would mean the end of the log.
        while not records and offset < self.end_offset:
            data = self._read_whole_batches(offset, max_bytes)
            asked = offset
            position = 0
            while len(data) - position >= HEADER_SIZE:
                header = self._header(data, position)
                if position + header.size > len(data):
                    break  # the read ended inside a batch: the caller asks again from there
                self._verify(data, position, header)
                position += header.size
                if header.is_gap:
                    offset = max(offset, header.next_offset)
                    continue
                batch_records = batch_format.decode_records(data, position - header.size, header)
                if header.base_offset < offset:
                    batch_records = batch_records[offset - header.base_offset :]
                records.extend(batch_records)
                if max_records is not None and len(records) >= max_records:
                    del records[max_records:]
                    break
            if offset == asked:
                break
        return records

    def _bytes_for(self, records: int) -> int:
        count = self.end_offset - self.start_offset
        average = self.size_bytes / count if count else 1024.0
        return int(records * average * 1.25) + HEADER_SIZE

    def _header(self, data: bytes, position: int) -> batch_format.BatchHeader:
        try:
            return batch_format.parse_header(data, position)
        except CorruptBatch as e:
            raise self.quarantine(f"a read found a bad batch header: {e}") from e

    def _verify(self, data: bytes, position: int, header: batch_format.BatchHeader) -> None:
        try:
            batch_format.verify(data, position, header)
        except CorruptBatch as e:
            raise self.quarantine(
                f"a read found a bad batch at offset {header.base_offset}: {e}"
            ) from e

    def read_batches(
        self,
        offset: int,
        max_bytes: int = DEFAULT_MAX_READ_BYTES,
        max_records: int | None = None,
        end_offset: int | None = None,
    ) -> RawBatches:
        """Whole, CRC-verified batches from the one holding ``offset`` (see ``RawBatches``).

        At most about ``max_bytes`` (but at least the first batch), at most ``max_records``
        records from ``offset``, and none at or past ``end_offset`` (say, the confirmed offset).
        No record is decoded: the cost is a read and a CRC per batch, whatever the records.
        """
        limit = self.end_offset if end_offset is None else min(end_offset, self.end_offset)
        if max_records is not None:
            limit = min(limit, offset + max_records)
            max_bytes = min(max_bytes, self._bytes_for(max_records))
        self._check_readable(offset)
        if limit <= offset:
            return RawBatches(b"", offset, offset)
        data = self._read_whole_batches(offset, max_bytes)
        start = kept = position = 0
        first = next_offset = offset
        while len(data) - position >= HEADER_SIZE and next_offset < limit:
            header = self._header(data, position)
            if position + header.size > len(data):
                break  # the read ended inside a batch: the caller asks again from there
            self._verify(data, position, header)
            if header.is_gap:
                if kept > start:
                    break  # readers get batches of records only: the next read skips the gap
                start = kept = position = position + header.size
                first = header.next_offset
            else:
                kept = position = position + header.size
            next_offset = min(header.next_offset, limit)
        if start == 0 and kept == len(data):
            return RawBatches(data, next_offset, first)
        return RawBatches(data[start:kept], next_offset, min(first, next_offset))

    def _check_readable(self, offset: int) -> None:
        self._check_open()
        if self.recovery.quarantined:
            raise self._quarantined_error()
        if not self.start_offset <= offset <= self.end_offset:
            raise OffsetOutOfRange(
                self.topic, self.partition, offset, self.start_offset, self.end_offset
            )

    def _read_whole_batches(self, offset: int, max_bytes: int) -> bytes:
        self._check_readable(offset)
        segment = self._segments[bisect_right(self._bases, offset) - 1]
        try:
            position, header = segment.find_batch(offset)
        except CorruptBatch as e:
            raise self.quarantine(
                f"segment {segment.base_offset}: a read found a bad batch header: {e}"
            ) from e
        if header is None:
            return b""
        data = segment.read(position, max(max_bytes, header.size))
        return data

    def offset_for_timestamp(self, timestamp_ms: int) -> int | None:
        """The first offset whose record timestamp is >= ``timestamp_ms``; None if none is."""
        self._check_readable(self.start_offset)
        for segment in self._segments:
            if segment.max_timestamp_ms >= timestamp_ms:
                try:
                    return segment.first_offset_at(timestamp_ms)
                except CorruptBatch as e:
                    raise self.quarantine(
                        f"segment {segment.base_offset}: a read by timestamp found a bad batch: {e}"
                    ) from e
        return None

    # -- retention ------------------------------------------------------------------------

    def delete_below(self, offset: int) -> int:
        """Delete whole segments whose records are all below ``offset``; returns how many.

        The active segment is never deleted, so the start offset may stay below ``offset``.
        """
        return self._delete_leading(lambda s: s.next_offset <= offset)

    def enforce_retention(self) -> int:
        """Delete the oldest segments past ``retention_ms`` or ``retention_bytes``."""
        retention_ms, retention_bytes = self.config.retention_ms, self.config.retention_bytes
        oldest_kept_ms = self._clock.now_ms() - retention_ms if retention_ms is not None else None
        total = self.size_bytes

        def expired(segment: Segment) -> bool:
            nonlocal total
            too_old = oldest_kept_ms is not None and segment.last_append_time_ms < oldest_kept_ms
            too_big = retention_bytes is not None and total - segment.size >= retention_bytes
            if too_old or too_big:
                total -= segment.size
            return too_old or too_big

        return self._delete_leading(expired)

    def _delete_leading(self, condition: Callable[[Segment], bool]) -> int:
        self._check_open()
        if self._repairing or self._failure is not None:
            return 0  # the repair (its thread has the directory open) comes first
        if self.recovery.quarantined:
            return 0  # nothing of a quarantined log changes before the operator has looked
        in_flight = [segment for job in self._flushing for segment in job.segments]
        deleted = 0
        while len(self._segments) > 1:
            segment = self._segments[0]
            if segment in in_flight or not condition(segment):
                break
            try:
                segment.delete()
            except OSError as e:
                # Retention is housekeeping inside a tick: its failure must not stop the tick
                # (leases expiring everywhere else). The log fails, and health and metrics say
                # so; its repair lists the directory afresh.
                self._fail("segment delete", e)
                return deleted
            self._unsynced.pop(segment.base_offset, None)
            del self._segments[0], self._bases[0]
            self._directory_changed = True
            deleted += 1
        return deleted

    # -- compaction -----------------------------------------------------------------------

    def compactable_segments(self) -> list[Segment]:
        """The oldest sealed segments whose bytes a crash can no longer change: durable
        (synced, or in the shared WAL), held by no flush job. Empty while the log is not
        serving or being repaired. (A segment the WAL still names is compactable: the swap
        voids its records first, see ``swap_segment``.)"""
        if self._closed or self._repairing or self._failure is not None:
            return []
        if self.recovery.quarantined or self._made_under is not None:
            return []
        in_flight = {id(segment) for job in self._flushing for segment in job.segments}
        found: list[Segment] = []
        for segment in self._segments[:-1]:
            if (
                id(segment) in in_flight
                or segment.base_offset in self._unsynced
                or segment.held_back_bytes
                or (segment.next_offset > self.durable_offset and not self._never)
            ):
                break
            found.append(segment)
        return found

    def forget_in_wal(self, segments: Sequence[Segment]) -> None:
        """Void the shared WAL's records for the files of ``segments`` (about to be replaced
        by compaction, their files synced by the caller): replay writes at fixed positions,
        and old bytes must never land in a new file. One small O_DSYNC write, blocking."""
        named = [s.path for s in segments if self.wal is not None and self.wal.mentions(s.path)]
        if named and self.wal is not None:
            self.wal.forget_all(named)

    def swap_segment(self, old: Segment, new: Segment, temp_path: str) -> bool:
        """Put the compacted ``new`` (written and fsynced at ``temp_path``) in place of ``old``
        (synced, and forgotten by the WAL: ``forget_in_wal``): a rename, and the segment list
        changed with it (storage/compaction.py). False, with nothing changed, when ``old`` is
        no longer a compactable segment of this log."""
        if old not in self.compactable_segments() or old.size == new.size:
            return False
        if new.base_offset != old.base_offset or new.next_offset != old.next_offset:
            return False
        try:
            self._fs.rename(temp_path, old.path)
        except OSError as e:
            log.warning("%s: could not swap in compacted segment %s: %s", self.name, old.path, e)
            return False
        position = self._segments.index(old)
        self._adopt(new)
        self._segments[position] = new
        old.close()  # its descriptors name the replaced file; the segment is closed, not deleted
        return True

    # -- durability -----------------------------------------------------------------------

    @property
    def unsynced_directories(self) -> list[str]:
        """Directories on the way to this new log whose entries no flush has synced yet."""
        return list(self._directories_to_sync)

    @property
    def needs_flush(self) -> bool:
        return (
            bool(
                self._unsynced
                or self._directory_changed
                or self._directory_owed
                or self._directories_to_sync
            )
            and self._failure is None
        )

    def held_back_bytes(self, use_wal: bool = False) -> int | None:
        """What the next flush job would write, when writing is all it would do: held-back
        batches into one segment, no fdatasync of bytes written through, no directory entry
        to sync. None when it would do more (it may take long: the flusher's thread runs it).

        ``use_wal``: a job through the shared WAL, where the batches written through go into
        the WAL's one write too, and segments are only pwritten (any number of them)."""
        if self._directory_changed or self._directory_owed or self._directories_to_sync:
            return None
        use_wal = use_wal and self.wal is not None
        if len(self._unsynced) > 1 and not use_wal:
            return None
        total = 0
        for segment in self._unsynced.values():
            if segment.needs_fdatasync:
                written = segment.written_bytes if use_wal else None
                if written is None:
                    return None
                total += written
            total += segment.held_back_bytes
        return total

    def begin_flush(self, use_wal: bool = False) -> FlushJob | None:
        """Capture what the next fsync covers; None if nothing needs one.

        Jobs may overlap: a job begun while another runs covers only what was appended since,
        and ``end_flush`` applies them in the order they were begun.

        ``use_wal`` (with a WAL attached): the job's bytes go to ``job.wal_items`` for the
        round's one WAL write, and its writes to the segments are plain ``pwrite``s; batches
        written through at append time need no fdatasync (their copies go to the WAL).
        """
        if self._closed or not self.needs_flush:
            return None
        use_wal = use_wal and self.wal is not None
        for segment in self._unsynced.values():
            if segment.held_back_bytes:
                try:
                    # Opened here, on the loop, not in the thread.
                    segment.fd if use_wal else segment.sync_fd  # noqa: B018
                except OSError as e:
                    # Before anything is taken: a job must never skip held-back batches.
                    self._fail("flush", e)
                    return None
        job = FlushJob(
            self._fs,
            self.directory if self._directory_changed or self._directory_owed else None,
            self.end_offset,
        )
        job.parents, self._directories_to_sync = self._directories_to_sync, []
        job.writes_sync = not use_wal
        for segment in self._unsynced.values():
            job.segments.append(segment)
            # Busy (fd_pool.py) until ``end_flush``: the job's thread holds its descriptors.
            segment.flushing += 1
            written = segment.take_written()
            if use_wal and written is not None:
                job.wal_items += [(segment.path, position, data) for position, data in written]
                segment.needs_fdatasync = False
            unwritten = segment.take_unwritten()
            if unwritten is not None:
                if use_wal:
                    job.wal_items.append((segment.path, *unwritten))
                    job.writes.append((segment, segment.fd, *unwritten))
                else:
                    job.writes.append((segment, segment.sync_fd, *unwritten))
            if segment.needs_fdatasync:
                job.fds.append(segment.fd)
                segment.needs_fdatasync = False
        self._unsynced.clear()
        active = self._segments[-1]
        if active in job.segments:  # every byte below its size is written by now or by this job
            checkpoint = active.checkpoint()
            if checkpoint is not None:
                job.index_checkpoints.append(checkpoint)
        self._directory_changed = False
        job.records = self.unflushed_records
        self.unflushed_records = 0
        self._flushing.append(job)
        return job

    def end_flush(self, job: FlushJob, error: BaseException | None) -> None:
        """Record that ``job`` ran; apply it and every finished job begun before it.

        A job that finishes before an earlier one waits: its records are durable only when
        everything below them is, and ``durable_offset`` only ever covers a prefix.
        """
        job.finished, job.error = True, error
        while self._flushing and self._flushing[0].finished:
            done = self._flushing.popleft()
            for segment in done.segments:
                segment.flushing = max(0, segment.flushing - 1)
            if done.error is not None:
                self._fail("fsync", done.error)
                # Not known synced: the flush after the repair syncs them again.
                self._directories_to_sync = [*done.parents, *self._directories_to_sync]
            if self._failure is not None or self._closed:
                continue
            for segment, _, position, data in done.writes:
                segment.mark_written(position + len(data))
            if done.directory_deferred:
                self._directory_owed = True
                self._directories_to_sync = [*done.parents, *self._directories_to_sync]
                if self.on_dirty is not None:
                    # As an open in the pool does: close idle files and try again at once;
                    # with none to close, after flush_interval_ms.
                    self.on_dirty(self, self._pool.make_room(DIRECTORY_ROOM) > 0)
                continue
            if done.directory is not None:
                self._directory_owed = False  # a directory fsync covers every entry made
            if self._directory_owed:
                continue
            self.durable_offset = max(self.durable_offset, done.end_offset)
            if done.writes_sync:  # synced by the job itself (a WAL job's wait for a checkpoint)
                write_checkpoints(done.index_checkpoints)
        if self._closed and not self._flushing:
            self._release_files()

    def flush(self) -> None:
        """Make everything appended so far durable, inline (blocking)."""
        job = self.begin_flush()
        if job is None:
            if self._failure is not None:
                raise self._failure
            return
        try:
            job.run()
        except OSError as e:
            self.end_flush(job, e)
            # Failed now even if an earlier job still runs (end_flush applies this one after it).
            raise self._fail("fsync", e) from e
        self.end_flush(job, None)
        if job.directory_deferred:
            raise TooManyOpenFiles(f"syncing the directory of {self.name}", "EMFILE")

    def close(self, clean: bool = True) -> bool:
        """Flush, persist the indexes (when ``clean``) and release the files.

        Returns whether the close was clean: not if asked not to be, if the log had failed, or
        if a flush job was still running (its thread keeps the files until ``end_flush``; the
        host closes the flusher before the logs to avoid that).
        """
        if self._closed:
            return False
        clean = clean and self._failure is None and not self._flushing
        try:
            if clean:
                self.flush()
                # A quarantined log's indexes stay as they were: nothing about it is vouched
                # for. A log not on disk yet has none to write.
                unvouched = self.recovery.quarantined or self._made_under is not None
                for segment in [] if unvouched else self._segments:
                    segment.write_index()
        finally:
            self._closed = True
            if not self._flushing:
                self._release_files()
        return clean

    def _release_files(self) -> None:
        for segment in self._segments:
            segment.close()

    def delete(self) -> None:
        """Close and remove every file of this log."""
        self.close(clean=False)
        if self._made_under is None or self._fs.exists(self.directory):
            self._fs.remove_tree(self.directory)

    # -- failure --------------------------------------------------------------------------

    def begin_repair(self) -> LogRepair | None:
        """Prepare to reopen this failed log in place (see repair.py); run the returned job off
        the loop, then ``end_repair``. None when there is nothing to repair, or when a flush job
        still runs (its thread holds the files: ask again once it has ended)."""
        if self._failure is None or self._closed or self._flushing or self._repairing:
            return None
        self._repairing = True
        report = RepairReport(log=self.name, cause=str(self._failure))
        return LogRepair(
            self._fs,
            self.directory,
            self.config.index_interval_bytes,
            report,
            keep=self.confirmed_offset,
            verified_below=self.durable_offset,
            appended_end=self.end_offset,
            sync_all=self.wal is not None,
        )

    def end_repair(self, repair: LogRepair, error: BaseException | None = None) -> bool:
        """Adopt what ``repair.run()`` found, or (``error``) stay failed; True if adopted.

        From here everything the log holds is durable and it takes writes again. Its end may be
        lower than before: records that were never confirmed are gone (the caller tells whoever
        remembers offsets, such as the idempotent producers' state).
        """
        self._repairing = False
        if self._closed or self._flushing or self._failure is None:
            repair.discard()
            return False
        if error is not None and not repair.cut_done:
            repair.discard()
            return False
        if error is None and self.wal is not None:
            # What the repair kept it synced; older records may hold bytes it cut, and a
            # later segment may take a dropped one's name: none may replay.
            try:
                self.wal.forget(self.directory)
            except OSError as e:
                log.warning(
                    "%s stays failed: the WAL could not record its repair: %s", self.name, e
                )
                repair.discard()
                return False
        old, published = self._segments, self.end_offset - self.opened_end_offset
        for segment in repair.segments:
            self._adopt(segment)  # opened by the repair's thread, in a pool of its own
        self._segments = repair.segments
        self._bases = [s.base_offset for s in self._segments]
        self._unsynced.clear()
        self._directory_changed = self._directory_owed = False  # the repair synced it
        self.unflushed_records = 0
        self.opened_end_offset = self.end_offset - published  # the counter never goes back
        for segment in old:
            segment.close()
        if error is not None:
            # Cut, but not all synced: what it holds is as the disk has it, and still failed.
            self.durable_offset = min(self.durable_offset, self.end_offset)
            return False
        self.durable_offset = self.end_offset
        self._failure = None
        return True

    def _remove_unborn(self, base_offset: int) -> bool:
        """Remove what a failed roll made of the segment at ``base_offset``; False if that
        failed too (then the log fails, and its repair finds the file continuing the log)."""
        path = os.path.join(self.directory, file_name(base_offset, LOG_SUFFIX))
        try:
            if self._fs.exists(path):
                self._fs.remove(path)
        except OSError:
            return False
        return True

    def _cut_torn_append(self, active: Segment) -> bool:
        """After an append failed for want of space: cut what it left past the segment's end
        (nothing of it was accounted). False if even that failed: then the log fails."""
        try:
            self._fs.truncate(active.fd, active.size)
        except OSError:
            return False
        return True

    def _fail(self, what: str, cause: BaseException) -> StorageFailure:
        if self._failure is None:
            where = f"{what} on {self.name}"
            if isinstance(cause, OSError) and cause.errno in NO_SPACE_ERRNOS:
                self._failure = DiskFull(where)
            elif isinstance(cause, OSError):
                # An EMFILE here too (a directory the flush's thread could not open): the log
                # failed all the same, and only a repair says what the disk holds.
                self._failure = StorageFailure(where, cause)
            else:
                self._failure = StorageFailure(where, cause)
            if self.on_failure is not None:
                self.on_failure(self)
        return self._failure

    def _check_writable(self) -> None:
        self._check_open()
        if self._failure is not None:
            raise self._failure
        if self.recovery.quarantined:
            raise self._quarantined_error()

    def _check_open(self) -> None:
        if self._closed:
            raise StorageClosed(f"log {self.topic}/{self.partition}")


def partition_directory(topic_directory: str, partition: int) -> str:
    return os.path.join(topic_directory, str(partition))
