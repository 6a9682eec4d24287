"""The group-commit flusher and the three durability policies."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections.abc import Awaitable, Callable, Iterator

import pytest

from roost.clock import ManualClock
from roost.server import flusher as flusher_module
from roost.server.flusher import INLINE_MAX_BYTES, SLOW_SYNC_NS, Flusher
from roost.storage import LocalEngine, Record, TopicConfig
from roost.storage.log import PartitionLog


@pytest.fixture(autouse=True)
def quick_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """No sync counts as slow: where rounds run must not hang on this machine's disk."""
    monkeypatch.setattr(flusher_module, "SLOW_SYNC_NS", 10**12)


@pytest.fixture(params=["loop", "thread"])
def inline_max_bytes(request: pytest.FixtureRequest) -> int:
    """Small rounds on the loop (the default), or every round in the thread."""
    return INLINE_MAX_BYTES if request.param == "loop" else 0


def report_sync_times(monkeypatch: pytest.MonkeyPatch, took: Iterator[int]) -> None:
    """Rounds write and sync for real but report the durations ``took`` gives, in order,
    judged against the real ``SLOW_SYNC_NS``."""
    real_run_jobs = flusher_module._run_jobs

    def timed(jobs):
        errors, _ = real_run_jobs(jobs)
        return errors, next(took)

    monkeypatch.setattr(flusher_module, "_run_jobs", timed)
    monkeypatch.setattr(flusher_module, "SLOW_SYNC_NS", SLOW_SYNC_NS)


def hold_syncs(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """Each flush job, once started, waits for ``release``; ``syncing`` says one has started."""
    from roost.storage.flush import FlushJob

    syncing, release = threading.Event(), threading.Event()
    real_run = FlushJob.run

    def held(self: FlushJob) -> None:
        syncing.set()
        release.wait(5)
        real_run(self)

    monkeypatch.setattr(FlushJob, "run", held)
    return syncing, release


def made(log: PartitionLog) -> PartitionLog:
    """``log`` with its files made and their directory entries synced, as after its first
    round: a new log makes them on its first write (lazy creation), and the round that
    follows syncs them (in the thread), which would decide where these tests' rounds run."""
    log.make_files()
    log.flush()
    return log


def run(
    engine: LocalEngine,
    clock: ManualClock,
    body: Callable[[Flusher], Awaitable[None]],
    inline_max_bytes: int = INLINE_MAX_BYTES,
) -> Flusher:
    async def main() -> Flusher:
        flusher = Flusher(clock, inline_max_bytes=inline_max_bytes)
        engine.on_dirty = flusher.notify
        try:
            await body(flusher)
        finally:
            await flusher.aclose()
        return flusher

    return asyncio.run(main())


def test_always_confirms_only_after_fsync_and_shares_fsyncs(
    engine: LocalEngine, clock: ManualClock, inline_max_bytes: int
) -> None:
    log = made(engine.create_topic("t").log(0))
    confirmed: list[int] = []

    async def producer(n: int) -> None:
        for i in range(n):
            result = log.append([Record(value=b"%d" % i)])
            assert log.durable_offset < result.next_offset
            await flusher_ref[0].wait_durable(log, result.next_offset)
            assert log.durable_offset >= result.next_offset
            confirmed.append(result.base_offset)

    flusher_ref: list[Flusher] = []

    async def body(flusher: Flusher) -> None:
        flusher_ref.append(flusher)
        await asyncio.gather(*(producer(20) for _ in range(32)))

    flusher = run(engine, clock, body, inline_max_bytes)
    assert sorted(confirmed) == list(range(640))
    assert log.durable_offset == log.end_offset == 640
    assert flusher.rounds < 640 / 4, "concurrent appends must share fsyncs"


def test_records_held_back_for_the_flush_are_readable_before_it(
    engine: LocalEngine, clock: ManualClock, inline_max_bytes: int
) -> None:
    log = made(engine.create_topic("t").log(0))

    async def body(flusher: Flusher) -> None:
        result = log.append([Record(value=b"early")])
        assert [r.value for r in log.read(0)] == [b"early"]
        await flusher.wait_durable(log, result.next_offset)
        assert [r.value for r in log.read(0)] == [b"early"]

    run(engine, clock, body, inline_max_bytes)


def test_interval_flushes_on_the_timer_or_the_record_count(
    engine: LocalEngine, clock: ManualClock
) -> None:
    config = TopicConfig(durability="interval", flush_interval_ms=500, flush_interval_records=5)
    log = made(engine.create_topic("t", config).log(0))

    async def body(flusher: Flusher) -> None:
        log.append([Record(value=b"a")])
        assert not flusher.flush_due()
        clock.advance(499)
        assert not flusher.flush_due()
        clock.advance(1)
        assert flusher.flush_due()
        await flusher.idle()
        assert log.durable_offset == 1

        for _ in range(4):
            log.append([Record(value=b"b")])
        await flusher.idle()
        assert log.durable_offset == 1, "4 records: below the threshold, within the interval"
        log.append([Record(value=b"c")])  # the fifth: flushed at once
        await flusher.idle()
        assert log.durable_offset == 6

    run(engine, clock, body)


def test_never_is_not_flushed_until_close(
    data_dir: str, engine: LocalEngine, clock: ManualClock
) -> None:
    log = made(engine.create_topic("t", TopicConfig(durability="never")).log(0))

    async def body(flusher: Flusher) -> None:
        log.append([Record(value=b"a")])
        clock.advance(10_000_000)
        assert not flusher.flush_due()
        await flusher.idle()

    flusher = run(engine, clock, body)
    assert flusher.rounds == 0
    assert log.durable_offset == 0
    engine.close()
    reopened = LocalEngine.open(data_dir, clock)
    assert reopened.topic("t").read(0, 0)[0].value == b"a"
    reopened.close()


def test_aclose_flushes_interval_logs(engine: LocalEngine, clock: ManualClock) -> None:
    log = made(engine.create_topic("t", TopicConfig(durability="interval")).log(0))

    async def body(flusher: Flusher) -> None:
        log.append([Record(value=b"a")])

    run(engine, clock, body)
    assert log.durable_offset == 1


def test_a_cancelled_waiter_does_not_disturb_the_others(
    engine: LocalEngine, clock: ManualClock, inline_max_bytes: int
) -> None:
    log = made(engine.create_topic("t").log(0))

    async def body(flusher: Flusher) -> None:
        first = log.append([Record(value=b"a")])
        second = log.append([Record(value=b"b")])
        doomed = asyncio.create_task(flusher.wait_durable(log, first.next_offset))
        survivor = asyncio.create_task(flusher.wait_durable(log, second.next_offset))
        await asyncio.sleep(0)
        doomed.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await doomed
        await survivor
        assert log.durable_offset == 2

    run(engine, clock, body, inline_max_bytes)


def test_wait_durable_returns_at_once_when_already_durable(
    engine: LocalEngine, clock: ManualClock
) -> None:
    log = made(engine.create_topic("t").log(0))
    log.append([Record(value=b"a")])
    log.flush()

    async def body(flusher: Flusher) -> None:
        await flusher.wait_durable(log, 1)
        await flusher.wait_durable(log, 0)

    flusher = run(engine, clock, body)
    assert flusher.rounds == 0


def test_several_logs_share_a_round(
    engine: LocalEngine, clock: ManualClock, inline_max_bytes: int
) -> None:
    logs = [made(engine.create_topic(f"t{i}").log(0)) for i in range(5)]

    async def body(flusher: Flusher) -> None:
        results = [log.append([Record(value=b"x")]) for log in logs]
        await asyncio.gather(
            *(
                flusher.wait_durable(log, r.next_offset)
                for log, r in zip(logs, results, strict=True)
            )
        )

    flusher = run(engine, clock, body, inline_max_bytes)
    assert flusher.rounds <= 2
    assert all(log.durable_offset == 1 for log in logs)


def test_journal_logs_use_the_same_flusher(engine: LocalEngine, clock: ManualClock) -> None:
    journal = engine.journal("cursors")

    async def body(flusher: Flusher) -> None:
        seq = journal.append([b"a", b"b"])
        await flusher.wait_durable(journal.log, seq)
        assert journal.log.durable_offset == 2

    run(engine, clock, body)


def test_overlapping_jobs_apply_in_order(engine: LocalEngine) -> None:
    log = made(engine.create_topic("t").log(0))
    log.on_dirty = lambda _log, _urgent: None  # as if a flusher were attached: write-behind
    log.append([Record(value=b"a")])
    first = log.begin_flush()
    log.append([Record(value=b"b")])
    second = log.begin_flush()
    assert first is not None and second is not None
    second.run()
    log.end_flush(second, None)
    assert log.durable_offset == 0, "b is durable only once a is"
    assert [r.value for r in log.read(0)] == [b"a", b"b"]
    first.run()
    log.end_flush(first, None)
    assert log.durable_offset == 2


def test_two_rounds_in_flight_confirm_everything(engine: LocalEngine, clock: ManualClock) -> None:
    log = made(engine.create_topic("t").log(0))

    async def main() -> int:
        flusher = Flusher(clock, max_rounds=2, inline_max_bytes=0)
        engine.on_dirty = flusher.notify

        async def producer() -> None:
            for _ in range(30):
                result = log.append([Record(value=b"x")])
                await flusher.wait_durable(log, result.next_offset)

        await asyncio.gather(*(producer() for _ in range(16)))
        await flusher.aclose()
        return flusher.rounds

    asyncio.run(main())
    assert log.durable_offset == log.end_offset == 480
    assert len(log.read(0, max_records=1000)) == 480


def test_a_round_that_raises_fails_its_waiters_instead_of_leaving_them_waiting(
    engine: LocalEngine, clock: ManualClock, monkeypatch, inline_max_bytes: int
) -> None:
    from roost.errors import StorageFailure
    from roost.storage.flush import FlushJob

    def broken(self: FlushJob) -> None:
        raise RuntimeError("a bug in the sync")

    monkeypatch.setattr(FlushJob, "run", broken)
    log = engine.create_topic("t").log(0)

    async def body(flusher: Flusher) -> None:
        result = log.append([Record(value=b"x")])
        with contextlib.suppress(StorageFailure, RuntimeError):
            await asyncio.wait_for(flusher.wait_durable(log, result.next_offset), 5)
            raise AssertionError("confirmed without a sync")
        assert log.durable_offset == 0

    run(engine, clock, body, inline_max_bytes)


async def _flushed_once(engine: LocalEngine, clock: ManualClock) -> Flusher:
    """A flusher attached to ``engine`` that has synced one append (its thread is running)."""
    flusher = Flusher(clock, inline_max_bytes=0)
    engine.on_dirty = flusher.notify
    log = engine.topic("t").log(0)
    result = log.append([Record(value=b"a")])
    await flusher.wait_durable(log, result.next_offset)
    return flusher


def test_a_flusher_that_is_closed_refuses_to_wait_instead_of_hanging(
    engine: LocalEngine, clock: ManualClock
) -> None:
    from roost.errors import StorageClosed

    log = made(engine.create_topic("t").log(0))

    async def main() -> None:
        flusher = await _flushed_once(engine, clock)
        await flusher.aclose()
        late = log.append([Record(value=b"b")])  # a publish still in flight at shutdown
        with contextlib.suppress(StorageClosed):
            await asyncio.wait_for(flusher.wait_durable(log, late.next_offset), 5)
            raise AssertionError("confirmed by a closed flusher")

    asyncio.run(main())


def test_a_flusher_dropped_without_aclose_leaks_no_thread(
    engine: LocalEngine, clock: ManualClock
) -> None:
    import gc
    import threading

    engine.create_topic("t")

    async def main() -> None:
        await _flushed_once(engine, clock)
        engine.on_dirty = None

    asyncio.run(main())
    gc.collect()
    for thread in threading.enumerate():
        if thread.name.startswith("roost-fsync"):
            thread.join(5)
            assert not thread.is_alive(), "the fsync thread outlived its flusher"


# -- where a round runs ---------------------------------------------------------------------


def test_small_always_rounds_run_on_the_loop(engine: LocalEngine, clock: ManualClock) -> None:
    log = made(engine.create_topic("t").log(0))

    async def body(flusher: Flusher) -> None:
        for i in range(3):
            result = log.append([Record(value=b"%d" % i)])
            await flusher.wait_durable(log, result.next_offset)

    flusher = run(engine, clock, body)
    assert flusher.rounds == flusher.meters.rounds_on_loop == 3
    assert log.durable_offset == 3
    assert [r.value for r in log.read(0)] == [b"0", b"1", b"2"]


def test_a_round_on_the_loop_covers_every_append_of_the_turn(
    engine: LocalEngine, clock: ManualClock, inline_max_bytes: int
) -> None:
    """It starts at the end of the turn; a thread's round starts inside the first append."""
    log = made(engine.create_topic("t").log(0))

    async def body(flusher: Flusher) -> None:
        results = [log.append([Record(value=b"x")]) for _ in range(10)]  # one turn
        await asyncio.gather(*(flusher.wait_durable(log, r.next_offset) for r in results))

    flusher = run(engine, clock, body, inline_max_bytes)
    assert flusher.rounds == (1 if inline_max_bytes else 2)


def test_what_may_take_long_goes_to_the_thread_and_the_rest_stays_on_the_loop(
    engine: LocalEngine, clock: ManualClock
) -> None:
    interval = made(engine.create_topic("i", TopicConfig(durability="interval")).log(0))
    big = made(engine.create_topic("big").log(0))
    many = [made(engine.create_topic(f"m{i}").log(0)) for i in range(5)]
    placed: list[tuple[int, int]] = []  # (rounds, of them on the loop) after each step

    async def main() -> None:
        flusher = Flusher(clock, inline_max_bytes=4096)
        engine.on_dirty = flusher.notify

        def step() -> None:
            placed.append((flusher.rounds, flusher.meters.rounds_on_loop))

        # Written through at append time: its round is an fdatasync.
        result = interval.append([Record(value=b"x")])
        await flusher.wait_durable(interval, result.next_offset)
        step()
        # More bytes than a round on the loop may write.
        result = big.append([Record(value=bytes(8192))])
        await flusher.wait_durable(big, result.next_offset)
        step()
        # More files than a round on the loop may write to: four stay, the fifth goes; and an
        # fdatasync due at the same time goes to the thread beside them.
        results = [log.append([Record(value=b"x")]) for log in many]
        result = interval.append([Record(value=b"y")])
        await flusher.wait_durable(interval, result.next_offset)
        for log, r in zip(many, results, strict=True):
            await flusher.wait_durable(log, r.next_offset)
        step()
        await flusher.aclose()

    asyncio.run(main())
    assert placed == [(1, 0), (2, 0), (4, 1)]
    assert interval.durable_offset == 2 and big.durable_offset == 1
    assert all(log.durable_offset == 1 for log in many)


def test_a_slow_sync_sends_rounds_to_the_thread_until_a_small_one_is_quick(
    engine: LocalEngine, clock: ManualClock, monkeypatch
) -> None:
    """A disk that stalls blocks the loop once, not once per round."""
    report_sync_times(monkeypatch, iter([SLOW_SYNC_NS, SLOW_SYNC_NS, SLOW_SYNC_NS - 1, 0]))
    places: list[str] = []
    loop_rounds = [0]
    log = made(engine.create_topic("t").log(0))

    async def body(flusher: Flusher) -> None:
        for _ in range(4):
            result = log.append([Record(value=b"x")])
            await flusher.wait_durable(log, result.next_offset)
            on_loop = flusher.meters.rounds_on_loop > loop_rounds[0]
            places.append("loop" if on_loop else "thread")
            loop_rounds[0] = flusher.meters.rounds_on_loop

    run(engine, clock, body)
    # slow on the loop -> slow in the thread -> quick in the thread -> back on the loop
    assert places == ["loop", "thread", "thread", "loop"]
    assert log.durable_offset == 4


def test_a_quick_round_bigger_than_a_small_one_ends_the_slow_disk(
    engine: LocalEngine, clock: ManualClock, monkeypatch
) -> None:
    """With more logs due than a round on the loop takes, no round in the thread is small:
    one that is quick must still bring the small rounds back to the loop."""
    real_run_jobs = flusher_module._run_jobs
    took = iter([SLOW_SYNC_NS, SLOW_SYNC_NS, 0, 0])
    in_thread = threading.Event()  # the thread's rounds wait for it

    def timed(jobs):
        if threading.current_thread() is not threading.main_thread():
            assert in_thread.wait(5)
        errors, _ = real_run_jobs(jobs)
        return errors, next(took)

    monkeypatch.setattr(flusher_module, "_run_jobs", timed)
    monkeypatch.setattr(flusher_module, "SLOW_SYNC_NS", SLOW_SYNC_NS)
    logs = [made(engine.create_topic(f"t{i}").log(0)) for i in range(5)]
    on_loop: list[int] = []

    async def body(flusher: Flusher) -> None:
        result = logs[0].append([Record(value=b"x")])  # slow, on the loop: the disk is slow
        await flusher.wait_durable(logs[0], result.next_offset)
        on_loop.append(flusher.meters.rounds_on_loop)
        first = logs[0].append([Record(value=b"x")])  # slow, in the thread, held there...
        results = [log.append([Record(value=b"y")]) for log in logs]  # ... while all 5 wait
        in_thread.set()
        await flusher.wait_durable(logs[0], first.next_offset)
        for log, r in zip(logs, results, strict=True):  # one round of 5 logs, quick
            await flusher.wait_durable(log, r.next_offset)
        on_loop.append(flusher.meters.rounds_on_loop)
        result = logs[0].append([Record(value=b"z")])
        await flusher.wait_durable(logs[0], result.next_offset)
        on_loop.append(flusher.meters.rounds_on_loop)

    flusher = run(engine, clock, body)
    assert flusher.rounds == 4
    assert on_loop == [1, 1, 2], "after a quick round the next small one runs on the loop"


def test_a_round_on_the_loop_is_not_charged_with_a_wait_for_the_thread(
    engine: LocalEngine, clock: ManualClock, monkeypatch
) -> None:
    """append_latency: a loop round that runs while a journal's fdatasync waits for the busy
    thread observes its own appends' wait, not the journal's."""
    now_ns = [0]

    class FakeTime:
        @staticmethod
        def perf_counter_ns() -> int:
            return now_ns[0]

    monkeypatch.setattr(flusher_module, "time", FakeTime)
    in_thread = threading.Event()
    real_run_jobs = flusher_module._run_jobs

    def held(jobs):
        if threading.current_thread() is not threading.main_thread():
            assert in_thread.wait(5)
        return real_run_jobs(jobs)

    monkeypatch.setattr(flusher_module, "_run_jobs", held)
    journal = engine.journal("cursors")  # written through: its rounds go to the thread
    log = made(engine.create_topic("t").log(0))

    async def body(flusher: Flusher) -> None:
        first = asyncio.create_task(flusher.wait_durable(journal.log, journal.append([b"a"])))
        for _ in range(3):
            await asyncio.sleep(0)
        assert flusher.rounds == 0 and journal.log.unflushed_records == 0  # held in the thread
        now_ns[0] = 100_000_000
        second = asyncio.create_task(flusher.wait_durable(journal.log, journal.append([b"b"])))
        for _ in range(3):
            await asyncio.sleep(0)
        assert journal.log.unflushed_records == 1  # due, but the thread is busy: it waits
        now_ns[0] = 200_000_000
        before = flusher.meters.append_latency.sum
        result = log.append([Record(value=b"x")])
        await flusher.wait_durable(log, result.next_offset)  # on the loop, at once
        assert flusher.meters.rounds_on_loop == 1
        assert flusher.meters.append_latency.sum == before == 0
        in_thread.set()
        await first
        await second

    run(engine, clock, body)


def test_a_failed_job_does_not_lose_track_of_a_later_one_still_running(
    engine: LocalEngine, clock: ManualClock, monkeypatch
) -> None:
    """max_rounds=2: a log's first job fails while its second still runs in the other thread."""
    import errno

    from roost.errors import StorageFailure
    from roost.storage.flush import FlushJob

    real_run = FlushJob.run
    second_may_run = threading.Event()

    log = made(engine.create_topic("t").log(0))
    other = made(engine.create_topic("o").log(0))

    def run_job(self: FlushJob) -> None:
        if self.segments[0].directory == log.directory:
            if self.end_offset == 1:
                raise OSError(errno.EIO, "injected")
            assert second_may_run.wait(5)
        real_run(self)

    monkeypatch.setattr(FlushJob, "run", run_job)

    async def main() -> None:
        flusher = Flusher(clock, max_rounds=2, inline_max_bytes=0)
        engine.on_dirty = flusher.notify
        first = log.append([Record(value=b"a")])  # round 1: fails
        log.append([Record(value=b"b"), Record(value=b"c")])  # round 2, beside it: held
        with pytest.raises(StorageFailure):
            await asyncio.wait_for(flusher.wait_durable(log, first.next_offset), 5)
        late = other.append([Record(value=b"x")])  # smaller than round 2: waits for it
        second_may_run.set()
        await asyncio.wait_for(flusher.wait_durable(other, late.next_offset), 5)
        await asyncio.wait_for(flusher.aclose(), 5)

    asyncio.run(main())
    assert other.durable_offset == 1


def test_a_slow_round_in_the_thread_keeps_small_rounds_on_the_loop(
    engine: LocalEngine, clock: ManualClock, monkeypatch
) -> None:
    """A thread's timing includes its waits for the GIL: it never says the disk is slow."""
    report_sync_times(monkeypatch, itertools.repeat(SLOW_SYNC_NS * 10))
    interval = made(engine.create_topic("i", TopicConfig(durability="interval")).log(0))
    log = made(engine.create_topic("t").log(0))

    async def body(flusher: Flusher) -> None:
        result = interval.append([Record(value=b"x")])  # an fdatasync: the thread's
        await flusher.wait_durable(interval, result.next_offset)
        assert flusher.meters.rounds_on_loop == 0
        result = log.append([Record(value=b"x")])
        await flusher.wait_durable(log, result.next_offset)
        assert flusher.meters.rounds_on_loop == 1

    run(engine, clock, body)


def test_a_log_deleted_before_its_round_fails_its_waiters_instead_of_hanging(
    engine: LocalEngine, clock: ManualClock, inline_max_bytes: int
) -> None:
    from roost.errors import StorageClosed

    log = made(engine.create_topic("t").log(0))

    async def body(flusher: Flusher) -> None:
        result = log.append([Record(value=b"x")])
        engine.delete_topic("t")  # in the append's turn: no round has covered it
        with pytest.raises(StorageClosed):
            await asyncio.wait_for(flusher.wait_durable(log, result.next_offset), 5)

    run(engine, clock, body, inline_max_bytes)


def test_a_log_deleted_while_its_round_runs_fails_its_waiters_instead_of_hanging(
    engine: LocalEngine, clock: ManualClock, monkeypatch
) -> None:
    from roost.errors import StorageClosed

    syncing, deleted = hold_syncs(monkeypatch)
    log = made(engine.create_topic("t").log(0))

    async def body(flusher: Flusher) -> None:
        result = log.append([Record(value=b"x")])
        waiter = asyncio.create_task(flusher.wait_durable(log, result.next_offset))
        await asyncio.to_thread(syncing.wait, 5)  # the thread's round has the job
        engine.delete_topic("t")
        deleted.set()
        with pytest.raises(StorageClosed):
            await asyncio.wait_for(waiter, 5)

    run(engine, clock, body, inline_max_bytes=0)


def test_an_interval_log_due_while_the_thread_is_busy_waits_without_spinning(
    engine: LocalEngine, clock: ManualClock, monkeypatch
) -> None:
    syncing, release = hold_syncs(monkeypatch)
    timer_calls = [0]
    real_on_timer = Flusher._on_timer

    def counted(self: Flusher) -> None:
        timer_calls[0] += 1
        real_on_timer(self)

    monkeypatch.setattr(Flusher, "_on_timer", counted)
    config = TopicConfig(durability="interval", flush_interval_ms=10)
    first = made(engine.create_topic("a", config).log(0))
    second = made(engine.create_topic("b", config).log(0))

    async def body(flusher: Flusher) -> None:
        result = first.append([Record(value=b"x")])
        waiter = asyncio.create_task(flusher.wait_durable(first, result.next_offset))
        await asyncio.to_thread(syncing.wait, 5)  # the thread is busy with ``first``
        second.append([Record(value=b"y")])
        clock.advance(50)  # ``second`` is due now, and must wait for the thread
        # The loop's timer for it runs on the loop's own time (10 ms), not the injected clock:
        # give it that long, then count how often it fired.
        await asyncio.sleep(0.05)
        assert timer_calls[0] <= 2, "the timer spun while the thread was busy"
        release.set()
        await waiter
        await asyncio.wait_for(flusher.wait_durable(second, 1), 5)

    run(engine, clock, body, inline_max_bytes=0)
