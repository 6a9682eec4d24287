"""Sparse offset and timestamp indexes of one segment: hints, never the truth.

In memory an index is three parallel arrays, one entry per indexed batch (the first batch of the
segment, then one every ``index_interval_bytes`` of log):

- ``offsets[i]``   base offset of the indexed batch,
- ``positions[i]`` its byte position in the segment file,
- ``max_ts_before[i]`` the largest record timestamp in all batches *before* it.

An offset lookup takes the last entry at or below the offset and walks batch headers from there.
A timestamp lookup takes the last entry whose ``max_ts_before`` is below the target: no record
before that batch can qualify, so the scan for the first record at or after the target starts
there. Entries are monotonic in all three columns, so both lookups are a bisect.

On disk (docs/storage-format.md), written whole when a segment is sealed or the log is closed
cleanly, never on the append path::

    <base>.index      header, then entries (u32 offset - base, u32 position)
    <base>.timeindex  header, then entries (i64 max_ts_before, u32 offset - base)

    header (52 bytes, little-endian): 4s magic b"RIX1" / b"RTI1", u32 entry_count,
    u32 crc32c of everything after this field (rest of the header and the entries),
    i64 base_offset, u64 covered_log_bytes, i64 next_offset, i64 max_timestamp_ms,
    i64 last_append_time_ms

``covered_log_bytes`` is the segment size the index describes: an index whose size or base offset
disagrees with the log file, or whose CRC or ordering is off, is discarded and rebuilt by scanning
the log. The segment also checks that the batches after the last entry end the file exactly.
"""

from __future__ import annotations

import itertools
import struct
from array import array
from bisect import bisect_left, bisect_right
from typing import NamedTuple

from crc32c import crc32c

_HEADER = struct.Struct("<4sIIqQqqq")
_CRC_START = 12  # magic and entry_count are checked directly; the CRC covers what follows it
_OFFSET_ENTRY = struct.Struct("<II")
_TIME_ENTRY = struct.Struct("<qI")
OFFSET_MAGIC = b"RIX1"
TIME_MAGIC = b"RTI1"
NO_TIMESTAMP = -(2**63)


class SegmentSummary(NamedTuple):
    """What a segment's index header records about the log it covers."""

    covered_log_bytes: int
    next_offset: int
    max_timestamp_ms: int
    last_append_time_ms: int


class InvalidIndex(Exception):
    """An index file that cannot be trusted; the caller rebuilds it from the log."""


class SparseIndex:
    __slots__ = ("base_offset", "max_ts_before", "offsets", "positions")

    def __init__(self, base_offset: int) -> None:
        self.base_offset = base_offset
        self.offsets = array("q")
        self.positions = array("q")
        self.max_ts_before = array("q")

    def __len__(self) -> int:
        return len(self.offsets)

    def add(self, offset: int, position: int, max_ts_before: int) -> None:
        self.offsets.append(offset)
        self.positions.append(position)
        self.max_ts_before.append(max_ts_before)

    @property
    def last_position(self) -> int:
        return self.positions[-1] if self.positions else -1

    def position_for_offset(self, offset: int) -> int:
        """Position of the last indexed batch starting at or before ``offset`` (0 if none)."""
        i = bisect_right(self.offsets, offset) - 1
        return self.positions[i] if i >= 0 else 0

    def position_for_timestamp(self, timestamp_ms: int) -> int:
        """Position from which the first record with timestamp >= ``timestamp_ms`` may follow."""
        i = bisect_left(self.max_ts_before, timestamp_ms) - 1
        return self.positions[i] if i >= 0 else 0

    def truncate_to(self, position: int) -> None:
        """Drop entries for batches at or after ``position`` (the log was cut there)."""
        keep = bisect_left(self.positions, position)
        del self.offsets[keep:], self.positions[keep:], self.max_ts_before[keep:]

    # -- files ---------------------------------------------------------------------------

    def prefix(self, entries: int) -> SparseIndex:
        """A copy holding the first ``entries`` entries."""
        copy = SparseIndex(self.base_offset)
        copy.offsets = self.offsets[:entries]
        copy.positions = self.positions[:entries]
        copy.max_ts_before = self.max_ts_before[:entries]
        return copy

    def encode(self, summary: SegmentSummary) -> tuple[bytes, bytes]:
        base = self.base_offset
        offset_entries = b"".join(
            _OFFSET_ENTRY.pack(o - base, p)
            for o, p in zip(self.offsets, self.positions, strict=True)
        )
        time_entries = b"".join(
            _TIME_ENTRY.pack(t, o - base)
            for t, o in zip(self.max_ts_before, self.offsets, strict=True)
        )
        return (
            _pack(OFFSET_MAGIC, len(self), base, offset_entries, summary),
            _pack(TIME_MAGIC, len(self), base, time_entries, summary),
        )

    @classmethod
    def decode(
        cls, base_offset: int, offset_file: bytes, time_file: bytes
    ) -> tuple[SparseIndex, SegmentSummary]:
        """Rebuild an index from its two files, or raise ``InvalidIndex``."""
        summary, offset_entries = _read(OFFSET_MAGIC, base_offset, offset_file, _OFFSET_ENTRY)
        time_summary, time_entries = _read(TIME_MAGIC, base_offset, time_file, _TIME_ENTRY)
        if summary != time_summary or len(offset_entries) != len(time_entries):
            raise InvalidIndex("offset and timestamp indexes describe different logs")
        index = cls(base_offset)
        for (relative, position), (max_ts_before, relative_too) in zip(
            offset_entries, time_entries, strict=True
        ):
            if relative != relative_too:
                raise InvalidIndex("offset and timestamp index entries disagree")
            index.add(base_offset + relative, position, max_ts_before)
        for column in (index.offsets, index.positions, index.max_ts_before):
            if any(a > b for a, b in itertools.pairwise(column)):
                raise InvalidIndex("index entries are not in order")
        if index.positions and (
            index.positions[0] != 0 or index.positions[-1] >= summary.covered_log_bytes
        ):
            raise InvalidIndex("index positions fall outside the log")
        return index, summary


def _pack(magic: bytes, count: int, base: int, entries: bytes, summary: SegmentSummary) -> bytes:
    header = bytearray(_HEADER.pack(magic, count, 0, base, *summary))
    crc = crc32c(entries, crc32c(memoryview(header)[_CRC_START:]))
    struct.pack_into("<I", header, 8, crc)
    return bytes(header) + entries


def _read(
    magic: bytes, base_offset: int, data: bytes, entry: struct.Struct
) -> tuple[SegmentSummary, list[tuple[int, ...]]]:
    if len(data) < _HEADER.size:
        raise InvalidIndex("index file shorter than its header")
    found_magic, count, crc, found_base, *summary = _HEADER.unpack_from(data)
    entries = memoryview(data)[_HEADER.size :]
    if found_magic != magic:
        raise InvalidIndex(f"bad index magic {found_magic!r}")
    if len(entries) != count * entry.size or crc32c(memoryview(data)[_CRC_START:]) != crc:
        raise InvalidIndex("index is torn or corrupt")
    if found_base != base_offset:
        raise InvalidIndex(f"index of segment {found_base}, not {base_offset}")
    return SegmentSummary(*summary), list(entry.iter_unpack(entries))
