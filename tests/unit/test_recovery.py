"""Recovery of a partition log (roost.storage.recovery) from crashes and damaged files.

Each test builds a real log on disk, damages its files the way a crash or a bad disk would (torn
tails, flipped bytes, lost or mangled index files, leftovers of half-done replacements), reopens
it and checks what a reader and a writer see afterwards and what the recovery report says. The
rule under test: the CRC-checked log is the truth. Everything before the first bad batch is kept
byte for byte, everything from it on is cut, offsets stay dense and appending continues right
after the last intact record.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import pytest

from roost.clock import ManualClock
from roost.errors import PartitionQuarantined
from roost.storage import LocalEngine
from roost.storage import batch as batch_format
from roost.storage.batch import Record, StoredRecord
from roost.storage.config import TopicConfig
from roost.storage.engine import CLEAN_MARKER
from roost.storage.fs import LOCAL_FS
from roost.storage.log import PartitionLog
from roost.storage.recovery import QUARANTINE_NAME as QUARANTINE
from roost.storage.segment import INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX, file_name

#: Small enough that every segment gets several index entries, so lookups use the index.
CONFIG = TopicConfig(index_interval_bytes=64)
TOPIC = "orders"

# -- building and reading logs ------------------------------------------------------------------


def _record(n: int, timestamp_ms: int | None = None) -> Record:
    return Record(
        value=b"value-%03d-" % n + bytes([n % 256]) * 24,
        key=None if n % 3 == 0 else b"key-%d" % n,
        headers=[("h", b"%d" % n), ("𝄞", b"")] if n % 2 else (),
        timestamp_ms=timestamp_ms,
    )


def _batch(first: int, count: int, timestamps: Sequence[int | None] = ()) -> list[Record]:
    stamps = list(timestamps) + [None] * (count - len(timestamps))
    return [_record(first + i, stamps[i]) for i in range(count)]


#: Segments of batches of records. Batch k is appended at 1_700_000_000_000 + 10 * (k + 1); some
#: records carry their own, older or far newer timestamps, so that offset_for_timestamp has more
#: to get wrong than a walk over append times.
PLAN: list[list[list[Record]]] = [
    [_batch(0, 1), _batch(1, 3, [1_000]), _batch(4, 2), _batch(6, 1, [1_700_000_000_015])],
    [_batch(7, 2), _batch(9, 1), _batch(10, 4, [None, 5_000])],
    [_batch(14, 2), _batch(16, 1, [2_000_000_000_000]), _batch(17, 3)],
]


def open_log(directory: Path, clock: ManualClock, clean: bool = False) -> PartitionLog:
    return PartitionLog.open(TOPIC, 0, str(directory), CONFIG, clock, LOCAL_FS, clean)


def build(directory: Path, clock: ManualClock, plan: Sequence[Sequence[Sequence[Record]]]) -> None:
    """Write ``plan`` (segments of batches) and leave the log open-and-crashed: no clean close."""
    log = open_log(directory, clock)
    for i, segment in enumerate(plan):
        if i:
            log.roll()
        for records in segment:
            clock.advance(10)
            log.append(records)
    log.close(clean=False)


def read_all(log: PartitionLog) -> list[StoredRecord]:
    """Every record from start to end (``read`` stops at segment boundaries, so loop)."""
    records: list[StoredRecord] = []
    offset = log.start_offset
    while offset < log.end_offset:
        chunk = log.read(offset)
        assert chunk, f"nothing readable at offset {offset} below end {log.end_offset}"
        records.extend(chunk)
        offset = chunk[-1].offset + 1
    return records


def segment_path(directory: Path, base_offset: int, suffix: str = LOG_SUFFIX) -> Path:
    return directory / file_name(base_offset, suffix)


def segment_sizes(plan: Sequence[Sequence[Sequence[Record]]]) -> list[int]:
    """Records per segment."""
    return [sum(len(records) for records in segment) for segment in plan]


def segment_bases(plan: Sequence[Sequence[Sequence[Record]]]) -> list[int]:
    return [sum(segment_sizes(plan)[:i]) for i in range(len(plan))]


class Layout(NamedTuple):
    """Where each batch of ``PLAN`` lies: its segment base, byte range and offsets."""

    segment_base: int
    start_byte: int
    end_byte: int
    base_offset: int
    next_offset: int


def layout(directory: Path, plan: Sequence[Sequence[Sequence[Record]]]) -> list[list[Layout]]:
    """Byte ranges of every batch, read from the files with the batch module's own parser."""
    result = []
    for base, segment in zip(segment_bases(plan), plan, strict=True):
        data = segment_path(directory, base).read_bytes()
        assert len(batch_format.iter_batches(data)) == len(segment)
        result.append(
            [
                Layout(
                    base, position, position + header.size, header.base_offset, header.next_offset
                )
                for position, header in batch_format.iter_batches(data)
            ]
        )
    return result


class Recovered(NamedTuple):
    """What a reopened log shows, compared whole."""

    records: list[StoredRecord]
    end_offset: int
    bytes_truncated: int
    segments_dropped: int
    appended_at: int
    appended: list[StoredRecord]

    def summary(self) -> str:
        return (
            f"{len(self.records)} records, end_offset {self.end_offset}, "
            f"{self.bytes_truncated} bytes truncated, {self.segments_dropped} segments dropped, "
            f"appended at {self.appended_at}"
        )


AFTER = Record(value=b"after recovery", key=b"k")


def reopen_and_append(directory: Path, clock: ManualClock) -> Recovered:
    log = open_log(directory, clock)
    try:
        records = read_all(log)
        end_offset = log.end_offset
        report = log.recovery
        appended_at = log.append([AFTER]).base_offset
        appended = log.read(appended_at)
    finally:
        log.close(clean=False)
    return Recovered(
        records,
        end_offset,
        report.bytes_truncated,
        report.segments_dropped,
        appended_at,
        appended,
    )


def expected_recovery(
    intact: list[StoredRecord], bytes_truncated: int, clock: ManualClock, segments_dropped: int = 0
) -> Recovered:
    end = intact[-1].offset + 1 if intact else 0
    stored = StoredRecord(end, clock.now_ms(), AFTER.key, AFTER.value, ())
    return Recovered(intact, end, bytes_truncated, segments_dropped, end, [stored])


@pytest.fixture
def template(tmp_path: Path, clock: ManualClock) -> tuple[Path, list[StoredRecord]]:
    """A crashed log built from ``PLAN``, and every record it held."""
    directory = tmp_path / "template"
    build(directory, clock, PLAN)
    log = open_log(directory, clock)
    records = read_all(log)
    log.close(clean=False)
    assert [r.offset for r in records] == list(range(sum(segment_sizes(PLAN))))
    return directory, records


def fresh_copy(template: Path, work: Path) -> Path:
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(template, work)
    return work


# -- a torn or corrupt tail ---------------------------------------------------------------------


def test_a_tail_cut_at_every_byte_of_the_last_batch_recovers_the_batches_before_it(
    tmp_path: Path, clock: ManualClock, template: tuple[Path, list[StoredRecord]]
) -> None:
    directory, records = template
    last = layout(directory, PLAN)[-1][-1]
    intact = records[: last.base_offset]
    original = segment_path(directory, last.segment_base).read_bytes()
    assert last.end_byte == len(original)
    assert 200 <= last.end_byte - last.start_byte <= 600  # small, so every cut stays quick

    wrong: dict[int, Recovered] = {}
    for cut in range(last.start_byte, last.end_byte):
        work = fresh_copy(directory, tmp_path / "work")
        os.truncate(segment_path(work, last.segment_base), cut)
        got = reopen_and_append(work, clock)
        # The good batches are kept byte for byte, and the new batch follows them.
        rewritten = segment_path(work, last.segment_base).read_bytes()
        kept = rewritten[: last.start_byte] == original[: last.start_byte]
        if got != expected_recovery(intact, cut - last.start_byte, clock) or not kept:
            wrong[cut] = got
    assert not wrong, (
        f"{len(wrong)} of {last.end_byte - last.start_byte} cuts recovered wrongly; first at "
        f"byte {min(wrong)}: {wrong[min(wrong)].summary()}"
    )


def test_the_report_of_a_torn_tail_says_what_was_cut(
    tmp_path: Path, clock: ManualClock, template: tuple[Path, list[StoredRecord]]
) -> None:
    directory, _ = template
    last = layout(directory, PLAN)[-1][-1]
    work = fresh_copy(directory, tmp_path / "work")
    os.truncate(segment_path(work, last.segment_base), last.start_byte + 50)

    log = open_log(work, clock)
    report = log.recovery
    log.close(clean=False)
    assert not report.clean_shutdown
    assert report.bytes_truncated == 50
    assert report.lost_data
    assert report.segments == 3
    assert report.segments_scanned == 1  # the sealed segments' indexes were trusted
    assert report.segments_dropped == 0
    assert len(report.problems) == 1
    assert f"at byte {last.start_byte} (offset {last.base_offset})" in report.problems[0]
    # The cut is durable and complete: a second open finds nothing more to do.
    log = open_log(work, clock)
    assert log.recovery.bytes_truncated == 0
    assert not log.recovery.problems
    log.close(clean=False)


def test_a_flipped_bit_anywhere_in_the_last_batch_cuts_only_that_batch(
    tmp_path: Path, clock: ManualClock, template: tuple[Path, list[StoredRecord]]
) -> None:
    directory, records = template
    last = layout(directory, PLAN)[-1][-1]
    intact = records[: last.base_offset]
    size = last.end_byte - last.start_byte
    want = expected_recovery(intact, size, clock)

    wrong: dict[int, Recovered] = {}
    for position in range(last.start_byte, last.end_byte):  # one case per byte, >= 200 cases
        work = fresh_copy(directory, tmp_path / "work")
        path = segment_path(work, last.segment_base)
        data = bytearray(path.read_bytes())
        data[position] ^= 1 << (position % 8)
        path.write_bytes(data)
        got = reopen_and_append(work, clock)
        if got != want:
            wrong[position] = got
    assert not wrong, (
        f"{len(wrong)} of {size} flipped bytes (batch at bytes {last.start_byte}-{last.end_byte}) "
        f"recovered wrongly; first at byte {min(wrong)}: {wrong[min(wrong)].summary()}; "
        f"expected {want.summary()}"
    )


def test_an_engine_reopened_after_a_crash_reports_the_cut_per_log(
    data_dir: str, clock: ManualClock, engine: LocalEngine
) -> None:
    topic = engine.create_topic(TOPIC, CONFIG)
    for first, count in ((0, 2), (2, 3)):
        clock.advance(10)
        topic.append(0, _batch(first, count))
    directory = Path(data_dir) / "topics" / TOPIC / "0"
    last_start = segment_path(directory, 0).stat().st_size
    clock.advance(10)
    topic.append(0, _batch(8, 3))
    want = read_all(topic.log(0))[:5]
    engine.close()
    os.remove(os.path.join(data_dir, CLEAN_MARKER))  # as if the process had died instead
    os.truncate(segment_path(directory, 0), last_start + 7)

    reopened = LocalEngine.open(data_dir, clock)
    try:
        assert not reopened.recovery.clean_shutdown
        assert reopened.recovery.lost_data
        [report] = reopened.recovery.logs
        assert report.log == f"{TOPIC}/0"
        assert report.bytes_truncated == 7
        log = reopened.topic(TOPIC).log(0)
        assert read_all(log) == want
        assert log.end_offset == 5
        assert reopened.topic(TOPIC).append(0, [AFTER]).base_offset == 5
        assert log.read(5)[0].value == AFTER.value
    finally:
        reopened.close()


# -- corruption inside a sealed segment ---------------------------------------------------------


SEALED_VICTIMS = [(0, 0), (0, 2), (0, 3), (1, 1), (1, 2)]


def _flip_in_the_middle(work: Path, victim: Layout, drop_index: bool = True) -> Path:
    if drop_index:
        for suffix in (INDEX_SUFFIX, TIME_INDEX_SUFFIX):
            segment_path(work, victim.segment_base, suffix).unlink()
    path = segment_path(work, victim.segment_base)
    data = bytearray(path.read_bytes())
    data[(victim.start_byte + victim.end_byte) // 2] ^= 0x10  # in the middle of the batch
    path.write_bytes(data)
    return path


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.name != QUARANTINE}


#: Every victim after a clean shutdown; after a crash only those with batches after them in
#: their segment (damage ending a sealed segment is what unsynced appends across a roll leave,
#: and is cut: see the next test).
QUARANTINE_CASES = [(*victim, True) for victim in SEALED_VICTIMS] + [
    (*victim, False) for victim in SEALED_VICTIMS if victim not in ((0, 3), (1, 2))
]


@pytest.mark.parametrize(("segment", "batch_index", "clean"), QUARANTINE_CASES)
def test_corruption_in_a_sealed_segment_quarantines_the_partition_and_cuts_nothing(
    tmp_path: Path,
    clock: ManualClock,
    template: tuple[Path, list[StoredRecord]],
    segment: int,
    batch_index: int,
    clean: bool,
) -> None:
    directory, _ = template
    batches = layout(directory, PLAN)
    victim = batches[segment][batch_index]
    assert clean or batch_index < len(batches[segment]) - 1
    bases = segment_bases(PLAN)
    work = fresh_copy(directory, tmp_path / "work")
    _flip_in_the_middle(work, victim)
    before = _files(work)

    log = open_log(work, clock, clean)
    try:
        report = log.recovery
        assert report.quarantined.startswith(f"segment {victim.segment_base}: bad batch at byte")
        assert "crc32c mismatch" in report.quarantined
        assert (report.bytes_truncated, report.segments_dropped) == (0, 0)
        assert report.segments == len(bases)
        assert any(p.startswith("quarantined, nothing cut") for p in report.problems)
        with pytest.raises(PartitionQuarantined) as raised:
            log.read(0)
        assert (raised.value.topic, raised.value.partition) == (TOPIC, 0)
        assert raised.value.damage == report.quarantined
        with pytest.raises(PartitionQuarantined):
            log.append([AFTER])
        with pytest.raises(PartitionQuarantined):
            log.read_batches(0)
    finally:
        log.close()
    # Nothing was cut, dropped or rewritten; the quarantine file remembers the damage.
    assert _files(work) == before
    assert (work / QUARANTINE).read_text() == report.quarantined
    again = open_log(work, clock, clean=True)
    assert again.quarantined == report.quarantined
    again.close()


@pytest.mark.parametrize(("segment", "batch_index"), SEALED_VICTIMS)
def test_a_cut_in_a_sealed_segment_by_repair_or_a_torn_end_drops_later_segments(
    tmp_path: Path,
    clock: ManualClock,
    template: tuple[Path, list[StoredRecord]],
    segment: int,
    batch_index: int,
) -> None:
    directory, records = template
    victim = layout(directory, PLAN)[segment][batch_index]
    bases = segment_bases(PLAN)
    work = fresh_copy(directory, tmp_path / "work")
    path = _flip_in_the_middle(work, victim)
    file_bytes = path.stat().st_size
    last_of_segment = batch_index == len(layout(directory, PLAN)[segment]) - 1
    # After a crash a damaged last batch of a sealed segment is a torn write, cut on open; any
    # other damage quarantines first, and the operator's repair cuts.
    repair = not last_of_segment
    if repair:
        open_log(work, clock).close()
        assert (work / QUARANTINE).exists()

    log = PartitionLog.open(TOPIC, 0, str(work), CONFIG, clock, LOCAL_FS, False, repair=repair)
    try:
        report = log.recovery
        assert not log.quarantined
        assert not (work / QUARANTINE).exists()
        got = read_all(log)
        assert got == records[: victim.base_offset]
        assert log.end_offset == victim.base_offset
        assert report.bytes_truncated == file_bytes - victim.start_byte
        assert report.segments_dropped == len(bases) - segment - 1
        assert report.segments == segment + 1
        assert path.stat().st_size == victim.start_byte
        for later in bases[segment + 1 :]:
            for suffix in (LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX):
                assert not segment_path(work, later, suffix).exists()
        clock.advance(10)
        assert log.append([AFTER]).base_offset == victim.base_offset
    finally:
        log.close()
    log = open_log(work, clock, clean=True)
    assert [r.offset for r in read_all(log)] == list(range(victim.base_offset + 1))
    log.close()


def test_a_read_that_finds_a_bad_batch_quarantines_and_a_restored_file_lifts_it(
    tmp_path: Path, clock: ManualClock, template: tuple[Path, list[StoredRecord]]
) -> None:
    directory, records = template
    close_cleanly(directory, clock)
    victim = layout(directory, PLAN)[1][1]
    work = fresh_copy(directory, tmp_path / "work")
    original = segment_path(work, victim.segment_base).read_bytes()
    _flip_in_the_middle(work, victim, drop_index=False)

    log = open_log(work, clock, clean=True)
    assert not log.quarantined  # a clean open trusts the sealed indexes: no scan
    assert log.read(0, max_records=1) == records[:1]  # other segments read fine so far
    with pytest.raises(PartitionQuarantined) as raised:
        read_all(log)
    assert f"offset {victim.base_offset}" in raised.value.damage
    assert log.recovery.quarantined == raised.value.damage
    with pytest.raises(PartitionQuarantined):
        log.read(0)
    log.close()

    # Restarting does not trust the index again: the quarantine file forces a full scan.
    log = open_log(work, clock, clean=True)
    assert log.quarantined.startswith(f"segment {victim.segment_base}: bad batch")
    log.close()

    segment_path(work, victim.segment_base).write_bytes(original)  # the operator restores it
    log = open_log(work, clock, clean=True)
    assert not log.quarantined
    assert "quarantine lifted" in log.recovery.problems[-1]
    assert not (work / QUARANTINE).exists()
    assert read_all(log) == records
    log.close()


def test_a_missing_middle_segment_quarantines_instead_of_dropping_what_follows(
    tmp_path: Path, clock: ManualClock, template: tuple[Path, list[StoredRecord]]
) -> None:
    directory, _ = template
    close_cleanly(directory, clock)
    bases = segment_bases(PLAN)
    work = fresh_copy(directory, tmp_path / "work")
    for suffix in (LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX):
        segment_path(work, bases[1], suffix).unlink()
    log = open_log(work, clock, clean=True)
    assert log.quarantined == f"segment {bases[2]} does not continue at offset {bases[1]}"
    assert log.recovery.segments_dropped == 0
    log.close()
    assert segment_path(work, bases[2]).exists()


# -- indexes are hints --------------------------------------------------------------------------


def _truncate_half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _truncate_one(data: bytes) -> bytes:
    return data[:-1]


def _garbage(data: bytes) -> bytes:
    return bytes((i * 37 + 11) % 256 for i in range(len(data)))


def _swap_bytes(start: int) -> Callable[[bytes], bytes]:
    """Swap the first two different bytes from ``start`` on: a change no length check sees."""

    def swap(data: bytes) -> bytes:
        i = start
        j = next(j for j in range(i + 1, len(data)) if data[j] != data[i])
        damaged = bytearray(data)
        damaged[i], damaged[j] = damaged[j], damaged[i]
        return bytes(damaged)

    return swap


INDEX_HEADER_BYTES = 48
DAMAGE: dict[str, Callable[[bytes], bytes] | None] = {
    "deleted": None,
    "emptied": lambda data: b"",
    "truncated-half": _truncate_half,
    "truncated-one-byte": _truncate_one,
    "garbage": _garbage,
    "swapped-entry-bytes": _swap_bytes(INDEX_HEADER_BYTES),
    "swapped-header-bytes": _swap_bytes(16),  # inside covered_log_bytes and next_offset
    "appended-entry": lambda data: data + bytes(8),
}


def lookups(log: PartitionLog, records: list[StoredRecord]) -> dict[str, object]:
    """Every answer a reader can get: a read at each offset and each timestamp lookup."""
    stamps = sorted({r.timestamp_ms for r in records})
    targets = [0, *stamps, *(t + 1 for t in stamps), *(t - 1 for t in stamps)]
    return {
        "end_offset": log.end_offset,
        "reads": [log.read(offset, max_records=1) for offset in range(log.end_offset)],
        "by_time": {t: log.offset_for_timestamp(t) for t in targets},
    }


def expected_lookups(records: list[StoredRecord]) -> dict[str, object]:
    stamps = sorted({r.timestamp_ms for r in records})
    targets = [0, *stamps, *(t + 1 for t in stamps), *(t - 1 for t in stamps)]
    first_at = {t: next((r.offset for r in records if r.timestamp_ms >= t), None) for t in targets}
    return {
        "end_offset": len(records),
        "reads": [[r] for r in records],
        "by_time": first_at,
    }


def close_cleanly(directory: Path, clock: ManualClock) -> None:
    log = open_log(directory, clock)
    log.close(clean=True)


@pytest.mark.parametrize(
    "suffixes",
    [(INDEX_SUFFIX,), (TIME_INDEX_SUFFIX,), (INDEX_SUFFIX, TIME_INDEX_SUFFIX)],
    ids=["index", "timeindex", "both"],
)
@pytest.mark.parametrize("damage", DAMAGE, ids=str)
def test_damaged_indexes_are_rebuilt_after_a_clean_shutdown(
    tmp_path: Path,
    clock: ManualClock,
    template: tuple[Path, list[StoredRecord]],
    damage: str,
    suffixes: tuple[str, ...],
) -> None:
    directory, records = template
    close_cleanly(directory, clock)
    work = fresh_copy(directory, tmp_path / "work")
    bases = segment_bases(PLAN)
    damaged = bases[:2]  # the sealed segments
    for base in damaged:
        for suffix in suffixes:
            path = segment_path(work, base, suffix)
            transform = DAMAGE[damage]
            if transform is None:
                path.unlink()
            else:
                before = path.read_bytes()
                path.write_bytes(transform(before))
                assert path.read_bytes() != before

    log = open_log(work, clock, clean=True)
    try:
        report = log.recovery
        assert report.clean_shutdown
        assert report.indexes_rebuilt == len(damaged)
        assert report.segments_scanned == len(damaged)
        assert not report.lost_data
        assert report.segments == len(bases)
        assert lookups(log, records) == expected_lookups(records)
    finally:
        log.close()
    # The rebuilt indexes were written back by the clean close: the next clean open trusts them.
    log = open_log(work, clock, clean=True)
    assert (log.recovery.segments_scanned, log.recovery.indexes_rebuilt) == (0, 0)
    assert lookups(log, records) == expected_lookups(records)
    log.close()


def test_indexes_give_the_same_answers_as_a_scan(
    clock: ManualClock, template: tuple[Path, list[StoredRecord]]
) -> None:
    """The baseline for the test above: trusted indexes (clean) and rebuilt ones (crash)."""
    directory, records = template
    log = open_log(directory, clock)  # unclean: the last segment is scanned
    assert lookups(log, records) == expected_lookups(records)
    log.close(clean=True)
    log = open_log(directory, clock, clean=True)
    assert log.recovery.segments_scanned == 0
    assert lookups(log, records) == expected_lookups(records)
    log.close()


def test_index_files_of_another_segment_are_not_trusted(tmp_path: Path, clock: ManualClock) -> None:
    """Index files that describe a different segment of the same size must not be adopted.

    Their CRC, order and covered size all check out; only the offsets they claim are wrong.
    """
    same_shape = [[Record(value=b"a")], [Record(value=b"b"), Record(value=b"c")]]
    plan = [same_shape, same_shape, [[Record(value=b"d")]]]
    directory = tmp_path / "log"
    build(directory, clock, plan)
    close_cleanly(directory, clock)
    first, second, _ = segment_bases(plan)
    assert (
        segment_path(directory, first).stat().st_size
        == segment_path(directory, second).stat().st_size
    )
    for suffix in (INDEX_SUFFIX, TIME_INDEX_SUFFIX):
        shutil.copyfile(
            segment_path(directory, first, suffix), segment_path(directory, second, suffix)
        )

    log = open_log(directory, clock, clean=True)
    try:
        assert log.recovery.segments_dropped == 0, log.recovery.problems
        assert log.end_offset == 7
        assert [r.offset for r in read_all(log)] == list(range(7))
    finally:
        log.close()


# -- clean and unclean restarts -----------------------------------------------------------------


def test_a_clean_restart_skips_the_scan(
    clock: ManualClock, template: tuple[Path, list[StoredRecord]]
) -> None:
    directory, records = template
    close_cleanly(directory, clock)
    log = open_log(directory, clock, clean=True)
    try:
        report = log.recovery
        assert report.clean_shutdown
        assert (report.segments, report.segments_scanned, report.indexes_rebuilt) == (3, 0, 0)
        assert not report.problems
        assert read_all(log) == records
    finally:
        log.close(clean=False)
    # Without the marker the same files are treated as a crash: the last segment is scanned.
    log = open_log(directory, clock)
    assert (log.recovery.segments_scanned, log.recovery.indexes_rebuilt) == (1, 1)
    assert not log.recovery.lost_data
    log.close()


def test_the_engine_marker_decides_whether_to_scan(
    data_dir: str, clock: ManualClock, engine: LocalEngine
) -> None:
    topic = engine.create_topic(TOPIC, TopicConfig(partitions=2, index_interval_bytes=64))
    for partition in (0, 1):
        for first in range(0, 12, 3):
            clock.advance(10)
            topic.append(partition, _batch(first, 3))
        topic.log(partition).roll()
        topic.append(partition, _batch(12, 2))
    engine.close()
    assert os.path.exists(os.path.join(data_dir, CLEAN_MARKER))

    reopened = LocalEngine.open(data_dir, clock)
    assert reopened.recovery.clean_shutdown
    assert not os.path.exists(os.path.join(data_dir, CLEAN_MARKER))  # a crash now is unclean
    assert [log.segments_scanned for log in reopened.recovery.logs] == [0, 0]
    assert [log.segments for log in reopened.recovery.logs] == [2, 2]
    reopened.close()

    os.remove(os.path.join(data_dir, CLEAN_MARKER))
    reopened = LocalEngine.open(data_dir, clock)
    try:
        assert not reopened.recovery.clean_shutdown
        assert [log.segments_scanned for log in reopened.recovery.logs] == [1, 1]
        assert not reopened.recovery.lost_data
        assert [reopened.topic(TOPIC).end_offset(p) for p in (0, 1)] == [14, 14]
    finally:
        reopened.close()


# -- stray files --------------------------------------------------------------------------------


def test_stray_files_are_removed_on_open(
    clock: ManualClock, template: tuple[Path, list[StoredRecord]]
) -> None:
    directory, records = template
    strays = [
        file_name(7, LOG_SUFFIX) + ".tmp",  # a replacement that never got renamed
        "anything.tmp",
        file_name(99, INDEX_SUFFIX),  # indexes whose log file is gone
        file_name(99, TIME_INDEX_SUFFIX),
    ]
    for name in strays:
        (directory / name).write_bytes(b"left behind")
    before = sorted(os.listdir(directory))

    log = open_log(directory, clock)
    try:
        assert read_all(log) == records
        assert not log.recovery.lost_data
    finally:
        log.close(clean=False)
    after = sorted(os.listdir(directory))
    assert after == [name for name in before if name not in strays]
    assert all(segment_path(directory, base).exists() for base in segment_bases(PLAN))


@pytest.mark.parametrize("left", [1, 9, batch_format.HEADER_SIZE - 1])
def test_a_sealed_segment_ending_inside_a_header_is_a_torn_write_not_damage(
    tmp_path: Path, clock: ManualClock, template: tuple[Path, list[StoredRecord]], left: int
) -> None:
    """A power cut can leave a sealed segment's last, unsynced write cut short anywhere, also
    inside its 40-byte header: fewer bytes than a header at its end are what a torn write
    leaves, whatever they are (they were found quarantining a journal after a power cut)."""
    directory, records = template
    victim = layout(directory, PLAN)[0][-1]
    work = fresh_copy(directory, tmp_path / "work")
    path = segment_path(work, 0)
    for suffix in (INDEX_SUFFIX, TIME_INDEX_SUFFIX):
        segment_path(work, 0, suffix).unlink()
    with path.open("r+b") as f:
        f.truncate(victim.start_byte + left)
        f.seek(victim.start_byte)
        f.write(b"\xab" * left)
    log = open_log(work, clock)
    try:
        assert not log.quarantined
        assert read_all(log) == records[: victim.base_offset]
        assert log.recovery.bytes_truncated == left
        assert log.recovery.segments_dropped == len(segment_bases(PLAN)) - 1
    finally:
        log.close()
