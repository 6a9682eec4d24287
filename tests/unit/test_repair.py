"""Repairing a failed log in place: verified from disk, cut back to what was confirmed."""

from __future__ import annotations

import asyncio
import errno
import os

import pytest

from roost.clock import ManualClock
from roost.errors import DiskFull, StorageFailure
from roost.server.flusher import Flusher
from roost.storage import LocalEngine, Record, TopicConfig
from roost.storage.log import PartitionLog
from tests.fault_fs import FaultFS, log_values


def repair(log: PartitionLog) -> bool:
    job = log.begin_repair()
    assert job is not None
    try:
        job.run()
    except OSError as e:
        return log.end_repair(job, e)
    return log.end_repair(job)


def test_a_failed_flush_is_cut_back_to_the_durable_offset_and_writes_resume(
    data_dir: str, clock: ManualClock
) -> None:
    fs = FaultFS()
    engine = LocalEngine.open(data_dir, clock, fs)
    log = engine.create_topic("t").log(0)

    async def main() -> None:
        flusher = Flusher(clock)
        engine.on_dirty = flusher.notify
        ok = log.append([Record(value=b"ok")])
        await flusher.wait_durable(log, ok.next_offset)
        fs.arm("pwrite", errno.EIO, match="/topics/t/", tear=True)
        lost = [log.append([Record(value=b"lost %d" % i)]) for i in range(3)]
        outcomes = await asyncio.gather(
            *(flusher.wait_durable(log, r.next_offset) for r in lost), return_exceptions=True
        )
        assert all(isinstance(o, StorageFailure) for o in outcomes), "nothing confirmed"
        assert log.end_offset == 4, "appended in memory, never confirmed"
        fs.disarm()
        assert repair(log)
        assert log.failure is None and log.end_offset == log.durable_offset == 1
        again = log.append([Record(value=b"retried")])
        assert again.base_offset == 1, "the cut offsets are reused: the retry is not a duplicate"
        await flusher.wait_durable(log, again.next_offset)
        await flusher.aclose()

    asyncio.run(main())
    assert log_values(log) == [b"ok", b"retried"]
    engine.close()
    engine = LocalEngine.open(data_dir, clock)
    assert engine.recovery.clean_shutdown, "a repaired log closes cleanly"
    assert log_values(engine.topic("t").log(0)) == [b"ok", b"retried"]
    engine.close()


def test_repair_verifies_from_disk_what_was_not_durable(data_dir: str, clock: ManualClock) -> None:
    """An fsync EIO may mean the kernel dropped the dirty pages: the repair must not trust the
    in-memory view. Here the pages are "dropped" by damaging the unsynced batch on disk."""
    fs = FaultFS()
    engine = LocalEngine.open(data_dir, clock, fs)
    log = engine.create_topic("t", TopicConfig(durability="interval")).log(0)
    log.append([Record(value=b"synced")])
    log.flush()
    log.append([Record(value=b"dropped by the kernel")])
    fs.arm("fdatasync", errno.EIO, match="/topics/t/")
    with pytest.raises(StorageFailure):
        log.flush()
    segment_path = os.path.join(log.directory, sorted(os.listdir(log.directory))[0])
    size = os.path.getsize(segment_path)
    with open(segment_path, "r+b") as f:  # the second batch's last bytes never reached disk
        f.seek(size - 3)
        f.write(b"\0\0\0")
    fs.disarm()
    job = log.begin_repair()
    assert job is not None
    job.run()
    assert log.end_repair(job)
    assert job.report.records_lost == 1, "confirmed under interval, then lost by the disk"
    assert job.report.recovery is not None and job.report.recovery.bytes_truncated > 0
    assert log_values(log) == [b"synced"]
    assert log.append([Record(value=b"next")]).base_offset == 1
    engine.close()


def test_a_repair_that_fails_again_leaves_the_log_failed_and_can_be_retried(
    data_dir: str, clock: ManualClock
) -> None:
    fs = FaultFS()
    engine = LocalEngine.open(data_dir, clock, fs)
    log = engine.create_topic("t", TopicConfig(durability="interval")).log(0)
    log.append([Record(value=b"a")])
    fs.arm("fdatasync", errno.EIO, match="/topics/t/", times=2)  # the flush, then the repair
    with pytest.raises(StorageFailure):
        log.flush()
    open_before = len(os.listdir(f"/proc/{os.getpid()}/fd"))
    assert not repair(log)
    assert len(os.listdir(f"/proc/{os.getpid()}/fd")) == open_before, "no descriptor leaks"
    assert log.failure is not None
    assert repair(log), "the disk works again"
    assert log_values(log) == [b"a"]
    engine.close()


def test_no_repair_while_a_flush_job_holds_the_files(data_dir: str, clock: ManualClock) -> None:
    fs = FaultFS()
    engine = LocalEngine.open(data_dir, clock, fs)
    log = engine.create_topic("t").log(0)
    log.on_dirty = lambda _log, _urgent: None
    log.append([Record(value=b"a")])
    log.flush()
    log.append([Record(value=b"b")])
    job = log.begin_flush()
    assert job is not None
    job.run()
    log.append([Record(value=b"c")])
    fs.arm("pwrite", errno.EIO, match="/topics/t/")
    with pytest.raises(StorageFailure):
        log.flush()  # c's job fails while b's has not ended
    assert log.begin_repair() is None, "b's flush job (its thread) still has the descriptors"
    log.end_flush(job, None)
    assert log.durable_offset == 1, "b's job ended after the failure: b is not confirmed"
    fs.disarm()
    assert repair(log)
    assert log_values(log) == [b"a"], "what was not confirmed is cut, though b reached the disk"
    engine.close()


def test_enospc_on_a_journal_entry_fails_that_entry_only(data_dir: str, clock: ManualClock) -> None:
    fs = FaultFS()
    engine = LocalEngine.open(data_dir, clock, fs)
    journal = engine.journal("j")
    journal.append([b"one"])
    fs.arm("pwrite", errno.ENOSPC, match="/journals/j/", tear=True)
    with pytest.raises(DiskFull) as raised:
        journal.append([b"two"])
    assert raised.value.retriable and raised.value.free_bytes is None
    assert journal.log.failure is None
    assert journal.append([b"two again"]) == 2
    assert journal.recover()[1] == [b"one", b"two again"]
    engine.close()
    engine = LocalEngine.open(data_dir, clock)
    assert engine.journal("j").recover()[1] == [b"one", b"two again"]
    engine.close()


def test_health_names_every_failed_log_journals_too(data_dir: str, clock: ManualClock) -> None:
    fs = FaultFS()
    engine = LocalEngine.open(data_dir, clock, fs)
    engine.create_topic("t", TopicConfig(durability="never"))
    journal = engine.journal("j")
    fs.arm("pwrite", errno.EIO, times=2)
    with pytest.raises(StorageFailure):
        engine.topic("t").append(0, [Record(value=b"x")])
    with pytest.raises(StorageFailure):
        journal.append([b"x"])
    with pytest.raises(StorageFailure, match="2 logs") as raised:
        engine.check_health()
    assert "t/0" in str(raised.value) and "journal j" in str(raised.value)
    assert [log.name for log in engine.failed_logs()] == ["t/0", "journal j"]
    engine.close()


def test_a_repair_that_cannot_open_every_segment_closes_what_it_opened(
    data_dir: str, clock: ManualClock
) -> None:
    fs = FaultFS()
    engine = LocalEngine.open(data_dir, clock, fs)
    config = TopicConfig(segment_max_bytes=4096, max_record_bytes=4000, durability="interval")
    log = engine.create_topic("t", config).log(0)
    for i in range(3):
        log.append([Record(value=b"%d" % i + b"." * 3000)])  # a segment each
    fs.arm("fdatasync", errno.EIO, match="/topics/t/")
    with pytest.raises(StorageFailure):
        log.flush()
    last = os.path.join(log.directory, f"{2:020d}.log")
    fs.arm("open_rw", errno.EMFILE, match=last, times=-1)
    open_before = len(os.listdir(f"/proc/{os.getpid()}/fd"))
    for _ in range(3):
        assert not repair(log)
    assert len(os.listdir(f"/proc/{os.getpid()}/fd")) == open_before, "no descriptor leaks"
    fs.disarm()
    assert repair(log)
    assert [v[:1] for v in log_values(log)] == [b"0", b"1", b"2"]
    engine.close()
