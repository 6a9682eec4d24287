"""The state journal: entries, snapshots, compaction, recovery."""

from __future__ import annotations

import os

import pytest

from roost.clock import ManualClock
from roost.errors import PartitionQuarantined
from roost.storage import LocalEngine
from roost.storage.config import TopicConfig
from roost.storage.fs import LOCAL_FS
from roost.storage.journal import Journal

TINY = TopicConfig(segment_max_bytes=4096, max_record_bytes=1024)


def open_journal(path: str, clock: ManualClock, clean: bool = False) -> Journal:
    return Journal.open("j", path, clock, LOCAL_FS, TINY, clean_shutdown=clean)


def test_entries_come_back_in_order(data_dir: str, clock: ManualClock) -> None:
    journal = open_journal(data_dir, clock)
    assert journal.recover() == (None, [])
    assert journal.append([b"a", b"b"]) == 2
    assert journal.append([b"c"]) == 3
    journal.close()
    assert open_journal(data_dir, clock, clean=True).recover() == (None, [b"a", b"b", b"c"])


def test_snapshot_covers_entries_and_frees_segments(data_dir: str, clock: ManualClock) -> None:
    journal = open_journal(data_dir, clock)
    for i in range(100):
        journal.append([b"entry %03d " % i + b"." * 100])
    segments_before = journal.log.segment_count
    assert segments_before > 2
    deleted = journal.snapshot(b"state after 100")
    assert deleted == segments_before
    journal.append([b"after"])
    journal.close(clean=False)

    reopened = open_journal(data_dir, clock)
    assert reopened.recover() == (b"state after 100", [b"after"])
    reopened.close()


def test_entries_below_the_snapshot_in_a_kept_segment_are_skipped(
    data_dir: str, clock: ManualClock
) -> None:
    journal = open_journal(data_dir, clock)
    journal.append([b"one", b"two"])
    job = journal.snapshot_job(b"S")
    journal.append([b"three"])  # lands before the snapshot is done: it must survive
    job.run()
    journal.snapshot_done(job)
    journal.close()
    assert open_journal(data_dir, clock, clean=True).recover() == (b"S", [b"three"])


def test_a_corrupt_snapshot_is_reported_not_ignored(data_dir: str, clock: ManualClock) -> None:
    journal = open_journal(data_dir, clock)
    journal.append([b"x"])
    journal.snapshot(b"state")
    journal.close()
    path = os.path.join(data_dir, "snapshot")
    with open(path, "rb") as f:
        data = bytearray(f.read())
    data[-1] ^= 0xFF
    with open(path, "wb") as f:
        f.write(data)
    reopened = open_journal(data_dir, clock, clean=True)
    with pytest.raises(PartitionQuarantined) as raised:
        reopened.recover()
    assert raised.value.damage == f"snapshot {path} is corrupt"
    assert reopened.log.quarantined == raised.value.damage
    with pytest.raises(PartitionQuarantined):
        reopened.append([b"y"])  # nothing is written on top of state that cannot be read
    reopened.close()
    # It stays out of service across a restart, until the snapshot is restored.
    again = open_journal(data_dir, clock, clean=True)
    with pytest.raises(PartitionQuarantined):
        again.recover()
    again.close()


def test_engine_journals_survive_restart(data_dir: str, clock: ManualClock) -> None:
    engine = LocalEngine.open(data_dir, clock)
    engine.journal("subs").append([b"cursor=5"])
    engine.close()
    engine = LocalEngine.open(data_dir, clock)
    assert engine.journal("subs").recover() == (None, [b"cursor=5"])
    engine.close()


def test_a_snapshot_ahead_of_its_log_restarts_the_log_past_it(
    data_dir: str, clock: ManualClock
) -> None:
    # A power loss can keep a (synced) snapshot and lose the unsynced entries it covers.
    journal = open_journal(data_dir, clock)
    journal.append([b"e0", b"e1"])
    journal.log.flush()
    journal.append([b"e2", b"e3"])
    job = journal.snapshot_job(b"state after e3")
    job.run()
    journal.close(clean=False)
    segment = os.path.join(data_dir, "log", f"{0:020d}.log")
    kept = open_journal(data_dir, clock)  # measure where e2 starts, then cut it off
    position = kept.log.read_batches(2).data
    kept.close(clean=False)
    os.truncate(segment, os.path.getsize(segment) - len(position))

    journal = open_journal(data_dir, clock)
    assert journal.recover() == (b"state after e3", [])
    journal.append([b"after"])
    journal.close()
    assert open_journal(data_dir, clock, clean=True).recover() == (b"state after e3", [b"after"])
