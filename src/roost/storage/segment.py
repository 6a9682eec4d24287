"""One segment file of a partition log and its in-memory index.

A segment holds the dense run of offsets ``[base_offset, next_offset)`` as whole batches in
``<base_offset>.log``; ``size`` is the byte length of those whole, valid batches. Bytes past
``size`` (a write that failed half way, a torn tail found by recovery) are never read and are cut
before anything is written after them.

A batch is either written at once (``pwrite`` at ``size``: a process crash then loses nothing
the OS was given) or, when a flusher will soon sync it anyway, held in memory as an unwritten
chunk that the next flush job writes and fsyncs in one go from its thread ("write-behind": one
``pwrite`` per group commit instead of one per append, which matters when a syscall costs 5 µs).
Unwritten chunks are contiguous from ``_file_end`` to ``size`` and are served to readers from
memory until the job that wrote them has finished. Making data durable is the flush's job
(log.py), never the append's.

The file's descriptors come from the engine's pool (fd_pool.py): ``fd`` and ``sync_fd`` open
the file again if the pool closed it while it was idle, and the segment tells the pool when it
is busy (written bytes waiting for their fsync, held-back batches, a flush job running).
"""

from __future__ import annotations

import errno
import os
from collections import deque
from collections.abc import Iterable
from typing import NamedTuple

from roost.storage import batch as batch_format
from roost.storage.batch import HEADER_SIZE, BatchHeader, CorruptBatch
from roost.storage.fd_pool import FdPool, PooledFile
from roost.storage.fs import LocalFS
from roost.storage.index import NO_TIMESTAMP, InvalidIndex, SegmentSummary, SparseIndex

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"
#: How much a recovery scan reads per call; batches larger than this are read whole.
SCAN_CHUNK_BYTES = 1024 * 1024
#: The newest batches of the active segment stay in memory up to this many bytes: a reader
#: that keeps up (a pushing subscription, a tailing stream) finds what was just appended
#: without a syscall, where the sparse index would cost a header read per batch since its
#: last entry and one more for the batch.
TAIL_BYTES = 64 * 1024
#: The active segment's index is written as a recovery point once this many bytes past the
#: last one are known synced: a restart after a crash scans only what follows it (recovery.py).
INDEX_CHECKPOINT_BYTES = 8 * 1024 * 1024


def file_name(base_offset: int, suffix: str) -> str:
    return f"{base_offset:020d}{suffix}"


def _slices(chunks: Iterable[tuple[int, bytes]], position: int, end: int) -> list[bytes]:
    """The parts of ``(start, bytes)`` chunks, contiguous and in order, in ``[position, end)``."""
    parts: list[bytes] = []
    for start, chunk in chunks:
        if start >= end:
            break
        if start + len(chunk) > position:
            parts.append(chunk[max(0, position - start) : end - start])
    return parts


def _refuse_closed(path: str) -> int:
    raise OSError(errno.EBADF, f"segment {path} is closed")


def _never_busy() -> bool:
    return False


class ScanResult(NamedTuple):
    valid_bytes: int
    file_bytes: int
    problem: str | None


class IndexCheckpoint(NamedTuple):
    """The active segment's index as it stood when its file held ``summary.covered_log_bytes``
    (its first ``entries`` entries): written once those bytes are known synced, never before
    (``Segment.write_checkpoint``)."""

    segment: Segment
    summary: SegmentSummary
    entries: int


class Segment:
    def __init__(self, fs: LocalFS, directory: str, base_offset: int, pool: FdPool) -> None:
        self.fs = fs
        self.pool = pool
        self.directory = directory
        self.base_offset = base_offset
        self.path = os.path.join(directory, file_name(base_offset, LOG_SUFFIX))
        # Opened when first used, and closed again by the pool while idle (fd_pool.py).
        self._file = PooledFile(self.path, fs.open_rw, self._busy)
        self._sync_file = PooledFile(self.path, fs.open_dsync, self._busy)
        #: Flush jobs begun and not finished that cover this segment: they hold its
        #: descriptors (see ``PartitionLog.begin_flush``).
        self.flushing = 0
        #: Whether bytes written through and not yet synced keep the descriptors open (see
        #: fd_pool.py). A log that never syncs (``never``) turns it off: its files would
        #: otherwise never be let go; it promises nothing a closed descriptor could break.
        self.keep_open_until_synced = True
        #: Keep a copy of each batch written through until a flush takes it for the shared
        #: write-ahead log (wal.py), which then makes it durable instead of an fdatasync.
        self.keep_written = False
        #: No longer the active segment: its full index was written when the log rolled.
        self.sealed = False
        self.closed = False
        #: Bytes the index files on disk are known to cover (a recovery point or the index
        #: loaded at open): the next checkpoint is taken INDEX_CHECKPOINT_BYTES past it.
        self.checkpointed_bytes = 0
        self._reset()

    def _reset(self) -> None:
        self.size = 0
        self._file_end = 0  # bytes handed to the OS; the rest is in _unwritten
        self._taken_end = 0  # bytes handed to the OS or to a flush job
        self._unwritten: list[tuple[int, bytes]] = []  # (position, batch bytes)
        #: Batches written through and kept (``keep_written``) that no flush has taken yet.
        self._written: list[tuple[int, bytes]] = []
        #: Bytes were written through (not held back) since the last flush took this segment.
        self.needs_fdatasync = False
        self.next_offset = self.base_offset
        self.first_append_time_ms = NO_TIMESTAMP
        self.last_append_time_ms = NO_TIMESTAMP
        self.max_timestamp_ms = NO_TIMESTAMP
        self.index = SparseIndex(self.base_offset)
        self._bytes_since_index = 0
        #: (position, header, bytes) of the newest whole batches, contiguous up to ``size``.
        self._tail: deque[tuple[int, BatchHeader, bytes]] = deque()
        self._tail_bytes = 0

    @classmethod
    def create(
        cls, fs: LocalFS, directory: str, base_offset: int, pool: FdPool | None = None
    ) -> Segment:
        """A new, empty segment (an existing file of that name is emptied). Raises
        ``TooManyOpenFiles`` with nothing created when no descriptor can be had."""
        segment = cls(fs, directory, base_offset, pool or FdPool(fs))
        try:
            fs.truncate(segment.fd, 0)
        except BaseException:
            segment.close()
            raise
        return segment

    @classmethod
    def open(
        cls, fs: LocalFS, directory: str, base_offset: int, pool: FdPool | None = None
    ) -> Segment:
        """An existing segment file (opened on first use); call ``load_index`` or ``scan``
        before using it."""
        return cls(fs, directory, base_offset, pool or FdPool(fs))

    @property
    def fd(self) -> int:
        """The read-write descriptor, opened if the pool had closed it. Use it at once: the
        next call into the pool may close it again."""
        return self.pool.fd(self._file)

    def _busy(self) -> bool:
        """Whether the descriptors must stay open (see fd_pool.py)."""
        return bool(
            self.flushing
            or self._unwritten
            or (self.needs_fdatasync and self.keep_open_until_synced)
        )

    def move_to(self, pool: FdPool) -> None:
        """Hand this segment's descriptors over to ``pool`` (see ``FdPool.adopt``)."""
        for file in (self._file, self._sync_file):
            pool.adopt(file, self.pool)
        self.pool = pool

    @property
    def record_count(self) -> int:
        return self.next_offset - self.base_offset

    # -- append ---------------------------------------------------------------------------

    def append(
        self,
        data: bytes | bytearray,
        header: BatchHeader,
        index_interval_bytes: int,
        write_behind: bool,
        tail_bytes: int = TAIL_BYTES,
    ) -> None:
        """Add one encoded batch at the end. Raises ``OSError``; the caller fails the log.

        ``data`` may be the caller's scratch buffer: it is copied if it must be kept. The
        newest ``tail_bytes`` of batches are kept in memory for readers (0: none).
        """
        position = self.size
        held_back = write_behind or bool(self._unwritten)
        if held_back and self._sync_file.fd < 0:
            # Now, before anything is accounted, not in the flush: a flush that could not open
            # it would have batches it can neither write nor give back. Held-back batches keep
            # the segment busy, so the descriptor stays open until they are written.
            self.pool.fd(self._sync_file)
        keep = 0 < len(data) <= tail_bytes
        kept = bytes(data) if keep or held_back or self.keep_written else b""
        if held_back:
            self._unwritten.append((position, kept))
        else:
            self.fs.pwrite(self.fd, data, position)
            self._file_end = self._taken_end = position + len(data)
            self.needs_fdatasync = True
            if self.keep_written:
                self._written.append((position, kept))
        self._account(position, header, index_interval_bytes)
        if keep:
            self._keep(position, header, kept, tail_bytes)
        elif self._tail:
            self.drop_tail()  # the tail must run up to ``size``: a gap would read wrong

    def _keep(self, position: int, header: BatchHeader, data: bytes, tail_bytes: int) -> None:
        self._tail.append((position, header, data))
        self._tail_bytes += len(data)
        while self._tail_bytes > tail_bytes:
            self._tail_bytes -= len(self._tail.popleft()[2])

    def drop_tail(self) -> None:
        """Forget the batches kept for readers (this segment is no longer the active one)."""
        self._tail.clear()
        self._tail_bytes = 0

    @property
    def held_back_bytes(self) -> int:
        """Bytes appended that no flush job has taken yet."""
        return self.size - self._taken_end

    def take_unwritten(self) -> tuple[int, bytes] | None:
        """The chunks no flush job has taken yet, joined, with their position.

        They stay readable from memory until ``mark_written``.
        """
        if self._taken_end == self.size:
            return None
        start = self._taken_end
        self._taken_end = self.size
        return start, b"".join(chunk for position, chunk in self._unwritten if position >= start)

    def take_written(self) -> list[tuple[int, bytes]] | None:
        """The batches written through since the last flush, for the WAL: contiguous runs
        joined, with their positions. None when some were written through without a copy
        kept (``keep_written`` was off): only an fdatasync covers those."""
        if not self.needs_fdatasync:
            return []
        written, self._written = self._written, []
        if not self.keep_written or not written:
            return None
        runs: list[tuple[int, bytes]] = []
        start, parts = written[0][0], [written[0][1]]
        end = start + len(parts[0])
        for position, chunk in written[1:]:
            if position != end:
                runs.append((start, b"".join(parts)))
                start, parts = position, []
            parts.append(chunk)
            end = position + len(chunk)
        runs.append((start, b"".join(parts)))
        return runs

    @property
    def written_bytes(self) -> int | None:
        """Bytes written through since the last flush (None: not all of them kept)."""
        if not self.needs_fdatasync:
            return 0
        if not self.keep_written or not self._written:
            return None
        return sum(len(chunk) for _, chunk in self._written)

    @property
    def sync_fd(self) -> int:
        """A second descriptor whose writes are durable on return (see ``LocalFS.open_dsync``)."""
        return self.pool.fd(self._sync_file)

    def mark_written(self, end: int) -> None:
        """A flush job wrote everything below ``end``."""
        self._unwritten = [(p, c) for p, c in self._unwritten if p >= end]
        self._file_end = end

    def _account(self, position: int, header: BatchHeader, index_interval_bytes: int) -> None:
        if not self.index or self._bytes_since_index >= index_interval_bytes:
            self.index.add(header.base_offset, position, self.max_timestamp_ms)
            self._bytes_since_index = 0
        size = header.batch_length + 4
        self._bytes_since_index += size
        if self.first_append_time_ms == NO_TIMESTAMP:
            self.first_append_time_ms = header.append_time_ms
        self.last_append_time_ms = max(self.last_append_time_ms, header.append_time_ms)
        self.max_timestamp_ms = max(self.max_timestamp_ms, header.max_timestamp_ms)
        self.next_offset = header.base_offset + header.record_count
        self.size = position + size

    def account(self, position: int, header: BatchHeader, index_interval_bytes: int) -> None:
        """Account a batch already written at ``position`` by someone else (compaction writes
        a segment's new file under another name): its offsets, times and index entry."""
        self._account(position, header, index_interval_bytes)
        self._file_end = self._taken_end = self.size

    # -- read -----------------------------------------------------------------------------

    def read(self, position: int, max_bytes: int) -> bytes:
        end = min(position + max_bytes, self.size)
        tail = self._tail
        if tail and position >= tail[0][0]:
            # A reader that keeps up wants the newest batch: look from that end, not through
            # every batch the tail holds (a pushing subscription reads once per message).
            first = len(tail) - 1
            while tail[first][0] > position:
                first -= 1
            newest = (tail[i] for i in range(first, len(tail)))
            parts = _slices(((start, chunk) for start, _, chunk in newest), position, end)
            return parts[0] if len(parts) == 1 else b"".join(parts)
        if end <= self._file_end:
            return self.fs.pread(self.fd, end - position, position)
        parts = []
        if position < self._file_end:
            parts.append(self.fs.pread(self.fd, self._file_end - position, position))
        return b"".join(parts + _slices(self._unwritten, position, end))

    def header_at(self, position: int) -> BatchHeader:
        return batch_format.parse_header(self.read(position, HEADER_SIZE))

    def find_batch(self, offset: int) -> tuple[int, BatchHeader | None]:
        """Position and header of the batch holding ``offset``; ``(size, None)`` past the end."""
        tail = self._tail
        if tail and offset >= tail[0][1].base_offset:
            if offset >= self.next_offset:
                return self.size, None
            for position, header, _ in reversed(tail):  # a reader that keeps up: the newest
                if header.base_offset <= offset:
                    return position, header
        position = self.index.position_for_offset(offset)
        while position < self.size:
            header = self.header_at(position)
            if header.next_offset > offset:
                return position, header
            position += header.size
        return self.size, None

    def first_offset_at(self, timestamp_ms: int) -> int | None:
        """The first offset here whose record timestamp is >= ``timestamp_ms``."""
        position = self.index.position_for_timestamp(timestamp_ms)
        while position < self.size:
            header = self.header_at(position)
            if header.max_timestamp_ms >= timestamp_ms:
                data = self.read(position, header.size)
                batch_format.verify(data, 0, header)
                for record in batch_format.decode_records(data, 0, header):
                    if record.timestamp_ms >= timestamp_ms:
                        return record.offset
            position += header.size
        return None

    # -- recovery -------------------------------------------------------------------------

    def load_index(self) -> bool:
        """Adopt the index files if they describe this log file exactly; False if not."""
        try:
            index, summary = SparseIndex.decode(
                self.base_offset,
                self.fs.read_file(self._index_path(INDEX_SUFFIX)),
                self.fs.read_file(self._index_path(TIME_INDEX_SUFFIX)),
            )
        except (OSError, InvalidIndex):
            return False
        file_bytes = self.fs.file_size(self.fd)
        if summary.covered_log_bytes != file_bytes or (file_bytes > 0) != bool(index):
            return False
        if index and not self._tail_matches(index, summary):
            return False
        self.index = index
        self.size = self._file_end = self._taken_end = self.checkpointed_bytes = file_bytes
        self.next_offset = summary.next_offset
        self.max_timestamp_ms = summary.max_timestamp_ms
        self.last_append_time_ms = summary.last_append_time_ms
        if file_bytes:
            self.first_append_time_ms = self.header_at(0).append_time_ms
            self._bytes_since_index = file_bytes - index.last_position
        return True

    def _tail_matches(self, index: SparseIndex, summary: SegmentSummary) -> bool:
        """Walk the batch headers after the last index entry: they must end the file exactly.

        Cheap (at most ``index_interval_bytes`` of log) and it catches an index that is intact
        but describes another log, say a file copied over from a segment of the same size.
        """
        position, expected = index.last_position, index.offsets[-1]
        try:
            while position < summary.covered_log_bytes:
                header = batch_format.parse_header(self.fs.pread(self.fd, HEADER_SIZE, position))
                if header.base_offset != expected:
                    return False
                position += header.size
                expected = header.next_offset
        except CorruptBatch:
            return False
        return position == summary.covered_log_bytes and expected == summary.next_offset

    def scan(self, index_interval_bytes: int, resume: bool = False) -> ScanResult:
        """Walk every batch from the start, verifying CRCs and offsets; rebuild the index.

        Stops at the first torn or corrupt batch. ``valid_bytes`` is where the good data ends;
        the caller decides to cut there. ``resume``: start where a recovery point (index files
        covering a synced prefix of the file, see ``checkpoint``) ends, adopting that prefix
        as ``load_index`` adopts a sealed segment: its CRCs are checked as reads reach it.
        """
        self._reset()
        file_bytes = self.fs.file_size(self.fd)
        position = self._resume(file_bytes) if resume else 0
        while position < file_bytes:
            chunk = self.fs.pread(self.fd, min(SCAN_CHUNK_BYTES, file_bytes - position), position)
            try:
                consumed = self._scan_chunk(chunk, position, index_interval_bytes)
                if consumed == 0:
                    header = batch_format.parse_header(chunk)
                    if position + header.size > file_bytes:
                        raise CorruptBatch("the last batch is torn")
                    consumed = self._scan_chunk(
                        self.fs.pread(self.fd, header.size, position),
                        position,
                        index_interval_bytes,
                    )
            except CorruptBatch as e:
                self._file_end = self._taken_end = self.size
                return ScanResult(self.size, file_bytes, str(e))
            position += consumed
        self._file_end = self._taken_end = self.size
        return ScanResult(self.size, file_bytes, None)

    def _resume(self, file_bytes: int) -> int:
        """Adopt the recovery point the index files describe, if it is a prefix of the file
        whose batch headers chain up to its end; where the scan goes on (0: from the start)."""
        try:
            index, summary = SparseIndex.decode(
                self.base_offset,
                self.fs.read_file(self._index_path(INDEX_SUFFIX)),
                self.fs.read_file(self._index_path(TIME_INDEX_SUFFIX)),
            )
            covered = summary.covered_log_bytes
            if not index or covered > file_bytes or not self._tail_matches(index, summary):
                return 0
            first = batch_format.parse_header(self.fs.pread(self.fd, HEADER_SIZE, 0))
        except (OSError, InvalidIndex, CorruptBatch):
            return 0
        self.index = index
        self.size = self.checkpointed_bytes = covered
        self.next_offset = summary.next_offset
        self.max_timestamp_ms = summary.max_timestamp_ms
        self.last_append_time_ms = summary.last_append_time_ms
        self.first_append_time_ms = first.append_time_ms
        self._bytes_since_index = covered - index.last_position
        return covered

    def checkpoint(self) -> IndexCheckpoint | None:
        """A recovery point at ``size``, if the active segment grew ``INDEX_CHECKPOINT_BYTES``
        past the last one. Take it only where every byte below ``size`` is on its way to the
        file (a flush job that takes them all), and write it only once they are synced."""
        if self.sealed or self.size - self.checkpointed_bytes < INDEX_CHECKPOINT_BYTES:
            return None
        self.checkpointed_bytes = self.size  # not taken again each round while it waits
        summary = SegmentSummary(
            self.size, self.next_offset, self.max_timestamp_ms, self.last_append_time_ms
        )
        return IndexCheckpoint(self, summary, len(self.index))

    def write_checkpoint(self, checkpoint: IndexCheckpoint) -> bool:
        """Write ``checkpoint``'s index files: the caller knows its bytes are synced. Not
        once the segment is sealed (its full index is on disk) or closed. A hint, as every
        index: not fsynced; a torn one fails its CRC and the next recovery scans it all."""
        if self.sealed or self.closed or checkpoint.summary.covered_log_bytes > self.size:
            return False
        offsets, times = self.index.prefix(checkpoint.entries).encode(checkpoint.summary)
        self.fs.write_file(self._index_path(INDEX_SUFFIX), offsets)
        self.fs.write_file(self._index_path(TIME_INDEX_SUFFIX), times)
        return True

    def _scan_chunk(self, chunk: bytes, position: int, index_interval_bytes: int) -> int:
        """Account the whole, valid batches at the start of ``chunk``; returns bytes consumed.

        One batch at a time, so that every good batch before a bad one is kept.
        """
        consumed = 0
        while len(chunk) - consumed >= HEADER_SIZE:
            header = batch_format.parse_header(chunk, consumed)
            if consumed + header.size > len(chunk):
                break
            batch_format.verify(chunk, consumed, header)
            if header.base_offset != self.next_offset:
                raise CorruptBatch(
                    f"batch at byte {position + consumed} starts at offset {header.base_offset}, "
                    f"expected {self.next_offset}"
                )
            self._account(position + consumed, header, index_interval_bytes)
            consumed += header.size
        return consumed

    def truncate(self, size: int) -> None:
        """Cut the file at ``size``, a batch boundary within the valid data."""
        self.fs.truncate(self.fd, size)

    # -- lifecycle ------------------------------------------------------------------------

    def write_index(self) -> None:
        """Persist the index as a hint (no fsync: a damaged one is rebuilt on open)."""
        offsets, times = self.index.encode(
            SegmentSummary(
                self.size, self.next_offset, self.max_timestamp_ms, self.last_append_time_ms
            )
        )
        self.fs.write_file(self._index_path(INDEX_SUFFIX), offsets)
        self.fs.write_file(self._index_path(TIME_INDEX_SUFFIX), times)

    def remove_index(self) -> None:
        for suffix in (INDEX_SUFFIX, TIME_INDEX_SUFFIX):
            path = self._index_path(suffix)
            if self.fs.exists(path):
                self.fs.remove(path)

    def close(self) -> None:
        self.closed = True
        self._unwritten.clear()
        self._written.clear()
        self.drop_tail()
        self.needs_fdatasync = False
        self.flushing = 0
        for file in (self._file, self._sync_file):
            self.pool.close(file)
            file.opener = _refuse_closed  # a use after close must not recreate the file
            # Its handle no longer refers back to it: a closed segment is freed by reference
            # counting, not left as a cycle for the collector (server/process_tuning.py).
            file.busy = _never_busy

    def delete(self) -> None:
        self.close()
        self.remove_index()
        self.fs.remove(self.path)

    def _index_path(self, suffix: str) -> str:
        return os.path.join(self.directory, file_name(self.base_offset, suffix))
