"""Opening a partition directory: find the segments, trust what can be trusted, cut the rest.

The log file is the truth; indexes are hints. On open:

1. Stray files go: half-written ``*.tmp`` replacements and indexes whose log file is gone.
2. Segments are taken in base-offset order. A segment whose base does not continue the previous
   one exactly is dropped with everything after it: offsets stay dense or the log is wrong.
3. After a clean shutdown, a segment whose index files describe its log file exactly (CRC,
   order, covered size) is adopted without reading the log. Otherwise — no clean marker for the
   last segment, or a missing or damaged index for any — the segment is scanned: every batch's
   CRC and offsets are checked and the index is rebuilt.
4. The first torn or corrupt batch ends the log: the file is cut there and any later segments
   are dropped. Everything before it was verified; nothing after it could be.

What was done is returned as a ``LogRecovery``; the engine collects them into the report the
admin API shows.
"""

from __future__ import annotations

import os

import msgspec

from roost.storage.fs import LocalFS
from roost.storage.segment import INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX, Segment


class LogRecovery(msgspec.Struct, kw_only=True):
    log: str
    clean_shutdown: bool
    segments: int = 0
    segments_scanned: int = 0
    indexes_rebuilt: int = 0
    bytes_truncated: int = 0
    segments_dropped: int = 0
    #: Offsets put in a gap batch at broker open: subscriptions had seen them, the log no
    #: longer had them (a cut, or a suffix lost to a power failure), and they must not be
    #: given to new records.
    offsets_skipped: int = 0
    problems: list[str] = msgspec.field(default_factory=list)

    @property
    def lost_data(self) -> bool:
        return bool(self.bytes_truncated or self.segments_dropped or self.offsets_skipped)


def open_segments(
    fs: LocalFS, directory: str, index_interval_bytes: int, report: LogRecovery
) -> list[Segment]:
    bases = _segment_bases(fs, directory)
    segments: list[Segment] = []
    for i, base in enumerate(bases):
        if segments and base != segments[-1].next_offset:
            _drop(
                fs,
                directory,
                bases[i:],
                report,
                f"segment {base} does not continue at offset {segments[-1].next_offset}",
            )
            break
        segment = Segment.open(fs, directory, base)
        is_last = i == len(bases) - 1
        trusted = (report.clean_shutdown or not is_last) and segment.load_index()
        if not trusted:
            cut = _scan(segment, index_interval_bytes, report)
            segments.append(segment)
            if cut and not is_last:
                _drop(
                    fs,
                    directory,
                    bases[i + 1 :],
                    report,
                    f"segments after the cut in segment {base} can no longer follow it",
                )
                break
            continue
        segments.append(segment)
    report.segments = len(segments)
    return segments


def _scan(segment: Segment, index_interval_bytes: int, report: LogRecovery) -> bool:
    """Scan and cut ``segment``; True if anything was cut."""
    result = segment.scan(index_interval_bytes)
    report.segments_scanned += 1
    report.indexes_rebuilt += 1
    if result.valid_bytes == result.file_bytes:
        return False
    segment.truncate(result.valid_bytes)
    segment.remove_index()
    report.bytes_truncated += result.file_bytes - result.valid_bytes
    report.problems.append(
        f"segment {segment.base_offset}: cut {result.file_bytes - result.valid_bytes} bytes "
        f"at byte {result.valid_bytes} (offset {segment.next_offset}): {result.problem}"
    )
    return True


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
