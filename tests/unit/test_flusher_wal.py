"""The flusher through the shared write-ahead log: one durable write per round, many logs."""

from __future__ import annotations

import asyncio
import errno
import logging
import os

import pytest

from roost.clock import ManualClock
from roost.errors import StorageFailure
from roost.server.flusher import Flusher
from roost.storage import LocalEngine, Record
from roost.storage.wal import WAL_DIRECTORY, WAL_SUFFIX
from tests.fault_fs import FaultFS, log_values
from tests.unit.test_repair import repair

QUEUES = 40


def wal_files(data_dir: str) -> list[str]:
    return sorted(
        n for n in os.listdir(os.path.join(data_dir, WAL_DIRECTORY)) if n.endswith(WAL_SUFFIX)
    )


def test_a_round_over_many_logs_is_one_wal_write_and_no_sync_per_log(
    data_dir: str, clock: ManualClock
) -> None:
    engine = LocalEngine.open(data_dir, clock)
    logs = [engine.create_topic(f"q{i}").log(0) for i in range(QUEUES)]
    journal = engine.journal("j")
    journal.recover()

    async def main() -> Flusher:
        flusher = Flusher(clock, wal=engine.wal)
        engine.on_dirty = flusher.notify
        for round_ in range(3):
            appended = [log.append([Record(value=b"%d %s" % (round_, log.topic.encode()))])
                        for log in logs]  # fmt: skip
            journal.append([b"entry %d" % round_])
            await asyncio.gather(*(flusher.wait_durable(log, a.next_offset)
                                   for log, a in zip(logs, appended, strict=True)))  # fmt: skip
        await flusher.wait_durable(journal.log, journal.log.end_offset)
        await flusher.aclose()
        return flusher

    flusher = asyncio.run(main())
    assert flusher.meters.wal_writes >= 1
    assert flusher.rounds < 3 * QUEUES, "the logs of a turn share rounds"
    # A round of one log writes that log as without a WAL (under load a round may start from
    # inside an append): either way, one device write a round, never one per log. Besides:
    # each new log's first round syncs the three directory entries its first write made
    # (lazy creation: topics/, topics/q/, topics/q/0/; the journal's likewise), once.
    new_log_directories = 3 * (QUEUES + 1)
    assert flusher.meters.syncs == flusher.rounds + new_log_directories, "no sync per log"
    assert flusher.meters.records >= 3 * QUEUES + 3
    engine.close(clean=False)  # as a crash would: the segments were never synced

    engine = LocalEngine.open(data_dir, clock)
    for i in range(QUEUES):
        assert log_values(engine.topic(f"q{i}").log(0)) == [b"%d q%d" % (r, i) for r in range(3)]
    assert engine.journal("j").recover() == (None, [b"entry 0", b"entry 1", b"entry 2"])
    engine.close()


def test_checkpoints_keep_the_wal_small_and_a_clean_close_leaves_nothing_to_replay(
    data_dir: str, clock: ManualClock
) -> None:
    engine = LocalEngine.open(data_dir, clock)
    assert engine.wal is not None
    engine.wal.checkpoint_bytes = 4096  # a round or two per WAL file
    logs = [engine.create_topic(f"q{i}").log(0) for i in range(4)]

    async def main() -> None:
        flusher = Flusher(clock, wal=engine.wal)
        engine.on_dirty = flusher.notify
        for _ in range(30):
            appended = [log.append([Record(value=b"x" * 1000)]) for log in logs]
            await asyncio.gather(*(flusher.wait_durable(log, a.next_offset)
                                   for log, a in zip(logs, appended, strict=True)))  # fmt: skip
            await flusher.checkpoint_idle()
            assert len(wal_files(data_dir)) <= 3, "old WAL files are checkpointed away"
        await flusher.aclose()

    asyncio.run(main())
    assert engine.wal.checkpoints >= 2, "rounds moved to new WAL files, old ones went"
    engine.close()
    assert wal_files(data_dir) == [], "a clean close checkpoints everything"
    engine = LocalEngine.open(data_dir, clock)
    assert engine.recovery.clean_shutdown
    assert not any(log.log == "write-ahead log" for log in engine.recovery.logs)
    for i in range(4):
        assert log_values(engine.topic(f"q{i}").log(0)) == [b"x" * 1000] * 30
    engine.close()


def test_a_failed_wal_write_fails_every_log_in_the_round_and_leaves_no_hole(
    data_dir: str, clock: ManualClock
) -> None:
    """Journals: their bytes reach the OS at append time, so only the WAL makes them durable
    (one held-back log alone is written as without a WAL)."""
    fs = FaultFS()
    engine = LocalEngine.open(data_dir, clock, fs)
    journals = [engine.journal(f"j{i}") for i in range(3)]
    logs = [journal.log for journal in journals]

    async def main() -> None:
        flusher = Flusher(clock, wal=engine.wal)
        engine.on_dirty = flusher.notify

        async def append_everywhere(entry: bytes) -> list[BaseException | None]:
            ends = [journal.append([entry]) for journal in journals]
            return await asyncio.gather(
                *(flusher.wait_durable(log, end) for log, end in zip(logs, ends, strict=True)),
                return_exceptions=True,
            )

        assert await append_everywhere(b"kept") == [None] * 3
        fault = fs.arm("pwrite", errno.EIO, match=f"/{WAL_DIRECTORY}/", tear=True, times=-1)
        outcomes = await append_everywhere(b"lost")
        assert fault.hits >= 1
        assert all(isinstance(o, StorageFailure) for o in outcomes), "nothing confirmed"
        assert all(log.failure is not None for log in logs), "every log in the round failed"
        fs.disarm()
        for log in logs:
            assert repair(log)
        assert await append_everywhere(b"again") == [None] * 3
        await flusher.aclose()

    asyncio.run(main())
    engine.close(clean=False)
    engine = LocalEngine.open(data_dir, clock)
    for i in range(3):
        _, entries = engine.journal(f"j{i}").recover()
        assert entries[0] == b"kept" and entries[-1] == b"again" and len(entries) in (2, 3), (
            "what was confirmed, and the unconfirmed entry only if a process crash kept it"
        )
    (wal_report,) = [log for log in engine.recovery.logs if log.log == "write-ahead log"]
    assert not [p for p in wal_report.problems if "damaged" in p], (
        "the next round wrote where the failed one was: no hole for replay to call damage"
    )
    engine.close()


def test_check_says_what_the_wal_will_replay_after_a_crash(
    data_dir: str, clock: ManualClock
) -> None:
    from roost.storage.check import check_directory

    engine = LocalEngine.open(data_dir, clock)
    journal = engine.journal("j")  # only the WAL makes its entries durable

    async def main() -> None:
        flusher = Flusher(clock, wal=engine.wal)
        engine.on_dirty = flusher.notify
        await flusher.wait_durable(journal.log, journal.append([b"in the WAL"]))
        await flusher.aclose()

    asyncio.run(main())
    engine.close(clean=False)
    report = check_directory(data_dir)
    (wal,) = [store for store in report.stores if store.kind == "wal"]
    assert wal.bytes > len(b"in the WAL") and "replays them" in wal.notes[0]
    assert report.ok, "pending records are no damage"
    LocalEngine.open(data_dir, clock).close()
    assert not [s for s in check_directory(data_dir).stores if s.kind == "wal"], "replayed"


def test_check_repair_replays_the_wal_before_it_cuts(data_dir: str, clock: ManualClock) -> None:
    from roost.storage.check import check_directory, repair_directory

    engine = LocalEngine.open(data_dir, clock)
    journal = engine.journal("j")  # only the WAL makes its entries durable
    segment = os.path.join(journal.log.directory, "00000000000000000000.log")

    async def main() -> None:
        flusher = Flusher(clock, wal=engine.wal)
        engine.on_dirty = flusher.notify
        await flusher.wait_durable(journal.log, journal.append([b"only in the WAL, for sure"]))
        await flusher.aclose()

    asyncio.run(main())
    engine.close(clean=False)
    size = os.path.getsize(segment)
    os.truncate(segment, size // 2)  # what a power cut may leave of a write never synced
    repair_directory(data_dir, check_directory(data_dir))
    assert os.path.getsize(segment) == size, "the WAL's record was replayed into the segment"
    assert wal_files(data_dir) == [], "and the WAL emptied, its files synced"
    engine = LocalEngine.open(data_dir, clock)
    assert engine.journal("j").recover() == (None, [b"only in the WAL, for sure"])
    engine.close()


def test_a_failed_checkpoint_keeps_its_wal_files_and_is_tried_again_a_second_later(
    data_dir: str, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    fs = FaultFS()
    engine = LocalEngine.open(data_dir, clock, fs)
    assert engine.wal is not None
    engine.wal.checkpoint_bytes = 1  # every round moves to a new WAL file
    journal = engine.journal("j")  # only the WAL makes its entries durable

    async def main() -> None:
        flusher = Flusher(clock, wal=engine.wal)
        engine.on_dirty = flusher.notify

        async def publish(value: bytes) -> None:
            await flusher.wait_durable(journal.log, journal.append([value]))
            await flusher.checkpoint_idle()

        fault = fs.arm("fdatasync", errno.EIO, match="/journals/j/", times=-1)
        for i in range(5):
            await publish(b"%d" % i)
        assert fault.hits == 1, "one try, then none a round while the cause lasts"
        assert len(wal_files(data_dir)) >= 3, "the old WAL files stay"
        assert engine.wal is not None
        assert (engine.wal.checkpoint_failures, engine.wal.checkpoints) == (1, 0)
        fs.disarm()
        clock.advance(1000)
        await publish(b"after")
        await publish(b"and after")
        assert len(wal_files(data_dir)) <= 2, "the next checkpoint took them"
        assert engine.wal.checkpoint_failures == 1 and engine.wal.checkpoints >= 1
        await flusher.aclose()

    with caplog.at_level(logging.WARNING, logger="roost.flusher"):
        asyncio.run(main())
    assert [r.message for r in caplog.records].count(
        "a WAL checkpoint failed (its WAL files stay): [Errno 5] injected EIO on fdatasync"
    ) == 1
    engine.close()
    engine = LocalEngine.open(data_dir, clock)
    _, entries = engine.journal("j").recover()
    assert entries == [b"0", b"1", b"2", b"3", b"4", b"after", b"and after"]
    engine.close()
