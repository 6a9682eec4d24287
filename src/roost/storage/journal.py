"""The state journal: small, frequently updated state as a log of entries plus a snapshot.

Subscription cursors and ack state change with every delivery and ack; rewriting them in place
would cost a random write each. Instead each change is appended as an entry to a partition log
(same batch format, same group-commit flusher) and, now and then, the whole state is written as a
snapshot; entries the snapshot covers are then deleted a segment at a time.

    journal = Journal.open("subscriptions", directory, clock, fs)
    snapshot, entries = journal.recover()      # rebuild state: snapshot, then entries in order
    journal.append([b"ack 17"])                # in the OS now; durable once durable_offset passes
    journal.snapshot(state_bytes)              # state after every entry appended so far

Damage (a bad batch in the entries that is not a torn tail, a corrupt snapshot, entries gone
that the snapshot does not cover) quarantines the journal's log: ``recover`` raises
``PartitionQuarantined`` and the owner (a subscription) is out of service, with nothing cut.
A torn tail after a crash is cut, as for any log, and reported in ``log.recovery``.

Out of descriptors (``TooManyOpenFiles`` from an append: its file was closed by the pool and
could not be opened again) the entry is not stored, but its owner changed its state in memory
first. The journal then **owes a snapshot**: it refuses appends the same way until one is
written (``snapshot_owed``; the host writes it on its next tick), so that no later entry is
stored without the one missing before it. The log itself never fails for it.

Snapshot file ``snapshot`` (little-endian): 4s magic b"RSN1", u64 next_seq (the first entry not
covered), u32 length of state, u32 crc32c of the state, then the state bytes. It is replaced
atomically, so a crash leaves the old snapshot or the new one.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Sequence

from crc32c import crc32c

from roost.clock import Clock
from roost.errors import StorageFailure, TooManyOpenFiles
from roost.storage.batch import Record
from roost.storage.config import TopicConfig
from roost.storage.fd_pool import FdPool
from roost.storage.fs import LocalFS
from roost.storage.log import PartitionLog

SNAPSHOT_NAME = "snapshot"
_SNAPSHOT_HEADER = struct.Struct("<4sQII")
_SNAPSHOT_MAGIC = b"RSN1"
#: Journals roll small segments so a snapshot can free space soon after it is written. Their
#: entries reach the OS at once (see ``open``) and are fsynced within 100 ms or 1,000 entries:
#: nothing waits on them, and an fsync per ack would cost a thread hand-off per message at
#: low rates. A power loss may lose that last 100 ms of acks (their messages come back).
JOURNAL_CONFIG = TopicConfig(
    segment_max_bytes=4 * 1024 * 1024,
    max_record_bytes=1024 * 1024,
    durability="interval",
    flush_interval_ms=100,
    flush_interval_records=1000,
)


class SnapshotJob:
    """The blocking half of a snapshot: write the file. ``Journal.snapshot_done`` finishes."""

    def __init__(
        self,
        fs: LocalFS,
        path: str,
        next_seq: int,
        state: bytes,
        refused: int = 0,
        parents: Sequence[str] = (),
    ) -> None:
        self.fs = fs
        #: Directories on the way to a new journal not synced yet (``unsynced_directories``).
        self.parents = list(parents)
        self.path = path
        self.next_seq = next_seq
        self.refused = refused  # appends the journal had refused when the state was taken
        self.data = _SNAPSHOT_HEADER.pack(_SNAPSHOT_MAGIC, next_seq, len(state), crc32c(state))
        self.data += state

    def run(self) -> None:
        for parent in self.parents:
            self.fs.fsync_dir(parent)
        self.fs.replace_atomically(self.path, self.data)


class Journal:
    def __init__(self, name: str, directory: str, log: PartitionLog, fs: LocalFS) -> None:
        self.name = name
        self.log = log
        self._fs = fs
        self._snapshot_path = os.path.join(directory, SNAPSHOT_NAME)
        #: An append was refused for want of descriptors: appends are refused until a
        #: snapshot is written (see the module docstring).
        self.snapshot_owed = False
        self._refused = 0  # appends refused so far
        #: Known to have no snapshot (created with its directory absent): until its first
        #: write makes the directory, ``recover`` need not look for one.
        self._snapshot_absent = False
        #: Told when the journal comes to owe a snapshot (the engine keeps those that do).
        self.on_snapshot_owed: Callable[[Journal], None] | None = None

    @classmethod
    def open(
        cls,
        name: str,
        directory: str,
        clock: Clock,
        fs: LocalFS,
        config: TopicConfig = JOURNAL_CONFIG,
        clean_shutdown: bool = False,
        pool: FdPool | None = None,
        unsynced_directories: Sequence[str] = (),
        made_under: str | None = None,
        absent: bool = False,
    ) -> Journal:
        """Open (creating if needed) the journal in ``directory``; ``unsynced_directories``
        as for ``PartitionLog.open`` (a new journal whose directories were made unsynced).

        ``made_under`` (an existing ancestor, the engine's ``journals/``): a journal whose
        directory does not exist opens empty, and its first entry or snapshot makes its
        directories (lazy creation, see log.py). ``absent``: the caller knows ``directory``
        does not exist (a journal being created): nothing is looked for, not even a snapshot."""
        log_directory = os.path.join(directory, "log")
        if made_under is None:
            fs.makedirs(log_directory)
        log = PartitionLog.open(
            name, 0, log_directory, config, clock, fs, clean_shutdown, pool=pool,
            unsynced_directories=unsynced_directories, made_under=made_under, absent=absent,
        )  # fmt: skip
        # Entries are small and few (one per command): written to the OS at once they survive
        # a process crash even before their fsync, so delivery counts and acks do too.
        log.write_behind = False
        log.tail_bytes = 0  # read back only when the journal is replayed
        log.name = f"journal {name}"
        journal = cls(name, directory, log, fs)
        journal._snapshot_absent = absent
        return journal

    def append(self, entries: Sequence[bytes]) -> int:
        """Append entries; returns the sequence number after the last one.

        ``TooManyOpenFiles`` (retriable) when the journal's file cannot be opened, or while a
        snapshot is owed since one could not (see the module docstring)."""
        if self.snapshot_owed:
            self._refused += 1
            raise TooManyOpenFiles(
                f"journal {self.name}",
                "an earlier entry could not be stored for want of descriptors; entries wait "
                "for the snapshot that stands in for it (within a second)",
            )
        try:
            return self.log.append([Record(value=entry) for entry in entries]).next_offset
        except TooManyOpenFiles:
            self._refused += 1
            self.snapshot_owed = True
            if self.on_snapshot_owed is not None:
                self.on_snapshot_owed(self)
            raise

    def recover(self) -> tuple[bytes | None, list[bytes]]:
        """The latest snapshot's state (None if none) and the entries after it, in order."""
        state, next_seq = self._read_snapshot()
        if self.log.quarantined:
            raise self.log.quarantine(self.log.quarantined)
        if next_seq > self.log.end_offset:
            # A crash took entries the (durable) snapshot covers: restart the log past them,
            # or new entries would be numbered below the snapshot and skipped next time.
            self.log.reset(next_seq)
        entries: list[bytes] = []
        seq = max(next_seq, self.log.start_offset)
        if next_seq < self.log.start_offset and state is not None:
            raise self.log.quarantine(
                f"entries {next_seq}..{self.log.start_offset - 1} are gone but the snapshot "
                "does not cover them"
            )
        while seq < self.log.end_offset:
            records = self.log.read(seq)
            entries.extend(r.value for r in records)
            seq = records[-1].offset + 1
        return state, entries

    def snapshot_job(self, state: bytes) -> SnapshotJob:
        """Prepare a snapshot of ``state``, the state after every entry appended so far.

        A journal not on disk yet (lazy creation) gets its directories here, which the job
        syncs before the snapshot counts; ``StorageFailure`` (``TooManyOpenFiles``,
        ``DiskFull``) if they cannot be made."""
        self.log.make_files()
        return SnapshotJob(
            self._fs, self._snapshot_path, self.log.end_offset, state, self._refused,
            self.log.unsynced_directories,
        )  # fmt: skip

    def snapshot_done(self, job: SnapshotJob) -> int:
        """After ``job.run()``: drop the log segments it covers; returns how many. A snapshot
        owed is paid if no append was refused after its state was taken."""
        if job.refused == self._refused:
            self.snapshot_owed = False
        if self.log.end_offset == job.next_seq:
            try:
                self.log.roll()
            except TooManyOpenFiles:
                return 0  # the covered entries stay until the next snapshot: nothing is lost
        return self.log.delete_below(job.next_seq)

    def snapshot(self, state: bytes) -> int:
        """Snapshot and compact inline (blocking)."""
        job = self.snapshot_job(state)
        try:
            job.run()
        except OSError as e:
            raise StorageFailure(f"journal {self.name} snapshot", e) from e
        return self.snapshot_done(job)

    def close(self, clean: bool = True) -> bool:
        return self.log.close(clean)

    def _read_snapshot(self) -> tuple[bytes | None, int]:
        if self._snapshot_absent and not self.log.on_disk:
            return None, 0
        if not self._fs.exists(self._snapshot_path):
            return None, 0
        parsed = parse_snapshot(self._fs.read_file(self._snapshot_path))
        if parsed is None:
            # Replaced atomically, so a bad snapshot is not a torn write but damage.
            raise self.log.quarantine(f"snapshot {self._snapshot_path} is corrupt")
        return parsed


def parse_snapshot(data: bytes) -> tuple[bytes, int] | None:
    """A snapshot file's state and next_seq; None if it is torn or corrupt."""
    if len(data) >= _SNAPSHOT_HEADER.size:
        magic, next_seq, length, crc = _SNAPSHOT_HEADER.unpack_from(data)
        state = data[_SNAPSHOT_HEADER.size :]
        if magic == _SNAPSHOT_MAGIC and len(state) == length and crc32c(state) == crc:
            return state, next_seq
    return None
