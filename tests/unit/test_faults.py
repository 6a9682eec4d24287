"""Disk faults through the fs seam: a failed write or fsync stops writes, confirms nothing."""

from __future__ import annotations

import asyncio
import errno
import os

import pytest

from roost.clock import ManualClock
from roost.errors import DiskFull, StorageClosed, StorageFailure, TooManyOpenFiles
from roost.server.flusher import Flusher
from roost.storage import LocalEngine, Record, TopicConfig
from roost.storage.fs import LocalFS


class FaultyFS(LocalFS):
    """Fails the chosen operation once armed; a torn write lands half its bytes first."""

    def __init__(self) -> None:
        self.fail_writes: int | None = None  # errno for the next pwrite
        self.tear = False
        self.fail_syncs: int | None = None  # errno for the next fdatasync / O_DSYNC pwrite

    def pwrite(self, fd: int, data: bytes | bytearray | memoryview, position: int) -> None:
        if self.fail_writes is not None:
            if self.tear:
                super().pwrite(fd, memoryview(data)[: len(data) // 2], position)
            raise OSError(self.fail_writes, "injected write failure")
        super().pwrite(fd, data, position)

    def fdatasync(self, fd: int) -> None:
        if self.fail_syncs is not None:
            raise OSError(self.fail_syncs, "injected fsync failure")
        super().fdatasync(fd)


@pytest.fixture
def faulty() -> FaultyFS:
    return FaultyFS()


def test_a_torn_write_for_want_of_space_fails_only_that_append(
    data_dir: str, clock: ManualClock, faulty: FaultyFS
) -> None:
    engine = LocalEngine.open(data_dir, clock, faulty)
    topic = engine.create_topic("t", TopicConfig(durability="never"))
    topic.append(0, [Record(value=b"kept")])
    faulty.fail_writes, faulty.tear = errno.ENOSPC, True
    with pytest.raises(DiskFull) as raised:
        topic.append(0, [Record(value=b"x" * 1000)])
    assert raised.value.retriable
    assert topic.log(0).failure is None, "ENOSPC fails the append, not the log"
    faulty.fail_writes = None
    assert topic.append(0, [Record(value=b"after")]).base_offset == 1
    assert [r.value for r in topic.read(0, 0)] == [b"kept", b"after"]
    engine.close()

    engine = LocalEngine.open(data_dir, clock)
    assert engine.recovery.clean_shutdown
    assert [r.value for r in engine.topic("t").read(0, 0)] == [b"kept", b"after"]
    engine.close()


def test_a_torn_write_with_eio_fails_the_log_and_recovery_cuts_it(
    data_dir: str, clock: ManualClock, faulty: FaultyFS
) -> None:
    engine = LocalEngine.open(data_dir, clock, faulty)
    topic = engine.create_topic("t", TopicConfig(durability="never"))
    topic.append(0, [Record(value=b"kept")])
    faulty.fail_writes, faulty.tear = errno.EIO, True
    with pytest.raises(StorageFailure) as raised:
        topic.append(0, [Record(value=b"x" * 1000)])
    assert raised.value.retriable
    faulty.fail_writes = None
    with pytest.raises(StorageFailure):
        topic.append(0, [Record(value=b"refused though the disk is back")])
    assert [r.value for r in topic.read(0, 0)] == [b"kept"], "reads go on"
    engine.close()

    engine = LocalEngine.open(data_dir, clock)
    assert not engine.recovery.clean_shutdown, "a failed log must not look cleanly closed"
    assert engine.recovery.logs[0].bytes_truncated > 0
    topic = engine.topic("t")
    assert topic.append(0, [Record(value=b"after")]).base_offset == 1
    assert [r.value for r in topic.read(0, 0)] == [b"kept", b"after"]
    engine.close()


def test_a_failed_fsync_confirms_nothing_and_refuses_writes(
    data_dir: str, clock: ManualClock, faulty: FaultyFS
) -> None:
    engine = LocalEngine.open(data_dir, clock, faulty)
    log = engine.create_topic("t").log(0)
    log.append([Record(value=b"a")])
    log.flush()
    log.append([Record(value=b"b")])
    faulty.fail_syncs = errno.EIO
    with pytest.raises(StorageFailure) as raised:
        log.flush()
    assert "fsync" in str(raised.value)
    assert log.durable_offset == 1
    faulty.fail_syncs = None
    with pytest.raises(StorageFailure):
        log.append([Record(value=b"c")])
    with pytest.raises(StorageFailure):
        log.flush()
    engine.close()


def test_waiters_get_the_failure_from_the_flusher(
    data_dir: str, clock: ManualClock, faulty: FaultyFS
) -> None:
    engine = LocalEngine.open(data_dir, clock, faulty)
    log = engine.create_topic("t").log(0)

    async def main() -> list[BaseException | None]:
        flusher = Flusher(clock)
        engine.on_dirty = flusher.notify
        ok = log.append([Record(value=b"ok")])
        await flusher.wait_durable(log, ok.next_offset)
        # Held-back batches are written by the flush job: fail that write.
        faulty.fail_writes = errno.EIO
        results = [log.append([Record(value=b"%d" % i)]) for i in range(5)]
        outcomes = await asyncio.gather(
            *(flusher.wait_durable(log, r.next_offset) for r in results), return_exceptions=True
        )
        await flusher.aclose()
        return outcomes

    outcomes = asyncio.run(main())
    assert all(isinstance(o, StorageFailure) for o in outcomes)
    assert log.durable_offset == 1
    faulty.fail_writes = None
    with pytest.raises(StorageFailure):
        log.append([Record(value=b"refused")])
    engine.close()

    engine = LocalEngine.open(data_dir, clock)
    topic = engine.topic("t")
    assert [r.value for r in topic.read(0, 0)] == [b"ok"]
    engine.close()


class ReadOnlyFS(FaultyFS):
    """A data directory that has stopped taking new files (full, or remounted read-only)."""

    def __init__(self) -> None:
        super().__init__()
        self.refuse_files = False

    def write_file(self, path: str, data: bytes) -> None:
        if self.refuse_files:
            raise OSError(errno.EROFS, "injected read-only file system")
        super().write_file(path, data)


def test_health_and_the_write_probe_see_what_would_refuse_a_write(
    data_dir: str, clock: ManualClock
) -> None:
    fs = ReadOnlyFS()
    engine = LocalEngine.open(data_dir, clock, fs)
    topic = engine.create_topic("t", TopicConfig(durability="never"))
    engine.check_health()
    engine.probe_write()
    assert not os.path.exists(os.path.join(data_dir, "WRITE_PROBE")), "the probe cleans up"
    fs.refuse_files = True
    with pytest.raises(StorageFailure, match="data directory"):
        engine.probe_write()
    fs.refuse_files = False
    fs.fail_writes = errno.EIO
    with pytest.raises(StorageFailure):
        topic.append(0, [Record(value=b"x")])
    with pytest.raises(StorageFailure, match="t/0"):
        engine.check_health()
    engine.close()
    with pytest.raises(StorageClosed):
        engine.check_health()


def test_a_descriptor_the_flush_needs_is_opened_by_the_append_and_refusing_it_fails_only_it(
    data_dir: str, clock: ManualClock
) -> None:
    """The O_DSYNC descriptor the flush writes held-back batches through is opened by the
    append that holds the first one back, before anything is accounted: out of descriptors
    (EMFILE even after the pool closed what was idle), that append fails with the retriable
    ``TooManyOpenFiles`` and the log is as it was, never failed; the next append is stored."""

    class NoDescriptors(LocalFS):
        refuse = 0

        def open_dsync(self, path: str) -> int:
            if self.refuse:
                self.refuse -= 1
                raise OSError(errno.EMFILE, "injected: too many open files")
            return super().open_dsync(path)

    fs = NoDescriptors()
    engine = LocalEngine.open(data_dir, clock, fs)
    log = engine.create_topic("t").log(0)

    async def main() -> None:
        flusher = Flusher(clock)
        engine.on_dirty = flusher.notify
        fs.refuse = 2  # the open, and the open again after the pool closed an idle file
        with pytest.raises(TooManyOpenFiles) as refused:
            log.append([Record(value=b"refused")])
        assert refused.value.retriable and refused.value.code == "too_many_open_files"
        assert "EMFILE" in str(refused.value)
        # (Its files were made by this first append, before the refusal: nothing of it.)
        assert (log.failure, log.end_offset, log.unflushed_records) == (None, 0, 0)
        stored = log.append([Record(value=b"stored")])
        await asyncio.wait_for(flusher.wait_durable(log, stored.next_offset), 5)
        await flusher.aclose()

    asyncio.run(main())
    assert fs.refuse == 0, "both refusals were reached"
    assert [r.value for r in log.read(0)] == [b"stored"]
    engine.close()


def test_out_of_descriptors_once_the_pool_closes_an_idle_file_and_opens_again(
    data_dir: str, clock: ManualClock
) -> None:
    """One EMFILE, with idle files in the pool: it closes one and the open succeeds."""

    class OneRefusal(LocalFS):
        refuse = 0

        def open_dsync(self, path: str) -> int:
            if self.refuse:
                self.refuse -= 1
                raise OSError(errno.EMFILE, "injected: too many open files")
            return super().open_dsync(path)

    fs = OneRefusal()
    engine = LocalEngine.open(data_dir, clock, fs)
    logs = [engine.create_topic(name).log(0) for name in ("a", "b")]
    evictions = engine.pool.evictions

    async def main() -> None:
        flusher = Flusher(clock)
        engine.on_dirty = flusher.notify
        fs.refuse = 1
        stored = logs[1].append([Record(value=b"x")])
        await asyncio.wait_for(flusher.wait_durable(logs[1], stored.next_offset), 5)
        await flusher.aclose()

    asyncio.run(main())
    assert fs.refuse == 0 and engine.pool.evictions > evictions
    assert [r.value for r in logs[1].read(0)] == [b"x"]
    engine.close()
