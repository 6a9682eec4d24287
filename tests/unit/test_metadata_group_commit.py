"""Group commit of metadata records (storage/metadata_group.py): several commits, one sync.

Commits inside ``group_commit`` are written and applied at once and synced by a job that
covers every one written before it began; a failed sync undoes every pending commit (its
entries, its undos, its bytes in the journal) and the store goes on. The torn-tail rule of a
journal whose last records were written before one shared sync is in test_metadata_journal.
"""

from __future__ import annotations

import errno
import os

import pytest

from roost.errors import StorageFailure
from roost.storage import metadata_journal
from roost.storage.fs import LocalFS
from roost.storage.metadata import MetadataStore
from tests.fault_fs import FaultFS


class CountingFS(FaultFS):
    def __init__(self) -> None:
        super().__init__()
        self.syncs = 0

    def fdatasync(self, fd: int) -> None:
        self.syncs += 1
        super().fdatasync(fd)


@pytest.fixture
def path(tmp_path: object) -> str:
    return os.path.join(str(tmp_path), "metadata.json")


def _put(store: MetadataStore, name: str, value: object, undone: list[str] | None = None) -> None:
    with store.transaction() as txn:
        txn.put("x", name, value)
        if undone is not None:
            txn.on_abort(lambda: undone.append(name))


def _versions_on_disk(fs: LocalFS, store: MetadataStore) -> list[int]:
    found = metadata_journal.scan(fs.read_file(store.journal_path))
    assert not found.problem
    return [version for version, _ in found.records]


def test_commits_in_a_group_share_one_sync_and_are_pending_until_it_ends(path: str) -> None:
    fs = CountingFS()
    store = MetadataStore.open(fs, path)
    with store.group_commit():
        for i in range(5):
            _put(store, f"q{i}", i)
    assert fs.syncs == 0
    assert store.get("x", "q4") == 4  # applied at once
    assert store.version == 5 and store.durable_version == 0
    pending = store.pending
    assert pending is not None and pending.version == 5 and not pending.decided

    job = store.start_sync()
    assert job is not None and store.start_sync() is None  # one at a time
    job.run()
    store.finish_sync(job)

    assert fs.syncs == 1
    assert pending.durable and store.pending is None and store.durable_version == 5
    assert _versions_on_disk(fs, store) == [1, 2, 3, 4, 5]
    store.close()
    assert MetadataStore.open(LocalFS(), path).get("x", "q3") == 3


def test_records_written_while_a_sync_runs_wait_for_the_next(path: str) -> None:
    fs = CountingFS()
    store = MetadataStore.open(fs, path)
    with store.group_commit():
        _put(store, "a", 1)
        job = store.start_sync()
        assert job is not None
        _put(store, "b", 2)  # written behind the job: not covered by it
    job.run()
    store.finish_sync(job)
    later = store.pending
    assert later is not None and later.version == 2 and store.durable_version == 1
    second = store.start_sync()
    assert second is not None
    second.run()
    store.finish_sync(second)
    assert later.durable and store.durable_version == 2 and fs.syncs == 2


def test_a_failed_sync_undoes_every_pending_commit_and_only_those(path: str) -> None:
    fs = CountingFS()
    store = MetadataStore.open(fs, path)
    _put(store, "kept", "before")  # synced by itself: durable
    journal_bytes = os.path.getsize(store.journal_path)
    undone: list[str] = []
    with store.group_commit():
        _put(store, "a", 1, undone)
        _put(store, "kept", "overwritten", undone)
        job = store.start_sync()
        assert job is not None
        with store.transaction() as txn:  # written while the job runs: cut with the group
            txn.delete("x", "kept")
            txn.on_abort(lambda: undone.append("deleted kept"))
    pending = store.pending
    fs.arm("fdatasync", errno.EIO, match="journal")
    job.run()
    store.finish_sync(job)

    assert pending is not None and isinstance(pending.error, StorageFailure)
    assert undone == ["deleted kept", "kept", "a"]  # newest first
    assert store.get("x", "kept") == "before" and store.get("x", "a") is None
    assert store.version == 1 and store.durable_version == 1 and store.pending is None
    assert os.path.getsize(store.journal_path) == journal_bytes  # their records are cut
    assert store.failure is None  # not poisoned: later commits go on

    with store.group_commit():
        _put(store, "b", 2)
    job = store.start_sync()
    assert job is not None
    job.run()
    store.finish_sync(job)
    _put(store, "c", 3)
    assert _versions_on_disk(fs, store) == [1, 2, 3]
    store.close()
    reopened = MetadataStore.open(LocalFS(), path)
    assert {name: reopened.get("x", name) for name in reopened.names("x")} == {
        "kept": "before", "b": 2, "c": 3,
    }  # fmt: skip


def test_a_failed_sync_that_cannot_be_cut_back_refuses_commits_until_repaired(
    path: str,
) -> None:
    fs = CountingFS()
    store = MetadataStore.open(fs, path)
    _put(store, "kept", 0)
    with store.group_commit():
        _put(store, "a", 1)
    job = store.start_sync()
    assert job is not None
    fs.arm("fdatasync", errno.EIO, match="journal")
    fs.arm("truncate", errno.EIO, match="journal")
    job.run()
    store.finish_sync(job)
    assert store.get("x", "a") is None and store.failure is not None
    with pytest.raises(StorageFailure):
        _put(store, "b", 2)
    fs.disarm()
    assert store.repair()
    _put(store, "b", 2)
    store.close()
    reopened = MetadataStore.open(LocalFS(), path)
    assert reopened.names("x") == ["b", "kept"]


def test_a_commit_that_syncs_itself_settles_the_job_and_syncs_the_pending_with_it(
    path: str,
) -> None:
    fs = CountingFS()
    store = MetadataStore.open(fs, path)
    with store.group_commit():
        _put(store, "a", 1)
        job = store.start_sync()  # handed to a thread that has not run it yet
        _put(store, "b", 2)
    first, second = job, store.pending
    assert first is not None and second is not None
    _put(store, "c", 3)  # not grouped: waits for (here: runs) the job, then its own sync
    assert first.done and first.finished
    assert second.durable and store.pending is None and store.durable_version == 3
    assert fs.syncs == 2
    store.finish_sync(first)  # the thread's late report changes nothing
    assert store.durable_version == 3


def test_a_failed_write_in_a_group_fails_every_pending_commit(path: str) -> None:
    fs = CountingFS()
    store = MetadataStore.open(fs, path)
    _put(store, "kept", 0)
    undone: list[str] = []
    with store.group_commit():
        _put(store, "a", 1, undone)
        first = store.pending
        fs.arm("pwrite", errno.ENOSPC, match="journal", tear=True)
        with pytest.raises(StorageFailure):
            _put(store, "b", 2, undone)
    assert first is not None and isinstance(first.error, StorageFailure)
    assert undone == ["b", "a"] and store.names("x") == ["kept"]
    assert store.failure is None
    _put(store, "c", 3)
    store.close()
    assert MetadataStore.open(LocalFS(), path).names("x") == ["c", "kept"]


def test_close_syncs_what_is_pending(path: str) -> None:
    fs = CountingFS()
    store = MetadataStore.open(fs, path)
    with store.group_commit():
        _put(store, "a", 1)
    pending = store.pending
    store.close()
    assert pending is not None and pending.durable and fs.syncs == 1
    assert MetadataStore.open(LocalFS(), path).get("x", "a") == 1


def test_no_snapshot_starts_while_a_commit_is_pending(path: str) -> None:
    """A snapshot's view must hold nothing a failed sync could still undo."""
    fs = CountingFS()
    store = MetadataStore.open(fs, path)
    store.snapshot_bytes = 100
    started: list[int] = []
    store.run_snapshot = lambda job: started.append(job.version)
    with store.group_commit():
        for i in range(6):
            _put(store, f"q{i}", "x" * 40)
    assert started == []
    job = store.start_sync()
    assert job is not None
    job.run()
    store.finish_sync(job)
    assert started == [6]  # once everything it sees is durable


# -- the torn-tail rule when several records share a sync ----------------------------------


def _journal(*records: bytes) -> bytes:
    return metadata_journal.MAGIC + b"".join(records)


def _damaged(record: bytes) -> bytes:
    return record[:-3] + bytes(3)  # its CRC no longer holds; its length still does


def _put_record(version: int, synced: int | None = None) -> bytes:
    return metadata_journal.encode_record(version, [("put", "x", f"q{version}", 1)], synced)


def test_damage_followed_by_records_written_before_it_was_synced_is_a_tear() -> None:
    """Records 2-4 were written before one shared sync: a power loss may keep 3 and 4 and
    tear 2. Nobody was told any of them committed, so all three are cut."""
    one = _put_record(1)
    data = _journal(one, _damaged(_put_record(2, synced=1)), _put_record(3, 1), _put_record(4, 1))
    found = metadata_journal.scan(data)
    assert found.torn and [v for v, _ in found.records] == [1]
    assert found.valid_bytes == len(metadata_journal.MAGIC) + len(one)


def test_damage_followed_by_a_record_written_once_it_was_durable_is_damage() -> None:
    """Record 3 says record 2 was durable when it was written: 2's damage is no tear."""
    for after in (_put_record(3, synced=2), _put_record(3)):  # an ungrouped record says so too
        data = _journal(_put_record(1), _damaged(_put_record(2, synced=1)), after)
        found = metadata_journal.scan(data)
        assert not found.torn and "intact records follow it" in found.problem


def test_a_group_record_carries_synced_and_an_ungrouped_one_is_as_before() -> None:
    assert metadata_journal.encode_record(5, []) == metadata_journal.encode_record(5, [], 4)
    body = metadata_journal.encode_record(5, [], synced=2)[metadata_journal.RECORD_HEADER_BYTES :]
    assert body == b"[5,[],2]"
    assert metadata_journal.decode_record(body) == (5, [], 2)
    with pytest.raises(ValueError, match="synced"):
        metadata_journal.decode_record(b"[5,[],5]")


def test_a_store_opens_past_a_torn_group_and_keeps_what_was_synced(path: str) -> None:
    fs = CountingFS()
    store = MetadataStore.open(fs, path)
    _put(store, "durable", 1)
    with store.group_commit():
        for i in range(3):
            _put(store, f"q{i}", i)
    size = os.path.getsize(store.journal_path)
    store._fs.close(store._fd)  # the power goes: nothing of the group was synced
    store._fd = None
    data = bytearray(fs.read_file(store.journal_path))
    found = metadata_journal.scan(bytes(data))
    second = found.starts[1]
    data[second + metadata_journal.RECORD_HEADER_BYTES] ^= 0xFF  # the group's first record
    fs.write_file(store.journal_path, bytes(data))
    reopened = MetadataStore.open(LocalFS(), path)
    assert reopened.names("x") == ["durable"] and reopened.version == 1
    assert reopened.recovery.bytes_truncated == size - second


def test_closing_as_a_crash_would_leaves_what_is_pending_unsynced(path: str) -> None:
    """``close(sync=False)`` (the engine closed after a failure, or by a crash test) syncs
    nothing: the record stays as a process crash leaves it, written to the OS."""
    fs = CountingFS()
    store = MetadataStore.open(fs, path)
    with store.group_commit():
        _put(store, "a", 1)
    job = store.start_sync()  # handed to a thread that never ran it
    store.close(sync=False)
    assert fs.syncs == 0 and job is not None and job.done and job.error is not None
    assert MetadataStore.open(LocalFS(), path).get("x", "a") == 1
