"""The host: the core, the storage engine, the flusher and the timers on one event loop.

The core never waits; the host does the waiting it asks for:

- a publish to an ``always`` topic is confirmed once the flusher has made it durable;
- a receive with ``wait_s`` sleeps until a publish to the topic, a delay ending or a lease
  expiring makes a message ready, or until the wait runs out (long polling);
- a timer task sleeps until the core's next deadline (``Broker.tick``), ticks, and waits for
  the dead-letter appends a tick started to become durable, then ticks again so the
  subscriptions can finish those messages;
- opening and closing the engine (recovery, final fsyncs) run in a thread;
- subscription journals are snapshotted off the loop when enough entries have piled up;
- a storage watch reads the free space about once a second (publishes stop below the
  watermark, server/disk_space.py) and repairs failed logs once a probe write succeeds
  (storage/repair.py): a full disk or an I/O error heals without a restart.

Creates over the native protocol (and embedded) are group-committed: their metadata records
share one sync in a thread (server/definitions_sync.py), and a publish under `always` is not
confirmed while a definition it could depend on is still unsynced. Other definition changes
(deletes, bindings, the admin API's creates) sync their record on the loop; they are rare
and short.

The host owns two tasks, the timer and the storage watch; ``aclose`` stops them, lets the
flusher finish, and closes the engine cleanly.

    host = await Host.start("./data")
    await host.publish("emails", [Outgoing(value=b"hi")])
    messages = await host.receive("emails", "emails", max_messages=10, wait_s=20)
    await host.aclose()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from roost.clock import Clock, SystemClock
from roost.core.broker import Broker
from roost.core.model import Message
from roost.core.publishing import Outgoing, Published, PublishOutcome
from roost.core.recovery_status import log_recovery, recovery_status
from roost.core.redrive import RedriveBatch, RedriveFilter
from roost.core.streams import FetchedBatches
from roost.errors import (
    BacklogFull,
    InvalidConfig,
    ProducerStateQuarantined,
    StorageClosed,
    StorageFailure,
    SubscriptionQuarantined,
)
from roost.receipt import Receipt
from roost.server.access import TRUSTED, Principal
from roost.server.definitions_sync import DefinitionsSync
from roost.server.door import Door
from roost.server.failed_logins import FailedLogins
from roost.server.flusher import Flusher
from roost.server.identities import Identities
from roost.server.meters import ListenerStats
from roost.server.protocol_strikes import protocol_strikes
from roost.server.redrive_tasks import RedriveTasks, check_rate
from roost.server.storage_watch import StorageWatch
from roost.storage import Journal, LocalEngine
from roost.storage.compaction import (
    CompactedLogs,
    CompactionJob,
    CompactionSettings,
    CompactionStopped,
    Compactor,
)
from roost.storage.engine import TOPICS_NAMESPACE
from roost.storage.log import PartitionLog
from roost.storage.repair import RepairReport
from roost.storage.scrub import Scrubber

#: Longest a receive may wait for a message, as in SQS long polling.
MAX_WAIT_S = 20.0
#: The timer never sleeps longer than this, so a clock that jumps is noticed.
MAX_TIMER_SLEEP_S = 1.0
#: Pause before the timer tries again after a tick failed.
TIMER_RETRY_S = 1.0
#: How often the storage watch reads the free space and tries to repair failed logs.
STORAGE_WATCH_S = 1.0
#: How fast the scrub re-reads sealed segments (storage/scrub.py): a background trickle, so
#: that it never competes with consumers for the disk. 0 turns it off.
SCRUB_BYTES_PER_S = 8 * 1024 * 1024
#: The scrub's pause when there is nothing sealed to verify, or after a step failed.
SCRUB_IDLE_S = 60.0
#: How often compaction looks for a partition whose dirty ratio (or a due tombstone) calls
#: for a pass; passes follow each other at once while there are more.
COMPACTION_CHECK_S = 5.0
#: The pause after a pass the disk refused (no space, an I/O error).
COMPACTION_RETRY_S = 60.0
#: Reads and writes per second of a compaction pass, by default (``compaction_bytes_per_s``).
COMPACTION_BYTES_PER_S = 32 * 1024 * 1024
T = TypeVar("T")

log = logging.getLogger("roost.host")


class Host:
    def __init__(
        self,
        engine: LocalEngine,
        broker: Broker,
        flusher: Flusher,
        clock: Clock,
        min_free_bytes: int | None = None,
        compaction_bytes_per_s: int = COMPACTION_BYTES_PER_S,
    ) -> None:
        self.engine = engine
        #: Private: every session reaches the core through a ``Door`` (``door``).
        self._broker = broker
        self.flusher = flusher
        self.clock = clock
        #: Group commit of definitions (creates answered once their record is durable).
        self.definitions = DefinitionsSync(engine.metadata)
        #: Users, tokens and grants, in the engine's metadata store.
        self.identities = Identities(engine.metadata, clock)
        #: Failed logins per address, across every listener (server/failed_logins.py).
        self.failed_logins = FailedLogins(clock)
        #: Connections ended by a protocol error per address, across every listener
        #: (server/protocol_strikes.py).
        self.protocol_strikes = protocol_strikes(clock)
        self._new_data: dict[str, asyncio.Event] = {}  # per topic, set on publish and on tick
        self._watchers: dict[str, dict[Callable[[], None], None]] = {}  # per topic, ordered
        self._watching_soon: set[str] = set()
        self._watching_later: dict[str, None] | None = None  # see ``holding_wakes``
        self._room: dict[str, asyncio.Event] = {}  # per topic, set when consumers settle
        self._blocked: dict[str, int] = {}  # per topic, publishes waiting for room
        self._wake_timer = asyncio.Event()
        self._timer: asyncio.Task[None] | None = None
        self._storage_watch: asyncio.Task[None] | None = None
        #: Free space and failed logs (server/storage_watch.py); ``_watch_storage`` runs it.
        self.storage = StorageWatch(engine, clock, self._after_repair, min_free_bytes)
        #: Re-verifies sealed segments in the background (storage/scrub.py), paced at
        #: ``scrub_bytes_per_s``.
        self.scrubber = Scrubber(engine)
        self.scrub_bytes_per_s = SCRUB_BYTES_PER_S
        self._scrub_task: asyncio.Task[None] | None = None
        #: Compacts the sealed segments of compacted topics (storage/compaction.py), one
        #: partition per pass, in a thread, paced at ``compaction_bytes_per_s``.
        self.compactor = Compactor(
            CompactedLogs(engine),
            clock,
            CompactionSettings(bytes_per_second=compaction_bytes_per_s or None),
        )
        self._compaction_task: asyncio.Task[None] | None = None
        self._compaction_job: CompactionJob | None = None
        self._compaction_wake = asyncio.Event()
        self._closed = False
        #: Shutting down: long polls answer at once instead of waiting, pushes stop.
        self.stopping = False
        #: Per listener name, counted by the listeners and read by admin/metrics.py.
        self.listeners: dict[str, ListenerStats] = {}
        #: Redrives running in the background, kept across restarts (server/redrive_tasks.py).
        self.redrive_tasks = RedriveTasks(
            engine.metadata, clock, self._redrive_for_task, broker.dead_letters_waiting
        )
        #: Called by the storage watch, about once a second, with the metadata's version
        #: (``roost serve``: process_tuning.DefinitionFreezer.poll); None: nothing is.
        self.definitions_watch: Callable[[int], object] | None = None

    @classmethod
    async def start(
        cls,
        path: str,
        clock: Clock | None = None,
        min_free_bytes: int | None = None,
        max_open_files: int | None = None,
        compaction_bytes_per_s: int = COMPACTION_BYTES_PER_S,
    ) -> Host:
        """Open the data directory (recovering it, in a thread) and start the timer and the
        storage watch. ``min_free_bytes``: the free-space watermark (None: the default, 0:
        off; see server/disk_space.py). ``max_open_files``: the ceiling on descriptors storage
        keeps open (None: derived from the open files limit; see storage/fd_pool.py)."""
        clock = clock or SystemClock()
        engine = await asyncio.to_thread(
            LocalEngine.open, path, clock, max_open_files=max_open_files
        )
        try:
            broker = Broker.open(engine, clock)
        except BaseException:
            await asyncio.to_thread(engine.close, False)
            raise
        log_recovery(recovery_status(broker))
        flusher = Flusher(clock, wal=engine.wal)
        engine.on_dirty = flusher.notify
        host = cls(engine, broker, flusher, clock, min_free_bytes, compaction_bytes_per_s)
        await host.storage.check()  # a disk already full refuses the very first publish
        host._timer = asyncio.create_task(host._run_timer(), name="roost-timer")
        host._storage_watch = asyncio.create_task(host._watch_storage(), name="roost-storage")
        if host.scrub_bytes_per_s:
            host._scrub_task = asyncio.create_task(host._run_scrub(), name="roost-scrub")
        host._compaction_task = asyncio.create_task(host._run_compaction(), name="roost-compaction")
        host.redrive_tasks.resume()
        return host

    def door(self, principal: Principal) -> Door:
        """The command surface as ``principal`` may use it (server/door.py)."""
        if principal is TRUSTED:
            return Door(self, self._broker, principal)
        return Door(self, self._broker, principal, self.identities)

    # -- publish --------------------------------------------------------------------------

    async def publish(
        self,
        topic: str,
        messages: Sequence[Outgoing],
        producer_id: str | None = None,
        sequence: int | None = None,
    ) -> Sequence[Published]:
        """Publish and confirm; under overflow ``block``, first wait for room (bounded)."""
        outcome = self.publish_now(topic, messages, producer_id, sequence)
        if outcome is None:
            self._blocked[topic] = self._blocked.get(topic, 0) + 1
            try:
                outcome = await self._publish_when_room(topic, messages, producer_id, sequence)
            finally:
                self._blocked[topic] -= 1
                if not self._blocked[topic]:
                    del self._blocked[topic]
        return await self.confirm(outcome, {topic})

    async def _publish_when_room(
        self,
        topic: str,
        messages: Sequence[Outgoing],
        producer_id: str | None,
        sequence: int | None,
    ) -> PublishOutcome:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self._broker.policy(topic).block_timeout_ms / 1000
        while True:
            remaining = give_up - loop.time()
            if remaining <= 0 or self.stopping:
                # A last try: it appends if room came after all, or raises BacklogFull.
                self.storage.disk.check("a publish to", topic)
                return self._broker.publish(topic, messages, producer_id, sequence)
            room = self._room.setdefault(topic, asyncio.Event())
            await _wait(room, remaining)
            outcome = self.publish_now(topic, messages, producer_id, sequence)
            if outcome is not None:
                return outcome

    def blocked(self, topic: str) -> bool:
        """Publishes to ``topic`` wait for room: a new one must queue behind them."""
        return topic in self._blocked

    def publish_now(
        self,
        topic: str,
        messages: Sequence[Outgoing],
        producer_id: str | None = None,
        sequence: int | None = None,
    ) -> PublishOutcome | None:
        """Append in this turn; None, with nothing appended, when the topic is full and its
        overflow policy says wait for room (``publish`` waits). Confirm what it returns with
        ``confirmed_now`` or ``confirm``."""
        self.storage.disk.check("a publish to", topic)
        try:
            return self._broker.publish(topic, messages, producer_id, sequence)
        except BacklogFull:
            if self._broker.policy(topic).overflow != "block":
                raise
            return None

    def settled(self, topic: str) -> None:
        """Consumers acked or committed on ``topic``: blocked publishers may find room."""
        room = self._room.pop(topic, None)
        if room is not None:
            room.set()

    async def publish_to_exchange(
        self, exchange: str, routing_key: str, messages: Sequence[Outgoing]
    ) -> Sequence[Published]:
        """Route, publish and confirm. A topic that is full under overflow ``block`` makes the
        whole publish wait for room there (it is all or nothing), at most that topic's
        ``block_timeout`` from when the publish first had to wait; then ``BacklogFull``."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            self.storage.disk.check("a publish to exchange", exchange)
            try:
                outcome = self._broker.publish_to_exchange(exchange, routing_key, messages)
            except BacklogFull as e:
                policy = self._broker.policy(e.topic)
                remaining = started + policy.block_timeout_ms / 1000 - loop.time()
                if policy.overflow != "block" or remaining <= 0 or self.stopping:
                    raise
                await self._wait_for_room(e.topic, remaining)
                continue
            return await self.confirm(outcome, {p.topic for p in outcome.published})

    async def _wait_for_room(self, topic: str, timeout_s: float) -> None:
        """Until consumers settle on ``topic`` (or ``timeout_s``); new publishes to it queue
        behind this one meanwhile (``blocked``)."""
        self._blocked[topic] = self._blocked.get(topic, 0) + 1
        try:
            await _wait(self._room.setdefault(topic, asyncio.Event()), timeout_s)
        finally:
            self._blocked[topic] -= 1
            if not self._blocked[topic]:
                del self._blocked[topic]

    def confirmed_now(
        self, outcome: PublishOutcome, topics: set[str]
    ) -> Sequence[Published] | None:
        """``confirm`` in this turn when no record of ``outcome`` waits for an fsync round (its
        topics are not `always`); None, with nothing done, when one does."""
        if outcome.durability:
            return None
        for topic in topics:
            self.wake_readers(topic)
        return outcome.published

    async def confirm(self, outcome: PublishOutcome, topics: set[str]) -> Sequence[Published]:
        """Once what ``outcome`` appended may be confirmed: wake the readers of ``topics``."""
        # Under `always` a record is readable once durable, so waiting readers are woken after.
        for log, offset in outcome.durability:
            await self.flusher.wait_durable(log, offset)
        if outcome.durability and self.definitions.pending:
            await self._creates_durable(topics)
        if outcome.durability and self.engine.metadata.rollbacks:
            self._check_still_defined(outcome, topics)
        for topic in topics:
            # A publish that waited for a round resumes beside the others of that round: their
            # confirms go out first (a producer's window waits on them), the pushes after.
            self.wake_readers(topic, soon=bool(outcome.durability))
        return outcome.published

    async def _creates_durable(self, topics: set[str]) -> None:
        """A topic may be a create not yet synced: a power loss would lose it with the
        confirmed message, so the confirm waits for it (definitions_sync.py). A publish into
        a topic whose definition is durable waits for nothing."""
        metadata = self.engine.metadata
        creates = [metadata.pending_on(TOPICS_NAMESPACE, topic) for topic in topics]
        newest = max((p for p in creates if p is not None), key=lambda p: p.version, default=None)
        if newest is not None:
            with contextlib.suppress(StorageFailure):  # told below, if it undid this topic
                await self.definitions.durable(newest)

    def _check_still_defined(self, outcome: PublishOutcome, topics: set[str]) -> None:
        """Since a failed metadata sync undid creates (rare: only then is this looked at), a
        publish may have gone into a topic undone before its confirm: it fails."""
        for log, _ in outcome.durability:
            if log.topic not in topics:
                continue  # a producer journal's: its topic's log is in the list too
            topic = self.engine.find_topic(log.topic)
            if topic is None or log not in topic.partitions:
                raise StorageFailure(
                    f"creating topic {log.topic}: its definition did not become durable, and "
                    "was undone with what was published to it"
                )

    def wake_readers(self, topic: str, soon: bool = False) -> None:
        """Wake the long polls on ``topic`` to look again (it changed, or it is gone), and
        call its watchers: now, or with ``soon`` once this turn of the loop is done."""
        event = self._new_data.pop(topic, None)
        if event is not None:
            event.set()
        if topic not in self._watchers:
            return
        if not soon and self._watching_later is not None:
            self._watching_later[topic] = None
        elif not soon:
            self._call_watchers(topic)
        elif topic not in self._watching_soon:
            self._watching_soon.add(topic)
            asyncio.get_running_loop().call_soon(self._call_watchers, topic)

    @contextlib.contextmanager
    def holding_wakes(self) -> Iterator[None]:
        """Call the watchers woken inside, once each, as it ends (still in this turn).

        For the frames of one read: two publishes that arrive together are pushed to a
        watching consumer together, with one lease, one journal entry and one write."""
        if self._watching_later is not None:  # already held further out: that one calls them
            yield
            return
        self._watching_later = {}
        try:
            yield
        finally:
            topics, self._watching_later = self._watching_later, None
            for topic in topics:
                self._call_watchers(topic)

    def _call_watchers(self, topic: str) -> None:
        self._watching_soon.discard(topic)
        for watcher in list(self._watchers.get(topic, ())):
            try:
                watcher()
            except Exception:
                # A watcher's bug is its connection's; the others, and whoever woke them (a
                # publisher, at the end of its read), go on.
                log.exception("a watcher of %s failed", topic)

    def watch(self, topic: str, watcher: Callable[[], None]) -> None:
        """Call ``watcher`` whenever the long polls on ``topic`` would wake, with no task to
        wake in between: a pushing connection delivers a message in the turn that made it
        readable (or the next, see ``wake_readers``). It must not wait, and must not raise."""
        self._watchers.setdefault(topic, {})[watcher] = None

    def unwatch(self, topic: str, watcher: Callable[[], None]) -> None:
        watchers = self._watchers.get(topic)
        if watchers is not None:
            watchers.pop(watcher, None)
            if not watchers:
                del self._watchers[topic]

    # -- redrive --------------------------------------------------------------------------

    async def redrive(
        self,
        dead_letter_topic: str,
        where: RedriveFilter,
        rate_per_s: float = 100.0,
        to: str | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> int:
        """Move matching dead letters back, at most ``rate_per_s`` a second; returns how many.
        ``on_progress(moved)`` hears the count after each batch (a task's progress).

        Each batch is confirmed (durable at the destination) before its dead letters are
        acked, so a crash mid-run moves a message twice at worst, never loses one.
        """
        check_rate(rate_per_s)
        batch_size = max(1, min(100, int(rate_per_s)))
        skipped: list[Receipt] = []
        moved = 0
        try:
            while True:
                started = asyncio.get_running_loop().time()
                batch, outcome = self._broker.redrive_batch(
                    dead_letter_topic, where, batch_size, to
                )
                skipped += batch.skipped
                for error in batch.errors:
                    log.warning("redrive of %s: %s", dead_letter_topic, error)
                settling = asyncio.ensure_future(self._settle_redrive(dead_letter_topic, batch,
                                                                      outcome))  # fmt: skip
                try:
                    await asyncio.shield(settling)
                except asyncio.CancelledError:
                    # Stopped (cancelled, or the broker closing): the batch's copies are out,
                    # so its dead letters are acked first, not moved twice by the next run.
                    with contextlib.suppress(Exception):
                        await settling
                    if on_progress is not None and settling.done() and not settling.exception():
                        on_progress(moved + len(batch.moved))
                    raise
                moved += len(batch.moved)
                if on_progress is not None:
                    on_progress(moved)
                if batch.exhausted:
                    return moved
                pace_s = len(outcome.published) / rate_per_s
                elapsed = asyncio.get_running_loop().time() - started
                await asyncio.sleep(max(0.0, pace_s - elapsed))
        finally:
            self._broker.release_redrive(dead_letter_topic, skipped)

    async def _settle_redrive(
        self, dead_letter_topic: str, batch: RedriveBatch, outcome: PublishOutcome
    ) -> None:
        """A redrive batch's copies durable, then its dead letters acked."""
        await self.confirm(outcome, {p.topic for p in outcome.published})
        self._broker.finish_redrive(dead_letter_topic, batch.moved)

    async def _redrive_for_task(
        self,
        dead_letter_topic: str,
        where: RedriveFilter,
        rate_per_s: float,
        to: str | None,
        on_progress: Callable[[int], None],
    ) -> int:
        return await self.redrive(dead_letter_topic, where, rate_per_s, to, on_progress)

    # -- receive --------------------------------------------------------------------------

    async def receive(
        self,
        topic: str,
        subscription: str,
        max_messages: int = 1,
        wait_s: float = 0.0,
        visibility_ms: int | None = None,
        consumer: str = "",
    ) -> list[Message]:
        """Lease up to ``max_messages``; with ``wait_s``, wait that long for the first one."""
        # A delivery's journal entry is in the OS before the message goes out (journals write
        # through), so a process crash keeps its count: a message that kills its consumer's
        # process still reaches max_deliveries. A power loss before the fsync may not.
        return await self._long_poll(
            topic,
            wait_s,
            lambda: self._broker.receive(
                topic, subscription, max_messages, visibility_ms, consumer
            ),
        )

    async def fetch(
        self,
        topic: str,
        subscription: str,
        member_id: str,
        generation: int,
        max_records: int = 500,
        wait_s: float = 0.0,
    ) -> list[Message]:
        """A stream member's next records; with ``wait_s``, wait that long for the first one."""
        stream = self._broker.stream(topic, subscription)
        return await self._long_poll(
            topic, wait_s, lambda: stream.fetch(member_id, generation, max_records)
        )

    async def fetch_batches(
        self,
        topic: str,
        subscription: str,
        member_id: str,
        generation: int,
        max_records: int = 500,
        wait_s: float = 0.0,
    ) -> list[FetchedBatches]:
        """``fetch`` as stored batches, undecoded (see ``StreamSubscription.fetch_batches``)."""
        stream = self._broker.stream(topic, subscription)
        return await self._long_poll(
            topic, wait_s, lambda: stream.fetch_batches(member_id, generation, max_records)
        )

    async def _long_poll(
        self, topic: str, wait_s: float, attempt: Callable[[], list[T]]
    ) -> list[T]:
        if not 0 <= wait_s <= MAX_WAIT_S:
            raise InvalidConfig("wait", wait_s, f"between 0 and {MAX_WAIT_S} seconds")
        loop = asyncio.get_running_loop()
        give_up = loop.time() + wait_s
        while True:
            messages = attempt()
            remaining = give_up - loop.time()
            if messages or remaining <= 0 or self.stopping:
                return messages
            await _wait(self._new_data.setdefault(topic, asyncio.Event()), remaining)

    # -- time -----------------------------------------------------------------------------

    def wake_timer(self) -> None:
        """A command changed what is due next (a nack with a delay, a short lease)."""
        self._wake_timer.set()

    async def _run_timer(self) -> None:
        """Tick until closed. A failing tick is logged with its traceback and retried after a
        pause, never swallowed: a dead timer would stop leases expiring without a sound."""
        while not self._closed:
            try:
                await self._tick_once()
            except Exception:
                log.exception("roost timer: tick failed; retrying in %s s", TIMER_RETRY_S)
                await asyncio.sleep(TIMER_RETRY_S)

    async def _run_scrub(self) -> None:
        """Scrub until closed, one bounded chunk per step in a thread, paced. A failing step
        is logged with its traceback and retried after a pause, never swallowed. It starts
        after one idle pause: recovery just verified what it did not trust, and a starting
        broker has better uses for the disk."""
        pause_s = SCRUB_IDLE_S
        while not self._closed:
            await asyncio.sleep(pause_s)
            try:
                pause_s = await self.scrub_step()
            except Exception:
                log.exception("roost scrub: a step failed; retrying in %s s", SCRUB_IDLE_S)
                pause_s = SCRUB_IDLE_S

    async def scrub_step(self) -> float:
        """Verify the next chunk of a sealed segment (off the loop); returns how long to pause
        before the next step so that the scrub keeps to ``scrub_bytes_per_s``."""
        job = self.scrubber.next_job()
        while job is None and self.scrubber.scanning:  # bounded: each call scans a share
            await asyncio.sleep(0)  # the loop's turn between two shares of the scan
            job = self.scrubber.next_job()
        if job is None:
            return SCRUB_IDLE_S
        result = await asyncio.to_thread(job.run)
        self.scrubber.finish(job, result)
        return result.bytes_read / self.scrub_bytes_per_s if self.scrub_bytes_per_s else 0.0

    async def _run_compaction(self) -> None:
        """Compact until closed: a pass whenever a partition needs one, else a look every
        ``COMPACTION_CHECK_S``. A pass the disk refused (full, failing: nothing was swapped)
        is one warning line and a longer pause, not a traceback every few seconds; any other
        failure is logged with its traceback, never swallowed."""
        while not self._closed:
            pause_s = COMPACTION_CHECK_S
            try:
                ran = await self.compaction_step()
            except OSError as e:
                pause_s = COMPACTION_RETRY_S
                log.warning("roost compaction: a pass failed (%s); nothing was swapped, next "
                            "look in %s s", e, pause_s)  # fmt: skip
                ran = False
            except Exception:
                log.exception("roost compaction: a pass failed; next look in %s s", pause_s)
                ran = False
            if not ran and not self._closed:
                await _wait(self._compaction_wake, pause_s)
                self._compaction_wake.clear()

    async def compaction_step(self) -> bool:
        """One compaction pass, if a partition needs one: the reading and writing in a
        thread, the swap on the loop (a rename per segment). Whether one ran."""
        job = self.compactor.next_job()
        if job is None:
            return False
        job.pause = time.sleep  # pacing, in the pass's thread
        self._compaction_job = job
        try:
            await asyncio.to_thread(job.run)
            if self._closed:
                job.discard()
                return False
            self.compactor.swap(job)
            await asyncio.to_thread(job.settle)
            self.compactor.finish(job)
        except CompactionStopped:
            return False
        finally:
            self._compaction_job = None
        return True

    async def _tick_once(self) -> None:
        while not self._closed:
            tick = self._broker.tick()
            for topic in tick.topics:
                self.wake_readers(topic)
                self.settled(topic)  # dead letters, drops, retention may have made room
            await self._snapshot_journals()
            for pending in tick.pending_dead_letters:
                await self.flusher.wait_durable(pending.log, pending.next_offset)
            if tick.pending_dead_letters:
                continue
            sleep_s = MAX_TIMER_SLEEP_S
            if tick.next_deadline_ms is not None:
                sleep_s = min(
                    sleep_s, max(0.0, (tick.next_deadline_ms - self.clock.now_ms()) / 1000)
                )
            self._wake_timer.clear()
            await _wait(self._wake_timer, sleep_s)

    async def _snapshot_journals(self) -> None:
        # A failed journal waits for its repair (the storage watch), not the timer: a tick
        # must go on expiring leases meanwhile.
        for sub in self._broker.journals_due():
            if sub.journal.log.failure is None:
                await self._snapshot(sub.journal, sub.snapshot())
        for producers in self._broker.producer_states():
            if producers.snapshot_due and producers.journal.log.failure is None:
                await self._snapshot(producers.journal, producers.snapshot())
        if self.engine.snapshots_owed:
            await self._pay_owed_snapshots()

    async def _pay_owed_snapshots(self) -> None:
        """Snapshot the journals that refused an append for want of descriptors (their
        owners' state is ahead of them: storage/journal.py). Looks at every owner, but only
        while some journal owes one."""
        owed = self.engine.snapshots_owed
        owners: list[tuple[Journal, Callable[[], bytes]]] = [
            (sub.journal, sub.snapshot) for sub in self._broker.subscriptions()
        ]
        owners += [(p.journal, p.snapshot) for p in self._broker.producer_states()]
        for journal, snapshot in owners:
            if journal in owed and journal.log.failure is None:
                try:
                    await self._snapshot(journal, snapshot())
                except StorageFailure as e:  # out of descriptors still: the next tick retries
                    log.warning("roost: the snapshot journal %s owes failed: %s", journal.name, e)
        owning = {journal for journal, _ in owners}
        # Paid, or its owner is gone (deleted): nothing is owed any more.
        owed.difference_update(
            [journal for journal in owed if not journal.snapshot_owed or journal not in owning]
        )

    async def _snapshot(self, journal: Journal, state: bytes) -> None:
        job = journal.snapshot_job(state)
        # The entries a snapshot covers must be durable before it is: otherwise a crash could
        # leave a snapshot ahead of the log, and new entries numbered below it.
        await self.flusher.wait_durable(journal.log, job.next_seq)
        try:
            await asyncio.to_thread(job.run)
        except OSError as e:
            # The old snapshot and every entry stay: nothing is lost, the next one retries.
            raise StorageFailure(f"journal {journal.name} snapshot", e) from e
        journal.snapshot_done(job)

    # -- storage health -----------------------------------------------------------------

    async def _watch_storage(self) -> None:
        """Check the storage about once a second until closed; a failing check is logged."""
        while not self._closed:
            await asyncio.sleep(STORAGE_WATCH_S)
            try:
                await self.storage.check()
            except Exception:
                log.exception("roost storage watch: check failed; trying again")
            if self.definitions_watch is not None:
                self.definitions_watch(self.engine.metadata.version)

    async def _after_repair(self, repaired: PartitionLog, report: RepairReport) -> None:
        """Make what remembers offsets or entries of ``repaired`` agree with it again."""
        for name in self.engine.list_topics():
            topic = self.engine.topic(name)
            if repaired in topic.partitions:
                if not (report.records_cut or report.records_lost):
                    return
                producers = self._broker.log_cut(name, repaired.partition, repaired.end_offset)
                # Before any await, so no publish can take an offset a subscription has seen:
                # the disk may have lost records confirmed under interval or never.
                self._broker.continue_past_seen(only=name)
                if producers is not None and producers.journal.log.failure is None:
                    await self._snapshot(producers.journal, producers.snapshot())
                self.wake_readers(name)
                return
        # A journal may lack entries its owner applied in memory (the append or its fsync
        # failed after the state changed, or the disk lost them): a snapshot writes them all.
        for sub in self._broker.subscriptions():
            if sub.journal.log is repaired:
                await self._snapshot(sub.journal, sub.snapshot())
        for producers in self._broker.producer_states():
            if producers.journal.log is repaired:
                await self._snapshot(producers.journal, producers.snapshot())

    async def check_ready(self) -> None:
        """Raise (``StorageFailure``, ``DiskFull``, ``StorageClosed``, ``Quarantined``) unless
        the host can take writes: not closing, the engine open with no failed log (the error
        names every failed one), no partition, subscription or producer state quarantined
        for damage, free
        space above the watermark, the data directory writable."""
        if self._closed:
            raise StorageClosed("the host (shutting down)")
        self.engine.check_health()
        for (topic, name), damage in self._broker.quarantined_subscriptions().items():
            raise SubscriptionQuarantined(topic, name, damage)
        for topic, damage in self._broker.quarantined_producer_states().items():
            raise ProducerStateQuarantined(topic, damage)
        self.storage.disk.check("publishes")
        await asyncio.to_thread(self.engine.probe_write)

    # -- lifecycle ------------------------------------------------------------------------

    def stop_waiting(self) -> None:
        """The first step of a shutdown: every long poll answers now, with what it has, and
        none waits again; blocked publishers give up. Requests still work."""
        self.stopping = True
        for waiting in (self._new_data, self._room):
            for topic in list(waiting):
                waiting.pop(topic).set()

    async def aclose(self) -> None:
        """Stop the timer, finish every pending flush, close the engine cleanly."""
        if self._closed:
            return
        self._closed = True
        if self._compaction_task is not None:
            # Not cancelled: a pass's thread would go on writing while the engine closes.
            # Told to stop, it gives up at its next chunk and removes its temporary file.
            if self._compaction_job is not None:
                self._compaction_job.stopped = True
            self._compaction_wake.set()
            await self._compaction_task
        await self.redrive_tasks.aclose()  # left running in the store: resumed on restart
        for task in (self._timer, self._storage_watch, self._scrub_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.stop_waiting()
        await self.flusher.aclose()
        await self.definitions.aclose()
        await asyncio.to_thread(self.engine.close)


async def _wait(event: asyncio.Event, timeout_s: float) -> None:
    """Wait for ``event`` at most ``timeout_s``. Not ``asyncio.wait_for``: on Python 3.11 it
    swallows a cancellation that lands in the same turn as the event, and the cancelled task
    would go on (a receive returning leased messages to a task that was told to stop)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()
