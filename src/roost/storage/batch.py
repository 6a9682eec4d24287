"""The record batch: the unit written, checksummed, indexed and served.

Layout, little-endian, version 1 (docs/storage-format.md has the same table)::

    offset size  field
    0      4     u32  batch_length     bytes that follow this field: 36 + payload
    4      4     u32  crc32c           Castagnoli CRC of bytes [8, 4 + batch_length)
    8      1     u8   format_version   1
    9      1     u8   attributes       0, or GAP (0x80); other bits reserved (compression)
    10     2     u16  reserved         0
    12     4     u32  record_count     >= 1
    16     8     i64  base_offset      offset of the first record
    24     8     i64  append_time_ms   broker clock when the batch was appended
    32     8     i64  max_timestamp_ms largest record timestamp in the batch
    40     ...        payload          MessagePack array of record_count records, each the
                                       array [offset, timestamp_ms, key, value, headers]
                                       with key bin|nil, value bin, headers [[str, bin], ...]

A **gap batch** (attributes GAP, no payload) holds no records: it covers ``record_count`` offsets
that no record will ever have. Recovery writes one when a cut log must continue past offsets that
subscriptions had already seen (docs/durability.md), so that an offset never names two records.
Readers skip it; the offsets stay dense at the batch level, which is what indexes and scans check.

The CRC covers everything after itself, header fields included, so a flipped bit anywhere in a
batch (but in the length) fails the check, and a flipped length walks the scan off a batch
boundary, where the next check fails. Records carry absolute offsets so that a future compaction
can drop records without rewriting the offsets of those it keeps; within a batch they are dense.

Encoding and decoding run in msgspec's C code, so the Python cost is a few hundred nanoseconds per
record, and the whole batch is one buffer handed to one ``pwrite``.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from operator import itemgetter
from typing import NamedTuple

import msgspec
from crc32c import crc32c

FORMAT_VERSION = 1
HEADER = struct.Struct("<IIBBHIqqq")
HEADER_SIZE = HEADER.size  # 40
_CRC = struct.Struct("<I")
#: Bytes of the header that the batch_length field counts (everything after it).
_LENGTH_FIELD_SIZE = 4
_CRC_START = 8
#: The attributes bit of a gap batch.
GAP = 0x80
#: A gap batch's max_timestamp_ms: below every record's, so no timestamp lookup stops at it.
_NO_TIMESTAMP = -1


class Record(msgspec.Struct, kw_only=True, gc=False):
    """A record to append. ``timestamp_ms=None`` means "the broker's clock at append"."""

    value: bytes
    key: bytes | None = None
    headers: Sequence[tuple[str, bytes]] = ()
    timestamp_ms: int | None = None


class StoredRecord(msgspec.Struct, array_like=True, gc=False, frozen=True):
    """A record as read back: its offset and timestamp are assigned."""

    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]


class BatchHeader(NamedTuple):
    batch_length: int
    crc: int
    format_version: int
    attributes: int
    reserved: int
    record_count: int
    base_offset: int
    append_time_ms: int
    max_timestamp_ms: int

    @property
    def size(self) -> int:
        """Total bytes of the batch, header included."""
        return self.batch_length + _LENGTH_FIELD_SIZE

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.record_count

    @property
    def is_gap(self) -> bool:
        return bool(self.attributes & GAP)


class CorruptBatch(Exception):
    """Bytes that are not a valid batch. Internal to storage: recovery cuts there."""


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(list[StoredRecord])


def encode(
    base_offset: int, records: Sequence[Record], append_time_ms: int
) -> tuple[bytes, BatchHeader]:
    """Encode ``records`` as one batch starting at ``base_offset``; returns it and its header."""
    buffer = bytearray()
    header = encode_into(buffer, base_offset, records, append_time_ms)
    return bytes(buffer), header


def encode_into(
    buffer: bytearray, base_offset: int, records: Sequence[Record], append_time_ms: int
) -> BatchHeader:
    """Encode one batch into ``buffer``, replacing its contents; returns the header.

    Reusing one buffer for every batch spares an allocation (and its page faults) and a copy
    per batch on the write-through path.
    """
    count = len(records)
    rows = [
        (
            base_offset + i,
            append_time_ms if r.timestamp_ms is None else r.timestamp_ms,
            r.key,
            r.value,
            r.headers,
        )
        for i, r in enumerate(records)
    ]
    max_ts_ms = max(rows, key=_timestamp_of_row)[1] if count > 1 else rows[0][1]
    _encoder.encode_into(rows, buffer, HEADER_SIZE)
    length = len(buffer) - _LENGTH_FIELD_SIZE
    HEADER.pack_into(
        buffer,
        0,
        length,
        0,
        FORMAT_VERSION,
        0,
        0,
        count,
        base_offset,
        append_time_ms,
        max_ts_ms,
    )
    crc = crc32c(memoryview(buffer)[_CRC_START:])
    _CRC.pack_into(buffer, 4, crc)
    return BatchHeader(
        length, crc, FORMAT_VERSION, 0, 0, count, base_offset, append_time_ms, max_ts_ms
    )


_timestamp_of_row = itemgetter(1)


def encode_stored(
    records: Sequence[StoredRecord], append_time_ms: int
) -> tuple[bytes, BatchHeader]:
    """One batch of records as read back, offsets and timestamps kept (compaction rewrites the
    records it keeps this way). Their offsets must be dense."""
    base_offset = records[0].offset
    if records[-1].offset - base_offset != len(records) - 1:
        raise ValueError("the records of a batch must have dense offsets")
    buffer = bytearray(HEADER_SIZE)
    _encoder.encode_into(records, buffer, HEADER_SIZE)
    length = len(buffer) - _LENGTH_FIELD_SIZE
    max_ts_ms = max(r.timestamp_ms for r in records)
    fields = (FORMAT_VERSION, 0, 0, len(records), base_offset, append_time_ms, max_ts_ms)
    HEADER.pack_into(buffer, 0, length, 0, *fields)
    crc = crc32c(memoryview(buffer)[_CRC_START:])
    _CRC.pack_into(buffer, 4, crc)
    return bytes(buffer), BatchHeader(length, crc, *fields)


def encode_gap(base_offset: int, count: int, append_time_ms: int) -> tuple[bytes, BatchHeader]:
    """A batch that holds no records and covers ``[base_offset, base_offset + count)``."""
    if count < 1:
        raise ValueError(f"a gap covers at least one offset, not {count}")
    buffer = bytearray(HEADER_SIZE)
    length = HEADER_SIZE - _LENGTH_FIELD_SIZE
    HEADER.pack_into(
        buffer, 0, length, 0, FORMAT_VERSION, GAP, 0, count, base_offset, append_time_ms,
        _NO_TIMESTAMP,
    )  # fmt: skip
    crc = crc32c(memoryview(buffer)[_CRC_START:])
    _CRC.pack_into(buffer, 4, crc)
    header = BatchHeader(
        length, crc, FORMAT_VERSION, GAP, 0, count, base_offset, append_time_ms, _NO_TIMESTAMP
    )
    return bytes(buffer), header


def parse_header(buffer: bytes | memoryview, position: int = 0) -> BatchHeader:
    """Read and sanity-check the header at ``position``; does not verify the CRC."""
    if len(buffer) - position < HEADER_SIZE:
        raise CorruptBatch(f"{len(buffer) - position} bytes left, a header needs {HEADER_SIZE}")
    header = BatchHeader(*HEADER.unpack_from(buffer, position))
    if header.format_version != FORMAT_VERSION:
        raise CorruptBatch(f"unknown batch format version {header.format_version}")
    if header.batch_length < HEADER_SIZE - _LENGTH_FIELD_SIZE or header.record_count < 1:
        raise CorruptBatch(f"impossible batch length {header.batch_length}")
    return header


def verify(buffer: bytes | memoryview, position: int, header: BatchHeader) -> None:
    """Raise ``CorruptBatch`` unless the whole batch is present and its CRC matches."""
    end = position + header.size
    if end > len(buffer):
        raise CorruptBatch(f"batch needs {header.size} bytes, {len(buffer) - position} present")
    actual = crc32c(memoryview(buffer)[position + _CRC_START : end])
    if actual != header.crc:
        raise CorruptBatch(f"crc32c mismatch: stored {header.crc:#010x}, computed {actual:#010x}")


def decode_records(
    buffer: bytes | memoryview, position: int, header: BatchHeader
) -> list[StoredRecord]:
    """Decode the records of a verified batch (none, for a gap)."""
    if header.is_gap:
        if header.size != HEADER_SIZE:
            raise CorruptBatch(f"a gap batch of {header.size} bytes carries a payload")
        return []
    payload = memoryview(buffer)[position + HEADER_SIZE : position + header.size]
    try:
        records = _decoder.decode(payload)
    except (ValueError, RecursionError) as e:
        # msgspec's DecodeError is a ValueError, and so is the UnicodeDecodeError of a key or
        # header name that is not UTF-8: a payload that passed its CRC can still be either.
        raise CorruptBatch(f"undecodable payload: {e}") from e
    if len(records) != header.record_count:
        raise CorruptBatch(f"header says {header.record_count} records, payload has {len(records)}")
    return records


def iter_batches(buffer: bytes | memoryview) -> list[tuple[int, BatchHeader]]:
    """Positions and headers of the whole batches at the start of ``buffer``, CRC-verified.

    Stops quietly at the first incomplete batch (a read that ended mid-batch); raises
    ``CorruptBatch`` at the first batch that is complete but wrong.
    """
    found = []
    position = 0
    while len(buffer) - position >= HEADER_SIZE:
        header = parse_header(buffer, position)
        if position + header.size > len(buffer):
            break
        verify(buffer, position, header)
        found.append((position, header))
        position += header.size
    return found
