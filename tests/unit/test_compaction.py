"""Compaction (storage/compaction.py): the latest record per key of the sealed segments stays,
offsets kept, tombstones gone after their retention; the swap is a rename that every reader,
index and recovery takes in its stride."""

from __future__ import annotations

import errno
import os

import pytest

from roost.clock import ManualClock
from roost.errors import InvalidConfig, InvalidRequest
from roost.storage import LocalEngine, Record
from roost.storage.check import check_directory
from roost.storage.compaction import (
    CLEAN_POINT_NAME,
    CompactionSettings,
    Compactor,
    compacted_logs,
    read_clean_point,
)
from roost.storage.config import TopicConfig
from roost.storage.log import PartitionLog
from roost.storage.scrub import Scrubber
from roost.storage.segment import LOG_SUFFIX
from tests.fault_fs import FaultFS

DAY_MS = 24 * 3600 * 1000


def _config(**settings: object) -> TopicConfig:
    base: dict[str, object] = {
        "cleanup": "compact",
        "segment_max_bytes": 1 << 20,
        "max_record_bytes": 1024,
    }
    base.update(settings)
    return TopicConfig(**base)  # type: ignore[arg-type]


def _publish(log: PartitionLog, pairs: list[tuple[bytes, bytes]]) -> None:
    for key, value in pairs:
        log.append([Record(key=key, value=value)])
    log.flush()


def _seal(log: PartitionLog) -> None:
    log.roll()
    log.flush()


def _compactor(engine: LocalEngine, clock: ManualClock, **settings: object) -> Compactor:
    return Compactor(
        lambda: compacted_logs(engine),
        clock,
        CompactionSettings(**settings),  # type: ignore[arg-type]
    )


def _contents(log: PartitionLog) -> list[tuple[int, bytes | None, bytes]]:
    found: list[tuple[int, bytes | None, bytes]] = []
    offset = log.start_offset
    while offset < log.end_offset:
        records = log.read(offset)
        if not records:
            break
        found += [(r.offset, r.key, r.value) for r in records]
        offset = records[-1].offset + 1
    return found


def test_keeps_the_latest_record_per_key_with_its_offset(
    engine: LocalEngine, clock: ManualClock
) -> None:
    log = engine.create_topic("t", _config()).log(0)
    _publish(log, [(b"a", b"1"), (b"b", b"1"), (b"a", b"2"), (b"c", b"1"), (b"b", b"2")])
    _seal(log)
    _publish(log, [(b"a", b"3")])  # the active segment is never compacted

    job = _compactor(engine, clock).compact(log)

    assert job is not None and job.records_dropped == 2
    assert _contents(log) == [(2, b"a", b"2"), (3, b"c", b"1"), (4, b"b", b"2"), (5, b"a", b"3")]
    assert (log.start_offset, log.end_offset) == (0, 6), "offsets are preserved"
    assert [r.offset for r in log.read(0, max_records=1)] == [2], "a read in a gap goes on"


def test_a_compacted_topic_refuses_a_record_without_a_key(engine: LocalEngine) -> None:
    log = engine.create_topic("t", _config()).log(0)
    with pytest.raises(InvalidRequest, match="every record needs a key"):
        log.append([Record(value=b"x")])
    assert log.end_offset == 0


def test_compact_alone_refuses_retention_by_time_or_size() -> None:
    with pytest.raises(InvalidConfig, match="cleanup"):
        TopicConfig(cleanup="compact", retention_ms=1000)
    with pytest.raises(InvalidConfig, match="cleanup"):
        TopicConfig(cleanup="nonsense")  # type: ignore[arg-type]
    assert TopicConfig(cleanup="compact,delete", retention_ms=1000).compacted


def test_a_tombstone_removes_the_key_and_goes_after_its_retention(
    engine: LocalEngine, clock: ManualClock
) -> None:
    log = engine.create_topic("t", _config(tombstone_retention_ms=DAY_MS)).log(0)
    _publish(log, [(b"a", b"1"), (b"b", b"1"), (b"a", b"")])
    _seal(log)
    compactor = _compactor(engine, clock)

    compactor.compact(log)
    assert _contents(log) == [(1, b"b", b"1"), (2, b"a", b"")], "the delete is still seen"
    assert compactor.job_for(log, clock.now_ms()) is None, "nothing dirty, nothing due"

    clock.advance(DAY_MS)
    assert compactor.compact(log) is not None, "the tombstone's retention ran out"
    assert _contents(log) == [(1, b"b", b"1")]
    assert log.end_offset == 3


def test_nothing_happens_below_the_dirty_ratio(engine: LocalEngine, clock: ManualClock) -> None:
    log = engine.create_topic("t", _config()).log(0)
    _publish(log, [(b"k%d" % i, b"x" * 100) for i in range(30)])
    _seal(log)
    compactor = _compactor(engine, clock, min_dirty_ratio=0.9)
    assert compactor.compact(log) is not None  # all dirty: cleaned once
    assert read_clean_point(engine.fs, log.directory).cleaned_offset == 30
    _publish(log, [(b"k0", b"y")])
    _seal(log)
    assert compactor.job_for(log, clock.now_ms()) is None, "1 dirty record of 31"


def test_the_compacted_log_survives_a_reopen(data_dir: str, clock: ManualClock) -> None:
    engine = LocalEngine.open(data_dir, clock)
    log = engine.create_topic("t", _config()).log(0)
    _publish(log, [(b"a", b"1"), (b"a", b"2"), (b"b", b"1")])
    _seal(log)
    _compactor(engine, clock).compact(log)
    expected = _contents(log)
    engine.close()

    for clean in (True, False):
        engine = LocalEngine.open(data_dir, clock)
        log = engine.topic("t").log(0)
        assert _contents(log) == expected
        assert log.end_offset == 3
        assert not log.recovery.lost_data
        engine.close(clean=clean)
    assert os.path.exists(os.path.join(log.directory, CLEAN_POINT_NAME))


def test_a_temporary_file_left_by_a_crash_is_removed_at_open(
    data_dir: str, clock: ManualClock
) -> None:
    engine = LocalEngine.open(data_dir, clock)
    log = engine.create_topic("t", _config()).log(0)
    _publish(log, [(b"a", b"1"), (b"a", b"2")])
    _seal(log)
    directory = log.directory
    engine.close(clean=False)
    temp = os.path.join(directory, f"{0:020d}.compacted.tmp")
    with open(temp, "wb") as f:
        f.write(b"half a segment")

    engine = LocalEngine.open(data_dir, clock)
    assert not os.path.exists(temp)
    assert [r.value for r in engine.topic("t").log(0).read(0)] == [b"1", b"2"]
    assert os.path.exists(os.path.join(directory, f"{0:020d}{LOG_SUFFIX}"))
    engine.close()


def test_a_scrub_reading_a_segment_that_compaction_replaced_starts_it_again(
    engine: LocalEngine, clock: ManualClock
) -> None:
    log = engine.create_topic("t", _config()).log(0)
    _publish(log, [(b"k%d" % (i % 3), b"x" * 200) for i in range(60)])
    _seal(log)
    scrubber = Scrubber(engine, chunk_bytes=1000)
    job = scrubber.next_job()
    assert job is not None and job.position == 0
    scrubber.finish(job, job.run())  # part of the old file verified
    job = scrubber.next_job()
    assert job is not None and job.position > 0

    _compactor(engine, clock).compact(log)  # the file is replaced, smaller
    result = job.run()  # reads the new file at a position of the old one
    scrubber.finish(job, result)

    assert not log.quarantined, "not damage: another file"
    for _ in range(100):  # bounded: the new file is a few hundred bytes
        job = scrubber.next_job()
        assert job is not None
        scrubber.finish(job, job.run())
        if scrubber.passes:
            break
    assert not log.quarantined and scrubber.found == 0


def test_roost_check_finds_a_compacted_partition_sound(data_dir: str, clock: ManualClock) -> None:
    engine = LocalEngine.open(data_dir, clock)
    log = engine.create_topic("t", _config()).log(0)
    _publish(log, [(b"k%d" % (i % 4), b"v%d" % i) for i in range(40)])
    _seal(log)
    _publish(log, [(b"k0", b"last")])
    assert _compactor(engine, clock).compact(log) is not None
    engine.close()

    report = check_directory(data_dir)
    [partition] = [store for store in report.stores if store.store == "topics/t/0"]
    assert report.ok and not partition.problems
    # It counts offsets, a gap batch's too: compaction keeps them all.
    assert (partition.records, partition.segments) == (41, 2)


@pytest.mark.parametrize("operation", ["pwrite", "fsync", "rename"])
def test_a_disk_that_refuses_a_pass_changes_nothing(
    data_dir: str, clock: ManualClock, operation: str
) -> None:
    fs = FaultFS()
    engine = LocalEngine.open(data_dir, clock, fs)
    try:
        log = engine.create_topic("t", _config()).log(0)
        _publish(log, [(b"a", b"1"), (b"a", b"2"), (b"b", b"1")])
        _seal(log)
        before = _contents(log)
        # A rename is matched on its target: the segment's own name.
        target = f"{0:020d}{LOG_SUFFIX}" if operation == "rename" else ".compacted.tmp"
        fs.arm(operation, errno.ENOSPC, match=target)
        compactor = _compactor(engine, clock)
        if operation == "rename":  # the swap, on the loop: that segment keeps its file
            job = compactor.compact(log)
            assert job is not None and job.swaps == []
        else:
            with pytest.raises(OSError):
                compactor.compact(log)
        fs.disarm()
        assert _contents(log) == before, "every record still there, at its offset"
        assert not [n for n in os.listdir(log.directory) if n.endswith(".compacted.tmp")]
        log.append([Record(key=b"c", value=b"1")])  # the log goes on
        assert compactor.compact(log) is not None, "the next pass does it"
        assert [v for _, _, v in _contents(log)] == [b"2", b"1", b"1"]
    finally:
        engine.close()
