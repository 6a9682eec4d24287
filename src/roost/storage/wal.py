"""The shared write-ahead log: one durable write per flush round, whatever the number of logs.

Every durable file here (a partition's segments, a journal's segments) is append-only at a
known position, so the log is physical redo: a record says "these bytes go at this position of
this file". A flush round (server/flusher.py) writes the bytes of every log it covers as records
in ONE ``O_DSYNC`` write to the current WAL file, then writes each log's bytes to its own file
with plain ``pwrite``s (page cache, no sync), then confirms. The WAL write is what makes a
publish durable; the segment files catch up on disk at the next checkpoint.

Files, in ``<data>/wal/``:

- ``<seq>.wal``: records (the format is below and in docs/storage-format.md), appended.
- ``<seq>.forget``: forget markers written while ``<seq>.wal`` was the current file.

Rules:

- **Checkpoint**: once the current file passes ``checkpoint_bytes``, rounds move to the spare
  file (made, and its directory entry synced, ahead of time: a rotation costs the loop nothing).
  A checkpoint job (a thread) then fdatasyncs every file the old WAL files wrote, removes them
  and makes the next spare. Rounds never overlap, so when a round rotates every round that wrote
  to the old files has finished its plain writes.
- **Forget**: a file whose name may come back with other content (a deleted topic recreated, a
  log cut back by a repair, a journal reset) must never receive an older record on replay.
  ``forget(directory)`` writes, durably and before the files go, a marker "records numbered
  below S under this directory are void"; record numbers are assigned in order on the loop.
- **Replay** (``open``), before any log is opened: every file in order, each valid record
  pwritten at its position into its file if that file still exists (a deleted topic, a segment
  retention removed: skipped) unless a marker voids it; then every file written is fdatasynced
  and the WAL files are removed. Replay is idempotent (fixed positions), so a crash during it
  is safe. A torn record at the end of the last file is a round that was never confirmed. A
  record that fails its CRC with valid records after it is damage: it is skipped (the scan
  finds the next record by its magic) and reported; the logs' own recovery then judges the
  bytes it would have written.

Concurrency: ``reserve``, ``forget``, ``checkpoint_job`` and ``checkpoint_done`` run on the
loop; ``WalWrite.run`` and ``Checkpoint.run`` in a thread, touching only what they were given.

Record (little-endian)::

    u32  crc32c of everything after this field (the header's rest, the path, the bytes)
    4s   magic b"RWR1" (format version 1)
    u64  record number (increasing over every WAL file)
    u64  position in the target file
    u32  length of the bytes
    u16  length of the path
    ...  path: the target file, relative to the data directory, UTF-8
    ...  the bytes

Forget marker: u32 crc32c of the rest, 4s b"RWF1", u64 records below this number are void,
u16 path length, the directory (relative to the data directory, UTF-8).
"""

from __future__ import annotations

import logging
import os
import struct
from collections import deque
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import msgspec
from crc32c import crc32c

from roost.storage.fs import LocalFS

if TYPE_CHECKING:
    from roost.storage.segment import IndexCheckpoint

WAL_DIRECTORY = "wal"
WAL_SUFFIX = ".wal"
FORGET_SUFFIX = ".forget"
RECORD_MAGIC = b"RWR1"
FORGET_MAGIC = b"RWF1"
RECORD_HEADER = struct.Struct("<I4sQQIH")
FORGET_HEADER = struct.Struct("<I4sQH")
#: The current WAL file is left for the spare once it holds this much: the checkpoint that
#: follows fdatasyncs every file it wrote. Larger: fewer checkpoints, a longer replay.
DEFAULT_CHECKPOINT_BYTES = 64 * 1024 * 1024


class WalRecovery(msgspec.Struct):
    """What replaying the WAL found and did (the engine's recovery report shows it)."""

    files: int = 0
    records: int = 0  # valid records found
    replayed: int = 0  # written into their files
    skipped_missing: int = 0  # their file is gone
    skipped_forgotten: int = 0  # voided by a forget marker
    files_written: int = 0
    torn_bytes: int = 0  # the unconfirmed round at the end of the last file
    problems: list[str] = msgspec.field(default_factory=list)


log = logging.getLogger("roost.storage")


def write_checkpoints(checkpoints: Iterable[IndexCheckpoint]) -> None:
    """Write recovery points whose bytes are synced (``Segment.write_checkpoint``). A hint:
    one that cannot be written only makes the next recovery after a crash scan more."""
    for checkpoint in checkpoints:
        try:
            checkpoint.segment.write_checkpoint(checkpoint)
        except OSError as e:
            log.warning("could not write a recovery point of %s: %s", checkpoint.segment.path, e)


class _WalFile:
    __slots__ = ("after_sync", "dirty", "fd", "forget_fd", "forget_size", "seq", "size")

    def __init__(self, seq: int, fd: int, forget_fd: int) -> None:
        self.seq = seq
        self.fd = fd  # O_DSYNC
        self.forget_fd = forget_fd  # O_DSYNC
        self.size = 0  # bytes reserved
        self.forget_size = 0
        #: Files (keys: relative paths) records in this file wrote: the checkpoint syncs them.
        self.dirty: set[bytes] = set()
        #: Recovery points of segments this file's rounds wrote, for after that sync.
        self.after_sync: list[IndexCheckpoint] = []


class WalWrite:
    """One round's records: one ``O_DSYNC`` pwrite. ``run`` blocks."""

    __slots__ = ("data", "fd", "fs", "position")

    def __init__(self, fs: LocalFS, fd: int, position: int, data: bytes) -> None:
        self.fs, self.fd, self.position, self.data = fs, fd, position, data

    def run(self) -> None:
        self.fs.pwrite(self.fd, self.data, self.position)


class Checkpoint:
    """Sync every file the old WAL files wrote, remove them, and make the next spare."""

    def __init__(self, fs: LocalFS, wal: Wal, old: list[_WalFile], spare_seq: int | None) -> None:
        self.fs = fs
        self.data_dir = wal.data_dir
        self.directory = wal.directory
        self.old = old
        self.dirty = sorted({key.decode() for file in old for key in file.dirty})
        #: Written on the loop once ``run`` has synced their files (``Wal.checkpoint_done``).
        self.after_sync = [checkpoint for file in old for checkpoint in file.after_sync]
        self.spare_seq = spare_seq
        self.spare: _WalFile | None = None
        self.synced = 0

    def run(self) -> None:
        if self.spare_seq is not None and self.spare is None:
            self.spare = _make_file(self.fs, self.directory, self.spare_seq)
            self.fs.fsync_dir(self.directory)
        for relative in self.dirty:
            sync_file(self.fs, os.path.join(self.data_dir, relative))
            self.synced += 1
        for old in self.old:
            for suffix in (WAL_SUFFIX, FORGET_SUFFIX):
                path = _path(self.directory, old.seq, suffix)
                if self.fs.exists(path):
                    self.fs.remove(path)
        if self.old:
            self.fs.fsync_dir(self.directory)


class Wal:
    def __init__(
        self,
        fs: LocalFS,
        data_dir: str,
        current: _WalFile,
        spare: _WalFile | None,
        next_record: int,
        checkpoint_bytes: int,
        recovery: WalRecovery,
    ) -> None:
        self.fs = fs
        self.data_dir = data_dir
        self.directory = os.path.join(data_dir, WAL_DIRECTORY)
        self.checkpoint_bytes = checkpoint_bytes
        self.recovery = recovery
        self._files: deque[_WalFile] = deque([current])  # oldest first; the last is current
        self._spare = spare
        self._next_record = next_record
        self._next_seq = (spare or current).seq + 1
        self._checkpointing = False
        self._keys: dict[str, bytes] = {}
        self.closed = False
        #: Counters for /metrics.
        self.writes = 0
        self.bytes_written = 0
        self.checkpoints = 0
        self.checkpoint_failures = 0

    @classmethod
    def open(
        cls, fs: LocalFS, data_dir: str, checkpoint_bytes: int = DEFAULT_CHECKPOINT_BYTES
    ) -> Wal:
        """Replay what a crash left (see the module docstring), then start a fresh WAL file
        and its spare. Blocking."""
        directory = os.path.join(data_dir, WAL_DIRECTORY)
        fs.makedirs(directory)
        recovery, last_seq, next_record = replay(fs, data_dir)
        current = _make_file(fs, directory, last_seq + 1)
        spare = _make_file(fs, directory, last_seq + 2)
        fs.fsync_dir(directory)
        return cls(fs, data_dir, current, spare, next_record, checkpoint_bytes, recovery)

    # -- on the loop -----------------------------------------------------------------------

    def key(self, path: str) -> bytes:
        """The record's name for the file at ``path``."""
        key = self._keys.get(path)
        if key is None:
            key = os.path.relpath(path, self.data_dir).encode()
            self._keys[path] = key
        return key

    def reserve(self, items: Iterable[tuple[str, int, bytes]]) -> WalWrite | None:
        """Records for ``(file path, position, bytes)`` items, as one write at the end of the
        current WAL file (rotating to the spare first if it is full); None if no items."""
        current = self._files[-1]
        if current.size >= self.checkpoint_bytes and self._spare is not None:
            current, self._spare = self._spare, None
            self._files.append(current)
        parts: list[bytes] = []
        record = self._next_record
        dirty = current.dirty
        for path, position, data in items:
            key = self.key(path)
            dirty.add(key)
            header = RECORD_HEADER.pack(0, RECORD_MAGIC, record, position, len(data), len(key))
            crc = crc32c(data, crc32c(key, crc32c(memoryview(header)[4:])))
            parts += (struct.pack("<I", crc), header[4:], key, data)
            record += 1
        if not parts:
            return None
        self._next_record = record
        data = b"".join(parts)
        write = WalWrite(self.fs, current.fd, current.size, data)
        current.size += len(data)
        self.writes += 1
        self.bytes_written += len(data)
        return write

    def after_sync(self, checkpoints: Iterable[IndexCheckpoint]) -> None:
        """Recovery points of segments the round just reserved wrote (``Segment.checkpoint``):
        written once the checkpoint of the current file has synced those segments."""
        current = self._files[-1]
        for checkpoint in checkpoints:
            current.dirty.add(self.key(checkpoint.segment.path))
            current.after_sync.append(checkpoint)

    def mentions(self, path: str) -> bool:
        """Whether a WAL file not yet checkpointed holds records for the file at ``path``
        (replay would write them there again)."""
        key = self.key(path)
        return any(key in file.dirty for file in self._files)

    def write_failed(self, write: WalWrite) -> None:
        """``write`` raised: the next round writes where it should have (rounds never overlap,
        so it was the last one reserved), and no hole is left for replay to call damage."""
        current = self._files[-1]
        if write.fd == current.fd and write.position + len(write.data) == current.size:
            current.size = write.position

    def forget(self, directory: str) -> None:
        """Void every record so far for files under ``directory``: durable on return
        (blocking: one small ``O_DSYNC`` write). Call it before the files go or are cut."""
        self.forget_all([directory])

    def forget_all(self, paths: Sequence[str]) -> None:
        """``forget`` for each of ``paths`` (directories, or single files: compaction's
        replaced segments), in one ``O_DSYNC`` write."""
        if self.closed or not paths:
            return
        markers = []
        for path in paths:
            key = os.path.relpath(path, self.data_dir).encode()
            rest = FORGET_HEADER.pack(0, FORGET_MAGIC, self._next_record, len(key))[4:] + key
            markers.append(struct.pack("<I", crc32c(rest)) + rest)
        data = b"".join(markers)
        current = self._files[-1]
        self.fs.pwrite(current.forget_fd, data, current.forget_size)
        current.forget_size += len(data)
        self._keys = {
            p: k for p, k in self._keys.items() if not any(_under(p, path) for path in paths)
        }

    def checkpoint_job(self) -> Checkpoint | None:
        """A checkpoint, when old WAL files wait for one or the spare is missing, and none
        runs. Run it in a thread, then ``checkpoint_done``."""
        if self._checkpointing or self.closed:
            return None
        old = list(self._files)[:-1]
        if not old and self._spare is not None:
            return None
        self._checkpointing = True
        spare_seq = None
        if self._spare is None:
            spare_seq = self._next_seq
            self._next_seq += 1
        return Checkpoint(self.fs, self, old, spare_seq)

    def checkpoint_done(self, job: Checkpoint, error: BaseException | None) -> None:
        """After ``job.run()``: forget the old files it removed, adopt the spare it made.
        A failed checkpoint changes nothing (its WAL files stay; the next one tries again)."""
        self._checkpointing = False
        if job.spare is not None:
            if self.closed:
                _close_file(self.fs, job.spare)
            else:
                self._spare = job.spare
        if error is not None:
            self.checkpoint_failures += 1
            return
        self.checkpoints += 1
        write_checkpoints(job.after_sync)
        for old in job.old:
            self._files.remove(old)
            _close_file(self.fs, old)

    def close(self, clean: bool) -> None:
        """Close the files; ``clean``: after a checkpoint of everything (the caller made
        every log durable first), so the next open has nothing to replay. Blocking."""
        if self.closed:
            return
        files = list(self._files) + ([self._spare] if self._spare is not None else [])
        if clean:
            Checkpoint(self.fs, self, files, None).run()
        self.closed = True
        for file in files:
            _close_file(self.fs, file)


# -- replay -------------------------------------------------------------------------------


def replay(fs: LocalFS, data_dir: str) -> tuple[WalRecovery, int, int]:
    """Replay every WAL file under ``data_dir`` (see the module docstring), sync what it
    wrote and remove the WAL files; (what it did, the last file number, the next record
    number). Blocking."""
    directory = os.path.join(data_dir, WAL_DIRECTORY)
    recovery = WalRecovery()
    names = fs.listdir(directory) if fs.exists(directory) else []
    wal_seqs = sorted(_seq(n) for n in names if n.endswith(WAL_SUFFIX) and _seq(n) >= 0)
    forget_seqs = sorted(_seq(n) for n in names if n.endswith(FORGET_SUFFIX) and _seq(n) >= 0)
    markers: list[tuple[int, str]] = []
    for seq in forget_seqs:
        markers += _read_markers(fs, _path(directory, seq, FORGET_SUFFIX), recovery)
    next_record = max((before for before, _ in markers), default=0)
    written: set[str] = set()
    nonempty = [seq for seq in wal_seqs if _size(fs, _path(directory, seq, WAL_SUFFIX))]
    for seq in wal_seqs:
        recovery.files += 1
        path = _path(directory, seq, WAL_SUFFIX)
        last = not nonempty or seq == nonempty[-1]
        by_file: dict[str, list[tuple[int, bytes]]] = {}
        for number, target, position, data in _records(fs.read_file(path), path, last, recovery):
            recovery.records += 1
            next_record = max(next_record, number + 1)
            if any(before > number and _under(target, prefix) for before, prefix in markers):
                recovery.skipped_forgotten += 1
                continue
            by_file.setdefault(target, []).append((position, data))
        for target, writes in by_file.items():
            full = os.path.join(data_dir, target)
            if not fs.exists(full):
                recovery.skipped_missing += len(writes)
                continue
            fd = fs.open_rw(full)
            try:
                for position, data in writes:
                    fs.pwrite(fd, data, position)
            finally:
                fs.close(fd)
            recovery.replayed += len(writes)
            written.add(full)
    for full in sorted(written):
        sync_file(fs, full)
    recovery.files_written = len(written)
    for name in names:
        if name.endswith((WAL_SUFFIX, FORGET_SUFFIX)):
            fs.remove(os.path.join(directory, name))
    if names:
        fs.fsync_dir(directory)
    return recovery, max([*wal_seqs, *forget_seqs], default=0), next_record


def _records(
    data: bytes, path: str, last: bool, recovery: WalRecovery
) -> Iterable[tuple[int, str, int, bytes]]:
    """The valid records of one WAL file: (number, target, position, bytes)."""
    position = 0
    while position < len(data):
        record = _parse(data, position)
        if record is not None:
            yield record[:4]
            position = record[4]
            continue
        following = data.find(RECORD_MAGIC, position + 5)
        while following >= 0 and _parse(data, following - 4) is None:
            following = data.find(RECORD_MAGIC, following + 1)
        if following < 0:
            if last:
                recovery.torn_bytes += len(data) - position
            else:
                recovery.problems.append(
                    f"{path}: {len(data) - position} bytes at byte {position} are not records "
                    "(a WAL file that was complete is damaged); skipped"
                )
            return
        recovery.problems.append(
            f"{path}: a damaged record at byte {position} ({following - 4 - position} bytes) "
            "skipped; the logs' recovery verifies what it would have written"
        )
        position = following - 4


def _parse(data: bytes, position: int) -> tuple[int, str, int, bytes, int] | None:
    """The record at ``position`` and where the next begins; None if it is torn or bad."""
    if position < 0 or len(data) - position < RECORD_HEADER.size:
        return None
    crc, magic, number, target_position, length, key_length = RECORD_HEADER.unpack_from(
        data, position
    )
    end = position + RECORD_HEADER.size + key_length + length
    if magic != RECORD_MAGIC or end > len(data):
        return None
    if crc32c(memoryview(data)[position + 4 : end]) != crc:
        return None
    key_end = position + RECORD_HEADER.size + key_length
    try:
        target = data[position + RECORD_HEADER.size : key_end].decode()
    except UnicodeDecodeError:
        return None
    return number, target, target_position, data[key_end:end], end


def _read_markers(fs: LocalFS, path: str, recovery: WalRecovery) -> list[tuple[int, str]]:
    data = fs.read_file(path)
    markers = []
    position = 0
    while len(data) - position >= FORGET_HEADER.size:
        crc, magic, before, length = FORGET_HEADER.unpack_from(data, position)
        end = position + FORGET_HEADER.size + length
        if magic != FORGET_MAGIC or end > len(data) or crc32c(data[position + 4 : end]) != crc:
            break  # a torn last marker: its delete never happened (it waited for the marker)
        markers.append((before, data[position + FORGET_HEADER.size : end].decode()))
        position = end
    return markers


# -- helpers ------------------------------------------------------------------------------


def sync_file(fs: LocalFS, path: str) -> None:
    """fdatasync the file at ``path`` if it still exists."""
    try:
        fd = fs.open_ro(path)
    except FileNotFoundError:
        return
    try:
        fs.fdatasync(fd)
    finally:
        fs.close(fd)


def _under(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def _path(directory: str, seq: int, suffix: str) -> str:
    return os.path.join(directory, f"{seq:020d}{suffix}")


def _seq(name: str) -> int:
    stem = name.split(".", 1)[0]
    return int(stem) if stem.isdigit() else -1


def _size(fs: LocalFS, path: str) -> int:
    fd = fs.open_ro(path)
    try:
        return fs.file_size(fd)
    finally:
        fs.close(fd)


def _make_file(fs: LocalFS, directory: str, seq: int) -> _WalFile:
    """Empty ``<seq>.wal`` and ``<seq>.forget``, opened O_DSYNC (the caller syncs the
    directory before either is used)."""
    descriptors: list[int] = []
    try:
        for suffix in (WAL_SUFFIX, FORGET_SUFFIX):
            path = _path(directory, seq, suffix)
            fd = fs.open_rw(path)
            try:
                fs.truncate(fd, 0)
            finally:
                fs.close(fd)
            descriptors.append(fs.open_dsync(path))
    except BaseException:
        for fd in descriptors:
            fs.close(fd)
        raise
    return _WalFile(seq, descriptors[0], descriptors[1])


def _close_file(fs: LocalFS, file: _WalFile) -> None:
    for fd in (file.fd, file.forget_fd):
        if fd >= 0:
            fs.close(fd)
    file.fd = file.forget_fd = -1


__all__: Sequence[str] = ["Checkpoint", "Wal", "WalRecovery", "WalWrite", "replay", "sync_file"]
