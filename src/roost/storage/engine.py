"""The local storage engine: topics, journals and metadata in one data directory.

Layout::

    <data>/LOCK                        held (flock) while a process has the directory open
    <data>/CLEAN_SHUTDOWN              present only between a clean close and the next open
    <data>/WRITE_PROBE                 briefly, while a readiness check writes it
    <data>/metadata.json               definitions: topics, subscriptions, exchanges, users...
                                       (a snapshot; metadata.json.journal holds the changes since)
    <data>/topics/<topic>/<partition>/ segments of one partition log
    <data>/journals/<name>/            a state journal: log/ and snapshot

Metadata is the truth about which topics exist. Creating a topic or a journal commits its
metadata (one journal record, the commit point; several creates may share it:
``MetadataStore.transaction`` nests) and makes no file: each log's directories and first
segment are made by its first write, unsynced, and its first flush syncs their entries before
anything it holds counts as durable (lazy creation: ``PartitionLog.open``'s ``made_under``).
A log whose directory is missing at ``open`` (never written, or a power loss took the unsynced
entries: nothing in them had been confirmed) opens empty, still without files. Deleting
commits first and removes the directories after: a crash in between leaves directories
without metadata, which ``open`` removes; a log never written has none to remove, and no WAL
record to void.

Opening and closing block (recovery reads and fsyncs); topic creation and deletion block on
one metadata sync. The asyncio host runs opening and closing off the event loop.

    engine = LocalEngine.open("./data")
    orders = engine.create_topic("orders", TopicConfig(partitions=3))
    orders.append(0, [Record(value=b"hello")])
    engine.close()
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator

import msgspec

from roost.clock import Clock, SystemClock
from roost.errors import (
    DirectoryInUse,
    InvalidConfig,
    PartitionQuarantined,
    StorageClosed,
    StorageFailure,
    TopicExists,
    UnknownTopic,
)
from roost.storage.config import TopicConfig, check_name
from roost.storage.fd_pool import MIN_MAX_OPEN, FdPool, default_max_open, soft_fd_limit
from roost.storage.fs import LOCAL_FS, LocalFS
from roost.storage.journal import Journal
from roost.storage.log import PartitionLog, storage_error
from roost.storage.metadata import MetadataStore
from roost.storage.recovery import LogRecovery
from roost.storage.topic import PartitionInfo, Topic, TopicInfo
from roost.storage.wal import Wal

CLEAN_MARKER = "CLEAN_SHUTDOWN"
LOCK_NAME = "LOCK"
#: Written and removed again by ``probe_write``; a leftover one (a crash) is harmless.
PROBE_NAME = "WRITE_PROBE"
METADATA_NAME = "metadata.json"
TOPICS_NAMESPACE = "topics"

DirtyCallback = Callable[[PartitionLog, bool], None]


class RecoveryReport(msgspec.Struct):
    """What opening the data directory found and did, per log; kept up to date after open
    (a log quarantined by a read or the scrub shows here too): the admin API serves it."""

    clean_shutdown: bool
    logs: list[LogRecovery]
    orphans_removed: list[str]

    @property
    def lost_data(self) -> bool:
        return any(log.lost_data for log in self.logs)

    @property
    def quarantined(self) -> list[LogRecovery]:
        return [log for log in self.logs if log.quarantined]


class LocalEngine:
    def __init__(
        self, path: str, clock: Clock, fs: LocalFS, lock_fd: int, max_open_files: int | None = None
    ) -> None:
        self.path = path
        self.clock = clock
        self._fs = fs
        #: Every log's segment descriptors, under one ceiling (fd_pool.py).
        self.pool = FdPool(fs, max_open_files or default_max_open(soft_fd_limit()))
        self._lock_fd = lock_fd
        self._topics: dict[str, Topic] = {}
        self._journals: dict[str, Journal] = {}
        #: Journals that refused an append for want of descriptors and owe a snapshot (see
        #: journal.py); the host writes them and forgets those paid.
        self.snapshots_owed: set[Journal] = set()
        self._on_dirty: DirtyCallback | None = None
        #: Logs that failed since ``failed_logs`` last looked (a superset of the failed ones):
        #: while it is empty, nothing needs looking at every log.
        self._failed: set[PartitionLog] = set()
        #: Topics deleted since open whose directory was removed without a sync: creating
        #: one of these names syncs ``topics/`` first (``create_topic``).
        self._removed_topics: set[str] = set()
        #: Names whose directory may be on disk though no live topic or journal has it: found
        #: at open, or forgotten since (deleted, or a create undone). A create of any other
        #: name has nothing to remove and looks for nothing (``_remove_leftover``: a stat per
        #: directory was 6% of a create), since nobody else writes in a locked directory.
        self._maybe_left_topics: set[str] = set()
        self._maybe_left_journals: set[str] = set()
        #: ``largest_segment_bytes``, until the set of topics changes.
        self._largest_segment: int | None = None
        self._closed = False
        #: The shared write-ahead log (wal.py), replayed by ``open`` before any log opens.
        self.wal: Wal | None = None
        self.metadata = MetadataStore.open(fs, os.path.join(path, METADATA_NAME))
        self.recovery = RecoveryReport(False, [], [])
        if self.metadata.recovery.problems:  # a torn last record was cut: say so
            self.recovery.logs.append(self.metadata.recovery)

    @classmethod
    def open(
        cls,
        path: str,
        clock: Clock | None = None,
        fs: LocalFS = LOCAL_FS,
        max_open_files: int | None = None,
    ) -> LocalEngine:
        """Open (creating if needed) the data directory at ``path`` and recover every log.

        ``max_open_files``: the ceiling on descriptors the logs keep open (None: derived from
        the process's soft RLIMIT_NOFILE, see ``default_max_open``)."""
        if max_open_files is not None and max_open_files < MIN_MAX_OPEN:
            raise InvalidConfig("max_open_files", max_open_files, f"must be >= {MIN_MAX_OPEN}")
        for directory in (path, os.path.join(path, "topics"), os.path.join(path, "journals")):
            fs.makedirs(directory)
        lock_fd = _lock(os.path.join(path, LOCK_NAME))
        engine = cls(path, clock or SystemClock(), fs, lock_fd, max_open_files)
        marker = os.path.join(path, CLEAN_MARKER)
        clean = fs.exists(marker)
        if clean:
            # From here on a crash must look unclean, so the marker goes before any write.
            fs.remove(marker)
            fs.fsync_dir(path)
        engine.recovery.clean_shutdown = clean
        try:
            engine._open_wal()
            engine._open_topics(clean)
        except BaseException:
            engine.close(clean=False)
            raise
        return engine

    def _open_wal(self) -> None:
        """Replay what a crash left in the shared WAL into the files, before any log reads
        them (wal.py), and start a fresh one."""
        wal = Wal.open(self._fs, self.path)
        self.wal = wal
        if wal.recovery.problems or wal.recovery.replayed:
            self.recovery.logs.append(
                LogRecovery(
                    log="write-ahead log", clean_shutdown=self.recovery.clean_shutdown,
                    segments=wal.recovery.files, problems=[
                        f"replayed {wal.recovery.replayed} of {wal.recovery.records} records "
                        f"into {wal.recovery.files_written} files "
                        f"({wal.recovery.skipped_missing} for files gone, "
                        f"{wal.recovery.skipped_forgotten} voided; "
                        f"{wal.recovery.torn_bytes} bytes of an unconfirmed round cut)",
                        *wal.recovery.problems,
                    ],
                )
            )  # fmt: skip

    def _open_topics(self, clean: bool) -> None:
        topics_dir = os.path.join(self.path, "topics")
        known = set(self.metadata.names(TOPICS_NAMESPACE))
        self._maybe_left_journals = set(self._fs.listdir(os.path.join(self.path, "journals")))
        for name in self._fs.listdir(topics_dir):
            if name not in known:
                self._fs.remove_tree(os.path.join(topics_dir, name))
                self.recovery.orphans_removed.append(name)
        if self.recovery.orphans_removed:
            # A power loss could bring them back, and a topic created later under one of
            # their names (no directory of its own before its first write) would adopt them.
            self._fs.fsync_dir(topics_dir)
        for name in sorted(known):
            config = msgspec.convert(self.metadata.get(TOPICS_NAMESPACE, name), TopicConfig)
            topic = self._open_topic(name, config, clean)
            self.recovery.logs.extend(log.recovery for log in topic.partitions)

    def _open_topic(
        self, name: str, config: TopicConfig, clean: bool, absent: bool = False
    ) -> Topic:
        """The topic's logs; a partition without its directory opens empty, its files made
        by its first write (lazy creation). ``absent``: the topic's directory is known not to
        exist (a create): not looked for."""
        topics = os.path.join(self.path, "topics")
        directory = os.path.join(topics, name)
        logs: list[PartitionLog] = []
        try:
            for p in range(config.partitions):
                path = os.path.join(directory, str(p))
                logs.append(
                    PartitionLog.open(
                        name, p, path, config, self.clock, self._fs, clean, pool=self.pool,
                        made_under=topics, absent=absent,
                    )
                )  # fmt: skip
        except BaseException:
            for log in logs:
                log.close(clean=False)
            raise
        for log in logs:
            log.on_dirty = self._on_dirty
            log.on_failure = self._failed.add
            if self.wal is not None:
                log.attach_wal(self.wal)
        topic = Topic(name, config, logs)
        self._topics[name] = topic
        if self._largest_segment is not None:  # a new topic can only raise it
            self._largest_segment = max(self._largest_segment, config.segment_max_bytes)
        return topic

    def _remove_leftover(self, directory: str) -> None:
        """Remove what a create that never committed left at ``directory`` (a crash cut it
        short, or its undo could not remove it, or a first write made it before that): nothing
        committed names it, and a new topic or journal must not adopt its files (a journal
        number is reused when the create that took it did not commit). After it the directory
        is known absent."""
        if self._fs.exists(directory):
            self._forget_in_wal(directory)
            self._fs.remove_tree(directory)
            # A power loss could undo the unsynced removal, and the new log, which makes no
            # directory of its own until its first write, would adopt the old files.
            self._fs.fsync_dir(os.path.dirname(directory))

    def _forget_in_wal(self, directory: str) -> None:
        """Before files under ``directory`` go: no WAL record may replay into files that
        take their names later (wal.py)."""
        if self.wal is not None:
            self.wal.forget(directory)

    @property
    def fs(self) -> LocalFS:
        """The file seam every file of this engine goes through (the scrub reads by it too)."""
        return self._fs

    # -- topics ---------------------------------------------------------------------------

    def create_topic(self, name: str, config: TopicConfig | None = None) -> Topic:
        """Commit a topic's definition (in the caller's metadata transaction, if one is open)
        and open its partition logs, empty and without files: the commit is the one durable
        step, and each log makes its files on its first write (see the module docstring)."""
        self._check_open()
        check_name("topic", name)
        if name in self._topics:
            raise TopicExists(name)
        config = config or TopicConfig()
        with self.metadata.transaction() as txn:
            try:
                if name in self._maybe_left_topics:
                    self._remove_leftover(os.path.join(self.path, "topics", name))
                    self._maybe_left_topics.discard(name)
                if name in self._removed_topics:
                    # A topic of this name was deleted since open and its directory removed
                    # without a sync: a power loss could bring it back, files and all, under
                    # the new topic (which makes none of its own before its first write).
                    self._fs.fsync_dir(os.path.join(self.path, "topics"))
                    self._removed_topics.discard(name)
                topic = self._open_topic(name, config, True, absent=True)
            except OSError as e:
                raise storage_error(f"creating topic {name}", e) from e
            txn.on_abort(lambda: self._forget_new_topic(topic))
            txn.put(TOPICS_NAMESPACE, name, msgspec.to_builtins(config))
        return topic

    def _forget_new_topic(self, topic: Topic) -> None:
        """Undo a create whose metadata did not commit."""
        if self._topics.get(topic.name) is topic:
            del self._topics[topic.name]
            self._largest_segment = None
            self._maybe_left_topics.add(topic.name)
            self._remove_topic_files(topic)

    def has_topic(self, name: str) -> bool:
        return name in self._topics

    def find_topic(self, name: str) -> Topic | None:
        """The open topic called ``name``, or None."""
        return self._topics.get(name)

    def delete_topic(self, name: str) -> None:
        topic = self.topic(name)
        with self.metadata.transaction() as txn:
            txn.delete(TOPICS_NAMESPACE, name)
        del self._topics[name]
        self._largest_segment = None
        self._maybe_left_topics.add(name)
        self._remove_topic_files(topic)

    def _remove_topic_files(self, topic: Topic) -> None:
        topic.close(clean=False)
        directory = os.path.join(self.path, "topics", topic.name)
        if any(log.on_disk for log in topic.partitions):
            self._forget_in_wal(directory)
        # Never written (lazy creation): no WAL record names its files, none exists, or
        # only directories a failed first write left.
        if self._fs.exists(directory):
            self._fs.remove_tree(directory)
            self._removed_topics.add(topic.name)  # synced before a topic takes the name

    def topic(self, name: str) -> Topic:
        self._check_open()
        try:
            return self._topics[name]
        except KeyError:
            raise UnknownTopic(name) from None

    def list_topics(self) -> list[str]:
        self._check_open()
        return sorted(self._topics)

    def topic_names(self) -> list[str]:
        """Every topic's name, unsorted: a copy, cheap at any count (the scrub walks it in
        steps)."""
        self._check_open()
        return list(self._topics)

    def describe_topic(self, name: str) -> TopicInfo:
        return self.topic(name).describe()

    def logs(self) -> Iterator[PartitionLog]:
        """Every open log, topics' and journals'."""
        for topic in self._topics.values():
            yield from topic.partitions
        for journal in self._journals.values():
            yield journal.log

    def failed_logs(self) -> list[PartitionLog]:
        """Every log that refuses writes until it is repaired (``PartitionLog.begin_repair``).

        The storage watch asks once a second: with no log failed since, it costs nothing,
        however many logs there are."""
        if not self._failed:
            return []
        failed = [log for log in self.logs() if log.failure is not None]
        self._failed.intersection_update(failed)  # repaired or gone: forgotten
        return failed

    def largest_segment_bytes(self) -> int:
        """The largest ``segment_max_bytes`` of any topic (0 without topics)."""
        if self._largest_segment is None:
            sizes = (topic.config.segment_max_bytes for topic in self._topics.values())
            self._largest_segment = max(sizes, default=0)
        return self._largest_segment

    def check_health(self) -> None:
        """Raise unless the engine is open, no log has failed (a failed log refuses writes
        until it is repaired; the error names every failed log) and no topic partition is
        quarantined (``PartitionQuarantined``). No I/O; on the thread that owns the engine. A
        quarantined journal is its owner's to report (the broker names the subscription)."""
        self._check_open()
        if self.metadata.failure is not None:
            raise self.metadata.failure
        failed = self.failed_logs()
        if len(failed) == 1:
            raise failed[0].failure  # type: ignore[misc]
        if failed:
            raise StorageFailure(
                f"{len(failed)} logs: " + "; ".join(log.failure.what for log in failed)  # type: ignore[union-attr]
            )
        for topic in self._topics.values():
            for log in topic.partitions:
                if log.quarantined:
                    raise PartitionQuarantined(log.topic, log.partition, log.quarantined)

    def probe_write(self) -> None:
        """Raise ``StorageFailure`` unless the data directory accepts a small file (written,
        then removed). Blocking, and touching no engine state: run it in a thread, so that a
        hung disk stalls the probe and not the event loop."""
        probe = os.path.join(self.path, PROBE_NAME)
        try:
            self._fs.write_file(probe, b"ready?")
            self._fs.remove(probe)
        except OSError as e:
            raise StorageFailure(f"writing to the data directory {self.path}", e) from e

    # -- journals -------------------------------------------------------------------------

    def journals(self) -> list[Journal]:
        """Every journal opened so far."""
        return list(self._journals.values())

    def journal(self, name: str, owner: str = "", new: bool = False) -> Journal:
        """The state journal called ``name``, opened (and recovered) on first use. ``owner``
        says whom it serves in the recovery report ("subscription orders/workers"). ``new``:
        one being created, in a metadata transaction that names it: its directories are made
        without syncs, and if that transaction does not commit the journal goes again."""
        self._check_open()
        if name not in self._journals:
            check_name("journal", name)
            if new:
                journal = self._new_journal(name)
            else:
                try:
                    journal = Journal.open(
                        name,
                        os.path.join(self.path, "journals", name),
                        self.clock,
                        self._fs,
                        clean_shutdown=self.recovery.clean_shutdown,
                        pool=self.pool,
                        made_under=os.path.join(self.path, "journals"),
                    )
                except OSError as e:  # its directory, say: TooManyOpenFiles for want of fds
                    raise storage_error(f"opening journal {name}", e) from e
            journal.log.on_dirty = self._on_dirty
            journal.log.on_failure = self._failed.add
            if self.wal is not None:
                journal.log.attach_wal(self.wal)
            journal.on_snapshot_owed = self.snapshots_owed.add
            journal.log.recovery.owner = owner
            if not new:  # a new journal has nothing to report, and the report is kept
                self.recovery.logs.append(journal.log.recovery)
            self._journals[name] = journal
            if new:
                with self.metadata.transaction() as txn:
                    txn.on_abort(lambda: self._forget_new_journal(journal))
        return self._journals[name]

    def _new_journal(self, name: str) -> Journal:
        """A journal for a definition being created: no file is made (lazy creation)."""
        journals = os.path.join(self.path, "journals")
        directory = os.path.join(journals, name)
        try:
            if name in self._maybe_left_journals:
                self._remove_leftover(directory)
                self._maybe_left_journals.discard(name)
            return Journal.open(
                name, directory, self.clock, self._fs, clean_shutdown=True, pool=self.pool,
                made_under=journals, absent=True,
            )  # fmt: skip
        except OSError as e:
            raise storage_error(f"creating journal {name}", e) from e

    def drop_journal(self, name: str) -> None:
        """Close the journal called ``name`` and remove its files: the definition that named
        it is gone (committed), so nothing reads it again. What it leaves in memory is freed
        by reference counting alone (no cycle waits for the collector, see
        server/process_tuning.py). Its entry in the recovery report, if it was recovered at
        open, stays: that is what open found."""
        self._check_open()
        journal = self._journals.pop(name, None)
        self._maybe_left_journals.add(name)
        if journal is not None:
            self.snapshots_owed.discard(journal)
            self._failed.discard(journal.log)
            journal.close(clean=False)
        directory = os.path.join(self.path, "journals", name)
        # Left behind if either step fails: named by nothing, it is harmless (and the WAL may
        # still replay into files it could not void).
        with contextlib.suppress(OSError):
            self._remove_journal_files(directory, journal)

    def _remove_journal_files(self, directory: str, journal: Journal | None) -> None:
        """A journal never written (lazy creation) has no WAL record to void, and no files
        but perhaps the directories a failed first write left."""
        if journal is None or journal.log.on_disk:
            self._forget_in_wal(directory)
        if self._fs.exists(directory):
            self._fs.remove_tree(directory)

    def _forget_new_journal(self, journal: Journal) -> None:
        """Undo a journal made for a definition that did not commit."""
        if self._journals.get(journal.name) is journal:
            del self._journals[journal.name]
            self._maybe_left_journals.add(journal.name)
            with contextlib.suppress(ValueError):
                self.recovery.logs.remove(journal.log.recovery)
            journal.close(clean=False)
            with contextlib.suppress(OSError):
                directory = os.path.join(self.path, "journals", journal.name)
                self._remove_journal_files(directory, journal)

    # -- durability -----------------------------------------------------------------------

    @property
    def on_dirty(self) -> DirtyCallback | None:
        return self._on_dirty

    @on_dirty.setter
    def on_dirty(self, callback: DirtyCallback | None) -> None:
        """Who to tell when a log has appends to sync (the flusher); see ``PartitionLog``."""
        self._on_dirty = callback
        for log in self.logs():
            log.on_dirty = callback

    def close(self, clean: bool = True) -> None:
        """Flush and close every log, then mark the shutdown clean. Blocking.

        ``clean=False`` releases the files without flushing or marking anything, as a crash
        would (less the page cache): the next open runs recovery. For shutting down after a
        failure, and for crash tests.
        """
        if self._closed:
            return
        all_clean = clean
        for log in list(self.logs()):
            try:
                all_clean = log.close(clean=clean) and all_clean
            except StorageFailure:
                all_clean = False
        self._closed = True
        self.metadata.close(sync=clean)
        if self.wal is not None:
            try:
                # Clean: every log flushed above; the checkpoint syncs the files the WAL
                # covered and removes it, so the next open has nothing to replay.
                self.wal.close(clean=all_clean)
            except OSError:
                self.wal.close(clean=False)
                all_clean = False
        if all_clean:
            self._fs.replace_atomically(os.path.join(self.path, CLEAN_MARKER), b"")
        os.close(self._lock_fd)

    def _check_open(self) -> None:
        if self._closed:
            raise StorageClosed(f"storage engine at {self.path}")


@contextlib.contextmanager
def open_metadata(
    path: str, create: bool = False, fs: LocalFS = LOCAL_FS
) -> Iterator[MetadataStore]:
    """The metadata store of the data directory at ``path`` alone, under its LOCK, for tools
    that change definitions (users, grants) while no broker runs: no log is opened or
    recovered, so it is quick and touches nothing else. Blocking.

    ``DirectoryInUse`` if another process (a running broker) holds the directory; a missing
    directory is made when ``create``, else ``StorageFailure``.
    """
    if not fs.exists(path):
        if not create:
            raise StorageFailure(f"opening data directory {path}", FileNotFoundError(path))
        fs.makedirs(path)
    lock_fd = _lock(os.path.join(path, LOCK_NAME))
    try:
        store = MetadataStore.open(fs, os.path.join(path, METADATA_NAME))
        try:
            yield store
        finally:
            store.close()
    finally:
        os.close(lock_fd)


def _lock(path: str) -> int:
    """Hold the directory's LOCK, and write this process's pid in it so that the next one to
    try can say who holds it (informational: the flock is the lock)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as e:
        holder = _lock_holder(fd)
        os.close(fd)
        raise DirectoryInUse(os.path.dirname(path), holder) from e
    with contextlib.suppress(OSError):  # a pid we cannot write only makes the message vaguer
        os.ftruncate(fd, 0)
        os.pwrite(fd, b"%d\n" % os.getpid(), 0)
    return fd


def _lock_holder(fd: int) -> str | None:
    """``process 1234 (roost serve --data ./data)``, from the pid its holder wrote."""
    try:
        pid = int(os.pread(fd, 32, 0).decode("ascii").strip())
    except (OSError, ValueError):
        return None  # written by an older broker, or not yet
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = f.read(400).replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        command = ""
    return f"process {pid}" + (f" ({command[:160]})" if command else "")


__all__ = ["LocalEngine", "PartitionInfo", "RecoveryReport", "Topic", "TopicInfo", "open_metadata"]
