"""Log compaction (Kafka's ``cleanup.policy=compact``): keep the latest record per key.

How it works, per partition of a compacted topic:

- Only **sealed** segments are compacted, never the active one, and only those a crash can no
  longer change: durable, no flush job holding them. They form a prefix of the log. The
  shared WAL's replay writes at fixed positions, so before a swap the old file is fdatasynced
  and the WAL's records for it voided (a forget marker): old bytes never land in a new file.
- The **clean point** (``CLEANED`` in the partition directory, a hint) says up to which offset
  the log was compacted. The segments past it are *dirty*; a pass runs when dirty bytes are at
  least ``min_dirty_ratio`` of the compactable bytes, or when a kept tombstone's retention has
  run out. A lost or stale hint costs work, never records.
- A pass (``CompactionJob.run``, in a thread) walks the compactable segments **newest
  first**, reading each once: a record is kept unless a newer record of its key was seen (the
  keys seen so far are one set, at most ``max_keys``: past that the older segments wait, and
  memory stays bounded). Only a segment that drops something is rewritten; the rewrite reads
  again only the batches it keeps (a batch kept whole is copied byte for byte, a split one
  decoded). A **tombstone** (a keyed record with an empty value) is kept until
  ``tombstone_retention_ms`` after its batch was appended, so that a consumer that catches
  up in time sees the delete; then it goes too. Records without a key (which a compacted
  topic refuses, but a log may hold from before) are always kept. Unlike Kafka's cleaner,
  which maps the dirty section's keys first and then rewrites, newest first needs one read
  per segment and one set operation per record.
- A rewritten segment keeps its base offset and its offsets: the records kept are written as
  batches of dense runs, and each run of dropped offsets becomes one **gap batch** (batch.py),
  so the file is still a dense run of batches that every reader, index, scan and check knows.
  It is written as ``<base>.compacted.tmp``, fsynced, and swapped in when it dropped records
  (and its size differs: how the scrub tells a replaced file from the one it was reading).
- The **swap** (``Compactor.swap``, on the loop, a rename and no fsync) replaces the file and
  the in-memory segment together, after checking the segment is still the one read. Then
  ``CompactionJob.settle`` (a thread) fsyncs the directory, closes the old files' last
  descriptor (freeing their blocks, off the loop), writes the new index files (a hint) and the
  clean point. A crash before the rename leaves a ``*.tmp`` that recovery removes; after
  it, the new file or (without the directory fsync) the old one, both whole and valid.

The I/O is paced at ``bytes_per_second`` (reads and writes counted), by pauses in the thread.
Concurrency: ``next_job``, ``swap`` and ``finish`` run on the loop; ``run`` and ``settle`` in a
thread, touching only files and the new segments they made.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable

from roost.clock import Clock
from roost.storage.compaction_pass import (
    CLEAN_POINT_NAME,
    DEFAULT_MAX_KEYS,
    DEFAULT_MIN_DIRTY_RATIO,
    TEMP_SUFFIX,
    CleanPoint,
    CompactionJob,
    CompactionSettings,
    CompactionStopped,
    Swap,
)
from roost.storage.engine import LocalEngine
from roost.storage.fs import LocalFS
from roost.storage.log import PartitionLog

__all__ = [
    "CLEAN_POINT_NAME",
    "DEFAULT_MAX_KEYS",
    "DEFAULT_MIN_DIRTY_RATIO",
    "TEMP_SUFFIX",
    "CleanPoint",
    "CompactedLogs",
    "CompactionJob",
    "CompactionSettings",
    "CompactionStopped",
    "Compactor",
    "Swap",
    "clean_point",
    "compacted_logs",
    "read_clean_point",
]

log = logging.getLogger("roost.compaction")


def read_clean_point(fs: LocalFS, directory: str) -> CleanPoint:
    path = os.path.join(directory, CLEAN_POINT_NAME)
    try:
        data = json.loads(fs.read_file(path))
        return CleanPoint(int(data["cleaned_offset"]), data.get("tombstones_due_ms"))
    except (OSError, ValueError, KeyError, TypeError):
        return CleanPoint()  # no hint, or a damaged one: everything counts as dirty


def clean_point(log: PartitionLog) -> CleanPoint:
    """The log's clean point, read from its hint file the first time it is asked."""
    point = log.clean_point
    if point is None:
        point = read_clean_point(log.fs, log.directory) if log.on_disk else CleanPoint()
        log.clean_point = point
    return point


class Compactor:
    """Chooses the next partition to compact and applies what a pass did. Loop-side, but
    ``CompactionJob.run``/``settle``. ``logs`` lists the logs of compacted topics now."""

    def __init__(
        self,
        logs: Callable[[], list[PartitionLog]],
        clock: Clock,
        settings: CompactionSettings | None = None,
    ) -> None:
        self._logs = logs
        self._clock = clock
        self.settings = settings or CompactionSettings()
        self._cursor = 0
        #: Metrics: passes finished, segments swapped, bytes and records reclaimed.
        self.runs = 0
        self.segments_compacted = 0
        self.bytes_reclaimed = 0
        self.records_removed = 0
        self.last_run_ms = 0
        self.damage_found = 0

    def next_job(self) -> CompactionJob | None:
        """A pass for the next partition (round robin) that needs one; None if none does."""
        logs = self._logs()
        now_ms = self._clock.now_ms()
        for step in range(len(logs)):
            log = logs[(self._cursor + step) % len(logs)]
            job = self.job_for(log, now_ms)
            if job is not None:
                self._cursor = (self._cursor + step + 1) % len(logs)
                return job
        return None

    def job_for(self, log: PartitionLog, now_ms: int) -> CompactionJob | None:
        """A pass for ``log`` if its dirty ratio or a due tombstone calls for one."""
        segments = log.compactable_segments()
        if not segments:
            return None
        point = clean_point(log)
        total = sum(s.size for s in segments)
        dirty = sum(s.size for s in segments if s.next_offset > point.cleaned_offset)
        due = point.tombstones_due_ms is not None and point.tombstones_due_ms <= now_ms
        if not due and not (dirty and dirty >= total * self.settings.min_dirty_ratio):
            return None
        return CompactionJob(log, segments, point, now_ms, self.settings, self._clock)

    def swap(self, job: CompactionJob) -> None:
        """Swap the rewritten segments in (loop; renames, no fsync). A segment that changed
        since the pass read it (retention deleted it, the log failed) keeps its file."""
        if job.damage is not None:
            self.damage_found += 1
            job.log.quarantine(f"compaction found a bad batch: {job.damage}")
            return
        swapped: list[Swap] = []
        compactable = job.log.compactable_segments()
        try:
            job.log.forget_in_wal([swap.old for swap in job.swaps if swap.old in compactable])
        except OSError as e:  # nothing swapped: the next pass tries again
            log.warning("%s: compaction could not write to the WAL: %s", job.log.name, e)
            job.discard()
            job.cleanable_end = job.point.cleaned_offset  # not compacted: the point stays
            return
        for swap in job.swaps:
            old_size = swap.old.size
            if job.log.swap_segment(swap.old, swap.new, swap.temp_path):
                # Dropping one record in the middle of a batch splits it in three: a file
                # of tiny records may grow a little, the records dropped still go.
                self.bytes_reclaimed += max(0, old_size - swap.new.size)
                self.segments_compacted += 1
                swapped.append(swap)
            else:
                swap.new.close()
                with contextlib.suppress(OSError):
                    job.fs.close(swap.old_fd)
                    job.fs.remove(swap.temp_path)
                job.cleanable_end = job.point.cleaned_offset  # that one waits: try it again
        job.swaps = swapped

    def finish(self, job: CompactionJob) -> None:
        """After ``settle``: the clean point moves on and the pass counts."""
        if job.damage is None:
            job.log.clean_point = CleanPoint(job.cleanable_end, job.tombstones_due_ms)
        self.records_removed += job.records_dropped
        self.runs += 1
        self.last_run_ms = self._clock.monotonic_ms() - job.started_ms

    def compact(self, log: PartitionLog) -> CompactionJob | None:
        """One pass over ``log`` now, every step inline (blocking): for tests and tools."""
        job = self.job_for(log, self._clock.now_ms())
        if job is None:
            return None
        job.run()
        self.swap(job)
        job.settle()
        self.finish(job)
        return job


def compacted_logs(engine: LocalEngine) -> list[PartitionLog]:
    """Every partition log of the engine's compacted topics."""
    logs: list[PartitionLog] = []
    for name in engine.topic_names():
        topic = engine.topic(name)
        if topic.config.compacted:
            logs.extend(topic.partitions)
    return logs


class CompactedLogs:
    """``compacted_logs(engine)``, looked for again only when a definition changed (the
    metadata's version moved): the host asks every few seconds, and 100,000 queues must not
    cost a walk over every topic each time."""

    def __init__(self, engine: LocalEngine) -> None:
        self._engine = engine
        self._version = -1
        self._logs: list[PartitionLog] = []

    def __call__(self) -> list[PartitionLog]:
        version = self._engine.metadata.version
        if version != self._version:
            self._logs, self._version = compacted_logs(self._engine), version
        return [log for log in self._logs if not log.closed]
