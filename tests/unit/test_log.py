"""A partition log through the engine: append, read, roll, indexes, retention, errors."""

from __future__ import annotations

import os

import pytest

from roost.clock import ManualClock
from roost.errors import (
    InvalidRequest,
    OffsetOutOfRange,
    RecordTooLarge,
    StorageClosed,
    UnknownPartition,
)
from roost.storage import LocalEngine, Record, Topic, TopicConfig
from roost.storage.batch import iter_batches

SMALL_SEGMENTS = TopicConfig(
    segment_max_bytes=4096, max_record_bytes=2048, index_interval_bytes=512
)


def values(topic: Topic, partition: int = 0, offset: int | None = None) -> list[bytes]:
    """Every value from ``offset`` (default: the start) to the end, across segments."""
    offset = topic.start_offset(partition) if offset is None else offset
    found = []
    while offset < topic.end_offset(partition):
        records = topic.read(partition, offset)
        found += [r.value for r in records]
        offset = records[-1].offset + 1
    return found


def test_append_assigns_dense_offsets_and_reads_back(engine: LocalEngine) -> None:
    topic = engine.create_topic("orders", TopicConfig(partitions=2))
    first = topic.append(0, [Record(value=b"a"), Record(value=b"b", key=b"k")])
    second = topic.append(0, [Record(value=b"c", headers=[("trace", b"1"), ("é", b"")])])
    other = topic.append(1, [Record(value=b"z")])

    assert (first.base_offset, first.next_offset, first.last_offset) == (0, 2, 1)
    assert (second.base_offset, second.next_offset) == (2, 3)
    assert other.base_offset == 0
    records = topic.read(0, 0)
    assert [(r.offset, r.key, r.value) for r in records] == [
        (0, None, b"a"),
        (1, b"k", b"b"),
        (2, None, b"c"),
    ]
    assert records[2].headers == (("trace", b"1"), ("é", b""))
    assert topic.read(0, 1, max_records=1)[0].value == b"b"
    assert topic.read(0, 3) == []


def test_timestamps_default_to_the_broker_clock(engine: LocalEngine, clock: ManualClock) -> None:
    topic = engine.create_topic("t")
    topic.append(0, [Record(value=b"now"), Record(value=b"given", timestamp_ms=5)])
    now, given = topic.read(0, 0)
    assert now.timestamp_ms == clock.now_ms()
    assert given.timestamp_ms == 5


def test_segments_roll_by_size_and_reads_cross_them(engine: LocalEngine) -> None:
    topic = engine.create_topic("t", SMALL_SEGMENTS)
    expected = [bytes([i]) * 300 for i in range(60)]
    for value in expected:
        topic.append(0, [Record(value=value)])
    info = topic.describe().partitions[0]
    assert info.segments > 3
    assert values(topic) == expected
    for offset in (0, 13, 14, 37, 59):
        assert topic.read(0, offset, max_records=1)[0].value == expected[offset]


def test_segments_roll_by_age(engine: LocalEngine, clock: ManualClock) -> None:
    topic = engine.create_topic("t", TopicConfig(segment_max_age_ms=1000))
    topic.append(0, [Record(value=b"old")])
    clock.advance(999)
    topic.append(0, [Record(value=b"still young")])
    assert topic.describe().partitions[0].segments == 1
    clock.advance(1)
    topic.append(0, [Record(value=b"new segment")])
    assert topic.describe().partitions[0].segments == 2
    assert values(topic) == [b"old", b"still young", b"new segment"]


def test_read_batches_returns_whole_verified_batches(engine: LocalEngine) -> None:
    topic = engine.create_topic("t")
    topic.append(0, [Record(value=b"a"), Record(value=b"b")])
    topic.append(0, [Record(value=b"c")])
    raw = topic.read_batches(0, 1, max_bytes=1)
    batches = iter_batches(raw.data)
    # The batch holding offset 1 starts at 0: batches are never split; at least one is returned.
    assert [h.base_offset for _, h in batches] == [0]
    assert raw.next_offset == 2
    assert topic.read_batches(0, 2).next_offset == 3
    assert topic.read_batches(0, 3).data == b""


def test_read_batches_cuts_at_max_records_and_end_offset(engine: LocalEngine) -> None:
    topic = engine.create_topic("t")
    for first in range(0, 12, 4):  # batches [0, 4), [4, 8), [8, 12)
        topic.append(0, [Record(value=bytes([i])) for i in range(first, first + 4)])

    def bases(data: bytes) -> list[int]:
        return [h.base_offset for _, h in iter_batches(data)]

    raw = topic.read_batches(0, 0, max_records=6)
    assert (bases(raw.data), raw.next_offset) == ([0, 4], 6), "the batch holding offset 5 whole"
    raw = topic.read_batches(0, 1, max_records=100, end_offset=8)
    assert (bases(raw.data), raw.next_offset) == ([0, 4], 8), "nothing at or past end_offset"
    raw = topic.read_batches(0, 4, end_offset=4)
    assert raw == (b"", 4, 4)
    # A read that ends inside a batch keeps only the whole batches before it.
    one_batch = len(topic.read_batches(0, 0, max_records=1).data)
    raw = topic.read_batches(0, 0, max_bytes=one_batch + 10)
    assert (bases(raw.data), raw.next_offset) == ([0], 4)
    assert len(raw.data) == one_batch


def test_offset_for_timestamp(engine: LocalEngine, clock: ManualClock) -> None:
    topic = engine.create_topic("t", SMALL_SEGMENTS)
    start = clock.now_ms()
    for _i in range(40):
        topic.append(0, [Record(value=b"x" * 200)])
        clock.advance(10)
    assert topic.offset_for_timestamp(0, 0) == 0
    assert topic.offset_for_timestamp(0, start) == 0
    assert topic.offset_for_timestamp(0, start + 1) == 1
    assert topic.offset_for_timestamp(0, start + 215) == 22
    assert topic.offset_for_timestamp(0, start + 390) == 39
    assert topic.offset_for_timestamp(0, start + 391) is None


def test_offset_for_timestamp_with_out_of_order_timestamps(engine: LocalEngine) -> None:
    topic = engine.create_topic("t", SMALL_SEGMENTS)
    stamps = [50, 10, 70, 20, 90, 30, 60]
    for stamp in stamps:
        topic.append(0, [Record(value=b"y" * 600, timestamp_ms=stamp)])
    for target in range(0, 100, 5):
        expected = next((i for i, s in enumerate(stamps) if s >= target), None)
        assert topic.offset_for_timestamp(0, target) == expected


def test_retention_by_time_deletes_whole_old_segments(
    engine: LocalEngine, clock: ManualClock
) -> None:
    config = TopicConfig(segment_max_bytes=4096, max_record_bytes=2048, retention_ms=60_000)
    topic = engine.create_topic("t", config)
    for _ in range(20):
        topic.append(0, [Record(value=b"o" * 500)])
    clock.advance(30_000)
    for _ in range(20):
        topic.append(0, [Record(value=b"n" * 500)])
    assert topic.enforce_retention() == 0
    clock.advance(30_001)
    deleted = topic.enforce_retention()
    assert deleted > 0
    remaining = values(topic)
    assert topic.start_offset(0) > 0
    assert set(remaining[-20:]) == {b"n" * 500}
    assert len(remaining) == topic.end_offset(0) - topic.start_offset(0)
    with pytest.raises(OffsetOutOfRange):
        topic.read(0, 0)


def test_retention_by_size_keeps_at_least_the_limit(engine: LocalEngine) -> None:
    config = TopicConfig(segment_max_bytes=4096, max_record_bytes=2048, retention_bytes=10_000)
    topic = engine.create_topic("t", config)
    for _ in range(100):
        topic.append(0, [Record(value=b"s" * 500)])
    before = topic.describe().partitions[0].size_bytes
    assert topic.enforce_retention() > 0
    after = topic.describe().partitions[0].size_bytes
    assert 10_000 <= after < before
    assert after - 4096 < 10_000


def test_delete_below_removes_consumed_segments_only(engine: LocalEngine) -> None:
    topic = engine.create_topic("t", SMALL_SEGMENTS)
    for i in range(60):
        topic.append(0, [Record(value=bytes([i]) * 300)])
    assert topic.delete_below(0, 0) == 0
    deleted = topic.delete_below(0, 30)
    assert deleted > 0
    start = topic.start_offset(0)
    assert 0 < start <= 30
    assert values(topic)[30 - start] == bytes([30]) * 300
    # The active segment is never deleted, even when everything is consumed.
    topic.delete_below(0, 60)
    assert topic.describe().partitions[0].segments == 1
    assert topic.start_offset(0) <= 60


def test_retention_survives_reopen(data_dir: str, clock: ManualClock) -> None:
    engine = LocalEngine.open(data_dir, clock)
    topic = engine.create_topic("t", SMALL_SEGMENTS)
    for i in range(60):
        topic.append(0, [Record(value=bytes([i]) * 300)])
    topic.delete_below(0, 30)
    start = topic.start_offset(0)
    engine.close()
    engine = LocalEngine.open(data_dir, clock)
    topic = engine.topic("t")
    assert topic.start_offset(0) == start
    assert topic.end_offset(0) == 60
    assert values(topic)[0] == bytes([start]) * 300
    engine.close()


def test_record_too_large_names_the_limit(engine: LocalEngine) -> None:
    topic = engine.create_topic("t", TopicConfig(max_record_bytes=100))
    topic.append(0, [Record(value=b"k" * 50, key=b"k" * 50)])
    with pytest.raises(RecordTooLarge) as raised:
        topic.append(0, [Record(value=b"x" * 90, key=b"y" * 11)])
    assert raised.value.limit_bytes == 100
    assert raised.value.size_bytes == 101
    assert "100 bytes" in str(raised.value)
    assert raised.value.code == "record_too_large"
    assert topic.end_offset(0) == 1, "a refused batch appends nothing"


def test_offset_out_of_range(engine: LocalEngine) -> None:
    topic = engine.create_topic("t")
    topic.append(0, [Record(value=b"a")])
    with pytest.raises(OffsetOutOfRange) as raised:
        topic.read(0, 5)
    assert (raised.value.start_offset, raised.value.end_offset) == (0, 1)
    with pytest.raises(OffsetOutOfRange):
        topic.read(0, -1)
    with pytest.raises(OffsetOutOfRange):
        topic.read_batches(0, 2)


@pytest.mark.parametrize(
    "record",
    [
        Record(value="text"),  # type: ignore[arg-type]
        Record(value=b"v", key="text"),  # type: ignore[arg-type]
        Record(value=b"v", headers=[("name", "text")]),  # type: ignore[list-item]
        Record(value=b"v", headers=[(b"name", b"v")]),  # type: ignore[list-item]
        Record(value=b"v", headers=["pair"]),  # type: ignore[list-item]
        Record(value=b"v", headers=None),  # type: ignore[arg-type]
        Record(value=b"v", headers={"a": b"b"}),  # type: ignore[arg-type]
        Record(value=b"v", headers=[("\ud800", b"lone surrogate")]),
        Record(value=b"v", timestamp_ms=-1),
        Record(value=b"v", timestamp_ms=1.5),  # type: ignore[arg-type]
    ],
)
def test_bad_records_are_refused_and_nothing_is_appended(
    engine: LocalEngine, record: Record
) -> None:
    topic = engine.create_topic("t")
    with pytest.raises(InvalidRequest):
        topic.append(0, [Record(value=b"fine"), record])
    assert topic.end_offset(0) == 0


def test_empty_append_and_unknown_partition(engine: LocalEngine) -> None:
    topic = engine.create_topic("t", TopicConfig(partitions=2))
    with pytest.raises(InvalidRequest):
        topic.append(0, [])
    with pytest.raises(UnknownPartition) as raised:
        topic.append(2, [Record(value=b"x")])
    assert "0..1" in str(raised.value)


def test_closed_log_refuses_reads_and_writes(engine: LocalEngine) -> None:
    topic = engine.create_topic("t")
    log = topic.log(0)
    log.close()
    with pytest.raises(StorageClosed):
        log.append([Record(value=b"x")])
    with pytest.raises(StorageClosed):
        log.read(0)


def test_index_files_are_written_on_roll_and_close(engine: LocalEngine, data_dir: str) -> None:
    topic = engine.create_topic("t", SMALL_SEGMENTS)
    for _ in range(30):
        topic.append(0, [Record(value=b"i" * 300)])
    names = os.listdir(os.path.join(data_dir, "topics", "t", "0"))
    logs = sorted(n for n in names if n.endswith(".log"))
    indexes = sorted(n for n in names if n.endswith(".index"))
    assert len(indexes) == len(logs) - 1, "sealed segments have their index; the active not yet"
    engine.close()
    names = os.listdir(os.path.join(data_dir, "topics", "t", "0"))
    assert len([n for n in names if n.endswith(".timeindex")]) == len(logs)
