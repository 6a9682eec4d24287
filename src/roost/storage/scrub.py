"""The scrub: sealed segments re-verified in the background, a bounded chunk at a time.

A clean start trusts sealed segments' indexes without reading the log (recovery.py), so bit
rot in a segment nobody reads would go unseen until a consumer reaches it, or a disk fails
and the last good copy is gone. The scrub reads every sealed segment of every topic
partition again, batch by batch, checking each CRC, and quarantines a partition the moment
it finds damage (``PartitionLog.quarantine``), as a read would.

It is split so that the reading runs off the event loop and nothing is shared with it:

    job = scrubber.next_job()     # on the loop: which file, from where, up to where
    result = job.run()            # in a thread: opens the file read-only by path, verifies
    scrubber.finish(job, result)  # on the loop: quarantine, or move the cursor on

A job verifies at most ``chunk_bytes`` (whole batches; one larger batch is read whole), so the
caller bounds the I/O per step and paces the steps (the host sleeps between them, see
``Host``). Finding the sealed segments is work per partition, on the loop: a pass looks at
``SCAN_TOPICS_PER_STEP`` topics per call (``next_job`` returns None while ``scanning``, and the
host gives the loop a turn before calling again), so that 100,000 topics are not one stall of
~0.4 s once a minute. Only sealed segments are scrubbed: they never change until deleted
whole, or replaced whole by compaction (storage/compaction.py) with a file of another size. A
segment deleted meanwhile (retention) is skipped; one replaced meanwhile, whose job then read
the new file as if it were the old, is verified again from its start (not damage); active
segments and journals are verified on open.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from roost.storage import batch as batch_format
from roost.storage.batch import HEADER_SIZE, CorruptBatch
from roost.storage.engine import LocalEngine
from roost.storage.fs import LocalFS
from roost.storage.log import PartitionLog

DEFAULT_CHUNK_BYTES = 1024 * 1024
#: Topics a pass's scan for sealed segments looks at per ``next_job`` call (~1-3 ms).
SCAN_TOPICS_PER_STEP = 250


class ScrubResult(NamedTuple):
    #: Where the next job on this segment starts (the end of the last whole batch verified).
    next_position: int
    bytes_read: int
    #: The damage found, in words; None if every batch read was sound.
    damage: str | None
    #: The file was gone (the segment was deleted since the job was made).
    gone: bool = False


class ScrubJob(NamedTuple):
    fs: LocalFS
    log: PartitionLog
    base_offset: int
    path: str
    position: int
    end: int
    chunk_bytes: int

    def run(self) -> ScrubResult:
        """Verify whole batches from ``position``, at most about ``chunk_bytes``. Blocking."""
        try:
            fd = self.fs.open_ro(self.path)
        except FileNotFoundError:
            return ScrubResult(self.position, 0, None, gone=True)
        try:
            return self._verify(fd)
        finally:
            self.fs.close(fd)

    def _verify(self, fd: int) -> ScrubResult:
        position, read = self.position, 0
        limit = min(self.end, self.position + self.chunk_bytes)
        data = self.fs.pread(fd, limit - position, position)
        read += len(data)
        offset = 0
        try:
            while position < limit:
                if len(data) - offset < HEADER_SIZE:
                    data, offset = self.fs.pread(fd, HEADER_SIZE, position), 0
                    read += len(data)
                header = batch_format.parse_header(data, offset)
                if offset + header.size > len(data):  # a batch past the chunk: read it whole
                    if position + header.size > self.end:
                        raise CorruptBatch(f"batch runs past the segment's end ({self.end})")
                    data, offset = self.fs.pread(fd, header.size, position), 0
                    read += len(data)
                batch_format.verify(data, offset, header)
                offset += header.size
                position += header.size
        except CorruptBatch as e:
            where = f"segment {self.base_offset}: the scrub found a bad batch at byte {position}"
            return ScrubResult(position, read, f"{where}: {e}")
        return ScrubResult(position, read, None)


class Scrubber:
    """The cursor of the scrub over the engine's topic partitions (see the module docstring).
    Every method but ``ScrubJob.run`` runs on the thread that owns the engine."""

    def __init__(self, engine: LocalEngine, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        self._engine = engine
        self._chunk_bytes = chunk_bytes
        self._pending: list[tuple[PartitionLog, int, str, int]] = []  # (log, base, path, size)
        self._position = 0
        #: The topics this pass has still to look at for sealed segments, from ``_scanned``.
        self._to_scan: list[str] = []
        self._scanned = 0
        #: Whole passes over every sealed segment completed; found: partitions quarantined.
        self.passes = 0
        self.bytes_verified = 0
        self.found = 0

    @property
    def scanning(self) -> bool:
        """A pass is still looking for sealed segments: a None from ``next_job`` means "call
        again", not "nothing to scrub"."""
        return self._scanned < len(self._to_scan)

    def next_job(self) -> ScrubJob | None:
        """The next chunk to verify; None when there is nothing sealed to scrub at all, or
        when this call's share of the scan found none yet (``scanning``)."""
        began = False  # at most one new pass per call
        while True:
            while self._pending:
                log, base, path, size = self._pending[0]
                if not log.closed and not log.quarantined and self._position < size:
                    return ScrubJob(
                        self._engine.fs, log, base, path, self._position, size, self._chunk_bytes
                    )
                self._next_segment()
            if self.scanning:
                self._scan_some()
                if not self._pending:
                    return None  # more to scan (``scanning``), or the pass found nothing
            elif began:
                return None
            else:
                self._start_pass()
                began = True

    def finish(self, job: ScrubJob, result: ScrubResult) -> None:
        """Apply what ``job`` found: quarantine its log for damage, else move on."""
        self.bytes_verified += result.bytes_read
        current = self._pending[0] if self._pending else None
        if current is None or current[0] is not job.log or current[1] != job.base_offset:
            return  # the cursor moved on (a new pass began): nothing to apply
        if result.gone:
            self._next_segment()
            return
        if result.damage is not None:
            if job.log.sealed_segments().get(job.base_offset, job.end) != job.end:
                # Compaction swapped in a new file of another size since the job was made:
                # the scrub read two files as one. The new one is verified from its start.
                self._pending[0] = (job.log, job.base_offset, job.path, self._size_of(job))
                self._position = 0
                return
            if job.base_offset in job.log.sealed_segments():  # not deleted meanwhile
                job.log.quarantine(result.damage)
                self.found += 1
            self._next_segment()
            return
        self._position = result.next_position

    @staticmethod
    def _size_of(job: ScrubJob) -> int:
        return job.log.sealed_segments().get(job.base_offset, 0)

    def _next_segment(self) -> None:
        self._pending.pop(0)
        self._position = 0

    def _start_pass(self) -> None:
        if self._pending == [] and self.bytes_verified:
            self.passes += 1
        self._to_scan, self._scanned = self._engine.topic_names(), 0

    def _scan_some(self) -> None:
        names = self._to_scan[self._scanned : self._scanned + SCAN_TOPICS_PER_STEP]
        self._scanned += len(names)
        if not self.scanning:
            self._to_scan, self._scanned = [], 0
        for name in names:
            if not self._engine.has_topic(name):
                continue  # deleted since the pass began
            for log in self._engine.topic(name).partitions:
                for base, size in log.sealed_segments().items():
                    path = os.path.join(log.directory, f"{base:020d}.log")
                    self._pending.append((log, base, path, size))
