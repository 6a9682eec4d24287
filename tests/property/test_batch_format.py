"""The record batch format (roost.storage.batch): round trips, golden bytes, corruption, tears.

What is pinned here:

- ``encode`` -> ``parse_header`` / ``verify`` / ``decode_records`` / ``iter_batches`` gives back
  every record exactly (keys None and b"", empty and ~100 KiB values, unicode header names beyond
  the BMP, empty header values), with dense absolute offsets and the header fields right.
- The bytes of one small batch, field by field, so that any change to the format shows up here.
- A single flipped bit anywhere in a batch is caught (``CorruptBatch``); a flip in the length
  field may instead make the batch look incomplete, but never yields a batch at that position.
- A buffer that ends mid-batch yields the whole batches before the tear, quietly.
"""

from __future__ import annotations

import contextlib
import itertools
import struct
from collections.abc import Sequence

import msgspec
import pytest
from crc32c import crc32c
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roost.storage import batch
from roost.storage.batch import (
    FORMAT_VERSION,
    HEADER_SIZE,
    BatchHeader,
    CorruptBatch,
    Record,
    StoredRecord,
)

MAX_I64 = 2**63 - 1
LARGE_BYTES = 100 * 1024

# -- strategies ---------------------------------------------------------------------------------


def _repeat(seed: bytes, size: int) -> bytes:
    """``size`` bytes made of ``seed`` repeated: large values without a large hypothesis buffer."""
    return (seed * (size // len(seed) + 1))[:size]


large_bytes = st.builds(
    _repeat, st.binary(min_size=1, max_size=16), st.integers(LARGE_BYTES - 64, LARGE_BYTES)
)
values = st.one_of(st.just(b""), st.binary(max_size=64), large_bytes)
keys = st.one_of(st.none(), st.just(b""), st.binary(max_size=64), large_bytes)
header_names = st.one_of(
    st.sampled_from(["", "a", "content-type", "é", "日本語", "𝄞", "🦜roost", "\U0010fffd"]),
    st.text(max_size=20),  # any code point but lone surrogates, which UTF-8 cannot carry
)
header_values = st.one_of(st.just(b""), st.binary(max_size=32))
headers = st.lists(st.tuples(header_names, header_values), max_size=4)
timestamps = st.one_of(st.none(), st.integers(0, 2**62))
base_offsets = st.integers(0, 2**62)
append_times = st.integers(0, 2**62)


@st.composite
def records(draw: st.DrawFn, large: bool = True) -> Record:
    return Record(
        value=draw(values if large else st.binary(max_size=24)),
        key=draw(keys if large else st.one_of(st.none(), st.binary(max_size=8))),
        headers=draw(
            headers if large else st.lists(st.tuples(header_names, header_values), max_size=2)
        ),
        timestamp_ms=draw(timestamps),
    )


record_lists = st.lists(records(), min_size=1, max_size=6)
small_record_lists = st.lists(records(large=False), min_size=1, max_size=4)

# -- helpers ------------------------------------------------------------------------------------


def expected(base_offset: int, rs: Sequence[Record], append_time_ms: int) -> list[StoredRecord]:
    return [
        StoredRecord(
            offset=base_offset + i,
            timestamp_ms=append_time_ms if r.timestamp_ms is None else r.timestamp_ms,
            key=r.key,
            value=r.value,
            headers=tuple((name, value) for name, value in r.headers),
        )
        for i, r in enumerate(rs)
    ]


def encode_run(
    base_offset: int, batches: Sequence[tuple[Sequence[Record], int]]
) -> tuple[bytes, list[tuple[int, BatchHeader]], list[StoredRecord]]:
    """Encode consecutive batches with dense offsets; returns the buffer, positions, records."""
    parts, layout, stored = [], [], []
    position, offset = 0, base_offset
    for rs, append_time_ms in batches:
        data, header = batch.encode(offset, rs, append_time_ms)
        parts.append(data)
        layout.append((position, header))
        stored.extend(expected(offset, rs, append_time_ms))
        position += len(data)
        offset += len(rs)
    return b"".join(parts), layout, stored


def reference_batch(
    payload: bytes, record_count: int, base_offset: int, append_time_ms: int, max_ts_ms: int
) -> bytes:
    """The documented layout, packed independently of the code under test."""
    covered = struct.pack(
        "<BBHIqqq", FORMAT_VERSION, 0, 0, record_count, base_offset, append_time_ms, max_ts_ms
    )
    body = covered + payload
    return struct.pack("<II", len(body) + 4, crc32c(body)) + body


def decode_all(buffer: bytes | memoryview) -> list[StoredRecord]:
    return [
        record
        for position, header in batch.iter_batches(buffer)
        for record in batch.decode_records(buffer, position, header)
    ]


# -- round trips --------------------------------------------------------------------------------


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(base_offsets, record_lists, append_times)
def test_one_batch_round_trips_with_its_header(
    base_offset: int, rs: list[Record], append_time_ms: int
) -> None:
    data, header = batch.encode(base_offset, rs, append_time_ms)
    want = expected(base_offset, rs, append_time_ms)

    assert header == batch.parse_header(data)
    assert header.size == len(data)
    assert header.batch_length == len(data) - 4
    assert header.crc == crc32c(data[8:])
    assert header.format_version == FORMAT_VERSION
    assert (header.attributes, header.reserved) == (0, 0)
    assert header.record_count == len(rs)
    assert header.base_offset == base_offset
    assert header.next_offset == base_offset + len(rs)
    assert header.append_time_ms == append_time_ms
    assert header.max_timestamp_ms == max(r.timestamp_ms for r in want)

    batch.verify(data, 0, header)
    assert batch.decode_records(data, 0, header) == want
    assert batch.iter_batches(data) == [(0, header)]

    rows = [(r.offset, r.timestamp_ms, r.key, r.value, r.headers) for r in want]
    assert data == reference_batch(
        msgspec.msgpack.encode(rows),
        len(rs),
        base_offset,
        append_time_ms,
        header.max_timestamp_ms,
    )


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(base_offsets, record_lists, append_times), min_size=1, max_size=4))
def test_encoding_into_a_reused_buffer_gives_the_same_bytes(
    batches: list[tuple[int, list[Record], int]],
) -> None:
    """The log reuses one scratch buffer; what a larger batch left in it must not leak."""
    buffer = bytearray()
    for base_offset, rs, append_time_ms in batches:
        header = batch.encode_into(buffer, base_offset, rs, append_time_ms)
        assert (bytes(buffer), header) == batch.encode(base_offset, rs, append_time_ms)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(
    base_offsets,
    st.lists(st.tuples(record_lists, append_times), min_size=1, max_size=5),
    st.binary(max_size=8),
)
def test_concatenated_batches_round_trip_with_dense_offsets(
    base_offset: int, batches: list[tuple[list[Record], int]], prefix: bytes
) -> None:
    buffer, layout, want = encode_run(base_offset, batches)

    assert batch.iter_batches(buffer) == layout
    assert batch.iter_batches(memoryview(buffer)) == layout
    got = decode_all(buffer)
    assert got == want
    assert [r.offset for r in got] == list(range(base_offset, base_offset + len(want)))
    for (position, header), (next_position, _) in itertools.pairwise(layout):
        assert position + header.size == next_position

    # Positions are relative to the buffer: a batch read at a byte position inside a larger
    # buffer parses, verifies and decodes the same as on its own.
    shifted = prefix + buffer
    for position, header in layout:
        assert batch.parse_header(shifted, len(prefix) + position) == header
        batch.verify(shifted, len(prefix) + position, header)
        assert batch.decode_records(shifted, len(prefix) + position, header) == [
            r for r in want if header.base_offset <= r.offset < header.next_offset
        ]


def test_empty_and_large_fields_round_trip() -> None:
    big = _repeat(b"\x00\xffroost", LARGE_BYTES)
    rs = [
        Record(value=b""),
        Record(value=b"", key=b""),
        Record(value=big, key=big, headers=[("𝄞🦜", big), ("", b""), ("日本", b"")]),
        Record(value=b"v", key=None, headers=(("a", b"1"), ("a", b"2")), timestamp_ms=0),
        Record(value=b"late", timestamp_ms=2**62),
    ]
    data, header = batch.encode(0, rs, 5)
    got = batch.decode_records(data, 0, header)
    assert got == expected(0, rs, 5)
    assert got[0].key is None and got[1].key == b""
    assert got[2].headers == (("𝄞🦜", big), ("", b""), ("日本", b""))
    assert header.max_timestamp_ms == 2**62
    assert [r.timestamp_ms for r in got] == [5, 5, 5, 0, 2**62]


def test_max_timestamp_is_the_largest_not_the_last() -> None:
    rs = [Record(value=b"", timestamp_ms=t) for t in (30, 90, 10)]
    _, header = batch.encode(0, rs, 50)
    assert header.max_timestamp_ms == 90
    _, header = batch.encode(0, [Record(value=b"", timestamp_ms=10)], 50)
    assert header.max_timestamp_ms == 10  # the record's own timestamp, even if older
    _, header = batch.encode(0, [Record(value=b""), Record(value=b"", timestamp_ms=10)], 50)
    assert header.max_timestamp_ms == 50  # None means the append time


# -- golden bytes -------------------------------------------------------------------------------

GOLDEN_RECORDS = [
    Record(value=b"hello", key=b"k", headers=[("h", b"x")], timestamp_ms=1_700_000_000_123),
    Record(value=b""),
]
GOLDEN_BASE_OFFSET = 7
GOLDEN_APPEND_TIME_MS = 1_700_000_000_456
GOLDEN_BATCH = bytes.fromhex(
    "50000000"  # batch_length 80 = 36 + 44 bytes of payload
    "5b315a35"  # crc32c 0x355a315b of everything from the next byte on
    "01"  # format_version
    "00"  # attributes
    "0000"  # reserved
    "02000000"  # record_count
    "0700000000000000"  # base_offset 7
    "c869e5cf8b010000"  # append_time_ms 1_700_000_000_456
    "c869e5cf8b010000"  # max_timestamp_ms: the append time, which the second record takes
    # payload: MessagePack [[offset, timestamp_ms, key, value, headers], ...]
    "92"  # array of 2 records
    "95" "07" "cf0000018bcfe5687b" "c4016b" "c40568656c6c6f" "91" "92" "a168" "c40178"
    "95" "08" "cf0000018bcfe569c8" "c0" "c400" "90"
)  # fmt: skip


def test_golden_bytes() -> None:
    data, header = batch.encode(GOLDEN_BASE_OFFSET, GOLDEN_RECORDS, GOLDEN_APPEND_TIME_MS)
    assert data.hex() == GOLDEN_BATCH.hex()
    assert header == BatchHeader(
        batch_length=80,
        crc=0x355A315B,
        format_version=1,
        attributes=0,
        reserved=0,
        record_count=2,
        base_offset=7,
        append_time_ms=GOLDEN_APPEND_TIME_MS,
        max_timestamp_ms=GOLDEN_APPEND_TIME_MS,
    )
    assert batch.decode_records(GOLDEN_BATCH, 0, header) == [
        StoredRecord(7, 1_700_000_000_123, b"k", b"hello", (("h", b"x"),)),
        StoredRecord(8, GOLDEN_APPEND_TIME_MS, None, b"", ()),
    ]


def test_header_layout_matches_the_documented_offsets() -> None:
    assert HEADER_SIZE == 40
    fields = struct.unpack_from("<IIBBHIqqq", GOLDEN_BATCH)
    assert fields == tuple(batch.parse_header(GOLDEN_BATCH))


# -- corruption ---------------------------------------------------------------------------------

LENGTH_FIELD = range(4)


@settings(max_examples=300)
@given(
    st.lists(st.tuples(small_record_lists, append_times), min_size=1, max_size=4),
    st.data(),
)
def test_any_flipped_bit_is_caught(
    batches: list[tuple[list[Record], int]], data: st.DataObject
) -> None:
    buffer, layout, _ = encode_run(0, batches)
    victim = data.draw(st.integers(0, len(layout) - 1), label="batch")
    position, header = layout[victim]
    byte = data.draw(st.integers(0, header.size - 1), label="byte in batch")
    bit = data.draw(st.integers(0, 7), label="bit")
    damaged = bytearray(buffer)
    damaged[position + byte] ^= 1 << bit
    damaged_bytes = bytes(damaged)

    if byte not in LENGTH_FIELD:
        with pytest.raises(CorruptBatch):
            batch.verify(damaged_bytes, position, batch.parse_header(damaged_bytes, position))
        with pytest.raises(CorruptBatch):
            batch.iter_batches(damaged_bytes)
        return

    # A flipped length either fails the check or makes the batch look longer than the buffer
    # (a torn tail, skipped quietly): never a valid batch at that position, nor after it.
    try:
        found = batch.iter_batches(damaged_bytes)
    except CorruptBatch:
        return
    assert found == layout[:victim]
    wrong = batch.parse_header(damaged_bytes, position)
    assert position + wrong.size > len(damaged_bytes)


def test_every_flipped_bit_of_the_golden_batch_is_caught() -> None:
    for byte in range(len(GOLDEN_BATCH)):
        for bit in range(8):
            damaged = bytearray(GOLDEN_BATCH)
            damaged[byte] ^= 1 << bit
            if byte in LENGTH_FIELD:
                with contextlib.suppress(CorruptBatch):
                    assert batch.iter_batches(bytes(damaged)) == [], (byte, bit)
            else:
                with pytest.raises(CorruptBatch):
                    batch.iter_batches(bytes(damaged))


def test_impossible_headers_are_rejected() -> None:
    def with_field(fmt: str, at: int, value: int) -> bytes:
        damaged = bytearray(GOLDEN_BATCH)
        struct.pack_into(fmt, damaged, at, value)
        return bytes(damaged)

    with pytest.raises(CorruptBatch, match="version"):
        batch.parse_header(with_field("<B", 8, 2))
    with pytest.raises(CorruptBatch, match="length"):
        batch.parse_header(with_field("<I", 0, HEADER_SIZE - 5))
    with pytest.raises(CorruptBatch):
        batch.parse_header(with_field("<I", 12, 0))  # no records
    with pytest.raises(CorruptBatch):
        batch.parse_header(GOLDEN_BATCH[: HEADER_SIZE - 1])
    with pytest.raises(CorruptBatch):
        batch.verify(GOLDEN_BATCH[:-1], 0, batch.parse_header(GOLDEN_BATCH))


def test_a_checksummed_payload_that_disagrees_with_its_header_is_corrupt() -> None:
    """A batch whose CRC matches but whose payload is wrong still fails at decode."""
    one_row = msgspec.msgpack.encode([(0, 1, None, b"a", ())])
    data = reference_batch(one_row, 2, 0, 1, 1)  # the header claims two records
    header = batch.parse_header(data)
    batch.verify(data, 0, header)
    with pytest.raises(CorruptBatch, match="records"):
        batch.decode_records(data, 0, header)
    data = reference_batch(b"\xc1 not msgpack", 1, 0, 1, 1)
    header = batch.parse_header(data)
    batch.verify(data, 0, header)
    with pytest.raises(CorruptBatch, match="undecodable"):
        batch.decode_records(data, 0, header)


# -- torn tails ---------------------------------------------------------------------------------


@settings(max_examples=200)
@given(
    st.lists(st.tuples(small_record_lists, append_times), min_size=1, max_size=4),
    st.data(),
)
def test_a_torn_tail_yields_the_whole_batches_before_it(
    batches: list[tuple[list[Record], int]], data: st.DataObject
) -> None:
    buffer, layout, want = encode_run(0, batches)
    cut = data.draw(st.integers(0, len(buffer)), label="cut")
    whole = [(p, h) for p, h in layout if p + h.size <= cut]
    assert batch.iter_batches(buffer[:cut]) == whole
    kept = sum(h.record_count for _, h in whole)
    assert decode_all(buffer[:cut]) == want[:kept]


def test_every_cut_of_two_batches_is_quiet() -> None:
    first, _ = batch.encode(0, [Record(value=b"a"), Record(value=b"b", key=b"")], 1)
    second, _ = batch.encode(2, [Record(value=b"c", headers=[("𝄞", b"")])], 2)
    buffer = first + second
    for cut in range(len(buffer) + 1):
        found = batch.iter_batches(buffer[:cut])
        expected_count = (cut >= len(first)) + (cut == len(buffer))
        assert len(found) == expected_count, cut
