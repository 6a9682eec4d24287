"""The metadata store as a snapshot plus a journal: one record per transaction, replayed on
open, compacted by snapshots; torn tails cut and reported, damage refused."""

from __future__ import annotations

import errno
import os

import msgspec
import pytest

from roost.errors import CorruptMetadata, StorageFailure
from roost.storage import metadata_journal
from roost.storage.fs import LOCAL_FS
from roost.storage.metadata import (
    FORMAT_VERSION,
    MetadataStore,
    _Document,
    repair_metadata_journal,
)
from roost.storage.metadata_snapshot import CHUNK_ENTRIES, SnapshotJob, encode_pieces
from tests.fault_fs import FaultFS


@pytest.fixture
def path(tmp_path: object) -> str:
    return os.path.join(str(tmp_path), "metadata.json")


def _records(path: str) -> list[tuple[int, list[metadata_journal.Op]]]:
    with open(path + ".journal", "rb") as f:
        return metadata_journal.scan(f.read()).records


def test_each_transaction_appends_one_record_of_its_changes_only(path: str) -> None:
    store = MetadataStore.open(LOCAL_FS, path)
    with store.transaction() as txn:
        txn.put("topics", "a", {"partitions": 1})
        txn.put("topics", "b", {"partitions": 2})
    with store.transaction() as txn:
        txn.delete("topics", "a")
        txn.put("users", "ann", {"role": "admin"})
    assert not os.path.exists(path), "no snapshot written: the journal holds both"
    assert _records(path) == [
        (1, [("put", "topics", "a", {"partitions": 1}), ("put", "topics", "b", {"partitions": 2})]),
        (2, [("delete", "topics", "a", None), ("put", "users", "ann", {"role": "admin"})]),
    ]
    store.close()
    reopened = MetadataStore.open(LOCAL_FS, path)
    assert reopened.version == 2
    assert reopened.names("topics") == ["b"]
    assert reopened.get("users", "ann") == {"role": "admin"}


def test_a_transaction_sees_its_own_changes_and_readers_get_copies(path: str) -> None:
    store = MetadataStore.open(LOCAL_FS, path)
    with store.transaction() as txn:
        txn.put("counters", "n", 1)
    with store.transaction() as txn:
        txn.put("counters", "n", txn.get("counters", "n") + 1)
        assert txn.get("counters", "n") == 2
        assert store.get("counters", "n") == 1, "uncommitted changes are the transaction's"
        txn.put("lists", "l", [1])
        txn.delete("counters", "n")
        assert txn.get("counters", "n") is None
    value = store.get("lists", "l")
    value.append(2)  # a copy: the store's entry is untouched
    assert store.get("lists", "l") == [1]
    assert store.version == 2


def test_nested_transactions_commit_as_one_record_or_not_at_all(path: str) -> None:
    store = MetadataStore.open(LOCAL_FS, path)
    undone: list[str] = []
    with store.transaction() as outer:
        outer.put("topics", "q", {})
        outer.on_abort(lambda: undone.append("q"))
        with store.transaction() as inner:
            assert inner is outer
            inner.put("topics", "q.dlq", {})
    assert [version for version, _ in _records(path)] == [1]
    assert store.names("topics") == ["q", "q.dlq"] and undone == []

    with pytest.raises(KeyError), store.transaction() as outer:
        outer.put("topics", "r", {})
        outer.on_abort(lambda: undone.append("first"))
        outer.on_abort(lambda: undone.append("second"))
        with store.transaction() as inner:
            inner.put("topics", "r.dlq", {})
            raise KeyError("refused inside")
    assert undone == ["second", "first"], "undos run newest first"
    assert store.names("topics") == ["q", "q.dlq"] and store.version == 1
    assert len(_records(path)) == 1


def test_a_failed_write_commits_nothing_and_leaves_no_record_behind(path: str) -> None:
    fs = FaultFS()
    store = MetadataStore.open(fs, path)
    with store.transaction() as txn:
        txn.put("topics", "a", {})
    fs.arm("fdatasync", errno.EIO, match="metadata.json.journal", written=True)
    undone: list[bool] = []
    with (
        pytest.raises(StorageFailure, match="writing metadata journal"),
        store.transaction() as txn,
    ):
        txn.put("topics", "b", {})
        txn.on_abort(lambda: undone.append(True))
    assert undone == [True]
    assert store.names("topics") == ["a"] and store.version == 1
    assert [version for version, _ in _records(path)] == [1], "the record was taken back"
    with store.transaction() as txn:  # the next commit works and continues the versions
        txn.put("topics", "c", {})
    store.close()
    assert MetadataStore.open(LOCAL_FS, path).names("topics") == ["a", "c"]


def test_the_journal_is_compacted_into_a_snapshot_past_its_bound(path: str) -> None:
    store = MetadataStore.open(LOCAL_FS, path)
    store.snapshot_bytes = 2_000
    for i in range(100):
        with store.transaction() as txn:
            txn.put("topics", f"t{i}", {"partitions": i})
        # A snapshot is written in a thread; on a loaded machine it may not end before the
        # next commit (which starts none while one runs): settle each, as a slow disk would.
        store.settle_snapshot()
    assert os.path.getsize(path + ".journal") <= 2_000
    with open(path, "rb") as f:
        snapshot = msgspec.json.decode(f.read())
    assert snapshot["format"] == 2 and 1 < snapshot["version"] < 100
    # Every record left continues the snapshot.
    versions = [version for version, _ in _records(path)]
    assert versions == list(range(snapshot["version"] + 1, 101))
    store.close()
    reopened = MetadataStore.open(LOCAL_FS, path)
    assert reopened.version == 100
    assert reopened.names("topics") == sorted(f"t{i}" for i in range(100))
    assert reopened.get("topics", "t42") == {"partitions": 42}


def test_a_snapshot_and_then_records_already_in_it_are_skipped(path: str) -> None:
    """A crash after the snapshot was replaced but before the journal was emptied."""
    store = MetadataStore.open(LOCAL_FS, path)
    for name in "abc":
        with store.transaction() as txn:
            txn.put("topics", name, {})
    with open(path + ".journal", "rb") as f:
        journal = f.read()
    store.snapshot()
    with store.transaction() as txn:
        txn.delete("topics", "a")
    store.close()
    with open(path + ".journal", "rb") as f:
        last = f.read()[len(metadata_journal.MAGIC) :]
    with open(path + ".journal", "wb") as f:
        f.write(journal + last)  # versions 1, 2, 3 (in the snapshot), then 4
    reopened = MetadataStore.open(LOCAL_FS, path)
    assert (reopened.version, reopened.names("topics")) == (4, ["b", "c"])


def test_a_torn_last_record_is_cut_and_reported(path: str) -> None:
    store = MetadataStore.open(LOCAL_FS, path)
    for name in ("a", "b"):
        with store.transaction() as txn:
            txn.put("topics", name, {"partitions": 1})
    store.close()
    size = os.path.getsize(path + ".journal")
    os.truncate(path + ".journal", size - 5)  # the crash came mid-write of the second

    read_only = MetadataStore.open(LOCAL_FS, path, read_only=True)
    assert read_only.names("topics") == ["a"]
    assert os.path.getsize(path + ".journal") == size - 5, "a read-only open cuts nothing"
    assert "open cuts" in read_only.recovery.problems[0]

    reopened = MetadataStore.open(LOCAL_FS, path)
    assert reopened.names("topics") == ["a"] and reopened.version == 1
    cut = reopened.recovery
    assert cut.bytes_truncated == size - 5 - os.path.getsize(path + ".journal") > 0
    assert "torn last record" in cut.problems[0] and "never confirmed" in cut.problems[0]
    with reopened.transaction() as txn:  # appends after the cut, at version 2 again
        txn.put("topics", "c", {})
    reopened.close()
    assert MetadataStore.open(LOCAL_FS, path).names("topics") == ["a", "c"]


def test_a_damaged_record_before_intact_ones_refuses_to_open_and_repair_cuts_it(
    path: str,
) -> None:
    store = MetadataStore.open(LOCAL_FS, path)
    for name in "abc":
        with store.transaction() as txn:
            txn.put("topics", name, {})
    store.close()
    found = _starts(path)
    with open(path + ".journal", "r+b") as f:
        f.seek(found[1] + 12)
        f.write(b"X")  # a bit flip in the second record's body
    with pytest.raises(CorruptMetadata) as raised:
        MetadataStore.open(LOCAL_FS, path)
    message = str(raised.value)
    assert f"{path}.journal is damaged (record at byte {found[1]}: checksum mismatch" in message
    assert "intact records follow it" in message and "roost check DATA --repair" in message

    repaired = repair_metadata_journal(LOCAL_FS, path)
    assert (
        repaired.bytes_truncated > 0
        and "definition changes after it are lost" in (repaired.problems[0])
    )
    assert MetadataStore.open(LOCAL_FS, path).names("topics") == ["a"]


def _starts(path: str) -> list[int]:
    with open(path + ".journal", "rb") as f:
        return metadata_journal.scan(f.read()).starts


def test_a_format_1_document_is_read_and_the_first_commit_snapshots_it(path: str) -> None:
    with open(path, "wb") as f:
        f.write(b'{"format":1,"version":7,"namespaces":{"topics":{"old":{"partitions":2}}}}')
    store = MetadataStore.open(LOCAL_FS, path)
    assert (store.version, store.get("topics", "old")) == (7, {"partitions": 2})
    with store.transaction() as txn:
        txn.put("topics", "new", {})
    with open(path, "rb") as f:
        # An older broker reading this refuses (unknown format) rather than miss the journal.
        assert msgspec.json.decode(f.read())["format"] == 2
    store.close()
    assert MetadataStore.open(LOCAL_FS, path).names("topics") == ["new", "old"]


@pytest.mark.parametrize(
    "garbage",
    [b"RMJ2", b"RMJ1" + bytes(12), b"RMJ1\xff\xff\xff\xff"],
    ids=["bad-magic", "zeros", "impossible-length"],
)
def test_scan_names_what_is_wrong(garbage: bytes) -> None:
    found = metadata_journal.scan(garbage)
    assert found.records == [] and found.problem
    # A wrong magic is no journal at all; zeros or an unbelievable length end the file.
    assert found.torn == (garbage[:4] == metadata_journal.MAGIC)


def test_a_write_that_cannot_be_taken_back_refuses_commits_until_repaired(path: str) -> None:
    fs = FaultFS()
    store = MetadataStore.open(fs, path)
    with store.transaction() as txn:
        txn.put("topics", "a", {})
    fs.arm("fdatasync", errno.EIO, match="metadata.json.journal", written=True, times=2)
    fs.arm("truncate", errno.EIO, match="metadata.json.journal")
    with pytest.raises(StorageFailure, match="writing metadata journal"), store.transaction() as t:
        t.put("topics", "b", {})
    assert store.failure is not None and "until it is repaired" in str(store.failure)
    # The record may be on disk: nothing more is committed after it.
    with pytest.raises(StorageFailure, match="until it is repaired"), store.transaction() as t:
        t.put("topics", "c", {})
    fs.disarm()
    assert store.repair() and store.failure is None
    with store.transaction() as txn:
        txn.put("topics", "d", {})
    store.close()
    reopened = MetadataStore.open(LOCAL_FS, path)
    assert (reopened.names("topics"), reopened.version) == (["a", "d"], 2)


# -- snapshots off the loop -----------------------------------------------------------------


def _put(store: MetadataStore, name: str, value: object = None) -> None:
    with store.transaction() as txn:
        txn.put("topics", name, {"v": value})


def test_the_commit_that_passes_the_bound_hands_the_snapshot_to_a_job_and_goes_on(
    path: str,
) -> None:
    store = MetadataStore.open(LOCAL_FS, path)
    store.snapshot_bytes = 500
    jobs: list[SnapshotJob] = []
    store.run_snapshot = jobs.append  # the thread, held back
    for _ in range(100):
        _put(store, f"t{store.version}")
        if jobs:
            break
    [job] = jobs
    assert not os.path.exists(path), "nothing written on the committing thread"
    taken_at = store.version
    for name in ("late-1", "late-2"):  # commits while the snapshot is being written
        _put(store, name)
    _put(store, f"t{taken_at - 1}", "changed")  # an entry in the view, replaced
    job.run()
    with open(path, "rb") as f:
        snapshot = msgspec.json.decode(f.read())
    assert snapshot["version"] == taken_at  # the view, not what came after it
    assert "late-1" not in snapshot["namespaces"]["topics"]
    assert snapshot["namespaces"]["topics"][f"t{taken_at - 1}"] == {"v": None}
    # The journal still holds everything until the next commit replaces it with the records
    # the snapshot lacks.
    assert [v for v, _ in _records(path)][-1] == taken_at + 3
    _put(store, "after")
    assert [v for v, _ in _records(path)] == list(range(taken_at + 1, taken_at + 5))
    store.close()
    reopened = MetadataStore.open(LOCAL_FS, path)
    assert reopened.version == taken_at + 4
    assert reopened.get("topics", f"t{taken_at - 1}") == {"v": "changed"}
    assert {"late-1", "late-2", "after"} <= set(reopened.names("topics"))


@pytest.mark.parametrize("stop_after", ["snapshot", "commits", "journal"])
def test_a_crash_at_each_step_of_a_snapshot_reopens_to_every_commit(
    path: str, stop_after: str
) -> None:
    """Each step's files as a kill would leave them (every step syncs before the next)."""
    store = MetadataStore.open(LOCAL_FS, path)
    store.snapshot_bytes = 300
    jobs: list[SnapshotJob] = []
    store.run_snapshot = jobs.append
    for _ in range(100):
        _put(store, f"t{store.version}")
        if jobs:
            break
    _put(store, "during")
    if stop_after != "commits":
        jobs[0].run()  # the snapshot renamed in: its records are still in the journal
    if stop_after == "journal":
        _put(store, "after")  # the journal replaced by the records it lacks, then this one
    committed = store.version
    names = store.names("topics")
    store._fd = None  # a kill: nothing more is written or closed
    reopened = MetadataStore.open(LOCAL_FS, path)
    assert (reopened.version, reopened.names("topics")) == (committed, names)
    _put(reopened, "next")
    reopened.close()
    assert MetadataStore.open(LOCAL_FS, path).version == committed + 1


def test_a_failed_snapshot_loses_nothing_and_is_tried_again_later(path: str) -> None:
    fs = FaultFS()
    store = MetadataStore.open(fs, path)
    store.snapshot_bytes = 300
    store.run_snapshot = lambda job: job.run()  # inline
    fault = fs.arm("fsync", errno.EIO, match="metadata.json.tmp")
    for _ in range(100):
        _put(store, f"t{store.version}")
        if fault.hits:
            break
    assert fault.hits == 1
    failed_at = store.version
    assert not os.path.exists(path)
    _put(store, "next")  # commits go on: the journal has everything
    journal = os.path.getsize(path + ".journal")
    for _ in range(100):  # tried again once the journal grew by a quarter: then it shrinks
        _put(store, f"t{store.version}")
        if os.path.getsize(path + ".journal") < journal:
            break
    assert os.path.getsize(path + ".journal") < journal
    assert os.path.exists(path)
    store.close()
    reopened = MetadataStore.open(LOCAL_FS, path)
    assert reopened.version > failed_at + 1
    assert reopened.names("topics") == store.names("topics")


def test_close_waits_for_the_snapshot_and_finishes_it(path: str) -> None:
    store = MetadataStore.open(LOCAL_FS, path)
    store.snapshot_bytes = 300
    jobs: list[SnapshotJob] = []
    store.run_snapshot = jobs.append
    for _ in range(100):
        _put(store, f"t{store.version}")
        if jobs:
            break
    _put(store, "during")
    store.close()  # runs the job nobody started, then replaces the journal
    assert jobs[0].done.is_set() and os.path.exists(path)
    assert [v for v, _ in _records(path)] == [store.version]
    assert MetadataStore.open(LOCAL_FS, path).names("topics") == store.names("topics")


@pytest.mark.parametrize("entries", [0, 1, CHUNK_ENTRIES, 2 * CHUNK_ENTRIES + 7])
def test_a_snapshot_in_pieces_is_the_document_encoded_whole(entries: int) -> None:
    namespaces: dict[str, dict[str, object]] = {
        "topics": {f'q"{i}\\é': {"partitions": i, "tags": ["a", None]} for i in range(entries)},
        "empty": {},
        "users": {"ana": {"hash": "x"}},
    }
    whole = msgspec.json.encode(_Document(FORMAT_VERSION, 42, namespaces))
    assert b"".join(encode_pieces(FORMAT_VERSION, 42, namespaces)) == whole
