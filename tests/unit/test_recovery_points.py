"""Recovery points: after a crash, a partition's active segment is scanned only past the last
prefix of it known synced, not whole (segment.py ``checkpoint``, recovery.py).

A recovery point is the active segment's index files, written for a prefix of its file once
that prefix is synced: by the flush that synced it (a job outside the WAL), or after the WAL
checkpoint that synced it (wal.py). A restart after a crash adopts that prefix as it adopts a
sealed segment (CRCs checked when reads reach it) and scans only what follows; it must end
exactly where a full scan ends, with the same index, and cut a torn tail the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from roost.clock import ManualClock
from roost.errors import PartitionQuarantined
from roost.storage import LocalEngine, Record, TopicConfig
from roost.storage import segment as segment_module
from roost.storage.fs import LocalFS
from roost.storage.log import PartitionLog
from roost.storage.segment import INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX, file_name
from tests.property.test_power_loss_wal import wal_round

CONFIG = TopicConfig(durability="always", index_interval_bytes=512)
POINT_BYTES = 4_000


@pytest.fixture(autouse=True)
def small_recovery_points(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(segment_module, "INDEX_CHECKPOINT_BYTES", POINT_BYTES)


class CountingFS(LocalFS):
    """Counts the bytes read from segment files."""

    def __init__(self) -> None:
        self.log_bytes_read = 0
        self._logs: set[int] = set()

    def open_rw(self, path: str) -> int:
        fd = super().open_rw(path)
        if path.endswith(LOG_SUFFIX):
            self._logs.add(fd)
        return fd

    def pread(self, fd: int, size: int, position: int) -> bytes:
        data = super().pread(fd, size, position)
        if fd in self._logs:
            self.log_bytes_read += len(data)
        return data


def open_log(directory: Path, clock: ManualClock, fs: LocalFS | None = None) -> PartitionLog:
    return PartitionLog.open("t", 0, str(directory), CONFIG, clock, fs or LocalFS(), False)


def fill(log: PartitionLog, clock: ManualClock, count: int, start: int = 0) -> None:
    """``count`` records of ~300 bytes, each appended and flushed inline (outside any WAL)."""
    for n in range(start, start + count):
        clock.advance(7)
        log.append([Record(value=b"%d:" % n + b"v" * 300, key=b"k%d" % (n % 5))])
        log.flush()


def crashed(directory: Path, clock: ManualClock) -> tuple[int, int]:
    """A log of 40 records, flushed one by one, left by a crash: (its active segment's
    recovery point, its size)."""
    log = open_log(directory, clock)
    fill(log, clock, 40)
    point, size = log._segments[-1].checkpointed_bytes, log._segments[-1].size
    log.close(clean=False)  # no index for the whole segment
    return point, size


def state(log: PartitionLog) -> tuple[object, ...]:
    active = log._segments[-1]
    return (
        log.end_offset, active.size, list(active.index.offsets), list(active.index.positions),
        list(active.index.max_ts_before), active.max_timestamp_ms, active.last_append_time_ms,
        active.first_append_time_ms,
    )  # fmt: skip


def records(log: PartitionLog) -> list[tuple[int, bytes]]:
    found, offset = [], log.start_offset
    while offset < log.end_offset:
        batch = log.read(offset)
        found += [(r.offset, r.value) for r in batch]
        offset = batch[-1].offset + 1
    return found


def full_scan_of(directory: Path, clock: ManualClock) -> tuple[tuple[object, ...], list[object]]:
    """What the log recovers without its recovery point (a copy without the index files)."""
    copy = directory.parent / (directory.name + "-full")
    copy.mkdir()
    log_name = file_name(0, LOG_SUFFIX)
    (copy / log_name).write_bytes((directory / log_name).read_bytes())
    log = open_log(copy, clock)
    try:
        return state(log), list(records(log))
    finally:
        log.close()


def test_a_restart_after_a_crash_scans_only_past_the_recovery_point(
    tmp_path: Path, clock: ManualClock
) -> None:
    directory = tmp_path / "p"
    point, size = crashed(directory, clock)
    assert 0 < point < size and size - point < POINT_BYTES
    expected_state, expected_records = full_scan_of(directory, clock)

    fs = CountingFS()
    log = open_log(directory, clock, fs)
    try:
        assert state(log) == expected_state, "the same index and summary as a full scan"
        read_at_open = fs.log_bytes_read
        # What follows the point, and the headers from its last index entry: not the prefix.
        assert read_at_open <= (size - point) + 2 * CONFIG.index_interval_bytes
        assert records(log) == expected_records
        clock.advance(7)
        assert log.append([Record(value=b"after")]).base_offset == 40
    finally:
        log.close()


def test_a_torn_tail_past_the_recovery_point_is_cut_as_a_full_scan_cuts_it(
    tmp_path: Path, clock: ManualClock
) -> None:
    directory = tmp_path / "p"
    point, _ = crashed(directory, clock)
    path = directory / file_name(0, LOG_SUFFIX)
    size = path.stat().st_size
    with path.open("r+b") as f:  # the last write torn half way
        f.truncate(size - 150)
    assert size - 150 > point
    expected_state, expected_records = full_scan_of(directory, clock)

    log = open_log(directory, clock)
    try:
        assert state(log) == expected_state
        assert records(log) == expected_records
        assert log.end_offset == 39
        assert log.recovery.bytes_truncated == path.stat().st_size - log._segments[-1].size + (
            size - 150 - path.stat().st_size
        )
    finally:
        log.close()


@pytest.mark.parametrize("spoil", ["file_shorter_than_the_point", "index_garbage", "time_lost"])
def test_a_recovery_point_that_cannot_be_trusted_means_a_full_scan(
    spoil: str, tmp_path: Path, clock: ManualClock
) -> None:
    directory = tmp_path / "p"
    point, _ = crashed(directory, clock)
    path = directory / file_name(0, LOG_SUFFIX)
    if spoil == "file_shorter_than_the_point":
        with path.open("r+b") as f:
            f.truncate(point - 100)  # as a cut by `roost check --repair` would leave it
    elif spoil == "index_garbage":
        (directory / file_name(0, INDEX_SUFFIX)).write_bytes(os.urandom(64))
    else:
        (directory / file_name(0, TIME_INDEX_SUFFIX)).unlink()
    expected_state, expected_records = full_scan_of(directory, clock)

    fs = CountingFS()
    log = open_log(directory, clock, fs)
    try:
        assert fs.log_bytes_read >= path.stat().st_size, "every byte scanned"
        assert state(log) == expected_state
        assert records(log) == expected_records
    finally:
        log.close()


def test_damage_inside_the_adopted_prefix_is_found_by_the_read_that_reaches_it(
    tmp_path: Path, clock: ManualClock
) -> None:
    """As for a sealed segment adopted by its index: the prefix was synced before its point was
    written, so a crash cannot have torn it; damage there is damage, and quarantines."""
    directory = tmp_path / "p"
    crashed(directory, clock)
    path = directory / file_name(0, LOG_SUFFIX)
    with path.open("r+b") as f:
        f.seek(200)
        f.write(b"\xff")
    log = open_log(directory, clock)
    try:
        assert not log.quarantined, "not read at open"
        with pytest.raises(PartitionQuarantined, match="bad batch"):
            records(log)
    finally:
        log.close(clean=False)


def test_a_point_taken_before_a_roll_never_overwrites_the_sealed_index(
    tmp_path: Path, clock: ManualClock
) -> None:
    directory = tmp_path / "p"
    log = open_log(directory, clock)
    fill(log, clock, 20)
    active = log._segments[-1]
    active.checkpointed_bytes = 0
    point = active.checkpoint()
    assert point is not None
    clock.advance(7)
    log.append([Record(value=b"x" * 300)])
    log.roll()  # writes the sealed segment's full index
    assert not active.write_checkpoint(point)
    log.close()
    log = PartitionLog.open("t", 0, str(directory), CONFIG, clock, LocalFS(), True)
    try:
        assert log.recovery.segments_scanned == 0, "both segments adopted by their indexes"
        assert log.end_offset == 21
    finally:
        log.close()


def test_through_the_wal_a_point_is_written_only_after_the_checkpoint_syncs_it(
    tmp_path: Path, clock: ManualClock
) -> None:
    engine = LocalEngine.open(str(tmp_path / "data"), clock)
    engine.on_dirty = lambda log, urgent: None  # as with a flusher: ``always`` is held back
    assert engine.wal is not None
    wal = engine.wal
    wal.checkpoint_bytes = 1 << 30  # no rotation until this test asks
    topics = [engine.create_topic(name, CONFIG) for name in ("a", "b")]
    logs = [topic.log(0) for topic in topics]
    for n in range(30):
        clock.advance(7)
        for log in logs:
            log.append([Record(value=b"%d:" % n + b"v" * 300)])
        wal_round(wal, logs)
    index_files = [Path(log._segments[-1].path).with_suffix(INDEX_SUFFIX) for log in logs]
    assert all(log._segments[-1].checkpointed_bytes for log in logs), "points taken"
    assert not any(path.exists() for path in index_files), "not written: only the WAL is synced"

    wal.checkpoint_bytes = 0  # the next round rotates; its checkpoint syncs the old file's
    clock.advance(7)
    for log in logs:
        log.append([Record(value=b"last")])
    wal_round(wal, logs)
    job = wal.checkpoint_job()
    assert job is not None
    job.run()
    wal.checkpoint_done(job, None)
    assert all(path.exists() for path in index_files)

    engine.close(clean=False)
    engine = LocalEngine.open(str(tmp_path / "data"), clock)
    try:
        for name in ("a", "b"):
            log = engine.topic(name).log(0)
            assert log._segments[-1].checkpointed_bytes > 0, "resumed from its point"
            assert log.end_offset == 31
            assert records(log)[-1] == (30, b"last")
    finally:
        engine.close()
