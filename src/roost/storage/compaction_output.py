"""What a compaction pass reads and writes, batch by batch (storage/compaction.py).

- ``read_rows`` decodes a batch light: each record's offset, timestamp and key, its value left
  as raw MessagePack (no copy), its headers skipped. What the pass decides needs no more.
- ``SegmentRewrite`` writes a segment's new file under its temporary name: the records kept,
  as batches of dense runs (a batch kept whole copied byte for byte), and each run of dropped
  offsets as one gap batch, so the file covers exactly the old one's offsets. Its ``segment``
  accounts every batch written (offsets, index, times) for the name the file will have once
  swapped in; its descriptors are never opened here.

Everything here runs in the pass's threads.
"""

from __future__ import annotations

import contextlib
from operator import attrgetter

import msgspec

from roost.storage import batch as batch_format
from roost.storage.batch import HEADER_SIZE, BatchHeader, CorruptBatch, StoredRecord
from roost.storage.fd_pool import FdPool
from roost.storage.fs import LocalFS
from roost.storage.segment import Segment

#: Kept records are written in batches of about this many bytes.
OUTPUT_BATCH_BYTES = 256 * 1024


class SegmentRewrite:
    """A segment's new file being written: kept runs as batches, dropped runs as gaps (see
    the module docstring)."""

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


class Row(msgspec.Struct, array_like=True, gc=False):
    """A record decoded light: the value left raw, the headers skipped (an array-like
    struct ignores trailing elements it does not name)."""

    offset: int
    timestamp_ms: int
    key: bytes | None
    value: msgspec.Raw


ROWS = msgspec.msgpack.Decoder(list[Row])
key_of = attrgetter("key")
#: An empty MessagePack bin (a tombstone's value) as encoded: bin 8, 16 or 32 of length 0.
_EMPTY_VALUES = (b"\xc4\x00", b"\xc5\x00\x00", b"\xc6\x00\x00\x00\x00")
_MAX_EMPTY = 5


#: What a pass knows of a batch once read: position, header, its records decoded light (their
#: values point into the chunk read: a segment's plan holds at most that segment's bytes).
Planned = tuple[int, BatchHeader, list[Row]]


def read_rows(data: memoryview, header: BatchHeader) -> list[Row]:
    if header.is_gap:
        return []
    try:
        rows = ROWS.decode(data[HEADER_SIZE:])
    except (ValueError, RecursionError) as e:
        raise CorruptBatch(f"undecodable payload: {e}") from e
    if len(rows) != header.record_count:
        raise CorruptBatch(f"header says {header.record_count} records, payload has {len(rows)}")
    return rows


def is_empty(value: msgspec.Raw) -> bool:
    return len(value) <= _MAX_EMPTY and bytes(value) in _EMPTY_VALUES
