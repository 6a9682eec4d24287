"""The metadata store: topics, subscriptions, exchanges, users — named entries in namespaces.

Two files (docs/storage-format.md):

- ``metadata.json``, a snapshot: the whole document at some version, replaced atomically
  (temp file, fsync, rename, fsync directory) now and then;
- ``metadata.journal``, one small CRC-checked record per transaction committed since
  (metadata_journal.py): the entries it put and deleted, appended and fdatasynced. That record
  is the commit point, so a commit costs one write and one sync, whatever the store holds.

When the journal passes ``snapshot_bytes``, or the size of the last snapshot if that is more,
a snapshot of everything is written, off the event loop (metadata_snapshot.py): the commit that
passed the bound takes a frozen view (a shallow copy of each namespace) and a thread encodes,
writes and syncs it while later commits go on appending records. Once it is durable, the next
commit (or ``close``) replaces the journal with the records committed since the view was taken
(atomically: temp file, fsync, rename, fsync directory). A snapshot is written at most once per
its own size of journal, so its cost per change stays bounded however many definitions there
are, and none of it stops the loop but the view's copy (a few ms at 100,000 queues) and the
small journal replacement. Open = the snapshot, then the journal's records above its version
(a crash between the snapshot's rename and the journal's leaves records it already holds:
skipped). A torn
last record (a crash mid-commit: that transaction was never confirmed) is cut and reported in
``recovery``; damage anywhere else raises ``CorruptMetadata`` naming the file, and the broker
does not start rather than guess what exists.

A transaction holds only its own changes (an overlay); readers get a copy of one entry, never
of the document. Transactions nest: one opened inside another joins it, and everything commits
as one record when the outermost block exits cleanly. An exception out of any block abandons
the whole transaction: the store stays as it was and each undo registered with ``on_abort``
runs (newest first), so that what the caller made beside the metadata (files, open logs) goes
too.

Group commit (metadata_group.py): commits made inside ``group_commit()`` write their record
and apply it, but are synced later, several by one ``fdatasync`` in a thread
(``start_sync``/``finish_sync``, driven by the server); until then each is ``pending`` and
confirmed to nobody, and a failed sync rolls every pending commit back. A commit outside
``group_commit`` syncs itself, and everything pending before it, as it always did. A snapshot
is only ever started with nothing pending, so it never holds a commit that could be rolled back.

Before each snapshot the previous one is kept as ``metadata.json.prev``: if the snapshot is
ever damaged (a bad disk, an editor), ``CorruptMetadata`` names it as the copy to restore.

    store = MetadataStore.open(fs, "/data/metadata.json")
    with store.transaction() as txn:
        txn.put("topics", "orders", {"partitions": 3})
    store.get("topics", "orders")   # {'partitions': 3}
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import msgspec

from roost.errors import CorruptMetadata, StorageFailure
from roost.storage import metadata_journal
from roost.storage.fs import LocalFS
from roost.storage.metadata_group import Pending, SyncJob
from roost.storage.metadata_journal import DELETE, PUT, Op
from roost.storage.metadata_snapshot import Runner, SnapshotJob, in_a_thread
from roost.storage.recovery import LogRecovery

#: 2: a journal (``metadata.journal``) may continue the snapshot. 1 (read, never written):
#: the document alone, rewritten whole by every transaction.
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
PREVIOUS_SUFFIX = ".prev"
JOURNAL_SUFFIX = ".journal"
#: A snapshot is written, and the journal emptied, once the journal holds this much.
SNAPSHOT_BYTES = 4 * 1024 * 1024

log = logging.getLogger(__name__)

_MISSING = object()


class _Document(msgspec.Struct):
    format: int
    version: int
    namespaces: dict[str, dict[str, Any]]


class _StoredDocument(msgspec.Struct):
    """A snapshot as the store holds it: each entry its JSON (``msgspec.Raw``), not Python
    objects. A queue's definitions were ~33 dicts, lists and strings, kept for the broker's
    life and walked by the collector; as JSON they are one untracked object, copied out by
    decoding on ``get`` (which never shared them anyway) and written out verbatim."""

    format: int
    version: int
    namespaces: dict[str, dict[str, msgspec.Raw]]


class Transaction:
    """The changes of one transaction, over the committed state they will replace."""

    def __init__(self, store: MetadataStore) -> None:
        self._store = store
        #: (namespace, name) -> the new value, or ``_MISSING`` for a delete; in order.
        self.changes: dict[tuple[str, str], Any] = {}
        self._undo: list[Callable[[], object]] = []

    def put(self, namespace: str, name: str, value: Any) -> None:
        self.changes[(namespace, name)] = value

    def delete(self, namespace: str, name: str) -> None:
        self.changes[(namespace, name)] = _MISSING

    def get(self, namespace: str, name: str) -> Any:
        """The entry as this transaction would leave it (a copy)."""
        if (namespace, name) not in self.changes:
            return self._store.get(namespace, name)
        value = self.changes[(namespace, name)]
        return None if value is _MISSING else copy.deepcopy(value)

    def on_abort(self, undo: Callable[[], object]) -> None:
        """Run ``undo`` if the transaction does not commit (the block raised, or the write
        failed). Undos run newest first; one that raises is logged and the others still run."""
        self._undo.append(undo)

    def _ops(self) -> list[Op]:
        return [
            (DELETE, namespace, name, None) if value is _MISSING else (PUT, namespace, name, value)
            for (namespace, name), value in self.changes.items()
        ]

    def _abandon(self) -> None:
        _run_undos(self._undo)


class TransactionScope:
    """``MetadataStore.transaction()``'s block: the outermost one commits on a clean exit
    and abandons on an exception; one inside another joins it. A class, not a generator: a
    create opens seven of them (nested), and a generator's context manager cost ~3 us each."""

    __slots__ = ("_outermost", "_store")

    def __init__(self, store: MetadataStore) -> None:
        self._store = store
        self._outermost = False

    def __enter__(self) -> Transaction:
        store = self._store
        if store._txn is not None:
            return store._txn  # joined: the outermost block commits or abandons it all
        self._outermost = True
        txn = store._txn = Transaction(store)
        return txn

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if not self._outermost:
            return
        store = self._store
        txn = store._txn
        assert txn is not None
        try:
            if kind is None:
                store._commit(txn)
            else:
                txn._abandon()
        except BaseException:
            txn._abandon()
            raise
        finally:
            store._txn = None


def _run_undos(undos: list[Callable[[], object]]) -> None:
    for undo in reversed(undos):
        try:
            undo()
        except Exception:
            log.exception("undoing an abandoned metadata transaction failed")


class MetadataStore:
    def __init__(self, fs: LocalFS, path: str, document: _StoredDocument, read_only: bool) -> None:
        self._fs = fs
        self._path = path
        self.journal_path = path + JOURNAL_SUFFIX
        self._namespaces = document.namespaces
        self._version = document.version
        self._read_only = read_only
        self._fd: int | None = None
        self._journal_bytes = 0
        self._txn: Transaction | None = None
        #: The next commit writes a snapshot instead of a record: the document on disk is of
        #: an older format, or a snapshot write failed after (maybe) landing, or the journal
        #: could not be emptied after one. A snapshot makes the disk match memory again.
        self._snapshot_due = document.format != FORMAT_VERSION
        #: Set when a journal write failed and could not be undone: what is on disk is not
        #: known, so nothing more is committed until the store is opened again.
        self._failure: StorageFailure | None = None
        self.snapshot_bytes = SNAPSHOT_BYTES
        self._snapshot_size = 0  # bytes of the snapshot last read or written
        #: The snapshot being written off the loop, if any (metadata_snapshot.py).
        self._job: SnapshotJob | None = None
        #: How snapshot jobs run: a thread of their own (tests: inline, or later).
        self.run_snapshot: Runner = in_a_thread
        #: After a failed snapshot, none is tried again before the journal is this long.
        self._retry_at_bytes = 0
        #: Threads closing a replaced journal's descriptor (see ``_finish_snapshot``).
        self._closing: list[threading.Thread] = []
        #: What open found in the journal and did about it (bytes cut, and why).
        self.recovery = LogRecovery(log="metadata journal", clean_shutdown=True)
        #: Inside ``group_commit`` (a depth): commits are written now and synced later.
        self._grouping = 0
        #: Commits written and applied but not yet known durable, oldest first.
        self._unsynced: list[Pending] = []
        #: The sync of the journal running in a thread, if any (``start_sync``).
        self._sync_job: SyncJob | None = None
        #: Every commit up to this version is durable.
        self.durable_version = document.version
        #: How many times pending commits were rolled back (a failed sync or write) since
        #: open: while 0, nothing in memory was ever undone under a caller's feet.
        self.rollbacks = 0

    @classmethod
    def open(cls, fs: LocalFS, path: str, read_only: bool = False) -> MetadataStore:
        """The store at ``path`` (its journal beside it), recovered. ``read_only`` changes
        nothing on disk: a torn journal tail is reported in ``recovery``, not cut."""
        document, store_size = _read_stored(fs, path)
        store = cls(fs, path, document, read_only)
        store._snapshot_size = store_size
        store._replay()
        return store

    # -- reading --------------------------------------------------------------------------

    @property
    def version(self) -> int:
        """Bumped by every committed transaction."""
        return self._version

    def get(self, namespace: str, name: str) -> Any:
        """A copy of one committed entry; None if there is none."""
        stored = self._namespaces.get(namespace, {}).get(name)
        return None if stored is None else msgspec.json.decode(stored)

    def contains(self, namespace: str, name: str) -> bool:
        return name in self._namespaces.get(namespace, {})

    def names(self, namespace: str) -> list[str]:
        return sorted(self._namespaces.get(namespace, {}))

    # -- transactions ---------------------------------------------------------------------

    def transaction(self) -> TransactionScope:
        """Changes made in the block are committed together, durably, when it exits cleanly
        (the outermost block, when transactions nest).

        An exception in the block, or a failed write, leaves the store as it was and runs the
        transaction's undos; the exception propagates.
        """
        return TransactionScope(self)

    @contextmanager
    def group_commit(self) -> Iterator[None]:
        """Commits in the block write their record and apply it, and return before it is
        synced: ``pending`` says what is not durable yet; the caller must not confirm it
        before ``start_sync``/``finish_sync`` (or a commit that syncs itself) make it
        durable, and must expect it rolled back if that sync fails (module docstring)."""
        self._grouping += 1
        try:
            yield
        finally:
            self._grouping -= 1

    @property
    def pending(self) -> Pending | None:
        """The newest commit not yet known durable (a group commit's), or None."""
        return self._unsynced[-1] if self._unsynced else None

    def pending_on(self, namespace: str, name: str) -> Pending | None:
        """The newest pending commit that put or deleted entry ``name``, or None. Scans what
        is pending: a group, not the store."""
        for pending in reversed(self._unsynced):
            for changed_namespace, changed_name, _ in pending.before:
                if changed_name == name and changed_namespace == namespace:
                    return pending
        return None

    def _commit(self, txn: Transaction) -> None:
        if self._failure is not None:
            raise self._failure
        if self._read_only:
            raise StorageFailure(f"writing metadata {self._path}", PermissionError("read-only"))
        ops = txn._ops()
        if not ops:
            return
        if self._snapshot_due:
            # An older format on disk, which an older broker would read without the journal:
            # the snapshot holds this transaction too, and its atomic replace is the commit.
            self._sync_pending()
            version = self._version + 1
            applied = _apply(copy.copy(self._namespaces), version, ops, copied=True)
            self._write_snapshot(_StoredDocument(FORMAT_VERSION, version, applied))
            self._namespaces, self._version = applied, version
            self.durable_version = version
            return
        self._finish_snapshot()
        version = self._version + 1
        if self._grouping:
            self._commit_later(txn, version, ops)
            return
        record = metadata_journal.encode_record(version, ops)
        try:
            self._append(record)
        except StorageFailure as failure:
            self._fail_with_pending(txn, failure)
            raise
        if self._job is not None:
            self._job.tail.append(record)
        # Stored as the record holds them: their JSON, shared with no caller.
        _apply(self._namespaces, version, ops, copied=False)
        self._version = self.durable_version = version
        self._start_snapshot_if_due()

    def _commit_later(self, txn: Transaction, version: int, ops: list[Op]) -> None:
        """Write the record and apply it; its sync is a ``SyncJob``'s (group commit)."""
        record = metadata_journal.encode_record(version, ops, synced=self.durable_version)
        try:
            position = self._write(record)
        except StorageFailure as failure:
            self._fail_with_pending(txn, failure)  # the group fails whole: simpler to reason on
            raise
        before = [
            (namespace, name, self._namespaces.get(namespace, {}).get(name))
            for _, namespace, name, _ in ops
        ]
        if self._job is not None:
            self._job.tail.append(record)
        _apply(self._namespaces, version, ops, copied=False)
        self._version = version
        pending = Pending(version, position, before, txn._undo, self._job is not None)
        self._unsynced.append(pending)
        txn._undo = []  # they are the pending commit's now: run if it is rolled back

    def _fail_with_pending(self, txn: Transaction, failure: StorageFailure) -> None:
        """``txn``'s write or sync failed, and with it every pending commit (their records
        were before its, in the same sync or the same file): undo it first (the newest),
        then them, and cut their bytes and its own off the journal."""
        txn._abandon()
        txn._undo = []
        self._roll_back(failure, cut=True)

    def start_sync(self) -> SyncJob | None:
        """A job that syncs every pending commit (run it in a thread, then ``finish_sync``);
        None if nothing is pending or a job is running already."""
        if not self._unsynced or self._sync_job is not None or self._fd is None:
            return None
        self._sync_job = SyncJob(self._fs, self._fd, self._unsynced[-1])
        return self._sync_job

    def finish_sync(self, job: SyncJob) -> None:
        """Take the outcome of ``job`` (once it is done): its commits are durable, or every
        pending commit is rolled back. Nothing if it was taken already."""
        if job.finished:
            return
        job.finished = True
        if self._sync_job is job:
            self._sync_job = None
        if job.error is not None:
            failure = StorageFailure(f"syncing metadata journal {self.journal_path}", job.error)
            self._roll_back(failure)
            return
        while self._unsynced and self._unsynced[0].version <= job.last.version:
            self._unsynced.pop(0).durable = True
        self.durable_version = max(self.durable_version, job.last.version)
        if not self._unsynced:
            self._start_snapshot_if_due()

    def _settle_sync_job(self) -> None:
        """Wait for the job in progress, if any, and take its outcome. Blocking."""
        job = self._sync_job
        if job is not None:
            job.wait()
            self.finish_sync(job)

    def _sync_pending(self) -> None:
        """Make every pending commit durable now, or roll them all back. Blocking: one
        ``fdatasync`` on the caller's thread (before a snapshot, a journal replacement, a
        close)."""
        self._settle_sync_job()
        if not self._unsynced or self._fd is None:
            return
        job = SyncJob(self._fs, self._fd, self._unsynced[-1])
        self._sync_job = job
        job.wait()
        self.finish_sync(job)

    def _roll_back(self, failure: StorageFailure, cut: bool = False) -> None:
        """A sync or write failed: every pending commit goes, newest first (entries put back,
        undos run), and the journal is cut back to where the first of them began (``cut``:
        or where the next record would have, with none pending: the failed one's bytes)."""
        self._settle_sync_job()  # no thread may sync while the file is cut
        rolled, self._unsynced = self._unsynced, []
        for pending in reversed(rolled):
            for namespace, name, value in reversed(pending.before):
                entries = self._namespaces.setdefault(namespace, {})
                if value is None:
                    entries.pop(name, None)
                else:
                    entries[name] = value
            if pending.in_tail and self._job is not None and self._job.tail:
                self._job.tail.pop()
            self._version = pending.version - 1
            pending.error = failure
            _run_undos(pending.undo)
        if rolled:
            self.rollbacks += 1
            log.error(
                "metadata journal %s: %s; %d definition change(s) not yet synced are undone",
                self.journal_path, failure, len(rolled),
            )  # fmt: skip
        if rolled or cut:
            position = rolled[0].position if rolled else self._journal_bytes
            self._undo_append(position)
            self._journal_bytes = position  # what ``repair`` cuts back to, if that failed

    def _start_snapshot_if_due(self) -> None:
        bound = max(self.snapshot_bytes, self._snapshot_size, self._retry_at_bytes)
        if self._job is not None or self._journal_bytes <= bound or self._unsynced:
            return
        # Entries are replaced, never changed in place: a copy of each namespace's dict is a
        # view that later commits do not disturb.
        view = {namespace: dict(entries) for namespace, entries in self._namespaces.items()}
        self._job = SnapshotJob(
            self._fs, self._path, FORMAT_VERSION, self._version, view, PREVIOUS_SUFFIX
        )
        self.run_snapshot(self._job)

    def _finish_snapshot(self) -> None:
        """Once a snapshot job is done: keep only the records it does not hold (or, if it
        failed, keep everything and try again once the journal has grown by a quarter)."""
        job = self._job
        if job is None or not job.done.is_set():
            return
        # The replacement holds the pending records as written: they must be durable (or
        # gone) first, and no thread may be syncing the file being replaced.
        self._sync_pending()
        self._job = None
        if not job.written:
            log.error(
                "writing metadata snapshot %s failed: %s (the journal keeps every change)",
                self._path, job.error or "it did not finish",
            )  # fmt: skip
            self._retry_at_bytes = self._journal_bytes + self._journal_bytes // 4
            return
        self._snapshot_size, self._retry_at_bytes = job.size, 0
        data = metadata_journal.MAGIC + b"".join(job.tail)
        try:
            self._fs.replace_atomically(self.journal_path, data)
        except OSError as e:
            # Nothing lost: the records the snapshot holds are skipped on open. The journal
            # may be either file now, so it is opened again by name.
            log.error("replacing metadata journal %s failed: %s", self.journal_path, e)
        if self._fd is not None:
            self._close_replaced(self._fd)
            self._fd = None

    def _close_replaced(self, fd: int) -> None:
        """Close the descriptor of the journal just replaced, in a thread: it is the last
        reference to the old file, so the close frees its blocks, which took 30-45 ms of the
        event loop for a few MB here. Nothing uses it any more; ``close`` waits for it."""
        self._closing = [thread for thread in self._closing if thread.is_alive()]

        def close() -> None:
            with contextlib.suppress(OSError):
                self._fs.close(fd)

        thread = threading.Thread(target=close, name="roost-metadata-close", daemon=True)
        thread.start()
        self._closing.append(thread)

    def settle_snapshot(self) -> None:
        """Wait for a snapshot being written to end (running it here if its thread never
        started), and finish it: the journal keeps only what the snapshot lacks. Blocking;
        ``close`` does it, and tests that need the snapshot's file operations done."""
        job = self._job
        if job is not None:
            job.run()  # nothing if a thread has it already
            job.done.wait()
            self._finish_snapshot()

    def _append(self, record: bytes) -> None:
        """Write ``record`` and sync it, with every pending record before it."""
        self._settle_sync_job()  # one sync at a time: an error is reported to one caller
        if self._failure is not None:
            raise self._failure  # a failed group could not be cut back
        fd = self._open_journal()
        position = self._journal_bytes
        try:
            self._fs.pwrite(fd, record, position)
            self._fs.fdatasync(fd)
        except OSError as e:
            raise StorageFailure(f"writing metadata journal {self.journal_path}", e) from e
        self._journal_bytes = position + len(record)
        for pending in self._unsynced:
            pending.durable = True
        self._unsynced = []

    def _write(self, record: bytes) -> int:
        """Write ``record`` without a sync (a group commit); where it begins."""
        fd = self._open_journal()
        position = self._journal_bytes
        try:
            self._fs.pwrite(fd, record, position)
        except OSError as e:
            raise StorageFailure(f"writing metadata journal {self.journal_path}", e) from e
        self._journal_bytes = position + len(record)
        return position

    def _open_journal(self) -> int:
        try:
            return self._journal_fd()
        except OSError as e:
            raise StorageFailure(f"opening metadata journal {self.journal_path}", e) from e

    def _undo_append(self, position: int) -> None:
        """After a failed append: make sure the record is not on disk, or refuse commits
        until reopen (it may be there, and memory would then disagree with a restart)."""
        try:
            if self._fd is not None:
                self._fs.truncate(self._fd, position)
                self._fs.fdatasync(self._fd)
        except OSError as e:
            self._failure = StorageFailure(
                f"metadata journal {self.journal_path} (a failed write could not be undone: "
                "definition changes are refused until it is repaired)",
                e,
            )

    def _journal_fd(self) -> int:
        if self._fd is None:
            new = not self._fs.exists(self.journal_path)
            fd = self._fs.open_rw(self.journal_path)
            try:
                if new:
                    # Its name must survive a power loss before any record in it counts.
                    self._fs.fsync_dir(os.path.dirname(self.journal_path) or ".")
                size = self._fs.file_size(fd)
                if size < len(metadata_journal.MAGIC):
                    self._fs.truncate(fd, 0)
                    self._fs.pwrite(fd, metadata_journal.MAGIC, 0)
                    # Synced with the first record; a torn header reads as an empty journal.
                    size = len(metadata_journal.MAGIC)
                # Open cut any torn tail, and a replaced journal is what was written to it.
                self._journal_bytes = size
            except BaseException:
                self._fs.close(fd)
                raise
            self._fd = fd
        return self._fd

    def snapshot(self) -> None:
        """Write a snapshot of everything committed and empty the journal, now (commits do
        when the journal passes ``snapshot_bytes``). Blocking: one document write."""
        if self._failure is not None:
            raise self._failure
        self._sync_pending()
        self.settle_snapshot()
        if self._failure is not None:
            raise self._failure
        self._write_snapshot(_StoredDocument(FORMAT_VERSION, self._version, self._namespaces))

    def _write_snapshot(self, document: _StoredDocument) -> None:
        """Replace the snapshot with ``document`` (keeping the old one as ``.prev``), then
        empty the journal: everything in it is in the snapshot now."""
        self._snapshot_due = True
        try:
            if self._fs.exists(self._path):
                self._fs.replace_atomically(
                    self._path + PREVIOUS_SUFFIX, self._fs.read_file(self._path)
                )
            data = msgspec.json.encode(document)
            self._fs.replace_atomically(self._path, data)
        except OSError as e:
            raise StorageFailure(f"writing metadata {self._path}", e) from e
        self._snapshot_size = len(data)
        try:
            fd = self._journal_fd()
            self._fs.truncate(fd, len(metadata_journal.MAGIC))
            self._fs.fdatasync(fd)
            self._journal_bytes = len(metadata_journal.MAGIC)
            self._snapshot_due = False
        except OSError as e:
            # Committed all the same (the snapshot holds it; the records left are below its
            # version, skipped on open); the next commit snapshots again and retries this.
            log.error("emptying metadata journal %s failed: %s", self.journal_path, e)

    @property
    def failure(self) -> StorageFailure | None:
        """Why commits are refused (a failed append could not be taken back); None if not."""
        return self._failure

    def repair(self) -> bool:
        """After a failure: cut the journal back to the last committed record, durably, and
        take commits again; False if the disk still refuses (``failure`` says why). Blocking:
        one truncate and one sync. What memory holds is exactly what was committed, so
        nothing committed is cut."""
        if self._failure is None:
            return True
        try:
            fd = self._journal_fd()
            self._fs.truncate(fd, self._journal_bytes)
            self._fs.fdatasync(fd)
        except OSError as e:
            self._failure = StorageFailure(f"repairing metadata journal {self.journal_path}", e)
            return False
        log.warning("metadata journal %s repaired: commits resume", self.journal_path)
        self._failure = None
        return True

    def close(self, sync: bool = True) -> None:
        """Sync what is pending and wait for a snapshot being written (no thread writes after
        close), then close. ``sync=False`` (the engine closed as a crash would) leaves what is
        pending unsynced and the journal as it is, once no thread uses them."""
        if sync and not self._read_only and self._failure is None:
            self._sync_pending()
            self.settle_snapshot()
        elif self._job is not None:
            self._job.done.wait()
            self._job = None
        if self._sync_job is not None:
            self._sync_job.abandon()  # its thread must be done with the descriptor
        if self._fd is not None:
            self._fs.close(self._fd)
            self._fd = None
        for thread in self._closing:
            thread.join()
        self._closing = []

    # -- open -----------------------------------------------------------------------------

    def _replay(self) -> None:
        if not self._fs.exists(self.journal_path):
            return
        try:
            data = self._fs.read_file(self.journal_path)
        except OSError as e:
            raise StorageFailure(f"reading metadata journal {self.journal_path}", e) from e
        found = metadata_journal.scan(data)
        if found.problem and not found.torn:
            raise CorruptMetadata(self.journal_path, found.problem, None, remedy=_JOURNAL_REMEDY)
        expected = self._version + 1
        for version, ops in found.records:
            if version < expected:
                continue  # written before the snapshot, which holds it
            if version != expected:
                raise CorruptMetadata(
                    self.journal_path,
                    f"it continues at version {version}, the snapshot is at {expected - 1}",
                    None,
                    remedy=_JOURNAL_REMEDY,
                )
            _apply(self._namespaces, version, ops, copied=False)
            self._version, expected = version, version + 1
        self._journal_bytes = found.valid_bytes
        if found.problem:
            self._cut(found, len(data))

    def _cut(self, found: metadata_journal.JournalScan, size: int) -> None:
        cut = size - found.valid_bytes
        self.recovery.clean_shutdown = False
        if self._read_only:
            self.recovery.problems.append(
                f"torn last record ({found.problem}): open cuts {cut} bytes there, a "
                "transaction that was never confirmed"
            )
            return
        fd = self._fs.open_rw(self.journal_path)
        try:
            self._fs.truncate(fd, found.valid_bytes)
            self._fs.fdatasync(fd)
        finally:
            self._fs.close(fd)
        self.recovery.bytes_truncated = cut
        self.recovery.problems.append(
            f"torn last record ({found.problem}): cut {cut} bytes, a transaction that was "
            "never confirmed"
        )
        log.warning("metadata journal %s: %s", self.journal_path, self.recovery.problems[-1])


_JOURNAL_REMEDY = (
    "the definitions committed after the damage cannot be read; `roost check DATA --repair` "
    "cuts the journal there (losing them), or restore the data directory from a backup"
)


def repair_metadata_journal(fs: LocalFS, path: str) -> LogRecovery:
    """Cut the journal of the store at ``path`` where it stops being intact records that
    continue the snapshot, accepting the loss of what follows (``roost check --repair``; the
    directory's LOCK held, no broker running). What was cut is returned."""
    document = _read_snapshot(fs, path)
    journal_path = path + JOURNAL_SUFFIX
    data = fs.read_file(journal_path)
    found = metadata_journal.scan(data)
    keep, problem = found.valid_bytes, found.problem
    expected = document.version + 1
    for (version, _), position in zip(found.records, found.starts, strict=True):
        if version >= expected:
            if version != expected:
                keep = position
                problem = f"record at byte {position} is version {version}, not {expected}"
                break
            expected += 1
    recovery = LogRecovery(log="metadata journal", clean_shutdown=False)
    if keep < len(data):
        fd = fs.open_rw(journal_path)
        try:
            fs.truncate(fd, keep)
            fs.fdatasync(fd)
        finally:
            fs.close(fd)
        recovery.bytes_truncated = len(data) - keep
        recovery.problems.append(
            f"{problem}: cut {len(data) - keep} bytes there (the definition changes after it "
            "are lost)"
        )
    return recovery


def _apply(
    namespaces: dict[str, dict[str, msgspec.Raw]], version: int, ops: list[Op], copied: bool
) -> dict[str, dict[str, msgspec.Raw]]:
    """Apply ``ops`` to ``namespaces`` in place, each value stored as its JSON. ``copied``:
    ``namespaces`` is a shallow copy of the live one, so each namespace it changes is copied
    first."""
    touched: set[str] = set()
    for kind, namespace, name, value in ops:
        if copied and namespace not in touched:
            namespaces[namespace] = dict(namespaces.get(namespace, {}))
            touched.add(namespace)
        if kind == PUT:
            namespaces.setdefault(namespace, {})[name] = msgspec.Raw(msgspec.json.encode(value))
        else:
            entries = namespaces.get(namespace)
            if entries is not None:
                entries.pop(name, None)
    return namespaces


def _read_stored(fs: LocalFS, path: str) -> tuple[_StoredDocument, int]:
    """The snapshot at ``path`` as the store holds it, and its size in bytes."""
    data = _read_snapshot_bytes(fs, path)
    if not data:
        return _StoredDocument(FORMAT_VERSION, 0, {}), 0
    stored = msgspec.json.decode(data, type=_StoredDocument)
    # A Raw decoded from a buffer keeps the whole buffer alive: each entry gets its own bytes,
    # so that a deleted one frees its memory.
    for namespace, entries in stored.namespaces.items():
        stored.namespaces[namespace] = {n: msgspec.Raw(bytes(v)) for n, v in entries.items()}
    return stored, len(data)


def _read_snapshot(fs: LocalFS, path: str) -> _Document:
    data = _read_snapshot_bytes(fs, path)
    return msgspec.json.decode(data, type=_Document) if data else _Document(FORMAT_VERSION, 0, {})


def _read_snapshot_bytes(fs: LocalFS, path: str) -> bytes:
    """The snapshot at ``path``, checked; b"" if there is none."""
    if not fs.exists(path):
        return b""
    try:
        data = fs.read_file(path)
    except OSError as e:
        raise StorageFailure(f"reading metadata {path}", e) from e
    problem = check_document(data)
    if problem is not None:
        previous = path + PREVIOUS_SUFFIX
        good_copy = fs.exists(previous) and check_document(fs.read_file(previous)) is None
        raise CorruptMetadata(path, problem, previous if good_copy else None)
    return data


def check_document(data: bytes) -> str | None:
    """What is wrong with ``data`` as a metadata snapshot, in words; None if nothing."""
    try:
        document = msgspec.json.decode(data, type=_Document)
    except (ValueError, RecursionError) as e:
        # ValueError: msgspec's DecodeError, and the UnicodeDecodeError of bytes that are not
        # UTF-8 (found by fuzzing); RecursionError: arrays nested thousands deep.
        return f"not a metadata document: {e}"
    if document.format not in READABLE_FORMATS:
        return f"unknown format {document.format}"
    return None
