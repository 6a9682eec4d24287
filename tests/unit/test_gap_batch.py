"""Gap batches (roost.storage.batch ``encode_gap``, ``PartitionLog.skip_to``): offsets no record
will ever have. Readers skip them, scans and indexes accept them, and they survive a crash."""

from __future__ import annotations

import pytest

from roost.client.batches import decode_fetched
from roost.clock import ManualClock
from roost.protocols.native import messages as m
from roost.storage import LocalEngine, Record
from roost.storage import batch as batch_format
from roost.storage.batch import CorruptBatch, iter_batches
from roost.storage.config import TopicConfig


def _values(n: int, first: int = 0) -> list[Record]:
    return [Record(value=b"v%d" % i) for i in range(first, first + n)]


def test_a_gap_batch_is_checked_like_any_other_and_holds_no_records() -> None:
    data, header = batch_format.encode_gap(40, 7, 1_000)

    [(position, parsed)] = iter_batches(data)
    assert parsed == header
    assert (parsed.is_gap, parsed.base_offset, parsed.next_offset) == (True, 40, 47)
    assert batch_format.decode_records(data, position, parsed) == []
    flipped = bytearray(data)
    flipped[20] ^= 1
    with pytest.raises(CorruptBatch):
        iter_batches(bytes(flipped))
    with pytest.raises(ValueError):
        batch_format.encode_gap(40, 0, 1_000)


def test_reads_skip_the_gap(engine: LocalEngine) -> None:
    topic = engine.create_topic("t", TopicConfig(durability="interval"))
    log = topic.log(0)
    log.append(_values(3))
    assert log.skip_to(10) == 7
    assert log.skip_to(5) == 0, "never backwards"
    log.append(_values(2, first=3))

    assert [r.offset for r in log.read(0)] == [0, 1, 2, 10, 11]
    assert [r.offset for r in log.read(4)] == [10, 11], "from inside the gap"
    assert [r.offset for r in log.read(3, max_records=1)] == [10]
    assert log.read(12) == []
    assert (log.end_offset, log.durable_offset) == (12, 10)


def test_raw_reads_never_hand_out_a_gap(engine: LocalEngine) -> None:
    topic = engine.create_topic("t", TopicConfig(durability="interval"))
    log = topic.log(0)
    log.append(_values(3))
    log.skip_to(10)
    log.append(_values(2, first=3))

    before = log.read_batches(0)
    after = log.read_batches(before.next_offset)

    assert (before.first_offset, before.next_offset) == (0, 3), "stops before the gap"
    assert [h.base_offset for _, h in iter_batches(before.data)] == [0]
    assert (after.first_offset, after.next_offset) == (10, 12), "the window starts past it"
    assert [h.is_gap for _, h in iter_batches(after.data)] == [False]
    fetched = m.Fetched(0, after.first_offset, after.next_offset, after.data)
    assert [msg.value for msg in decode_fetched("t", fetched)] == [b"v3", b"v4"]


def test_a_gap_at_the_end_reads_as_the_end(engine: LocalEngine) -> None:
    log = engine.create_topic("t", TopicConfig(durability="interval")).log(0)
    log.append(_values(2))
    log.skip_to(6)

    assert log.read(2) == []
    raw = log.read_batches(2)
    assert (raw.data, raw.first_offset, raw.next_offset) == (b"", 6, 6)


def test_a_gap_survives_a_crash_and_the_log_continues_after_it(
    data_dir: str, clock: ManualClock
) -> None:
    engine = LocalEngine.open(data_dir, clock)
    log = engine.create_topic("t", TopicConfig(durability="interval")).log(0)
    log.append(_values(2))
    log.skip_to(5)
    engine.close(clean=False)

    engine = LocalEngine.open(data_dir, clock)
    log = engine.topic("t").log(0)
    try:
        assert not log.recovery.lost_data
        assert log.end_offset == 5
        log.append(_values(1, first=2))
        log.roll()
        log.append(_values(1, first=3))
        assert [(r.offset, r.value) for r in log.read(0)] == [(0, b"v0"), (1, b"v1"), (5, b"v2")]
        assert [r.offset for r in log.read(6)] == [6]
    finally:
        engine.close()


def test_timestamp_lookups_pass_over_a_gap(engine: LocalEngine, clock: ManualClock) -> None:
    log = engine.create_topic("t", TopicConfig(durability="interval")).log(0)
    log.append([Record(value=b"old", timestamp_ms=1_000)])
    clock.advance(10_000)
    log.skip_to(4)
    log.append([Record(value=b"new", timestamp_ms=50_000)])

    assert log.offset_for_timestamp(2_000) == 4
