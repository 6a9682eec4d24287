"""``roost check``: verify every store of a data directory offline, changing nothing.

What it reads, under the directory's LOCK (a running broker holds it: ``DirectoryInUse``):

- ``metadata.json`` (and ``metadata.json.prev``, the copy to restore from) must decode, and
  its journal ``metadata.json.journal`` must hold intact records that continue it;
- every partition log of every topic the metadata names, and every state journal: each
  segment is scanned whole (every batch's CRC and offsets, as recovery does when it does not
  trust an index), its index files compared with what the scan rebuilt, and the segments
  must continue one another;
- each journal's snapshot must pass its CRC and cover the entries that are gone.

Each finding is either a **problem** (damage: data recovery would cut, or that quarantines a
partition or a subscription) or a **note** (harmless: a stale index rebuilt on open, a stray
temp file removed on open). The verdict per store says what the broker will do about it, using
recovery's own rules (storage/recovery.py), so the report predicts the next start.

Files are opened read-only (``ReadOnlyFS``): a check cannot change what it looks at.
"""

from __future__ import annotations

import os

import msgspec

from roost.clock import SystemClock
from roost.errors import CorruptMetadata
from roost.storage import metadata_journal, recovery
from roost.storage.config import TopicConfig
from roost.storage.engine import CLEAN_MARKER, LOCK_NAME, METADATA_NAME, TOPICS_NAMESPACE, _lock
from roost.storage.fs import LOCAL_FS, LocalFS
from roost.storage.journal import JOURNAL_CONFIG, SNAPSHOT_NAME, parse_snapshot
from roost.storage.log import PartitionLog
from roost.storage.metadata import (
    JOURNAL_SUFFIX,
    PREVIOUS_SUFFIX,
    MetadataStore,
    check_document,
    repair_metadata_journal,
)
from roost.storage.recovery import LogRecovery
from roost.storage.segment import INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX, Segment
from roost.storage.wal import WAL_DIRECTORY, WAL_SUFFIX, replay


class ReadOnlyFS(LocalFS):
    """The file seam with every change refused: files open read-only, writes raise."""

    def open_rw(self, path: str) -> int:
        return self.open_ro(path)

    def _refuse(self, *args: object) -> None:
        raise PermissionError(f"roost check changes nothing: refused {args!r}")

    pwrite = truncate = remove = remove_tree = rename = write_file = _refuse  # type: ignore[assignment]
    replace_atomically = mkdir = makedirs = fdatasync = fsync = fsync_dir = _refuse  # type: ignore[assignment]


class StoreCheck(msgspec.Struct, kw_only=True):
    #: Path inside the data directory: ``metadata.json``, ``topics/orders/0``, ``journals/sub-1``.
    store: str
    kind: str  # "metadata", "partition", "journal" or "wal"
    #: Whom a journal serves ("subscription orders/workers"), when known.
    owner: str = ""
    segments: int = 0
    records: int = 0
    bytes: int = 0
    #: Damage, each with what the broker will do about it. Empty: the store is sound.
    problems: list[str] = msgspec.field(default_factory=list)
    #: Harmless findings the broker fixes by itself on open.
    notes: list[str] = msgspec.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class CheckReport(msgspec.Struct, kw_only=True):
    path: str
    clean_shutdown: bool
    ok: bool
    stores: list[StoreCheck]


def check_directory(
    path: str, owners: dict[str, str] | None = None, fs: LocalFS = LOCAL_FS
) -> CheckReport:
    """Check every store of the data directory at ``path`` (see the module docstring).

    ``owners`` names whom each journal serves (the caller reads that from the metadata's
    definitions, which storage does not interpret). Raises ``DirectoryInUse`` while a broker
    holds the directory, ``FileNotFoundError`` if there is none. Blocking.
    """
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no data directory at {path}")
    lock_fd = _lock(os.path.join(path, LOCK_NAME))
    try:
        reader = ReadOnlyFS()
        clean = fs.exists(os.path.join(path, CLEAN_MARKER))
        stores, topics = _check_metadata(reader, path)
        stores += _check_topics(reader, path, topics, clean)
        stores += _check_journals(reader, path, owners or {}, clean)
        stores += _check_wal(reader, path)
        return CheckReport(
            path=path,
            clean_shutdown=clean,
            ok=all(store.ok for store in stores),
            stores=stores,
        )
    finally:
        os.close(lock_fd)


def _check_wal(fs: LocalFS, path: str) -> list[StoreCheck]:
    """The shared write-ahead log (wal.py): records a crash left are replayed into the
    segments by the next start, before it verifies them; the check reads the segments as
    they are, so it says so."""
    directory = os.path.join(path, WAL_DIRECTORY)
    if not fs.exists(directory):
        return []
    pending = 0
    for name in fs.listdir(directory):
        if name.endswith(WAL_SUFFIX):
            fd = fs.open_ro(os.path.join(directory, name))
            try:
                pending += fs.file_size(fd)
            finally:
                fs.close(fd)
    if not pending:
        return []
    return [
        StoreCheck(
            store=WAL_DIRECTORY, kind="wal", bytes=pending,
            notes=[
                f"{pending} bytes of write-ahead records from before a crash: the next start "
                "replays them into the segments before verifying them, so a torn tail reported "
                "here may not be there then (start the broker, stop it, check again; --repair "
                "replays them before it cuts anything)"
            ],
        )
    ]  # fmt: skip


def _check_metadata(
    fs: LocalFS, path: str
) -> tuple[list[StoreCheck], dict[str, TopicConfig] | None]:
    file = os.path.join(path, METADATA_NAME)
    check = StoreCheck(store=METADATA_NAME, kind="metadata")
    journal = _check_metadata_journal(fs, file + JOURNAL_SUFFIX)
    checks = [check] if journal is None else [check, journal]
    if not fs.exists(file):
        if journal is None:
            check.notes.append("no metadata yet: an empty broker")
            return checks, {}
        check.notes.append("no snapshot yet: the journal holds every definition")
    else:
        data = fs.read_file(file)
        check.bytes = len(data)
        problem = check_document(data)
        if problem is not None:
            previous = file + PREVIOUS_SUFFIX
            good = fs.exists(previous) and check_document(fs.read_file(previous)) is None
            remedy = (
                f"restore the previous snapshot: cp {previous} {file}, and move "
                f"{file}{JOURNAL_SUFFIX} aside (the changes since that copy are lost)"
                if good
                else "restore it from a backup"
            )
            check.problems.append(f"{problem}: the broker will not start; {remedy}")
            return checks, None
    try:
        store = MetadataStore.open(fs, file, read_only=True)
    except CorruptMetadata as e:
        if journal is not None:
            journal.problems.append(f"{e.problem}: the broker will not start; {_CUT_JOURNAL}")
        return checks, None
    if journal is not None:
        journal.problems += store.recovery.problems
    topics = {
        name: msgspec.convert(store.get(TOPICS_NAMESPACE, name), TopicConfig)
        for name in store.names(TOPICS_NAMESPACE)
    }
    return checks, topics


_CUT_JOURNAL = (
    "`roost check --repair` cuts the journal there, losing the definition changes after it"
)


def _check_metadata_journal(fs: LocalFS, file: str) -> StoreCheck | None:
    """The journal's records and bytes (its damage is found by opening the store, which
    knows the snapshot's version); None if there is no journal."""
    if not fs.exists(file):
        return None
    data = fs.read_file(file)
    found = metadata_journal.scan(data)
    check = StoreCheck(store=os.path.basename(file), kind="metadata journal")
    check.records, check.bytes = len(found.records), len(data)
    return check


def _check_topics(
    fs: LocalFS, path: str, topics: dict[str, TopicConfig] | None, clean: bool
) -> list[StoreCheck]:
    topics_dir = os.path.join(path, "topics")
    on_disk = fs.listdir(topics_dir) if fs.exists(topics_dir) else []
    checks = []
    if topics is None:  # no metadata to go by: check what is there, one partition dir each
        topics = {}
        for name in on_disk:
            partitions = len(fs.listdir(os.path.join(topics_dir, name)))
            topics[name] = TopicConfig(partitions=max(partitions, 1))
    for name in on_disk:
        if name not in topics:
            check = StoreCheck(store=f"topics/{name}", kind="partition")
            check.notes.append("no topic of this name in the metadata: removed on open")
            checks.append(check)
    for name, config in sorted(topics.items()):
        for partition in range(config.partitions):
            store = f"topics/{name}/{partition}"
            check = StoreCheck(store=store, kind="partition")
            directory = os.path.join(path, store)
            if fs.exists(directory):
                _check_log(fs, directory, config.index_interval_bytes, clean, check)
            else:
                check.notes.append("no directory yet: an empty partition, made by its first write")
            checks.append(check)
    return checks


def _check_journals(
    fs: LocalFS, path: str, owners: dict[str, str], clean: bool
) -> list[StoreCheck]:
    journals_dir = os.path.join(path, "journals")
    checks = []
    for name in fs.listdir(journals_dir) if fs.exists(journals_dir) else []:
        check = StoreCheck(store=f"journals/{name}", kind="journal", owner=owners.get(name, ""))
        directory = os.path.join(journals_dir, name)
        log_directory = os.path.join(directory, "log")
        start = end = 0
        if fs.exists(log_directory):
            start, end = _check_log(
                fs, log_directory, JOURNAL_CONFIG.index_interval_bytes, clean, check
            )
        _check_snapshot(fs, os.path.join(directory, SNAPSHOT_NAME), start, end, check)
        checks.append(check)
    return checks


def _check_snapshot(fs: LocalFS, file: str, start: int, end: int, check: StoreCheck) -> None:
    if not fs.exists(file):
        return
    data = fs.read_file(file)
    check.bytes += len(data)
    parsed = parse_snapshot(data)
    if parsed is None:
        check.problems.append("snapshot is corrupt: its owner is quarantined")
        return
    next_seq = parsed[1]
    if next_seq < start:
        check.problems.append(
            f"entries {next_seq}..{start - 1} are gone but the snapshot does not cover them: "
            "its owner is quarantined"
        )
    elif next_seq > end:
        check.notes.append(f"the snapshot covers entries up to {next_seq}: the log restarts there")


def _check_log(
    fs: LocalFS, directory: str, index_interval_bytes: int, clean: bool, check: StoreCheck
) -> tuple[int, int]:
    """Scan every segment of the log in ``directory`` into ``check``; its (start, end)."""
    names = fs.listdir(directory)
    bases = sorted(
        int(name[: -len(LOG_SUFFIX)])
        for name in names
        if name.endswith(LOG_SUFFIX) and name[: -len(LOG_SUFFIX)].isdigit()
    )
    _note_strays(names, bases, check)
    marker = os.path.join(directory, recovery.QUARANTINE_NAME)
    if fs.exists(marker):
        check.notes.append(f"quarantined by the broker: {fs.read_file(marker).decode()}")
    expected: int | None = None
    for i, base in enumerate(bases):
        is_last = i == len(bases) - 1
        if expected is not None and base != expected:
            verdict = "recovery drops it and what follows" if not clean else "quarantined"
            check.problems.append(
                f"segment {base} does not continue at offset {expected}: {verdict}"
            )
        segment = Segment.open(fs, directory, base)
        try:
            index_ok = segment.load_index()
            result = segment.scan(index_interval_bytes)
            check.segments += 1
            check.bytes += result.file_bytes
            check.records += segment.record_count
            expected = segment.next_offset
            if result.problem is not None:
                torn = not clean and (is_last or recovery.ends_segment(segment, result))
                verdict = (
                    f"recovery cuts {result.file_bytes - result.valid_bytes} bytes there"
                    + ("" if is_last else " and drops the later segments")
                    if torn
                    else "the broker quarantines it (roost check --repair cuts there)"
                )
                check.problems.append(
                    f"segment {base}: {recovery.describe_damage(result)}: {verdict}"
                )
                expected = None  # where the next segment should start is not known
            elif not index_ok and (clean or not is_last):
                check.notes.append(f"segment {base}: index missing or stale: rebuilt on open")
        finally:
            segment.close()
    return (bases[0] if bases else 0), (expected or 0)


def _note_strays(names: list[str], bases: list[int], check: StoreCheck) -> None:
    logs = {f"{base:020d}" for base in bases}
    for name in names:
        stem, suffix = os.path.splitext(name)
        if suffix == ".tmp" or (suffix in (INDEX_SUFFIX, TIME_INDEX_SUFFIX) and stem not in logs):
            check.notes.append(f"stray file {name}: removed on open")


def repair_directory(path: str, report: CheckReport, fs: LocalFS = LOCAL_FS) -> list[LogRecovery]:
    """Accept the loss of what ``report`` found damaged in partition logs and journal logs:
    open each with ``repair=True`` (cut at the damage, drop the segments after it, lift the
    quarantine), as recovery would have after a crash. What each cut is returned. A corrupt
    snapshot or metadata file is not repaired here (restore it; see docs/operations.md).
    Under the directory's LOCK; blocking."""
    lock_fd = _lock(os.path.join(path, LOCK_NAME))
    try:
        clock = SystemClock()
        done = []
        # What the write-ahead log holds goes into the files first, as a start would do, or a
        # cut here would drop records the WAL was about to restore.
        replay(fs, path)
        for store in report.stores:
            if store.kind == "metadata journal" and not store.ok:
                done.append(repair_metadata_journal(fs, os.path.join(path, METADATA_NAME)))
            if store.ok or store.kind.startswith("metadata"):
                continue
            if store.kind == "partition":
                _, topic, partition = store.store.split("/")
                directory, config = os.path.join(path, store.store), TopicConfig()
            else:
                topic, partition = store.store.split("/")[1], "0"
                directory, config = os.path.join(path, store.store, "log"), JOURNAL_CONFIG
            if not fs.exists(directory):
                continue
            log = PartitionLog.open(
                topic, int(partition), directory, config, clock, fs, report.clean_shutdown, True
            )
            log.close()
            done.append(log.recovery)
        return done
    finally:
        os.close(lock_fd)
