"""Group commit: one thread fsyncs for every log that has appends waiting to be durable.

Appends happen on the event loop and return at once; a producer that needs durability awaits
``wait_durable(log, offset)``. The flusher's task collects every log with unsynced appends,
starts one flush job per log (capturing the offset each fsync will cover), runs all the fsyncs in
its own thread, then advances each log's durable offset and wakes its waiters. Appends that land
while a flush runs are covered by the next one, so under load one fsync confirms many appends and
the fsync rate, not the append rate, is the only disk cost.

Waiters share one future per log per flush, so a thousand producers waiting on one flush cost
one future, not a thousand.

Per durability policy (``PartitionLog.on_dirty`` tells the flusher):
- ``always``: flushed as soon as the flusher is free;
- ``interval``: flushed ``flush_interval_ms`` after its first unsynced append, or at once when
  ``flush_interval_records`` is reached;
- ``never``: not flushed here (closing the engine still does).

    flusher = Flusher(clock)
    engine.on_dirty = flusher.notify
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(flusher.run())
        offsets = topic.append(0, records)
        await flusher.wait_durable(topic.log(0), offsets.next_offset)
        await flusher.aclose()
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from roost.clock import Clock
from roost.storage.log import FlushJob, PartitionLog


class Flusher:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._urgent: dict[PartitionLog, None] = {}  # an ordered set
        self._deadlines: dict[PartitionLog, int] = {}  # interval logs: monotonic ms
        self._waiting: dict[PartitionLog, asyncio.Future[None]] = {}
        self._in_flight: dict[PartitionLog, tuple[FlushJob, asyncio.Future[None] | None]] = {}
        self._wake = asyncio.Event()
        self._closing = False
        self._stopped = asyncio.Event()
        self._running = False
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="roost-fsync")
        #: Fsync rounds done; a round syncs every log that was due.
        self.rounds = 0

    def notify(self, log: PartitionLog, urgent: bool) -> None:
        """``PartitionLog.on_dirty``: ``log`` has appends to sync, now or within its interval."""
        if urgent:
            self._urgent[log] = None
            self._wake.set()
        elif log not in self._deadlines:
            self._deadlines[log] = self._clock.monotonic_ms() + log.config.flush_interval_ms
            self._wake.set()

    async def wait_durable(self, log: PartitionLog, offset: int) -> None:
        """Return once every record below ``offset`` in ``log`` is durable.

        Raises the log's ``StorageFailure`` if an fsync failed: those records are not confirmed.
        Cancelling the waiter does not disturb the flush or the other waiters.
        """
        while log.durable_offset < offset:
            if log.failure is not None:
                raise log.failure
            in_flight = self._in_flight.get(log)
            if in_flight is not None and in_flight[0].end_offset >= offset:
                future = in_flight[1]
                if future is None:
                    future = asyncio.get_running_loop().create_future()
                    self._in_flight[log] = (in_flight[0], future)
            else:
                future = self._waiting.get(log)
                if future is None:
                    future = self._waiting[log] = asyncio.get_running_loop().create_future()
                self._urgent[log] = None
                self._wake.set()
            await asyncio.shield(future)

    async def run(self) -> None:
        """The flusher's task: flush whatever is due until ``aclose``."""
        self._running = True
        try:
            while not self._closing:
                await self._wait_for_work()
                await self.flush_due()
        finally:
            self._stopped.set()

    async def _wait_for_work(self) -> None:
        if self._urgent:
            return
        timeout = None
        if self._deadlines:
            timeout = max(0, min(self._deadlines.values()) - self._clock.monotonic_ms()) / 1000
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except TimeoutError:
            pass

    async def flush_due(self) -> int:
        """One round: start a job for every due log, fsync them all in the thread, finish.

        Returns how many logs were flushed.
        """
        now_ms = self._clock.monotonic_ms()
        due = list(self._urgent)
        due += [log for log, deadline in self._deadlines.items() if deadline <= now_ms]
        self._urgent.clear()
        jobs: list[tuple[PartitionLog, FlushJob]] = []
        for log in due:
            self._deadlines.pop(log, None)
            job = log.begin_flush()
            if job is None:
                self._release(log)
                continue
            self._in_flight[log] = (job, self._waiting.pop(log, None))
            jobs.append((log, job))
        if not jobs:
            return 0
        loop = asyncio.get_running_loop()
        errors = await loop.run_in_executor(self._executor, _run_jobs, [j for _, j in jobs])
        self.rounds += 1
        for (log, job), error in zip(jobs, errors, strict=True):
            log.end_flush(job, error)
            _, future = self._in_flight.pop(log)
            if future is not None and not future.done():
                future.set_result(None)
            if log.needs_flush and log in self._waiting:
                self._urgent[log] = None
        return len(jobs)

    def _release(self, log: PartitionLog) -> None:
        """Wake waiters of a log with nothing to flush (they re-check; a failure raises)."""
        if log in self._in_flight:
            self._urgent[log] = None  # its waiters need the next round, after this job
            return
        future = self._waiting.pop(log, None)
        if future is not None and not future.done():
            future.set_result(None)

    def forget(self, log: PartitionLog) -> None:
        """Stop tracking a log that is being closed or deleted."""
        self._urgent.pop(log, None)
        self._deadlines.pop(log, None)
        self._release(log)

    async def aclose(self) -> None:
        """Flush everything still due, then stop the task started with ``run``."""
        self._closing = True
        self._wake.set()
        if self._running:
            await self._stopped.wait()
        self._deadlines = dict.fromkeys(self._deadlines, 0)
        while self._urgent or self._deadlines:
            await self.flush_due()
        self._executor.shutdown(wait=True)


def _run_jobs(jobs: list[FlushJob]) -> list[OSError | None]:
    errors: list[OSError | None] = []
    for job in jobs:
        try:
            job.run()
        except OSError as e:
            errors.append(e)
        else:
            errors.append(None)
    return errors
