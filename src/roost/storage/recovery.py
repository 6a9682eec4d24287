"""Opening a partition directory: find the segments, trust what can be trusted, cut the rest.

The log file is the truth; indexes are hints. On open:

1. Stray files go: half-written ``*.tmp`` replacements and indexes whose log file is gone.
2. Segments are taken in base-offset order. After a clean shutdown, a segment whose index files
   describe its log file exactly (CRC, order, covered size) is adopted without reading the log
   (its CRCs are checked later: on first read, and by the scrub). Otherwise — no clean marker
   for the last segment, a missing or damaged index, or a partition quarantined before — the
   segment is scanned: every batch's CRC and offsets are checked and the index is rebuilt.
   After a crash, the last segment's scan starts at its recovery point when it has one: index
   files written, while it was active, for a prefix of it known synced (``Segment.checkpoint``,
   every 8 MiB); that prefix is adopted as a sealed segment's is, its CRCs checked as reads
   reach it, so a restart scans at most ~8 MiB per partition, not the whole active segment.
3. Torn-write recovery, after a crash only: the first torn or corrupt batch of the *last*
   segment ends the log; the file is cut there. So does damage that ends a *sealed* segment
   (the bad batch is its last, or runs past its end, or only zeros follow): appends not yet
   synced when the log rolled leave exactly that, and every later segment then holds only
   records no ``always`` producer was told were stored, so those segments are dropped; the
   same when a segment does not continue the one before it (that one lost its unsynced end).
   Nothing confirmed under ``always`` lies past such a cut.
4. Any other damage — a bad batch with more data after it in a sealed segment, any bad batch
   or missing segment after a clean shutdown — is not a torn write:
   the partition is **quarantined** with nothing cut or dropped. Its reads and writes are
   refused (``PartitionQuarantined``) until an operator restores the files or accepts the loss
   with ``roost check --repair`` (``repair=True`` here: cut at the damage, drop what follows,
   as the old recovery did). A ``QUARANTINE`` file in the partition directory remembers the
   damage across restarts and makes the next open verify every segment; when they all verify
   again (files restored), the quarantine is lifted.

What was done is returned as a ``LogRecovery``; the engine collects them into the report the
admin API shows.
"""

from __future__ import annotations

import contextlib
import os
from typing import NamedTuple

import msgspec

from roost.storage.batch import HEADER_SIZE, CorruptBatch, parse_header
from roost.storage.fd_pool import FdPool
from roost.storage.fs import LocalFS
from roost.storage.segment import (
    INDEX_SUFFIX,
    LOG_SUFFIX,
    SCAN_CHUNK_BYTES,
    TIME_INDEX_SUFFIX,
    ScanResult,
    Segment,
)

#: In a partition directory while the partition is quarantined; holds the damage, in words.
QUARANTINE_NAME = "QUARANTINE"


class LogRecovery(msgspec.Struct, kw_only=True):
    log: str
    clean_shutdown: bool
    segments: int = 0
    segments_scanned: int = 0
    indexes_rebuilt: int = 0
    bytes_truncated: int = 0
    segments_dropped: int = 0
    #: Why the log is out of service ("" while it serves): the damage, found on open, on a
    #: read or by the scrub. Nothing was cut for it.
    quarantined: str = ""
    #: Whom the log serves, when its name does not say (a journal: "subscription orders/w").
    owner: str = ""
    #: Offsets put in a gap batch at broker open: subscriptions had seen them, the log no
    #: longer had them (a cut, or a suffix lost to a power failure), and they must not be
    #: given to new records.
    offsets_skipped: int = 0
    problems: list[str] = msgspec.field(default_factory=list)

    @property
    def lost_data(self) -> bool:
        return bool(self.bytes_truncated or self.segments_dropped or self.offsets_skipped)


def open_segments(
    fs: LocalFS,
    directory: str,
    index_interval_bytes: int,
    report: LogRecovery,
    repair: bool = False,
    verify_from: int | None = None,
    pool: FdPool | None = None,
) -> list[Segment]:
    """The segments of ``directory``, recovered (see the module docstring); ``report`` says how.

    ``repair``: cut at any damage and drop the segments after it (accepting the loss) instead of
    quarantining; the quarantine file goes. With ``verify_from`` (reopening a log after a failed
    write: see repair.py) only segments whose every record lies below it, known durable, may be
    adopted by their index; every other one is scanned, since the kernel may have dropped its
    dirty pages, and a bad end there is cut as a torn write. The segments get their descriptors
    from ``pool`` (None: one of their own, without a ceiling).
    """
    pool = pool or FdPool(fs)
    marker = os.path.join(directory, QUARANTINE_NAME)
    was_quarantined = fs.exists(marker)
    bases = _segment_bases(fs, directory)
    segments: list[Segment] = []
    plan = _Plan(index_interval_bytes, repair, verify_from, was_quarantined, pool)
    try:
        _open_in_order(fs, directory, report, plan, bases, segments)
    except BaseException:
        for segment in segments:  # a repair retried through a long outage must not leak fds
            segment.close()
        raise
    report.segments = len(segments)
    if was_quarantined and not report.quarantined:
        fs.remove(marker)
        report.problems.append("quarantine lifted: every segment verified (or was repaired)")
    return segments


class _Plan(NamedTuple):
    index_interval_bytes: int
    repair: bool
    verify_from: int | None
    was_quarantined: bool
    pool: FdPool


def _open_in_order(
    fs: LocalFS,
    directory: str,
    report: LogRecovery,
    plan: _Plan,
    bases: list[int],
    segments: list[Segment],
) -> None:
    # What a crash (or a failed write being repaired) may have torn: unsynced ends.
    torn_possible = not report.clean_shutdown or plan.verify_from is not None
    for i, base in enumerate(bases):
        is_last = i == len(bases) - 1
        if segments and base != segments[-1].next_offset and not report.quarantined:
            why = f"segment {base} does not continue at offset {segments[-1].next_offset}"
            # After a crash, the segment before lost its unsynced end (see 3. above).
            if plan.repair or torn_possible:
                _drop(fs, directory, bases[i:], report, why)
                break
            _quarantine(report, why)
        segment = Segment.open(fs, directory, base, plan.pool)
        segments.append(segment)
        known_durable = plan.verify_from is None or (
            not is_last and bases[i + 1] <= plan.verify_from
        )
        trusted = (
            not plan.was_quarantined
            and not plan.repair
            and (report.clean_shutdown or not is_last)
            and known_durable
            and segment.load_index()
        )
        if trusted:
            continue
        # After a crash the last segment's unsynced end may be torn; what its recovery point
        # covers was synced before that point was written (segment.py): scan only after it.
        resume = (
            is_last
            and torn_possible
            and plan.verify_from is None
            and not plan.repair
            and not plan.was_quarantined
        )
        result = _scan(segment, plan.index_interval_bytes, report, resume)
        if result.problem is None:
            continue
        torn_tail = (
            torn_possible
            and not (plan.verify_from is not None and known_durable)
            and (is_last or ends_segment(segment, result))
        )
        if report.quarantined or not (torn_tail or plan.repair):
            _quarantine(report, f"segment {base}: {describe_damage(result)}")
            continue
        _cut(segment, result, report)
        if not is_last:
            _drop(
                fs,
                directory,
                bases[i + 1 :],
                report,
                f"segments after the cut in segment {base} can no longer follow it",
            )
            break


def write_quarantine_marker(fs: LocalFS, directory: str, damage: str) -> None:
    """Remember ``damage`` across restarts (see the module docstring). A hint, not fsynced: if a
    crash loses it, the damage is found again on the next scan or read."""
    fs.write_file(os.path.join(directory, QUARANTINE_NAME), damage.encode())


def _quarantine(report: LogRecovery, damage: str) -> None:
    if not report.quarantined:
        report.quarantined = damage
    report.problems.append(f"quarantined, nothing cut: {damage}")


def ends_segment(segment: Segment, result: ScanResult) -> bool:
    """Whether the bad data found by a scan is what a torn write leaves at a segment's end:
    the bad batch is the file's last (or runs past its end), or only zeros follow. A bad batch
    with more data after it is damage in the middle of the segment, which no crash leaves."""
    remaining = result.file_bytes - result.valid_bytes
    if remaining < HEADER_SIZE:
        return True  # the file ends inside a header: a write cut short, whatever the bytes
    head = segment.fs.pread(segment.fd, HEADER_SIZE, result.valid_bytes)
    with contextlib.suppress(CorruptBatch):
        return result.valid_bytes + parse_header(head).size >= result.file_bytes
    position = result.valid_bytes
    while position < result.file_bytes:
        chunk = segment.fs.pread(
            segment.fd, min(SCAN_CHUNK_BYTES, result.file_bytes - position), position
        )
        if chunk.count(0) != len(chunk):
            return False
        position += len(chunk)
    return True


def describe_damage(result: ScanResult) -> str:
    return f"bad batch at byte {result.valid_bytes} of {result.file_bytes}: {result.problem}"


def _scan(
    segment: Segment, index_interval_bytes: int, report: LogRecovery, resume: bool = False
) -> ScanResult:
    """Verify every batch of ``segment`` (after its recovery point, with ``resume``) and
    rebuild its index in memory; nothing is cut."""
    result = segment.scan(index_interval_bytes, resume)
    report.segments_scanned += 1
    report.indexes_rebuilt += 1
    return result


def _cut(segment: Segment, result: ScanResult, report: LogRecovery) -> None:
    """Cut ``segment`` where its good data ends (torn-write recovery, or a repair)."""
    segment.truncate(result.valid_bytes)
    segment.remove_index()
    report.bytes_truncated += result.file_bytes - result.valid_bytes
    report.problems.append(
        f"segment {segment.base_offset}: cut {result.file_bytes - result.valid_bytes} bytes "
        f"at byte {result.valid_bytes} (offset {segment.next_offset}): {result.problem}"
    )


def _drop(fs: LocalFS, directory: str, bases: list[int], report: LogRecovery, why: str) -> None:
    for base in bases:
        dropped = Segment.open(fs, directory, base)
        dropped.delete()
        report.segments_dropped += 1
    report.problems.append(f"dropped {len(bases)} segment(s): {why}")


def _segment_bases(fs: LocalFS, directory: str) -> list[int]:
    names = fs.listdir(directory)
    bases = sorted(
        int(name[: -len(LOG_SUFFIX)])
        for name in names
        if name.endswith(LOG_SUFFIX) and name[: -len(LOG_SUFFIX)].isdigit()
    )
    logs = {f"{base:020d}" for base in bases}
    for name in names:
        stem, suffix = os.path.splitext(name)
        orphan_index = suffix in (INDEX_SUFFIX, TIME_INDEX_SUFFIX) and stem not in logs
        if suffix == ".tmp" or orphan_index:
            fs.remove(os.path.join(directory, name))
    return bases
