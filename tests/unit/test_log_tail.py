"""The newest batches of the active segment are read from memory, and read the same as from disk."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roost.clock import ManualClock
from roost.storage import LocalEngine, Record, Topic, TopicConfig
from roost.storage.fs import LocalFS
from roost.storage.segment import TAIL_BYTES

SMALL_SEGMENTS = TopicConfig(
    segment_max_bytes=256 * 1024, max_record_bytes=16 * 1024, index_interval_bytes=512
)


def _reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every ``pread`` from now on, by size."""
    sizes: list[int] = []
    pread = LocalFS.pread

    def counting(self: LocalFS, fd: int, size: int, position: int) -> bytes:
        sizes.append(size)
        return pread(self, fd, size, position)

    monkeypatch.setattr(LocalFS, "pread", counting)
    return sizes


def test_a_reader_that_keeps_up_reads_no_file(
    engine: LocalEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = engine.create_topic("t", TopicConfig(durability="never"))
    for i in range(20):
        topic.append(0, [Record(value=b"%d" % i * 100)])
    reads = _reads(monkeypatch)
    for i in range(20):
        assert [r.value for r in topic.read(0, i, max_records=1)] == [b"%d" % i * 100]
    assert reads == []
    assert [r.offset for r in topic.read(0, 0)] == list(range(20))
    assert reads == [], "the whole segment is still in the tail"


def test_older_batches_come_from_the_file(
    engine: LocalEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = engine.create_topic("t", TopicConfig(durability="never"))
    value = b"x" * 1000
    count = 2 * TAIL_BYTES // 1000
    for _ in range(count):
        topic.append(0, [Record(value=value)])
    reads = _reads(monkeypatch)
    assert topic.read(0, count - 1, max_records=1)[0].offset == count - 1
    assert reads == []
    assert topic.read(0, 0, max_records=1)[0].offset == 0
    assert reads, "the first batch has left the tail"


def test_a_batch_larger_than_the_tail_is_not_kept(
    engine: LocalEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = engine.create_topic("t", TopicConfig(durability="never"))
    topic.append(0, [Record(value=b"small")])
    topic.append(0, [Record(value=b"y" * 1024) for _ in range(TAIL_BYTES // 1024 + 1)])
    reads = _reads(monkeypatch)
    assert topic.read(0, 0, max_records=1)[0].value == b"small"
    assert reads, "kept batches must reach the end of the segment: none is kept"


def test_state_journals_keep_no_tail(engine: LocalEngine) -> None:
    journal = engine.journal("subscription-state")
    journal.append([b"entry"])
    assert journal.log.tail_bytes == 0


def _read_all(topic: Topic, offsets: list[int], max_bytes: int) -> list[list[tuple[int, bytes]]]:
    return [
        [(r.offset, r.value) for r in topic.read(0, offset, max_bytes=max_bytes)]
        for offset in offsets
    ]


@settings(max_examples=40, deadline=None)
@given(
    batches=st.lists(
        st.lists(st.integers(min_value=0, max_value=9000), min_size=1, max_size=12),
        min_size=1,
        max_size=40,
    ),
    picks=st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=20),
    max_bytes=st.sampled_from([1, 100, 4096, 70_000, 1 << 20]),
)
def test_the_tail_reads_exactly_what_the_file_holds(
    tmp_path_factory: pytest.TempPathFactory,
    batches: list[list[int]],
    picks: list[int],
    max_bytes: int,
) -> None:
    engine = LocalEngine.open(str(tmp_path_factory.mktemp("tail")), ManualClock())
    try:
        topic = engine.create_topic("t", SMALL_SEGMENTS)
        for sizes in batches:
            topic.append(0, [Record(value=bytes([size % 251]) * size) for size in sizes])
        end = topic.end_offset(0)
        offsets = [topic.start_offset(0) + pick % (end - topic.start_offset(0)) for pick in picks]
        from_memory = _read_all(topic, offsets, max_bytes)
        for segment in topic.log(0)._segments:
            segment.drop_tail()
        assert _read_all(topic, offsets, max_bytes) == from_memory
    finally:
        engine.close()
