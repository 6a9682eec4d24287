"""Group commit: rounds that write and fsync every log with appends waiting to be durable.

Appends happen on the event loop and return at once; a producer that needs durability awaits
``wait_durable(log, offset)``. A flush round takes every log with unsynced appends, starts one
flush job per log (capturing the offset each fsync will cover), runs all the writes and fsyncs,
then advances each log's durable offset and wakes its waiters. Appends that land during a round
are covered by the next one: under load one fsync confirms many appends.

Where a round runs:
- **On the loop**, when it is small and only held-back writes (``always``: at most
  ``INLINE_MAX_WRITES`` ``O_DSYNC`` writes of ``INLINE_MAX_BYTES`` in all, no fdatasync, no
  directory). It starts at the end of the turn that made it due, so the whole turn's appends
  join it. On 2 busy cores the hand-off to a thread and back cost more than the write itself:
  the woken thread waits for a core and for the GIL (put -> running p50 0.15 ms, mean 0.4 ms;
  back on the loop mean 0.25 ms; the write 0.4 ms), and each hand-off is futex and eventfd
  traffic. While the loop waits on the disk, its core serves the clients.
- **In the flusher's thread** otherwise (an fdatasync of written-through data, a directory, many
  files, a big group), beside the loop's round, so the loop keeps taking appends while the disk
  syncs. Every round goes to the thread while the disk is slow (a round on the loop took
  ``SLOW_SYNC_NS`` or more), until a round is that quick again: a disk that stalls costs the
  loop one stall, not one per round. Then a round starts from inside the append that made it
  due, not at the end of the turn.

Through the shared write-ahead log (``wal``: the host passes the engine's; storage/wal.py), a
round is one ``O_DSYNC`` write of every log's bytes to the WAL plus a plain ``pwrite`` per
segment, so a round over any number of logs runs on the loop while it is only bytes (at most
``inline_max_bytes`` and ``WAL_INLINE_MAX_LOGS`` logs); directory syncs still go to the thread.
Rounds then never overlap: the WAL's records must follow each other in the order they were
numbered, so that a torn one can only be the last. Old WAL files are checkpointed (their files
fdatasynced, then removed) in an executor thread beside the rounds.

Each waiter has its own future (so cancelling one disturbs no other); a flush resolves its
waiters in one pass.

Per durability policy (``PartitionLog.on_dirty`` tells the flusher):
- ``always``: flushed as soon as the flusher is free;
- ``interval``: flushed ``flush_interval_ms`` after its first unsynced append, or at once when
  ``flush_interval_records`` is reached;
- ``never``: not flushed here (closing the engine still does).

    flusher = Flusher(clock)                 # inside a running event loop
    engine.on_dirty = flusher.notify
    offsets = topic.append(0, records)
    await flusher.wait_durable(topic.log(0), offsets.next_offset)
    await flusher.aclose()                   # flushes whatever is still due
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable

from roost.clock import Clock
from roost.errors import StorageClosed, StorageFailure
from roost.server.meters import FlushMeters
from roost.storage.flush import FlushJob
from roost.storage.log import PartitionLog
from roost.storage.wal import Wal, WalWrite

_log = logging.getLogger("roost.flusher")

Waiters = list[asyncio.Future[None]]


#: Rounds that may run at once. This disk syncs two groups side by side 1.3x faster than one
#: after the other, yet on 2 cores two rounds measured slower end to end (38k vs 45k appends/s
#: with 64 appenders): the rounds get smaller and each costs ~50 us of CPU in thread hand-offs,
#: and the CPU, not the disk, is what runs out. One, until a machine shows otherwise.
DEFAULT_MAX_ROUNDS = 1
#: A round runs on the loop when it is only held-back writes, at most this many bytes...
INLINE_MAX_BYTES = 512 * 1024
#: ... into at most this many files (each O_DSYNC write is a device flush of its own).
INLINE_MAX_WRITES = 4
#: Through the WAL, a round on the loop takes at most this many logs (each a plain pwrite).
WAL_INLINE_MAX_LOGS = 256
#: After a failed WAL checkpoint, the next waits this long (a round ends many times a second).
CHECKPOINT_RETRY_MS = 1000
#: A round on the loop that took this long means the disk is slow now: the thread takes the
#: rounds until one is that quick again.
SLOW_SYNC_NS = 4_000_000


class Flusher:
    def __init__(
        self,
        clock: Clock,
        max_rounds: int = DEFAULT_MAX_ROUNDS,
        inline_max_bytes: int = INLINE_MAX_BYTES,
        wal: Wal | None = None,
    ) -> None:
        self._clock = clock
        self._loop = asyncio.get_running_loop()
        #: The engine's shared write-ahead log: with it, a round is one O_DSYNC write of every
        #: log's bytes plus plain pwrites, and rounds run one at a time (see the module doc).
        self._wal = wal
        self._checkpoint: asyncio.Future[None] | None = None
        self._checkpoint_retry_ms = 0  # after a failed checkpoint: not before then
        self._max_rounds = 1 if wal is not None else max_rounds
        self._inline_max_bytes = inline_max_bytes  # 0: every round goes to the thread
        self._disk_slow = False
        self._loop_round_due = False  # a round starts on the loop at the end of this turn
        # Rounds go to the fsync threads through a queue, and each thread hands its outcome
        # straight back with call_soon_threadsafe: one loop turn after the sync, where an
        # executor's future took two (its own callback, then the asyncio future's).
        self._rounds_queue: queue.SimpleQueue[_Round | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []  # started as rounds first need them
        # Logs to flush at once (ordered), each with when it first asked, by
        # ``time.perf_counter_ns`` (None: not known, not observed): per log, because a round
        # on the loop and one in the thread may each take part of them.
        self._urgent: dict[PartitionLog, int | None] = {}
        self._deadlines: dict[PartitionLog, int] = {}  # interval logs: monotonic ms
        # Waiters for appends no job covers yet, and per job in flight, oldest job first.
        self._waiting: dict[PartitionLog, Waiters] = {}
        self._in_flight: dict[PartitionLog, list[tuple[FlushJob, Waiters]]] = {}
        self._rounds = 0  # in the threads now
        self._round_records = 0  # records in the round started last
        self._round_done = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._stopped = False  # closed, and its threads are gone: nothing can be synced
        #: Flush rounds completed; a round syncs every log that was due when it started.
        self.rounds = 0
        #: Per round, for /metrics. Latencies are measured with ``time.perf_counter_ns``, not
        #: the injected clock: they describe the disk (the only thing they decide is whether
        #: small rounds stay on the loop), and the clock's milliseconds are too coarse for an
        #: fsync.
        self.meters = FlushMeters()

    def notify(self, log: PartitionLog, urgent: bool) -> None:
        """``PartitionLog.on_dirty``: ``log`` has appends to sync, now or within its interval."""
        if urgent:
            if self._urgent.get(log) is None:  # read once per log and round, not per append
                self._urgent[log] = time.perf_counter_ns()
            self.flush_due()
        elif log not in self._deadlines:
            self._deadlines[log] = self._clock.monotonic_ms() + log.config.flush_interval_ms
            self._arm_timer()

    async def wait_durable(self, log: PartitionLog, offset: int) -> None:
        """Return once every record below ``offset`` in ``log`` is durable.

        Raises the log's ``StorageFailure`` if a write or fsync failed, ``StorageClosed`` if
        the log was closed or deleted first: those records are not confirmed. Cancelling a
        waiter disturbs neither the flush nor the other waiters.
        """
        while log.durable_offset < offset:
            if log.failure is not None:
                raise log.failure
            if offset > log.end_offset:
                # A repair cut the log back below records this waiter was told of: they will
                # never be durable (an idempotent retry whose state outlived the cut).
                raise StorageFailure(f"{log.name} (records below {offset} were cut by a repair)")
            if log.closed:
                raise StorageClosed(f"{log.topic}/{log.partition} (closed or deleted)")
            if self._stopped:
                raise StorageClosed("the flusher (the host is shut down)")
            future = self._loop.create_future()
            for job, waiters in self._in_flight.get(log, ()):
                if job.end_offset >= offset:
                    waiters.append(future)
                    break
            else:
                self._waiting.setdefault(log, []).append(future)
                if self._urgent.get(log) is None:
                    self._urgent[log] = time.perf_counter_ns()
                self.flush_due()
            await future

    def flush_due(self) -> bool:
        """Start a round for what is due, if one may start; True if one did (or will, on the
        loop, at the end of this turn)."""
        if self._stopped or (self._closed and not self._urgent):
            return False
        if self._loop_round_due:  # every append of a busy turn asks: one look is enough
            return True
        due = self._due()
        if not due:
            return False
        if self._inline_max_bytes and not self._disk_slow:
            # At the end of the turn: what else the turn appends joins the round.
            self._loop_round_due = True
            self._round_done.clear()
            self._loop.call_soon(self._start_on_loop)
            return True
        return self._start_in_thread(due)

    def _start_on_loop(self) -> None:
        """Run the small, writes-only part of what is due here; hand the rest to the thread."""
        self._loop_round_due = False
        try:
            if self._wal is not None:
                self._start_wal_round()
                return
            due = self._due()
            small = [] if self._disk_slow else self._small(due)
            if rest := [log for log in due if log not in small]:
                self._start_in_thread(rest)  # declined while a thread round runs: stays due
            round_ = self._begin(small) if small else None
            if round_ is None:
                return
            round_.on_loop = True
            round_.run()
            self._finish_round(round_)
        finally:
            self._maybe_idle()  # even if starting the thread failed: idle() must not hang

    def _start_wal_round(self) -> None:
        """Through the WAL, rounds never overlap (a record the replay must read may not
        follow one still being written): the small part here, at once, then the rest in the
        thread; nothing while the thread's round runs (its end starts the next)."""
        if self._rounds:
            return
        due = self._due()
        small = [] if self._disk_slow else self._small(due)
        round_ = self._begin(small) if small else None
        if round_ is not None:
            round_.on_loop = True
            round_.run()
            self._finish_round(round_)  # starts the next round, if any is due
        elif rest := [log for log in due if log not in small]:
            self._start_in_thread(rest)

    def _small(self, due: list[PartitionLog]) -> list[PartitionLog]:
        """The logs whose flush is only held-back writes, as many as a round on the loop takes."""
        small: list[PartitionLog] = []
        size = 0
        use_wal = self._wal is not None
        # Through the WAL, a log costs a plain pwrite, not a device flush of its own.
        max_logs = WAL_INLINE_MAX_LOGS if use_wal else INLINE_MAX_WRITES
        for log in due:
            held_back = log.held_back_bytes(use_wal)
            if held_back is None or size + held_back > self._inline_max_bytes:
                continue
            small.append(log)
            size += held_back
            if len(small) == max_logs:
                break
        return small

    def _start_in_thread(self, due: list[PartitionLog]) -> bool:
        if self._rounds >= self._max_rounds:
            return False
        if self._wal is not None and self._loop_round_due:
            return False  # the loop's round comes first, and then starts this one
        if self._rounds and sum(log.unflushed_records for log in due) < self._round_records:
            # Another round runs: join the next one unless this group is as big. Tiny rounds
            # side by side would spend the CPU on hand-offs and the disk on fixed costs.
            return False
        round_ = self._begin(due)
        if round_ is None:
            return False
        self._round_records = sum(job.records for _, job in round_.jobs)
        self._rounds += 1
        self._round_done.clear()
        if len(self._threads) < self._rounds:
            self._start_thread()
        self._rounds_queue.put(round_)
        return True

    def _due(self) -> list[PartitionLog]:
        now_ms = self._clock.monotonic_ms()
        due = list(self._urgent)
        due += [log for log, deadline in self._deadlines.items() if deadline <= now_ms]
        return due

    def _begin(self, logs: list[PartitionLog]) -> _Round | None:
        """Begin a flush job for each of ``logs``; None if none of them has anything to sync."""
        jobs: list[tuple[PartitionLog, FlushJob]] = []
        due_since_ns: int | None = None  # the oldest wait of the logs it syncs
        # One log whose flush is one O_DSYNC write of held-back batches is synced as without a
        # WAL: the WAL would add a write (and a copy) and save none (one queue at a time).
        use_wal = self._wal is not None and (len(logs) != 1 or logs[0].held_back_bytes() is None)
        for log in logs:
            asked_ns = self._urgent.pop(log, None)
            self._deadlines.pop(log, None)
            job = log.begin_flush(use_wal=use_wal)
            if job is None:
                if log not in self._in_flight:
                    self._release(log)
            else:
                self._in_flight.setdefault(log, []).append((job, self._waiting.pop(log, [])))
                jobs.append((log, job))
                if asked_ns is not None and (due_since_ns is None or asked_ns < due_since_ns):
                    due_since_ns = asked_ns
        if not jobs:
            return None
        round_ = _Round(jobs, due_since_ns)
        if use_wal and self._wal is not None:
            round_.wal_write = self._wal.reserve(item for _, job in jobs for item in job.wal_items)
            self._wal.after_sync(point for _, job in jobs for point in job.index_checkpoints)
        return round_

    def _maybe_idle(self) -> None:
        if not self._rounds and not self._loop_round_due:
            self._round_done.set()

    def _start_thread(self) -> None:
        # The thread holds the flusher only weakly, and a flusher dropped without aclose()
        # sends it the stop sentinel: a forgotten flusher leaks no thread, loop or logs.
        thread = threading.Thread(
            target=_sync_rounds,
            args=(self._rounds_queue, self._loop, weakref.WeakMethod(self._finish_round)),
            name=f"roost-fsync-{len(self._threads)}",
            daemon=True,
        )
        thread.start()
        self._threads.append(thread)
        weakref.finalize(self, self._rounds_queue.put, None)

    def _finish_round(self, round_: _Round) -> None:
        if not round_.on_loop:
            self._rounds -= 1
        self.rounds += 1
        jobs, errors, due_since_ns = round_.jobs, round_.errors, round_.due_since_ns
        if round_.sync_ns is not None:
            self.meters.sync_duration.observe(round_.sync_ns / 1e9)
            # Only a round on the loop says the disk is slow: a thread's timing includes its
            # waits for the GIL. Any round as quick as a small one may be says it is not (under
            # load on many logs the thread's rounds are never small again).
            if round_.on_loop:
                self._disk_slow = round_.sync_ns >= SLOW_SYNC_NS
            elif round_.sync_ns < SLOW_SYNC_NS:
                self._disk_slow = False
        if round_.on_loop:
            self.meters.rounds_on_loop += 1
        for (log, job), job_error in zip(jobs, errors, strict=True):
            log.end_flush(job, job_error)
            self._wake_covered(log)
            if log in self._waiting:
                self._urgent.setdefault(log, None)
            if job_error is None:
                self.meters.syncs += len(job.writes) * job.writes_sync
                self.meters.syncs += len(job.fds) + len(job.parents)
                self.meters.syncs += job.directory is not None
                self.meters.records += job.records
        if round_.wal_write is not None and not round_.wal_failed:
            self.meters.syncs += 1
            self.meters.wal_writes += 1
        elif round_.wal_write is not None and self._wal is not None:
            self._wal.write_failed(round_.wal_write)
        if due_since_ns is not None:  # None: only interval logs, flushed on their timer
            self.meters.append_latency.observe((time.perf_counter_ns() - due_since_ns) / 1e9)
        self._maybe_idle()
        self._start_checkpoint()
        self.flush_due()
        self._arm_timer()

    def _start_checkpoint(self) -> None:
        """Checkpoint old WAL files in a thread of its own, beside the rounds (wal.py)."""
        if self._wal is None or self._checkpoint is not None or self._stopped:
            return
        if self._clock.monotonic_ms() < self._checkpoint_retry_ms:
            return  # the last one failed: not one a round while the cause lasts
        job = self._wal.checkpoint_job()
        if job is None:
            return
        wal = self._wal
        self._checkpoint = self._loop.run_in_executor(None, job.run)

        def done(future: asyncio.Future[None]) -> None:
            self._checkpoint = None
            error = future.exception()
            if error is not None:
                _log.warning("a WAL checkpoint failed (its WAL files stay): %s", error)
                self._checkpoint_retry_ms = self._clock.monotonic_ms() + CHECKPOINT_RETRY_MS
            wal.checkpoint_done(job, error)

        self._checkpoint.add_done_callback(done)

    def _wake_covered(self, log: PartitionLog) -> None:
        """Wake the waiters of jobs the log has applied (all of them, if it failed or closed)."""
        in_flight = self._in_flight.get(log)
        if in_flight is None:  # it failed, and a round that finished before this one woke all
            return
        while in_flight and (
            in_flight[0][0].end_offset <= log.durable_offset
            or log.failure is not None
            or log.closed
        ):
            _wake_all(in_flight.pop(0)[1])
        if not in_flight:
            del self._in_flight[log]

    def _release(self, log: PartitionLog) -> None:
        """Wake waiters of a log with nothing to flush (they re-check; a failure raises)."""
        _wake_all(self._waiting.pop(log, []))

    def _arm_timer(self) -> None:
        if self._timer is not None or not self._deadlines or self._closed:
            return
        delay_ms = max(0, min(self._deadlines.values()) - self._clock.monotonic_ms())
        if delay_ms == 0 and self._rounds:
            return  # due, and waiting for the thread: its round's end looks again, no spinning
        self._timer = self._loop.call_later(delay_ms / 1000, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.flush_due()
        self._arm_timer()

    def forget(self, log: PartitionLog) -> None:
        """Stop tracking a log that is being closed or deleted."""
        self._urgent.pop(log, None)
        self._deadlines.pop(log, None)
        self._release(log)

    async def idle(self) -> None:
        """Wait until no round is running or about to start on the loop."""
        while self._rounds or self._loop_round_due:
            await self._round_done.wait()

    async def checkpoint_idle(self) -> None:
        """Wait until no WAL checkpoint runs (tests, and a close)."""
        while self._checkpoint is not None:
            await asyncio.wait([self._checkpoint])
            await asyncio.sleep(0)  # its done callback runs in the next turn

    async def aclose(self) -> None:
        """Flush everything still due, interval logs included, then stop."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self.idle()
        for log in self._deadlines:
            self._urgent.setdefault(log, None)
        self._deadlines.clear()
        while self._urgent:
            self.flush_due()
            await self.idle()
        await self.checkpoint_idle()
        self._stopped = True
        for _ in self._threads:
            self._rounds_queue.put(None)
        for thread in self._threads:
            thread.join()


class _Round:
    """One round, on the loop or on its way through an fsync thread: its jobs, then their
    outcome."""

    __slots__ = ("due_since_ns", "errors", "jobs", "on_loop", "sync_ns", "wal_failed", "wal_write")

    def __init__(self, jobs: list[tuple[PartitionLog, FlushJob]], due_since_ns: int | None) -> None:
        self.jobs = jobs
        self.due_since_ns = due_since_ns
        self.on_loop = False  # run by the loop itself, not handed to a thread
        self.errors: list[BaseException | None] = []
        self.sync_ns: int | None = None  # None: the round failed before timing its syncs
        #: Every job's bytes, written (durably) before any job runs; None without a WAL.
        self.wal_write: WalWrite | None = None
        self.wal_failed = False

    def run(self) -> None:
        """Write and sync; each job's error, and the time it all took. Blocks."""
        wal_ns = 0
        if self.wal_write is not None:
            started_ns = time.perf_counter_ns()
            try:
                self.wal_write.run()
            except OSError as e:
                # Nothing is durable: every job fails (and its log is repaired), none writes.
                self.wal_failed = True
                self.errors = [e] * len(self.jobs)
                return
            wal_ns = time.perf_counter_ns() - started_ns
        try:
            self.errors, self.sync_ns = _run_jobs([job for _, job in self.jobs])
            self.sync_ns += wal_ns
        except Exception as e:  # a bug in a job: each of its waiters gets it
            self.errors = [e] * len(self.jobs)


def _sync_rounds(
    rounds: queue.SimpleQueue[_Round | None],
    loop: asyncio.AbstractEventLoop,
    finish: weakref.WeakMethod[Callable[[_Round], None]],
) -> None:
    """An fsync thread: run each round it is given, then hand it back to the loop."""
    while (round_ := rounds.get()) is not None:
        round_.run()
        finish_round = finish()
        if finish_round is None:
            return  # the flusher is gone: nobody waits for this round any more
        try:
            loop.call_soon_threadsafe(finish_round, round_)
        except RuntimeError:
            return  # the loop is closed: likewise
        del finish_round


def _run_jobs(jobs: list[FlushJob]) -> tuple[list[BaseException | None], int]:
    """Run a round's jobs; their errors, and how long it took (ns)."""
    started_ns = time.perf_counter_ns()
    errors: list[BaseException | None] = []
    for job in jobs:
        try:
            job.run()
        except OSError as e:
            errors.append(e)
        else:
            errors.append(None)
    return errors, time.perf_counter_ns() - started_ns


def _wake_all(futures: Waiters) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)
