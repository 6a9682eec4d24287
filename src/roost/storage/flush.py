"""The blocking half of a flush, the only storage code that runs off the event loop.

``PartitionLog.begin_flush`` (on the loop) fills a ``FlushJob`` with what the sync must cover;
``run`` (in the flusher's thread) does the writes and syncs; ``PartitionLog.end_flush`` (on the
loop) applies the outcome. ``run`` touches nothing but the descriptors and bytes it was given,
which stay valid until ``end_flush``.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from roost.storage.fs import LocalFS

if TYPE_CHECKING:
    from roost.storage.segment import IndexCheckpoint, Segment


class FlushJob:
    """The blocking half of a flush: write what was held back, fsync, fsync the directory.

    Held-back batches are written through each segment's O_DSYNC descriptor, so one ``pwrite``
    both writes and syncs them; segments written through at append time get an ``fdatasync``.
    """

    __slots__ = (
        "directory",
        "directory_deferred",
        "end_offset",
        "error",
        "fds",
        "finished",
        "fs",
        "index_checkpoints",
        "parents",
        "records",
        "segments",
        "wal_items",
        "writes",
        "writes_sync",
    )

    def __init__(self, fs: LocalFS, directory: str | None, end_offset: int) -> None:
        self.fs = fs
        #: (segment, its O_DSYNC descriptor, position, bytes): the descriptor is captured on
        #: the loop, where the pool that owns it lives; it stays open until ``end_flush``.
        self.writes: list[tuple[Segment, int, int, bytes]] = []
        #: Whether ``writes`` go through O_DSYNC descriptors (durable on return); False in a
        #: job through the shared WAL, whose round writes ``wal_items`` durably first.
        self.writes_sync = True
        #: (file path, position, bytes) for the round's one WAL write (wal.py).
        self.wal_items: list[tuple[str, int, bytes]] = []
        self.fds: list[int] = []
        self.segments: list[Segment] = []
        #: Recovery points of the active segment to write once this job's bytes are synced:
        #: at ``end_flush`` for a job that syncs them itself, after the WAL's next checkpoint
        #: for one through the WAL (wal.py).
        self.index_checkpoints: list[IndexCheckpoint] = []
        self.directory = directory
        #: Directories to sync first: the entries leading to a new log (``unsynced_directories``).
        self.parents: list[str] = []
        #: The directory (or a parent) could not be opened for its fsync (EMFILE, ENFILE):
        #: everything else was synced; ``end_flush`` leaves the records uncovered until a
        #: later job syncs it.
        self.directory_deferred = False
        self.end_offset = end_offset
        self.finished = False
        self.error: BaseException | None = None
        self.records = 0  # how many records the job makes durable

    def run(self) -> None:
        for parent in self.parents:
            try:
                self.fs.fsync_dir(parent)
            except FileNotFoundError:
                # Gone: the log was deleted meanwhile (its close fails its waiters); a live
                # log's directories are never removed under it.
                continue
            except OSError as e:
                if e.errno not in (errno.EMFILE, errno.ENFILE):
                    raise
                self.directory_deferred = True  # as for the directory below: retried later
        for _, fd, position, data in self.writes:
            self.fs.pwrite(fd, data, position)
        for fd in self.fds:
            self.fs.fdatasync(fd)
        if self.directory is not None:
            try:
                self.fs.fsync_dir(self.directory)
            except OSError as e:
                # Only the open inside fsync_dir fails for want of descriptors: nothing was
                # synced wrong, the directory just was not synced yet. Not a failed log.
                if e.errno not in (errno.EMFILE, errno.ENFILE):
                    raise
                self.directory_deferred = True
