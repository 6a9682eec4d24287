"""The descriptor pool: a ceiling that holds over many logs, files that reopen when used again,
and running out of descriptors failing only the operation that asked (storage/fd_pool.py)."""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

import pytest

from roost.clock import ManualClock
from roost.core.publishing import Outgoing
from roost.errors import InvalidConfig, TooManyOpenFiles
from roost.server.access import TRUSTED
from roost.server.flusher import Flusher
from roost.storage import LocalEngine, Record, TopicConfig
from roost.storage.fd_pool import FdPool, PooledFile, default_max_open
from roost.storage.fs import LocalFS
from roost.storage.log import PartitionLog
from tests.fault_fs import FaultFS, log_values, start_host


def small_segments(durability: str) -> TopicConfig:
    return TopicConfig(segment_max_bytes=4096, max_record_bytes=4000, durability=durability)  # type: ignore[arg-type]


CEILING = 12


def open_fds() -> int:
    return len(os.listdir(f"/proc/{os.getpid()}/fd"))


async def publish(flusher: Flusher, log: PartitionLog, value: bytes) -> None:
    stored = log.append([Record(value=value)])
    await asyncio.wait_for(flusher.wait_durable(log, stored.next_offset), 5)


def test_the_ceiling_holds_over_many_logs_and_every_file_reopens_when_used_again(
    data_dir: str, clock: ManualClock
) -> None:
    before = open_fds()
    engine = LocalEngine.open(data_dir, clock, max_open_files=CEILING)
    durabilities = ("always", "interval", "never")
    topics = [
        engine.create_topic(
            f"t{i}", TopicConfig(durability=durabilities[i % 3], flush_interval_ms=10)
        )
        for i in range(30)
    ]
    journals = [engine.journal(f"j{i}") for i in range(10)]

    async def main() -> None:
        flusher = Flusher(clock)
        engine.on_dirty = flusher.notify
        not_pooled = open_fds() - engine.pool.open_count  # the LOCK file, the loop's own
        for round_ in range(3):  # every file is used, evicted by the others, and used again
            for topic in topics:
                log = topic.log(0)
                if log.config.durability == "always":
                    await publish(flusher, log, b"%s-%d" % (topic.name.encode(), round_))
                else:
                    log.append([Record(value=b"%s-%d" % (topic.name.encode(), round_))])
                    log.flush()
                assert engine.pool.open_count <= CEILING
            for journal in journals:
                journal.append([b"%s-%d" % (journal.name.encode(), round_)])
                journal.log.flush()
                assert engine.pool.open_count <= CEILING
            assert open_fds() <= not_pooled + CEILING
        await flusher.aclose()

    asyncio.run(main())
    assert engine.pool.evictions > 0
    for topic in topics:
        assert log_values(topic.log(0)) == [b"%s-%d" % (topic.name.encode(), r) for r in range(3)]
    for journal in journals:
        assert journal.recover()[1] == [b"%s-%d" % (journal.name.encode(), r) for r in range(3)]
    engine.close()
    assert open_fds() == before, "closing the engine closes every pooled file"

    engine = LocalEngine.open(data_dir, clock, max_open_files=CEILING)
    assert engine.recovery.clean_shutdown
    for name in (f"t{i}" for i in range(30)):
        assert log_values(engine.topic(name).log(0)) == [
            b"%s-%d" % (name.encode(), r) for r in range(3)
        ]
    engine.close()


def test_sealed_segments_of_one_log_are_read_back_through_a_small_pool(
    data_dir: str, clock: ManualClock
) -> None:
    engine = LocalEngine.open(data_dir, clock, max_open_files=8)
    log = engine.create_topic("t", small_segments("never")).log(0)
    for i in range(40):
        log.append([Record(value=b"%02d" % i + b"." * 3000)])  # a segment each
    assert log.segment_count == 40 and engine.pool.open_count <= 8
    assert [v[:2] for v in log_values(log)] == [b"%02d" % i for i in range(40)]
    assert engine.pool.open_count <= 8
    engine.close()


def test_a_file_written_through_stays_open_until_its_fsync(
    data_dir: str, clock: ManualClock
) -> None:
    """A descriptor closed between a write and the fsync that covers it could hide a writeback
    error from that fsync (it is reported to descriptors open when it happens): the pool skips
    a file with written, unsynced bytes, however many others want a descriptor."""

    class Trace(LocalFS):
        def __init__(self) -> None:
            self.calls: list[tuple[str, int]] = []

        def pwrite(self, fd: int, data: bytes | bytearray | memoryview, position: int) -> None:
            self.calls.append(("pwrite", fd))
            super().pwrite(fd, data, position)

        def fdatasync(self, fd: int) -> None:
            self.calls.append(("fdatasync", fd))
            super().fdatasync(fd)

        def close(self, fd: int) -> None:
            self.calls.append(("close", fd))
            super().close(fd)

    fs = Trace()
    engine = LocalEngine.open(data_dir, clock, fs, max_open_files=8)
    written = engine.create_topic("w", TopicConfig(durability="interval")).log(0)
    others = [engine.create_topic(f"o{i}", TopicConfig(durability="never")) for i in range(20)]
    fs.calls.clear()
    written.append([Record(value=b"unsynced")])
    [written_fd] = [fd for operation, fd in fs.calls if operation == "pwrite"]
    fs.calls.clear()
    for other in others:  # each wants a descriptor: the pool is full
        other.log(0).append([Record(value=b"x")])
    assert ("close", written_fd) not in fs.calls, "the busy file is kept beyond the ceiling"
    written.flush()
    assert ("fdatasync", written_fd) in fs.calls, "synced through the descriptor that wrote"
    for other in others:  # synced now: it may go like any idle file
        other.log(0).append([Record(value=b"y")])
    assert ("close", written_fd) in fs.calls
    assert log_values(written) == [b"unsynced"]
    engine.close()


# -- out of descriptors -----------------------------------------------------------------------


@pytest.fixture
def faulty(data_dir: str, clock: ManualClock) -> tuple[LocalEngine, FaultFS]:
    fs = FaultFS()
    engine = LocalEngine.open(data_dir, clock, fs, max_open_files=8)
    return engine, fs


def refuse_opens(fs: FaultFS, operation: str, match: str) -> None:
    """EMFILE on every open of ``operation`` there: the first try and the one after the pool
    closed what was idle both fail."""
    fs.arm(operation, errno.EMFILE, match=match, times=-1)


def evict_all(engine: LocalEngine, clock: ManualClock | None = None) -> None:
    """Use enough other files that every idle one of the logs under test is closed."""
    for i in range(12):
        name = f"filler{i}"
        topic = (
            engine.topic(name)
            if name in engine.list_topics()
            else engine.create_topic(name, TopicConfig(durability="never"))
        )
        # A write opens the file (an empty log has none yet, and a read of one opens
        # nothing); ``never``: written through at once, and closed again when idle.
        topic.log(0).append([Record(value=b"filler")])


@pytest.mark.parametrize(
    ("case", "operation"),
    [
        ("append-always", "open_dsync"),  # the descriptor the flush writes through
        ("append-interval", "open_rw"),  # the active segment, written through
        ("roll", "open_rw"),  # a new segment
        ("read-sealed", "open_rw"),  # an evicted sealed segment
        ("journal-append", "open_rw"),  # a state journal's active segment
    ],
)
def test_out_of_descriptors_at_each_kind_of_open_fails_only_that_operation(
    faulty: tuple[LocalEngine, FaultFS], clock: ManualClock, case: str, operation: str
) -> None:
    engine, fs = faulty
    always = engine.create_topic("a").log(0)
    interval = engine.create_topic("i", TopicConfig(durability="interval")).log(0)
    rolling = engine.create_topic("r", small_segments("interval")).log(0)
    journal = engine.journal("j")
    other = engine.create_topic("other").log(0)
    for i in range(2):
        rolling.append([Record(value=b"%d" % i + b"." * 3000)])  # two segments: one sealed
    for log in (always, interval, rolling, journal.log):
        log.append([Record(value=b"before")])
        log.flush()
    evict_all(engine, clock)

    async def main() -> None:
        flusher = Flusher(clock)
        engine.on_dirty = flusher.notify
        target, act = {
            "append-always": (always, lambda: always.append([Record(value=b"after")])),
            "append-interval": (interval, lambda: interval.append([Record(value=b"after")])),
            "roll": (rolling, lambda: rolling.append([Record(value=b"after" + b"." * 3000)])),
            "read-sealed": (rolling, lambda: rolling.read(0)),
            "journal-append": (journal.log, lambda: journal.append([b"after"])),
        }[case]
        end, durable = target.end_offset, target.durable_offset
        refuse_opens(fs, operation, target.directory)
        with pytest.raises(TooManyOpenFiles) as refused:
            act()
        assert refused.value.retriable and refused.value.code == "too_many_open_files"
        assert fs.faults[0].hits == 2, "tried again after closing idle files"
        assert (target.failure, target.end_offset, target.durable_offset) == (None, end, durable)
        assert engine.failed_logs() == []
        engine.check_health()
        # Other logs serve meanwhile.
        await publish(flusher, other, b"other")
        fs.disarm()
        if case == "journal-append":
            # Its owner's state is ahead of it now: a snapshot stands in for the lost entry,
            # and until then nothing is stored after the gap.
            assert journal.snapshot_owed and engine.snapshots_owed == {journal}
            with pytest.raises(TooManyOpenFiles, match="snapshot"):
                act()
            journal.snapshot(b"state with the refused entry")
            assert not journal.snapshot_owed
        act()  # the same operation now succeeds
        if target is not rolling or case == "roll":
            await asyncio.wait_for(flusher.wait_durable(target, target.end_offset), 5)
        await flusher.aclose()

    asyncio.run(main())
    assert engine.pool.refused >= 1
    engine.close()
    engine = LocalEngine.open(engine.path, clock)
    after = {
        "append-always": (["a"], [b"before", b"after"]),
        "append-interval": (["i"], [b"before", b"after"]),
    }
    for case_name, (names, expected) in after.items():
        if case == case_name:
            assert log_values(engine.topic(names[0]).log(0)) == expected
    if case == "roll":
        kept = log_values(engine.topic("r").log(0))
        assert [v[:5] for v in kept] == [b"0....", b"1....", b"befor", b"after"]
    if case == "journal-append":
        assert engine.journal("j").recover() == (b"state with the refused entry", [b"after"])
    engine.close()


def test_a_ceiling_below_the_minimum_is_refused(data_dir: str, clock: ManualClock) -> None:
    with pytest.raises(InvalidConfig, match="max_open_files"):
        LocalEngine.open(data_dir, clock, max_open_files=2)


def test_an_ack_its_journal_cannot_store_is_refused_and_a_snapshot_makes_it_durable(
    data_dir: str, clock: ManualClock
) -> None:
    """The subscription acks in memory, then journals: refused, the journal owes a snapshot,
    refuses later entries too, and the host's next tick writes it; after a restart the acked
    messages stay acked and the others come back."""
    fs = FaultFS()

    async def run() -> None:
        host = await start_host(data_dir, clock, fs, max_open_files=8)
        try:
            door = host.door(TRUSTED)
            door.create_queue("q", max_deliveries=None, dead_letter=None)
            for i in range(3):
                await host.publish("q", [Outgoing(value=b"m%d" % i)])
            first, second, _third = await host.receive("q", "q", max_messages=3)
            for journal in host.engine.journals():
                journal.log.flush()  # synced: its file is idle, and may be closed
            evict_all(host.engine, clock)
            refuse_opens(fs, "open_rw", "/journals/")
            with pytest.raises(TooManyOpenFiles):
                door.ack("q", "q", [first.receipt])
            fs.disarm()
            with pytest.raises(TooManyOpenFiles, match="snapshot"):
                door.ack("q", "q", [second.receipt])  # nothing after the gap
            assert host.engine.failed_logs() == [] and host.engine.snapshots_owed
            await host._snapshot_journals()  # what the next tick does
            assert not host.engine.snapshots_owed
            await host.check_ready()
        finally:
            await host.aclose()

    asyncio.run(run())

    async def after_restart() -> None:
        host = await start_host(data_dir, clock, LocalFS())
        try:
            clock.advance(31_000)  # the leases of the first run are over
            host._broker.tick()
            again = await host.receive("q", "q", max_messages=10)
            assert [m.value for m in again] == [b"m2"], "acked in memory, durable by snapshot"
        finally:
            await host.aclose()

    asyncio.run(after_restart())


def test_the_least_recently_used_idle_file_goes_first_and_a_busy_one_never(tmp_path: Path) -> None:
    busy: set[str] = set()
    pool = FdPool(LocalFS(), max_open=3)
    files = {}
    for name in "abcd":
        path = str(tmp_path / name)
        files[name] = PooledFile(path, LocalFS().open_rw, lambda name=name: name in busy)

    def is_open() -> str:
        return "".join(name for name, file in files.items() if file.fd >= 0)

    for name in "abc":
        pool.fd(files[name])
    pool.fd(files["a"])  # used again: b is now the least recently used
    pool.fd(files["d"])
    assert is_open() == "acd" and pool.evictions == 1
    busy.add("c")  # the least recently used now, but busy: a goes instead
    pool.fd(files["b"])
    assert is_open() == "bcd" and pool.open_count == 3
    busy.update("bd")  # every file busy: the ceiling gives way rather than fail
    pool.fd(files["a"])
    assert is_open() == "abcd" and pool.open_count == 4
    for file in files.values():
        pool.close(file)
    assert pool.open_count == 0 and pool.opens == 6


@pytest.mark.parametrize(
    ("limit", "ceiling"), [(1 << 20, 786_432), (1024, 768), (256, 192), (100, 36), (20, 8)]
)
def test_the_default_ceiling_leaves_a_quarter_of_the_limit_at_least_64(
    limit: int, ceiling: int
) -> None:
    assert default_max_open(limit) == ceiling


def test_a_journal_that_cannot_be_opened_for_want_of_descriptors_says_so(
    faulty: tuple[LocalEngine, FaultFS],
) -> None:
    """A journal makes its files on its first entry (lazy creation): without a descriptor
    for them, that entry is refused, and the snapshot it then owes makes them."""
    engine, fs = faulty
    journal = engine.journal("new")
    assert journal.recover() == (None, []) and not journal.log.on_disk
    refuse_opens(fs, "open_rw", "/journals/new")
    with pytest.raises(TooManyOpenFiles, match="journals/new"):
        journal.append([b"refused"])
    assert journal.snapshot_owed and not journal.log.on_disk and journal.log.failure is None
    fs.disarm()
    journal.snapshot(b"state with the refused entry")
    journal.append([b"after"])
    engine.close()
    engine = LocalEngine.open(engine.path, ManualClock())
    assert engine.journal("new").recover() == (b"state with the refused entry", [b"after"])
    engine.close()


def test_a_directory_the_flush_cannot_open_delays_the_confirm_and_fails_nothing(
    faulty: tuple[LocalEngine, FaultFS], clock: ManualClock
) -> None:
    """A roll makes a segment whose directory entry the next round must fsync; with no
    descriptor to open the directory, the round syncs the rest and the records it covers stay
    unconfirmed (not failed) until a round syncs the directory."""
    engine, fs = faulty
    log = engine.create_topic("r", small_segments("always")).log(0)

    async def main() -> None:
        flusher = Flusher(clock)
        engine.on_dirty = flusher.notify
        await publish(flusher, log, b"0" + b"." * 3000)
        evict_all(engine)
        fault = fs.arm("fsync_dir", errno.EMFILE, match=log.directory, times=-1)
        rolled = log.append([Record(value=b"1" + b"." * 3000)])  # a new segment
        waiting = asyncio.ensure_future(flusher.wait_durable(log, rolled.next_offset))
        # The round the append started, then one more per 8 idle files it could close; then
        # the next try waits for the flush interval (on the clock this test holds).
        await asyncio.wait_for(flusher.idle(), 5)
        assert 2 <= fault.hits <= 1 + (CEILING + 8) // 8, fault.hits
        assert not waiting.done(), "confirmed without the new segment's directory entry"
        assert log.failure is None and log.durable_offset == 1
        fs.disarm()
        after = log.append([Record(value=b"2")])  # the next round syncs the directory too
        await asyncio.wait_for(flusher.wait_durable(log, after.next_offset), 5)
        await asyncio.wait_for(waiting, 5)
        assert log.durable_offset == 3
        await flusher.aclose()

    asyncio.run(main())
    assert [v[:1] for v in log_values(log)] == [b"0", b"1", b"2"]
    engine.close()


def test_an_inline_flush_that_cannot_sync_the_directory_says_so(
    faulty: tuple[LocalEngine, FaultFS],
) -> None:
    engine, fs = faulty
    log = engine.create_topic("r", small_segments("interval")).log(0)
    log.append([Record(value=b"0" + b"." * 3000)])
    log.append([Record(value=b"1" + b"." * 3000)])  # rolled
    fs.arm("fsync_dir", errno.EMFILE, match=log.directory)
    with pytest.raises(TooManyOpenFiles, match="directory"):
        log.flush()
    assert log.failure is None and log.durable_offset == 0
    log.flush()  # the fault was once: now the directory, and everything before it
    assert log.durable_offset == 2
    engine.close()


def test_a_round_begun_before_the_directory_was_owed_confirms_nothing_either(
    faulty: tuple[LocalEngine, FaultFS],
) -> None:
    """Rounds overlap: one begun while the round that could not sync the directory ran has no
    directory to sync (the first took it), yet its records lie in the new segment too."""
    engine, fs = faulty
    log = engine.create_topic("r", small_segments("interval")).log(0)
    log.append([Record(value=b"0" + b"." * 3000)])
    log.flush()
    log.append([Record(value=b"1" + b"." * 3000)])  # rolled: the directory changed
    first = log.begin_flush()
    log.append([Record(value=b"2")])
    second = log.begin_flush()
    assert first is not None and second is not None
    assert (first.directory, second.directory) == (log.directory, None)
    fs.arm("fsync_dir", errno.EMFILE, match=log.directory)
    first.run()
    second.run()
    assert first.directory_deferred
    log.end_flush(first, None)
    log.end_flush(second, None)
    assert log.durable_offset == 1 and log.failure is None
    log.flush()  # owes the directory: this round syncs it, and covers everything
    assert log.durable_offset == 3
    engine.close()
