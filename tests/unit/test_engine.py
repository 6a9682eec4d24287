"""The engine: topics, names, configs, metadata, the data directory's lifecycle."""

from __future__ import annotations

import os
import shutil

import msgspec
import pytest

from roost.clock import ManualClock
from roost.errors import (
    ERRORS_BY_CODE,
    CorruptMetadata,
    DirectoryInUse,
    InvalidConfig,
    InvalidName,
    RoostError,
    StorageClosed,
    StorageFailure,
    TopicExists,
    UnknownTopic,
)
from roost.storage import LocalEngine, Record, TopicConfig, topic_config
from roost.storage.engine import open_metadata
from roost.storage.fs import LocalFS
from roost.storage.metadata import MetadataStore


def test_create_list_describe_delete(engine: LocalEngine) -> None:
    engine.create_topic("b", TopicConfig(partitions=3, durability="interval"))
    engine.create_topic("a")
    assert engine.list_topics() == ["a", "b"]
    info = engine.describe_topic("b")
    assert info.config.durability == "interval"
    assert [p.partition for p in info.partitions] == [0, 1, 2]
    assert all(p.start_offset == p.end_offset == 0 for p in info.partitions)
    engine.delete_topic("b")
    assert engine.list_topics() == ["a"]
    with pytest.raises(UnknownTopic):
        engine.topic("b")
    with pytest.raises(UnknownTopic):
        engine.delete_topic("b")


def test_topics_and_configs_survive_restart(data_dir: str, clock: ManualClock) -> None:
    engine = LocalEngine.open(data_dir, clock)
    config = TopicConfig(
        partitions=2, retention_ms=5000, segment_max_bytes=8192, max_record_bytes=4096
    )
    engine.create_topic("kept", config).append(1, [Record(value=b"v")])
    engine.create_topic("gone")
    engine.delete_topic("gone")
    engine.close()

    engine = LocalEngine.open(data_dir, clock)
    assert engine.list_topics() == ["kept"]
    assert engine.topic("kept").config == config
    assert engine.topic("kept").read(1, 0)[0].value == b"v"
    assert not os.path.exists(os.path.join(data_dir, "topics", "gone"))
    engine.close()


def test_deleted_topic_name_can_be_reused_empty(engine: LocalEngine) -> None:
    engine.create_topic("t").append(0, [Record(value=b"old")])
    engine.delete_topic("t")
    topic = engine.create_topic("t")
    assert topic.end_offset(0) == 0


def test_duplicate_topic(engine: LocalEngine) -> None:
    engine.create_topic("t")
    with pytest.raises(TopicExists) as raised:
        engine.create_topic("t")
    assert raised.value.code == "topic_exists"


@pytest.mark.parametrize(
    "name", ["", ".", "..", "a/b", "../x", "-lead", "_lead", "sp ace", "ü", "x" * 250, None, 7]
)
def test_invalid_topic_names(engine: LocalEngine, name: object) -> None:
    with pytest.raises(InvalidName) as raised:
        engine.create_topic(name)  # type: ignore[arg-type]
    assert "1 to 249 characters" in str(raised.value)
    assert engine.list_topics() == []


@pytest.mark.parametrize("name", ["a", "A.b-c_d", "0", "x" * 249, "orders.v2"])
def test_valid_topic_names(engine: LocalEngine, name: str) -> None:
    engine.create_topic(name)
    assert engine.list_topics() == [name]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("partitions", 0),
        ("partitions", 5000),
        ("durability", "sometimes"),
        ("flush_interval_ms", 0),
        ("segment_max_bytes", 100),
        ("segment_max_bytes", 2**31),
        ("retention_ms", -1),
        ("retention_bytes", -5),
        ("max_record_bytes", 0),
        ("index_interval_bytes", 0),
    ],
)
def test_invalid_configs_name_the_field(field: str, value: object) -> None:
    with pytest.raises(InvalidConfig) as raised:
        topic_config(**{field: value})
    assert field in str(raised.value)


def test_unknown_config_field_is_refused() -> None:
    with pytest.raises(InvalidConfig) as raised:
        topic_config(partitons=3)
    assert "partitons" in str(raised.value)


def test_clean_marker_lifecycle(data_dir: str, clock: ManualClock) -> None:
    marker = os.path.join(data_dir, "CLEAN_SHUTDOWN")
    engine = LocalEngine.open(data_dir, clock)
    assert not engine.recovery.clean_shutdown
    engine.create_topic("t").append(0, [Record(value=b"v")])
    engine.close()
    assert os.path.exists(marker)
    engine = LocalEngine.open(data_dir, clock)
    assert engine.recovery.clean_shutdown
    assert not os.path.exists(marker), "a crash after open must not look clean"
    assert [log.segments_scanned for log in engine.recovery.logs] == [0]
    engine.close()


def test_unclean_restart_scans_the_tail(data_dir: str, clock: ManualClock) -> None:
    engine = LocalEngine.open(data_dir, clock)
    engine.create_topic("t").append(0, [Record(value=b"v")])
    engine.close()
    os.remove(os.path.join(data_dir, "CLEAN_SHUTDOWN"))
    engine = LocalEngine.open(data_dir, clock)
    assert not engine.recovery.clean_shutdown
    assert [log.segments_scanned for log in engine.recovery.logs] == [1]
    assert not engine.recovery.lost_data
    assert engine.topic("t").read(0, 0)[0].value == b"v"
    engine.close()


def test_orphan_topic_directories_are_removed(data_dir: str, clock: ManualClock) -> None:
    # A crash between making a topic's files and committing its metadata leaves an orphan.
    engine = LocalEngine.open(data_dir, clock)
    engine.close()
    os.makedirs(os.path.join(data_dir, "topics", "half-made", "0"))
    engine = LocalEngine.open(data_dir, clock)
    assert engine.recovery.orphans_removed == ["half-made"]
    assert engine.list_topics() == []
    engine.close()


def test_one_process_at_a_time(data_dir: str, clock: ManualClock) -> None:
    engine = LocalEngine.open(data_dir, clock)
    with pytest.raises(StorageFailure) as raised:
        LocalEngine.open(data_dir, clock)
    assert "in use" in str(raised.value)
    assert isinstance(raised.value, DirectoryInUse) and raised.value.path == data_dir
    engine.close()
    LocalEngine.open(data_dir, clock).close()


def test_the_metadata_alone_under_the_lock(data_dir: str, clock: ManualClock) -> None:
    with pytest.raises(StorageFailure, match="opening data directory"), open_metadata(data_dir):
        pass
    assert not os.path.exists(data_dir), "a read never makes the directory"
    with open_metadata(data_dir, create=True) as store:
        with store.transaction() as txn:
            txn.put("users", "ada", {"grants": []})
        assert sorted(os.listdir(data_dir)) == ["LOCK", "metadata.json.journal"], "no log made"
        with pytest.raises(DirectoryInUse):
            LocalEngine.open(data_dir, clock)
    engine = LocalEngine.open(data_dir, clock)
    assert engine.metadata.names("users") == ["ada"]
    with pytest.raises(DirectoryInUse), open_metadata(data_dir):
        pass
    engine.close()
    with open_metadata(data_dir) as store:
        assert store.names("users") == ["ada"]


def test_closed_engine_refuses_calls(data_dir: str, clock: ManualClock) -> None:
    engine = LocalEngine.open(data_dir, clock)
    engine.close()
    with pytest.raises(StorageClosed):
        engine.create_topic("t")
    with pytest.raises(StorageClosed):
        engine.list_topics()


def test_metadata_transactions_are_all_or_nothing(tmp_path: object, data_dir: str) -> None:
    from roost.storage.fs import LOCAL_FS

    os.makedirs(data_dir)
    path = os.path.join(data_dir, "metadata.json")
    store = MetadataStore.open(LOCAL_FS, path)
    with store.transaction() as txn:
        txn.put("topics", "a", {"partitions": 1})
        txn.put("users", "ann", {"role": "admin"})
    with pytest.raises(RuntimeError), store.transaction() as txn:
        txn.delete("topics", "a")
        raise RuntimeError("abandon")
    assert store.get("topics", "a") == {"partitions": 1}
    reopened = MetadataStore.open(LOCAL_FS, path)
    assert reopened.names("topics") == ["a"]
    assert reopened.get("users", "ann") == {"role": "admin"}
    assert reopened.version == 1
    with open(path, "wb") as f:
        f.write(b"{not json")
    with pytest.raises(StorageFailure):
        MetadataStore.open(LOCAL_FS, path)


def test_a_damaged_metadata_file_names_the_previous_copy_to_restore(data_dir: str) -> None:
    from roost.storage.fs import LOCAL_FS

    os.makedirs(data_dir)
    path = os.path.join(data_dir, "metadata.json")
    store = MetadataStore.open(LOCAL_FS, path)
    with store.transaction() as txn:
        txn.put("topics", "a", {"partitions": 1})
    store.snapshot()
    assert not os.path.exists(path + ".prev"), "no snapshot was written before the first"
    with store.transaction() as txn:
        txn.put("topics", "b", {"partitions": 2})
    store.snapshot()
    with store.transaction() as txn:
        txn.put("topics", "c", {"partitions": 3})  # in the journal only
    store.close()
    with open(path, "rb") as f:
        good = f.read()
    with open(path, "wb") as f:
        f.write(good[:-9])  # a bad disk, an editor
    with pytest.raises(CorruptMetadata) as raised:
        MetadataStore.open(LOCAL_FS, path)
    message = str(raised.value)
    assert message.startswith(f"metadata file {path} is damaged (not a metadata document")
    assert f"`cp {path}.prev {path}`" in message and f"{path}.journal aside" in message
    assert "\n" not in message
    # The copy is the snapshot before the damaged one: with the journal moved aside (its
    # records continue the damaged snapshot, not the copy), restoring it loses what followed.
    os.replace(path + ".prev", path)
    os.replace(path + ".journal", path + ".journal.aside")
    restored = MetadataStore.open(LOCAL_FS, path)
    assert (restored.names("topics"), restored.version) == (["a"], 1)
    # Restored without moving the journal aside: it does not continue the snapshot.
    os.replace(path + ".journal.aside", path + ".journal")
    with pytest.raises(CorruptMetadata, match="continues at version 3, the snapshot is at 1"):
        MetadataStore.open(LOCAL_FS, path)
    # No good copy: the message says to restore from a backup.
    with open(path, "wb") as f:
        f.write(b"[]")
    with pytest.raises(CorruptMetadata, match="restore the file from a backup"):
        MetadataStore.open(LOCAL_FS, path)


def test_every_error_class_has_its_own_code() -> None:
    """Walk the hierarchy itself (not the table, which is keyed by code and so cannot hold a
    duplicate): every class declares a code no other class has, and the table finds it."""
    classes: list[type[RoostError]] = []
    pending: list[type[RoostError]] = [RoostError]
    while pending:
        cls = pending.pop()
        if cls.__module__ == "roost.errors":
            classes.append(cls)
        pending += cls.__subclasses__()
    codes = [cls.__dict__.get("code") for cls in classes]
    assert None not in codes, [c.__name__ for c in classes if "code" not in c.__dict__]
    assert len(codes) == len(set(codes))
    for cls in classes:
        assert ERRORS_BY_CODE[cls.code] is cls
    assert {"not_authorised", "not_authenticated", "connection_closed"} <= set(ERRORS_BY_CODE)


def test_a_shared_code_is_refused_when_the_table_is_built() -> None:
    from roost.errors import _by_code

    class Base(RoostError):
        code = "base_for_test"

    class Twin(Base):
        code = "base_for_test"

    with pytest.raises(TypeError, match="share 'base_for_test'"):
        _by_code(Base)
    del Twin


def test_topic_info_serialises_for_the_admin_api(engine: LocalEngine) -> None:
    engine.create_topic("t")
    encoded = msgspec.json.decode(msgspec.json.encode(engine.describe_topic("t")))
    assert encoded["partitions"][0]["end_offset"] == 0
    assert encoded["config"]["durability"] == "always"


def test_a_torn_metadata_record_is_in_the_recovery_report(
    data_dir: str, clock: ManualClock
) -> None:
    engine = LocalEngine.open(data_dir, clock)
    engine.create_topic("kept")
    engine.create_topic("torn")
    engine.close(clean=False)
    journal = os.path.join(data_dir, "metadata.json.journal")
    os.truncate(journal, os.path.getsize(journal) - 7)  # the crash came mid-commit

    engine = LocalEngine.open(data_dir, clock)
    assert engine.list_topics() == ["kept"]
    assert not os.path.exists(os.path.join(data_dir, "topics", "torn")), "an orphan: removed"
    [cut] = [log for log in engine.recovery.logs if log.log == "metadata journal"]
    assert cut.bytes_truncated > 0 and engine.recovery.lost_data
    assert "never confirmed" in cut.problems[0]
    engine.close()
    engine = LocalEngine.open(data_dir, clock)
    assert all(log.log != "metadata journal" for log in engine.recovery.logs), "reported once"
    engine.close()


def test_a_committed_topic_whose_directories_a_crash_took_opens_empty(
    data_dir: str, clock: ManualClock
) -> None:
    engine = LocalEngine.open(data_dir, clock)
    engine.create_topic("t", TopicConfig(partitions=2))
    engine.topic("t").append(0, [Record(value=b"never flushed")])
    engine.close(clean=False)
    shutil.rmtree(os.path.join(data_dir, "topics", "t"))  # its entries were never synced
    engine = LocalEngine.open(data_dir, clock)
    assert [p.end_offset for p in engine.describe_topic("t").partitions] == [0, 0]
    assert not os.path.exists(os.path.join(data_dir, "topics", "t")), "still made lazily"
    engine.topic("t").append(1, [Record(value=b"v")])
    engine.close()
    engine = LocalEngine.open(data_dir, clock)
    assert [p.end_offset for p in engine.describe_topic("t").partitions] == [0, 1]
    engine.close()


def test_a_log_is_made_on_disk_by_its_first_write_not_by_its_create(
    data_dir: str, clock: ManualClock
) -> None:
    engine = LocalEngine.open(data_dir, clock)
    topic = engine.create_topic("t", TopicConfig(partitions=2))
    journal = engine.journal("sub-1", new=True)
    assert os.listdir(os.path.join(data_dir, "topics")) == []
    assert os.listdir(os.path.join(data_dir, "journals")) == []
    assert [log.on_disk for log in topic.partitions] == [False, False]
    topic.append(1, [Record(value=b"v")])
    journal.append([b"entry"])
    assert os.listdir(os.path.join(data_dir, "topics", "t")) == ["1"]
    assert os.listdir(os.path.join(data_dir, "topics", "t", "1")) == [f"{0:020d}.log"]
    assert os.listdir(os.path.join(data_dir, "journals", "sub-1", "log")) == [f"{0:020d}.log"]
    # The entries leading to the new files are synced by the first flush, not before.
    assert topic.log(1).unsynced_directories == [
        os.path.join(data_dir, "topics"),
        os.path.join(data_dir, "topics", "t"),
        os.path.join(data_dir, "topics", "t", "1"),
    ]
    topic.log(1).flush()
    assert topic.log(1).unsynced_directories == [] and topic.log(1).durable_offset == 1
    engine.close()
    assert not os.path.exists(os.path.join(data_dir, "topics", "t", "0")), "no index either"
    engine = LocalEngine.open(data_dir, clock)
    topic = engine.topic("t")
    assert [log.on_disk for log in topic.partitions] == [False, True]
    assert [r.value for r in topic.read(1, 0)] == [b"v"]
    assert engine.journal("sub-1").recover() == (None, [b"entry"])
    engine.close()


def test_a_topic_deleted_before_any_write_leaves_nothing_and_voids_nothing(
    data_dir: str, clock: ManualClock
) -> None:
    engine = LocalEngine.open(data_dir, clock)
    assert engine.wal is not None
    forgets: list[str] = []
    engine.wal.forget = forgets.append  # type: ignore[method-assign]
    engine.create_topic("t")
    engine.journal("sub-1", new=True)
    engine.delete_topic("t")
    engine.drop_journal("sub-1")
    assert forgets == [], "no WAL record can name a file that was never made"
    engine.create_topic("u")
    engine.topic("u").append(0, [Record(value=b"v")])
    engine.delete_topic("u")
    assert forgets == [os.path.join(data_dir, "topics", "u")]
    assert os.listdir(os.path.join(data_dir, "topics")) == []
    engine.close()
    engine = LocalEngine.open(data_dir, clock)
    assert engine.list_topics() == []
    engine.close()


def test_a_new_topic_or_journal_never_adopts_what_an_uncommitted_create_left(
    data_dir: str, clock: ManualClock
) -> None:
    engine = LocalEngine.open(data_dir, clock)
    for leftover in ("topics/t/0", "journals/sub-1/log"):
        os.makedirs(os.path.join(data_dir, leftover))
        with open(os.path.join(data_dir, leftover, f"{0:020d}.log"), "wb") as f:
            f.write(b"stale bytes of a create that never committed")
    topic = engine.create_topic("t")
    journal = engine.journal("sub-1", new=True)
    assert topic.end_offset(0) == 0 and journal.recover() == (None, [])
    engine.close()


class DirectorySyncs(LocalFS):
    def __init__(self) -> None:
        self.synced: list[str] = []

    def fsync_dir(self, path: str) -> None:
        self.synced.append(path)
        super().fsync_dir(path)


def test_a_name_deleted_since_open_syncs_the_removal_before_it_is_created_again(
    data_dir: str, clock: ManualClock
) -> None:
    """The removal of a deleted topic's directory is not synced; a power loss could bring it
    back, and a topic created again under the name (no directory of its own before its first
    write) would adopt the old records. So that create syncs topics/ first; others do not."""
    fs = DirectorySyncs()
    engine = LocalEngine.open(data_dir, clock, fs)
    topics = os.path.join(data_dir, "topics")
    engine.create_topic("t").append(0, [Record(value=b"old")])
    engine.topic("t").log(0).flush()
    engine.delete_topic("t")
    engine.create_topic("never-written")
    engine.delete_topic("never-written")
    fs.synced.clear()
    engine.create_topic("fresh")
    engine.create_topic("never-written")  # nothing was removed: nothing to sync
    assert fs.synced == []
    engine.create_topic("t")
    assert fs.synced == [topics]
    engine.delete_topic("t")  # never written this time: no removal to sync
    fs.synced.clear()
    engine.create_topic("t")
    assert fs.synced == []
    engine.close()
