"""One segment file of a partition log and its in-memory index.

A segment holds the dense run of offsets ``[base_offset, next_offset)`` as whole batches in
``<base_offset>.log``; ``size`` is the byte length of those whole, valid batches. Bytes past
``size`` (a write that failed half way, a torn tail found by recovery) are never read and are cut
before anything is written after them.

Writes go straight to the OS with ``pwrite`` at ``size`` (so a process crash loses nothing the
OS was given); making them durable is the flush's job (log.py), never the append's.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from roost.storage import batch as batch_format
from roost.storage.batch import HEADER_SIZE, BatchHeader, CorruptBatch
from roost.storage.fs import LocalFS
from roost.storage.index import NO_TIMESTAMP, InvalidIndex, SegmentSummary, SparseIndex

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"
#: How much a recovery scan reads per call; batches larger than this are read whole.
SCAN_CHUNK_BYTES = 1024 * 1024


def file_name(base_offset: int, suffix: str) -> str:
    return f"{base_offset:020d}{suffix}"


class ScanResult(NamedTuple):
    valid_bytes: int
    file_bytes: int
    problem: str | None


class Segment:
    def __init__(self, fs: LocalFS, directory: str, base_offset: int, fd: int) -> None:
        self.fs = fs
        self.directory = directory
        self.base_offset = base_offset
        self.path = os.path.join(directory, file_name(base_offset, LOG_SUFFIX))
        self.fd = fd
        self._reset()

    def _reset(self) -> None:
        self.size = 0
        self.next_offset = self.base_offset
        self.first_append_time_ms = NO_TIMESTAMP
        self.last_append_time_ms = NO_TIMESTAMP
        self.max_timestamp_ms = NO_TIMESTAMP
        self.index = SparseIndex(self.base_offset)
        self._bytes_since_index = 0

    @classmethod
    def create(cls, fs: LocalFS, directory: str, base_offset: int) -> Segment:
        """A new, empty segment (an existing file of that name is emptied)."""
        segment = cls(
            fs,
            directory,
            base_offset,
            fs.open_rw(os.path.join(directory, file_name(base_offset, LOG_SUFFIX))),
        )
        fs.truncate(segment.fd, 0)
        return segment

    @classmethod
    def open(cls, fs: LocalFS, directory: str, base_offset: int) -> Segment:
        """Open an existing segment file; call ``load_index`` or ``scan`` before using it."""
        return cls(
            fs,
            directory,
            base_offset,
            fs.open_rw(os.path.join(directory, file_name(base_offset, LOG_SUFFIX))),
        )

    @property
    def record_count(self) -> int:
        return self.next_offset - self.base_offset

    # -- append ---------------------------------------------------------------------------

    def append(self, data: bytes, header: BatchHeader, index_interval_bytes: int) -> None:
        """Write one encoded batch at the end. Raises ``OSError``; the caller fails the log."""
        self.fs.pwrite(self.fd, data, self.size)
        self._account(self.size, header, index_interval_bytes)

    def _account(self, position: int, header: BatchHeader, index_interval_bytes: int) -> None:
        if not self.index or self._bytes_since_index >= index_interval_bytes:
            self.index.add(header.base_offset, position, self.max_timestamp_ms)
            self._bytes_since_index = 0
        self._bytes_since_index += header.size
        if self.first_append_time_ms == NO_TIMESTAMP:
            self.first_append_time_ms = header.append_time_ms
        self.last_append_time_ms = max(self.last_append_time_ms, header.append_time_ms)
        self.max_timestamp_ms = max(self.max_timestamp_ms, header.max_timestamp_ms)
        self.next_offset = header.next_offset
        self.size = position + header.size

    # -- read -----------------------------------------------------------------------------

    def read(self, position: int, max_bytes: int) -> bytes:
        return self.fs.pread(self.fd, min(max_bytes, self.size - position), position)

    def header_at(self, position: int) -> BatchHeader:
        return batch_format.parse_header(self.fs.pread(self.fd, HEADER_SIZE, position))

    def find_batch(self, offset: int) -> tuple[int, BatchHeader | None]:
        """Position and header of the batch holding ``offset``; ``(size, None)`` past the end."""
        position = self.index.position_for_offset(offset)
        while position < self.size:
            header = self.header_at(position)
            if header.next_offset > offset:
                return position, header
            position += header.size
        return self.size, None

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
        self.index = index
        self.size = file_bytes
        self.next_offset = summary.next_offset
        self.max_timestamp_ms = summary.max_timestamp_ms
        self.last_append_time_ms = summary.last_append_time_ms
        if file_bytes:
            self.first_append_time_ms = self.header_at(0).append_time_ms
            self._bytes_since_index = file_bytes - index.last_position
        return True

    def scan(self, index_interval_bytes: int) -> ScanResult:
        """Walk every batch from the start, verifying CRCs and offsets; rebuild the index.

        Stops at the first torn or corrupt batch. ``valid_bytes`` is where the good data ends;
        the caller decides to cut there.
        """
        self._reset()
        file_bytes = self.fs.file_size(self.fd)
        position = 0
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
                return ScanResult(self.size, file_bytes, str(e))
            position += consumed
        return ScanResult(self.size, file_bytes, None)

    def _scan_chunk(self, chunk: bytes, position: int, index_interval_bytes: int) -> int:
        consumed = 0
        for relative, header in batch_format.iter_batches(chunk):
            if header.base_offset != self.next_offset:
                raise CorruptBatch(
                    f"batch at byte {position + relative} starts at offset {header.base_offset}, "
                    f"expected {self.next_offset}"
                )
            self._account(position + relative, header, index_interval_bytes)
            consumed = relative + header.size
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
        if self.fd >= 0:
            self.fs.close(self.fd)
            self.fd = -1

    def delete(self) -> None:
        self.close()
        self.remove_index()
        self.fs.remove(self.path)

    def _index_path(self, suffix: str) -> str:
        return os.path.join(self.directory, file_name(self.base_offset, suffix))
