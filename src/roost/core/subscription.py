"""A `queue` or `keyed` subscription: competing consumers over every partition of a topic.

    sub = QueueSubscription.open(spec, topic, journal, clock, dead_letter=dlq_topic)
    messages = sub.receive(max_messages=10)           # leased for the visibility timeout
    sub.ack([m.receipt for m in messages])            # done
    sub.nack([receipt], delay_ms=5000, error="smtp")  # again later (or dead-lettered)
    next_deadline_ms = sub.tick()                     # expire leases, end delays

Each partition's decisions are made by a ``PartitionDeliveries``; this class reads records,
builds messages, writes the state journal, and moves dead letters. Rules:

- Only records a crash cannot take back are delivered: under ``always`` those below the log's
  ``durable_offset``, otherwise those below its end.
- Every command appends at most a few journal entries, never one per message. Acks are recorded
  as ranges; a receive of 100 messages is one entry.
- Dead-lettering is two steps. The record is appended to the dead-letter topic with headers
  naming where it came from; the original is marked done only once that append is confirmed
  (durable, under ``always``), by a later ``tick``. A crash in between delivers the message to
  the dead-letter topic twice, never zero times.
- Receipts carry the delivery count, so an ack for an expired delivery is refused with
  ``LeaseExpired`` instead of acking someone else's.
- A message whose TTL has passed (core/expiry.py) is never leased: every receive drops it,
  and ``tick``, ``stats`` and ``peek`` expire what is due first. Expiring is dead-lettering
  (reason ``expired``), or, without a dead-letter topic, done as an ack is.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

from roost.clock import Clock
from roost.core import state_codec
from roost.core.acks import ranges_of
from roost.core.delay_limits import check_delay_fits
from roost.core.delay_wheel import unpack
from roost.core.deliveries import Attempts, PartitionDeliveries, Released
from roost.core.expiry import Expiry
from roost.core.inspection import Peeked, peek_queue
from roost.core.model import (
    DELIVER_AT_HEADER,
    EXPIRES_AT_HEADER,
    Message,
    SubscriptionSpec,
    check_delay,
    check_visibility,
)
from roost.core.rate_limits import rate_bucket
from roost.core.scheduled import restore_scheduled, runs_of
from roost.core.stats import SubscriptionStats, subscription_stats
from roost.core.unread_delays import UnreadDelays, find_delays
from roost.errors import (
    InvalidRequest,
    PartitionQuarantined,
    RecordTooLarge,
    StorageClosed,
    UnknownPartition,
)
from roost.receipt import Receipt
from roost.storage import Journal, Record, StoredRecord, Topic
from roost.storage.log import PartitionLog

_log = logging.getLogger(__name__)

#: How many records one receive reads past parked or delayed ones before it returns.
MAX_SCAN_PER_RECEIVE = 10_000
#: Records read ahead of the read position per partition, kept for the next receive.
READ_AHEAD_RECORDS = 256

RESTART_ERROR = "lease lost in a broker restart"

DLQ_HEADERS = (
    "x-roost-source-topic",
    "x-roost-source-partition",
    "x-roost-source-offset",
    "x-roost-delivery-count",
    "x-roost-first-delivery-ms",
    "x-roost-last-delivery-ms",
    "x-roost-last-error",
    "x-roost-death-reason",
)
#: Why a message was dead-lettered (``x-roost-death-reason``): it reached ``max_deliveries``
#: (by nacks or leases that ran out), or a consumer rejected it (RabbitMQ's reject without
#: requeue: straight to the dead-letter topic, whatever its count).
MAX_DELIVERIES = "max-deliveries"
REJECTED = "rejected"
#: ... or its TTL passed before it was delivered (core/expiry.py).
EXPIRED = "expired"
#: ... or overflow ``drop_oldest`` dropped it, on a topic that says ``dead_letter_dropped``.
OVERFLOW = "overflow"
#: How many times one receive reads on past messages it found expired, for as many more.
EXPIRED_REFILLS = 4


class PendingDeadLetter(NamedTuple):
    partition: int
    offset: int
    log: PartitionLog
    next_offset: int


class QueueSubscription:
    def __init__(
        self,
        spec: SubscriptionSpec,
        topic: Topic,
        journal: Journal,
        clock: Clock,
        partitions: list[PartitionDeliveries],
        dead_letter: Topic | None,
    ) -> None:
        self.spec = spec
        self.topic = topic
        self.journal = journal
        self.dead_letter = dead_letter
        self._clock = clock
        self._partitions = partitions
        #: The retry jitter's generator, seeded by the name; made on the first retry (2.5 KB
        #: each: a sixth of an idle queue's memory, for queues that mostly never retry).
        self._rng: random.Random | None = None
        self._next_partition = 0
        self._pending_dead: list[PendingDeadLetter] = []
        self._read_ahead: dict[int, deque[StoredRecord]] = {}
        #: Delayed records not read yet, so that stats never count them as ready.
        self._unread_delays = UnreadDelays()
        #: When messages expire (their own TTL, or ``spec.message_ttl_ms``).
        self._expiry = Expiry(spec.message_ttl_ms, [p.acks.floor for p in partitions])
        self._entries_since_snapshot = 0
        self._on_done: Callable[[int], None] = _ignore
        self._on_deadline: Callable[[int], None] = _ignore
        self._on_snapshot_due: Callable[[], None] = _nobody
        #: Its delivery rate, if limited; when a receive found it spent, when it may go on.
        self.rate = rate_bucket(spec, clock.now_ms())
        self.throttled_until_ms: int | None = None
        #: Receives that the rate limit cut short or refused (for stats).
        self.throttled = 0

    def watch(
        self,
        on_done: Callable[[int], None],
        on_deadline: Callable[[int], None],
        on_snapshot_due: Callable[[], None],
    ) -> None:
        """Tell ``on_done`` each partition whose done offsets grew (its floor may have moved:
        retention may delete more), ``on_deadline`` each deadline that may be earlier than
        the last ``tick`` returned (a lease, a delay, a dead letter to settle), and
        ``on_snapshot_due`` when ``snapshot_due`` becomes true."""
        self._on_done = on_done
        self._on_deadline = on_deadline
        self._on_snapshot_due = on_snapshot_due
        for state in self._partitions:
            state.on_deadline = on_deadline

    @classmethod
    def open(
        cls,
        spec: SubscriptionSpec,
        topic: Topic,
        journal: Journal,
        clock: Clock,
        dead_letter: Topic | None = None,
    ) -> QueueSubscription:
        """Resume from the journal; a new (empty) journal starts at ``spec.start``."""
        snapshot, entries = journal.recover()
        partitions = len(topic.partitions)
        fresh = snapshot is None and not entries
        if fresh:
            starts = [cls._start_offset(spec, topic, p) for p in range(partitions)]
            entries = [state_codec.done(p, [(0, start)] if start else []) for p, start in
                       enumerate(starts)]  # fmt: skip
            if any(starts):
                journal.append(entries)
            # else: they say nothing an empty journal does not (read from offset 0), and the
            # next open works them out again; unwritten, a new queue's journal is not flushed
            # (its directories synced, its file fdatasynced) until it has something to keep.
        states = state_codec.replay(snapshot, entries, partitions)
        keyed = spec.mode == "keyed"
        deliveries = [state_codec.restore(states[p], keyed) for p in range(partitions)]
        sub = cls(spec, topic, journal, clock, deliveries, dead_letter)
        now_ms = clock.now_ms()
        for state in deliveries:
            if sub.schedules_delays:
                state.scheduled = restore_scheduled(
                    state, unpack(states[state.partition].delays), sub._max_deliveries, now_ms
                )
                state.promote(now_ms)
                if fresh:  # delayed records published before it: as if told at publish
                    log = topic.log(state.partition)
                    found = find_delays(log, state.read_offset, now_ms)
                    if found:
                        sub.announce_delays(state.partition, found)
            else:
                log = topic.log(state.partition)
                sub._unread_delays.scan(state.partition, log, state.read_offset, now_ms)
            sub._expiry.scan(state.partition, topic.log(state.partition), state.acks.floor)
        return sub

    @property
    def schedules_delays(self) -> bool:
        """Whether delays announced at publish are kept out of the read path (scheduled.py):
        in `keyed` mode a delayed record holds its key's later records, in order, and with a
        queue delay every record is delayed; both read delays in order, as before."""
        return self.spec.mode == "queue" and not self.spec.delay_ms

    @staticmethod
    def _start_offset(spec: SubscriptionSpec, topic: Topic, partition: int) -> int:
        log = topic.log(partition)
        return log.confirmed_offset if spec.start == "latest" else log.start_offset

    # -- receive --------------------------------------------------------------------------

    def receive(
        self, max_messages: int, visibility_ms: int | None = None, consumer: str = ""
    ) -> list[Message]:
        """Lease up to ``max_messages`` messages, across partitions in turn. Never waits."""
        if type(max_messages) is not int or max_messages < 1:
            raise InvalidRequest(f"max_messages must be a positive int, not {max_messages!r}")
        visibility = check_visibility(
            self.spec.visibility_timeout_ms if visibility_ms is None else visibility_ms
        )
        now_ms = self._clock.now_ms()
        self.tick()
        wanted = max_messages
        if self.rate is not None:
            max_messages = min(max_messages, self.rate.available(now_ms))
            if max_messages < 1:
                self._throttle(now_ms)
                return []
        messages: list[Message] = []
        count = len(self._partitions)
        for step in range(count):
            if len(messages) >= max_messages:
                break
            state = self._partitions[(self._next_partition + step) % count]
            if self.topic.partitions[state.partition].quarantined:
                continue  # out of service (damage on disk); the other partitions serve
            try:
                messages += self._receive_from(
                    state, max_messages - len(messages), now_ms, visibility, consumer
                )
            except PartitionQuarantined:
                if not self.topic.partitions[state.partition].quarantined:
                    raise
                # A read found the damage just now (before any lease): this partition is out
                # of service from here on, the others serve. Its state is rebuilt from the
                # journal when the operator has repaired it and restarts.
                continue
        self._next_partition = (self._next_partition + 1) % count
        if self.rate is not None and messages:
            self.rate.spend(len(messages), now_ms)
            if len(messages) < wanted and len(messages) == max_messages:
                self._throttle(now_ms)  # cut short by the rate: more may be ready
        return messages

    def _throttle(self, now_ms: int) -> None:
        """The rate limit held messages back: wake readers when the next may go (a deadline
        the tick keeps, so long polls and pushes go on then)."""
        assert self.rate is not None
        self.throttled += 1
        self.throttled_until_ms = self.rate.next_token_ms(now_ms)
        self._on_deadline(self.throttled_until_ms)

    def _receive_from(
        self, state: PartitionDeliveries, limit: int, now_ms: int, visibility: int, consumer: str
    ) -> list[Message]:
        log = self.topic.log(state.partition)
        ready = state.take_ready(limit)
        if ready and ready[-1] >= log.confirmed_offset:
            # A delay announced at publish may end before its record is durable: later.
            state.make_ready([o for o in ready if o >= log.confirmed_offset])
            ready = [o for o in ready if o < log.confirmed_offset]
        gone = [offset for offset in ready if offset < log.start_offset]
        if gone:
            self._forget(state, gone)
        wanted = [o for o in ready if o >= log.start_offset]
        records = self._records_at(log, wanted)
        if len(records) < len(wanted):  # compaction removed them (a later record of the key)
            found = {r.offset for r in records}
            self._forget(state, [o for o in wanted if o not in found])
        if len(records) < limit:
            records += self._admit_new(state, log, limit - len(records), now_ms)
        if self._expiry.active or self._pending_dead:
            records = self._unexpired(state, log, records, limit, now_ms)
        if not records:
            return []
        offsets = [r.offset for r in records]
        tokens = state.lease(offsets, now_ms, visibility, consumer)
        self._write(state_codec.delivered(state.partition, now_ms, offsets))
        topic, partition = self.spec.topic, state.partition
        return [
            Message(topic, partition, r.offset, r.timestamp_ms, r.key, r.value, r.headers, token)
            for r, token in zip(records, tokens, strict=True)
        ]  # fmt: skip

    def _admit_new(
        self, state: PartitionDeliveries, log: PartitionLog, limit: int, now_ms: int
    ) -> list[StoredRecord]:
        readable = log.confirmed_offset
        if state.read_offset < log.start_offset:
            self._expired_by_retention(state, log.start_offset)
        ahead = self._read_ahead.setdefault(state.partition, deque())
        if ahead and ahead[0].offset != state.read_offset:
            ahead.clear()  # the position moved (retention, drop_oldest): read afresh
        admitted: list[StoredRecord] = []
        scanned = 0
        delay_ms = self.spec.delay_ms
        admit, attempts = state.admit, state.attempts
        # Nothing from the read position on is done, nothing waits for a retry, no delays, no
        # keys: a record without headers is then simply admitted (the bulk of a busy queue).
        plain = (
            not state.keyed
            and not delay_ms
            and not state.acks.done_from(state.read_offset)
            and not state.retry_at
        )
        floor = state.acks.floor
        # Records are read up to the next delayed offset known (scheduled.py), then jumped over.
        scheduled = state.scheduled
        stop = min(readable, scheduled.next_skip) if scheduled is not None else readable
        while len(admitted) < limit and state.read_offset < readable:
            if state.read_offset >= stop:
                stop = self._jump(state, ahead, readable)
                continue
            record = self._next_record(state, log, ahead, stop)
            if record is None:
                break
            scanned += 1
            offset = record.offset
            if plain and not record.headers and offset >= floor:
                state.read_offset = offset + 1
                admitted_now = True
            else:
                if record.headers:
                    visible_at = self.visible_at(record)
                else:
                    visible_at = record.timestamp_ms + delay_ms if delay_ms else 0
                admitted_now = admit(offset, record.key, visible_at, now_ms)
            if admitted_now and not (offset in attempts and self._dead_on_arrival(state, offset)):
                admitted.append(record)
            if scanned >= MAX_SCAN_PER_RECEIVE:
                break
        return admitted

    def _dead_on_arrival(self, state: PartitionDeliveries, offset: int) -> bool:
        """Dead-letter ``offset`` if its last lease, or its dead-letter step, was lost in a
        restart (it has had its ``max_deliveries``); whether it was."""
        if not self._exhausted(state, offset):
            return False
        attempt = state.attempts[offset]
        attempt.last_error = attempt.last_error or RESTART_ERROR
        self._dead_letter(state, offset)
        return True

    @staticmethod
    def _jump(state: PartitionDeliveries, ahead: deque[StoredRecord], readable: int) -> int:
        """Move the read position past the delayed offsets at it; where to read up to next."""
        scheduled = state.scheduled
        assert scheduled is not None
        state.read_offset = scheduled.jump(state.read_offset)
        ahead.clear()
        return min(readable, scheduled.next_skip)

    def _next_record(
        self,
        state: PartitionDeliveries,
        log: PartitionLog,
        ahead: deque[StoredRecord],
        readable: int,
    ) -> StoredRecord | None:
        """The record at the read position, or past a gap batch (storage/batch.py) the first
        one after it; None if none is readable yet."""
        if not ahead:
            count = min(READ_AHEAD_RECORDS, readable - state.read_offset)
            ahead.extend(log.read(state.read_offset, max_records=count))
            if not ahead:
                self._skip_gap(state, readable)  # nothing but gap batches up to the end
                return None
        record = ahead.popleft()
        if record.offset != state.read_offset:
            if record.offset >= readable:
                ahead.appendleft(record)
                self._skip_gap(state, readable)
                return None
            self._skip_gap(state, record.offset)
        return record

    def _expired_by_retention(self, state: PartitionDeliveries, start: int) -> None:
        """Retention deleted records this subscription never read: they count as done."""
        gone = (state.read_offset, start)
        state.finish_range(*gone)
        self._done(state.partition, [gone])

    def _unexpired(
        self,
        state: PartitionDeliveries,
        log: PartitionLog,
        records: list[StoredRecord],
        limit: int,
        now_ms: int,
    ) -> list[StoredRecord]:
        """``records`` less the expired (expired now: never delivered) and those on their way
        to the dead-letter topic, read on past them for as many more, a few times."""
        kept: list[StoredRecord] = []
        for refill in range(EXPIRED_REFILLS):
            dying = self.dead_lettering(state.partition) if self._pending_dead else set()
            expired = []
            for record in records:
                if record.offset in dying:
                    continue
                if self._expiry.is_expired(record, now_ms):
                    expired.append(record.offset)
                else:
                    kept.append(record)
            if not expired:
                break
            self._expire(state, expired)
            if len(kept) >= limit or refill == EXPIRED_REFILLS - 1:
                break  # (what is admitted must be looked at: none after the last round)
            records = self._admit_new(state, log, limit - len(kept), now_ms)
        return kept

    def _expire_due(self, now_ms: int) -> None:
        """Expire what is due (core/expiry.py): without waiting for a receive to reach it."""
        expiry = self._expiry
        for state in self._partitions:
            log = self.topic.log(state.partition)
            if log.quarantined:
                continue
            leased = expiry.leased[state.partition]
            ended = [o for o in leased if o not in state.leases]
            offsets = expiry.due(state.partition, log, state.acks, now_ms) if expiry.active else []
            if not offsets and not ended:
                continue
            dying = self.dead_lettering(state.partition) if self._pending_dead else set()
            leased.difference_update(ended)
            expired = []
            for offset in [*ended, *offsets]:
                if offset in dying or offset in state.acks:
                    continue
                if offset in state.leases:
                    leased.add(offset)  # not revoked: expired if its lease ends unacked
                else:
                    expired.append(offset)
            if expired:
                self._expire(state, sorted(set(expired)))

    def _expire(self, state: PartitionDeliveries, offsets: list[int]) -> None:
        """``offsets`` (not leased) expired: dead-lettered with reason ``expired``, or done."""
        self._expiry.expired[state.partition] += len(offsets)
        if self.dead_letter is None:
            self._done(state.partition, state.finish_many(offsets))
            return
        for offset in offsets:
            if offset not in state.attempts:  # never delivered: its dead letter says so
                state.attempts[offset] = Attempts()
            self._dead_letter(state, offset, EXPIRED)

    def announce_expiries(self, partition: int, expiries: list[tuple[int, int]]) -> None:
        """``(offset, expires_at_ms)`` of records just published to ``partition`` with their
        own TTL; with none, a publish to a subscription with a default TTL (the first of
        them may now be the next to expire)."""
        if expiries:
            self._expiry.announce(partition, expiries, self._partitions[partition].acks)
            self._on_deadline(min(at for _, at in expiries))
        if self._expiry.message_ttl_ms is not None:
            self._on_deadline(self._clock.now_ms() + self._expiry.message_ttl_ms)

    def expired_count(self, partition: int) -> int:
        """Messages of ``partition`` expired since the process started."""
        return self._expiry.expired[self._state(partition).partition]

    def announce_delays(
        self, partition: int, delays: list[tuple[int, int]]
    ) -> list[tuple[PartitionLog, int]]:
        """``(offset, visible_at_ms)`` of delayed records just published to ``partition``, in
        offset order; returns what the publish's confirm must await (their journal entry)."""
        state = self._partitions[partition]
        if state.scheduled is None:
            self._unread_delays.announce(partition, delays)
            return []
        now_ms = self._clock.now_ms()
        runs = runs_of(delays)
        for visible_at, start, end in runs:
            state.scheduled.add(visible_at, start, end, now_ms)
        state.on_deadline(min(run[0] for run in runs))
        self._write(state_codec.delayed(partition, runs))
        if self.topic.log(partition).config.durability != "always":
            return []
        return [(self.journal.log, self.journal.log.end_offset)]

    def unread_delayed(self, partition: int, now_ms: int) -> int:
        """Records of ``partition`` not read yet that are delayed past ``now_ms`` (a receive
        has not seen their delay, but ``stats`` must not count them as ready)."""
        state = self._partitions[partition]
        if state.scheduled is not None:
            return 0  # known delays are scheduled (counted by ``state.delayed``), none unread
        return self._unread_delays.count(
            partition, self.topic.log(partition), state.read_offset, state.acks,
            state.retry_at, self.spec.delay_ms, now_ms,
        )  # fmt: skip

    def seen_ends(self) -> list[int]:
        """Per partition, one past the highest offset the journal names (see ``seen_end``)."""
        return [state.seen_end() for state in self._partitions]

    def skip(self, partition: int, start: int, end: int) -> None:
        """``[start, end)`` of ``partition`` will be a gap batch (recovery): mark it done and
        make that durable, so the gap never counts as backlog."""
        state = self._partitions[partition]
        state.finish_gap(start, end)
        self._read_ahead.pop(partition, None)
        self._done(partition, [(start, end)])
        self.journal.log.flush()

    def _skip_gap(self, state: PartitionDeliveries, end: int) -> None:
        """Offsets from the read position to ``end`` belong to a gap batch, which recovery
        writes so that offsets seen before a cut are never reused: no record will ever have
        them, so they are done."""
        gap = (state.read_offset, end)
        state.finish_gap(*gap)
        self._done(state.partition, [gap])

    def _forget(self, state: PartitionDeliveries, offsets: list[int]) -> None:
        """Retention deleted these records while they waited for a retry: they are done."""
        for offset in offsets:
            state.finish(offset)
        self._done(state.partition, ranges_of(offsets))

    def visible_at(self, record: StoredRecord) -> int:
        """When ``record`` may first be delivered (ms): its deliver-at header, the delay."""
        visible = record.timestamp_ms + self.spec.delay_ms if self.spec.delay_ms else 0
        for name, value in record.headers:
            if name == DELIVER_AT_HEADER and value.isdigit():
                # The broker writes this header; anything unparsable came from elsewhere and
                # must not stop the subscription: it means no delay.
                visible = max(visible, int(value))
        return visible

    @staticmethod
    def _record_at(log: PartitionLog, offset: int) -> StoredRecord | None:
        """The record at ``offset``; None if compaction removed it (a read goes on past)."""
        records = log.read(offset, max_records=1)
        return records[0] if records and records[0].offset == offset else None

    @staticmethod
    def _records_at(log: PartitionLog, offsets: list[int]) -> list[StoredRecord]:
        """The records at ``offsets`` (redeliveries), one decode per batch they share; those
        compaction removed are left out."""
        found: dict[int, StoredRecord] = {}
        for offset in sorted(offsets):
            if offset not in found:
                # max_bytes=1: exactly the batch holding ``offset``, from ``offset`` on.
                found.update((r.offset, r) for r in log.read(offset, max_bytes=1))
        return [found[offset] for offset in offsets if offset in found]

    # -- settle ---------------------------------------------------------------------------

    def ack(self, receipts: Iterable[Receipt]) -> list[Receipt]:
        """Mark messages done; returns the receipts whose lease was gone (not acked)."""
        now_ms = self._clock.now_ms()
        by_partition: dict[int, list[tuple[int, int]]] = {}
        for receipt in receipts:
            by_partition.setdefault(receipt.partition, []).append(
                (receipt.offset, receipt.delivery)
            )
        refused: list[Receipt] = []
        for partition, pairs in by_partition.items():
            acked, refused_offsets = self._state(partition).ack(pairs, now_ms)
            if acked:
                self._done(partition, acked)
            if refused_offsets:
                tokens = dict(pairs)
                refused += [Receipt(partition, o, tokens[o]) for o in refused_offsets]
        return refused

    def nack(
        self,
        receipts: Iterable[Receipt],
        delay_ms: int | None = None,
        error: str | None = None,
        undelivered: bool = False,
        reject: bool = False,
    ) -> list[Receipt]:
        """Give messages back: again after ``delay_ms`` (default: the retry policy), or to the
        dead-letter topic once ``max_deliveries`` is reached. Returns refused receipts.

        ``undelivered``: they never reached a handler (a closing subscriber had them
        prefetched): ready again at once, and the delivery is not counted, so that they never
        reach ``max_deliveries`` unseen (``delay_ms`` and ``error`` must be None).
        ``reject``: straight to the dead-letter topic, with ``x-roost-death-reason:
        rejected``, whatever the count (``delay_ms`` must be None)."""
        if delay_ms is not None:
            # The bound publish delays have; before anything changes.
            check_delay_fits(self.topic, check_delay(delay_ms))
        if undelivered:
            if delay_ms is not None or error is not None or reject:
                raise InvalidRequest("an undelivered nack takes no delay, no error, no reject")
            return self._give_back(receipts)
        if reject:
            if delay_ms is not None:
                raise InvalidRequest("a reject takes no delay: it goes to the dead-letter topic")
            if self.dead_letter is None:
                raise InvalidRequest(
                    f"{self.spec.topic}/{self.spec.name} has no dead-letter topic to reject to; "
                    "nack it instead"
                )
        limit = 0 if reject else self._max_deliveries
        now_ms = self._clock.now_ms()
        refused: list[Receipt] = []
        released: dict[int, list[Released]] = {}
        for receipt in receipts:
            state = self._state(receipt.partition)
            delay = self._retry_delay(receipt.delivery) if delay_ms is None else delay_ms
            outcome = state.release(
                receipt.offset,
                receipt.delivery,
                now_ms,
                now_ms + delay,
                error,
                limit,
            )
            if outcome is None:
                refused.append(receipt)
            else:
                released.setdefault(receipt.partition, []).append(outcome)
        reason = REJECTED if reject else MAX_DELIVERIES
        for partition, outcomes in released.items():
            self._settle_released(self._partitions[partition], outcomes, error, reason)
        if released and any(self._expiry.leased):
            self._expire_due(now_ms)  # a nacked message whose TTL passed goes now
        return refused

    def _give_back(self, receipts: Iterable[Receipt]) -> list[Receipt]:
        now_ms = self._clock.now_ms()
        refused: list[Receipt] = []
        returned: dict[int, list[int]] = {}
        for receipt in receipts:
            if self._state(receipt.partition).give_back(receipt.offset, receipt.delivery, now_ms):
                returned.setdefault(receipt.partition, []).append(receipt.offset)
            else:
                refused.append(receipt)
        for partition, offsets in returned.items():
            self._write(state_codec.returned(partition, offsets))
        return refused

    def extend(self, receipts: Iterable[Receipt], visibility_ms: int) -> list[Receipt]:
        """Push the leases' deadlines to now + ``visibility_ms``; returns refused receipts."""
        now_ms = self._clock.now_ms()
        deadline = now_ms + check_visibility(visibility_ms)
        return [
            receipt
            for receipt in receipts
            if not self._state(receipt.partition).extend(
                receipt.offset, receipt.delivery, now_ms, deadline
            )
        ]

    def _settle_released(
        self,
        state: PartitionDeliveries,
        outcomes: Sequence[Released],
        error: str | None,
        reason: str = MAX_DELIVERIES,
    ) -> None:
        retries = [o for o in outcomes if not o.dead]
        for visible_at in sorted({o.visible_at_ms for o in retries}):
            offsets = [o.offset for o in retries if o.visible_at_ms == visible_at]
            self._write(state_codec.retry(state.partition, visible_at, error, offsets))
        for outcome in outcomes:
            if outcome.dead:
                self._dead_letter(state, outcome.offset, reason)

    def _exhausted(self, state: PartitionDeliveries, offset: int) -> bool:
        attempts = state.attempts.get(offset)
        limit = self._max_deliveries
        return attempts is not None and limit is not None and attempts.count >= limit

    @property
    def _max_deliveries(self) -> int | None:
        return self.spec.max_deliveries if self.dead_letter is not None else None

    def _retry_delay(self, deliveries: int) -> int:
        if self._rng is None:
            self._rng = random.Random(f"{self.spec.topic}/{self.spec.name}")
        return self.spec.retry.delay_ms(deliveries, self._rng)

    def drop_below(self, partition: int, offset: int, dead_letter: bool = False) -> int:
        """Mark every message below ``offset`` consumed (overflow ``drop_oldest``), leased or
        not; returns how many were dropped.

        ``dead_letter`` (the topic's ``dead_letter_dropped``), with a dead-letter topic: each
        dropped message is dead-lettered instead, reason ``overflow``, in the two steps every
        dead letter takes (appended there now, done once that is durable; a crash between
        keeps the message in both places, never in neither). Its lease ends now (an ack is
        refused), and it no longer counts as backlog (``unconsumed``). A dead-letter topic
        that refuses the copies (too large, out of service) does not stop the drop: those
        messages are lost, as every drop_oldest drop is without the setting."""
        state = self._state(partition)
        floor = state.acks.floor
        if offset <= floor:
            return 0
        if dead_letter and self.dead_letter is not None:
            try:
                return self._dead_letter_dropped(state, floor, offset)
            except (RecordTooLarge, PartitionQuarantined, StorageClosed) as e:
                # The drop is the policy; the copies were kept where possible, not promised.
                _log.warning(
                    "%s/%s: overflow dropped messages below offset %d of partition %d without "
                    "their dead letters: %s", self.spec.topic, self.spec.name, offset, partition, e,
                )  # fmt: skip
        dropped = (offset - floor) - state.acks.done_between(floor, offset)
        state.finish_range(floor, offset)
        self._done(partition, [(floor, offset)])
        return dropped

    def purge(self) -> int:
        """Mark every confirmed message done, leased and delayed ones too (an ack of a purged
        message is refused); returns how many were purged. Messages published later, and
        those not yet durable under ``always``, stay."""
        return sum(
            self.drop_below(partition, self.topic.log(partition).confirmed_offset)
            for partition in range(len(self._partitions))
        )

    # -- time -----------------------------------------------------------------------------

    def tick(self) -> int | None:
        """Expire leases, end delays, settle dead letters; returns the next deadline (ms)."""
        now_ms = self._clock.now_ms()
        for state in self._partitions:
            expired = state.expire(now_ms)
            if expired:
                # Visible again at the deadline, as in SQS: the retry policy is for nacks.
                outcomes = [
                    state.requeue(offset, deadline, "lease expired", self._max_deliveries)
                    for offset, deadline in expired
                ]
                self._settle_released(state, outcomes, "lease expired")
        if self._expiry.active or any(self._expiry.leased):
            self._expire_due(now_ms)
        # Settling a dead letter may unblock a key: do it before promoting what is due.
        self._settle_dead_letters()
        for state in self._partitions:
            state.promote(now_ms)
        deadlines = [d for s in self._partitions if (d := s.next_deadline_ms()) is not None]
        if self._expiry.active:
            deadlines += [
                d
                for p in range(len(self._partitions))
                if (d := self._expiry.next_deadline_ms(p, self.topic.log(p), now_ms)) is not None
            ]
        if self.throttled_until_ms is not None:
            if self.throttled_until_ms > now_ms:
                deadlines.append(self.throttled_until_ms)
            else:
                self.throttled_until_ms = None  # this tick wakes its readers: they go on
        return min(deadlines) if deadlines else None

    # -- dead letters ---------------------------------------------------------------------

    def _dead_letter(
        self, state: PartitionDeliveries, offset: int, reason: str = MAX_DELIVERIES
    ) -> None:
        assert self.dead_letter is not None
        log = self.topic.log(state.partition)
        if offset < log.start_offset:
            self._forget(state, [offset])
            return
        record = self._record_at(log, offset)
        if record is None:  # compacted away: a later record of its key replaced it
            self._forget(state, [offset])
            return
        attempts = state.attempts[offset]
        dead = self._dead_record(state, record, attempts, reason)
        partition = state.partition % len(self.dead_letter.partitions)
        try:
            result = self.dead_letter.append(partition, [dead])
        except (RecordTooLarge, PartitionQuarantined) as e:
            # Keep it rather than lose it: retried (and refused again) until an operator
            # raises the dead-letter topic's limit or repairs its partition; the error says
            # why. (Raising here would stop every subscription's tick, not just this one.)
            retry_at = self._clock.now_ms() + self._retry_delay(attempts.count)
            state.requeue(offset, retry_at, f"dead-letter topic refused it: {e}", None)
            self._write(state_codec.retry(state.partition, retry_at, attempts.last_error, [offset]))
            return
        self._pending_dead.append(
            PendingDeadLetter(
                state.partition, offset, self.dead_letter.log(partition), result.next_offset
            )
        )
        self._on_deadline(self._clock.now_ms())  # a tick settles it once it is durable

    def _dead_record(
        self, state: PartitionDeliveries, record: StoredRecord, attempts: Attempts, reason: str
    ) -> Record:
        """``record`` as its dead letter: the headers say where it came from and why."""
        headers = (
            # A dead letter keeps no TTL of its own: it waits in its topic until handled.
            *(h for h in record.headers if h[0] != EXPIRES_AT_HEADER),
            *zip(
                DLQ_HEADERS,
                (
                    self.spec.topic.encode(),
                    b"%d" % state.partition,
                    b"%d" % record.offset,
                    b"%d" % attempts.count,
                    b"%d" % attempts.first_ms,
                    b"%d" % attempts.last_ms,
                    (attempts.last_error or "").encode(),
                    reason.encode(),
                ),
                strict=True,
            ),
        )
        return Record(
            value=record.value, key=record.key, headers=headers, timestamp_ms=record.timestamp_ms
        )

    def _dead_letter_dropped(self, state: PartitionDeliveries, start: int, end: int) -> int:
        """Dead-letter (reason ``overflow``) each message of ``[start, end)`` not done and not
        on its way there already, in one append; returns how many (see ``drop_below``)."""
        assert self.dead_letter is not None
        log = self.topic.log(state.partition)
        dying = self.dead_lettering(state.partition) if self._pending_dead else set()
        acks = state.acks
        dead: list[Record] = []
        offsets: list[int] = []
        offset = max(start, log.start_offset)
        while offset < end:
            records = log.read(offset, max_records=min(256, end - offset))
            if not records:
                break
            for record in records:
                if record.offset >= end:
                    break
                if record.offset in acks or record.offset in dying:
                    continue
                attempts = state.attempts_of(record.offset) or Attempts()
                dead.append(self._dead_record(state, record, attempts, OVERFLOW))
                offsets.append(record.offset)
            offset = records[-1].offset + 1
        if not dead:
            return 0
        partition = state.partition % len(self.dead_letter.partitions)
        result = self.dead_letter.append(partition, dead)
        letters = self.dead_letter.log(partition)
        for dropped in offsets:
            state.leases.pop(dropped, None)  # its lease ends: an ack of it is refused
            self._pending_dead.append(
                PendingDeadLetter(state.partition, dropped, letters, result.next_offset)
            )
        self._on_deadline(self._clock.now_ms())  # a tick settles them once they are durable
        return len(dead)

    def _settle_dead_letters(self) -> None:
        still_pending = []
        finished: dict[int, list[int]] = {}
        for pending in self._pending_dead:
            log = pending.log
            confirmed = (
                log.config.durability != "always" or log.durable_offset >= pending.next_offset
            )
            if confirmed:
                state = self._partitions[pending.partition]
                state.finish(pending.offset)
                state.dead_lettered += 1
                finished.setdefault(pending.partition, []).append(pending.offset)
            else:
                still_pending.append(pending)
        self._pending_dead = still_pending
        for partition, offsets in finished.items():
            self._done(partition, ranges_of(offsets))

    def dead_lettering(self, partition: int) -> set[int]:
        """Offsets of ``partition`` on their way to the dead-letter topic (appended there, not
        yet durable): no longer the queue's to deliver, not yet finished."""
        return {p.offset for p in self._pending_dead if p.partition == partition}

    @property
    def pending_dead_letters(self) -> list[PendingDeadLetter]:
        """Dead-letter appends waiting to be durable; the host awaits them, then ticks."""
        return list(self._pending_dead)

    # -- journal --------------------------------------------------------------------------

    def _done(self, partition: int, ranges: list[tuple[int, int]]) -> None:
        """Journal offsets of ``partition`` as done (the only way they become done)."""
        self._write(state_codec.done(partition, ranges))
        self._on_done(partition)

    def _write(self, entry: bytes) -> None:
        self.journal.append([entry])
        self._entries_since_snapshot += 1
        if self._entries_since_snapshot == state_codec.SNAPSHOT_EVERY:
            self._on_snapshot_due()

    @property
    def snapshot_due(self) -> bool:
        return self._entries_since_snapshot >= state_codec.SNAPSHOT_EVERY

    def snapshot(self) -> bytes:
        """The whole state, for ``Journal.snapshot_job``; resets the entry count."""
        self._entries_since_snapshot = 0
        return state_codec.snapshot(self._partitions, {})

    # -- inspection -----------------------------------------------------------------------

    def _state(self, partition: int) -> PartitionDeliveries:
        if type(partition) is not int or not 0 <= partition < len(self._partitions):
            raise UnknownPartition(self.spec.topic, partition, len(self._partitions))
        return self._partitions[partition]

    def partition_state(self, partition: int) -> PartitionDeliveries:
        return self._state(partition)

    def floor(self, partition: int) -> int:
        """The ack floor of ``partition``: below it, every message is done."""
        return self._state(partition).acks.floor

    def unconsumed(self, partition: int) -> int:
        """Messages of ``partition`` up to its end not done (acked or dead-lettered)."""
        acks = self._state(partition).acks
        end = self.topic.log(partition).end_offset
        # On their way to the dead-letter topic: consumed, for backpressure (drop_below).
        dying = len(self.dead_lettering(partition)) if self._pending_dead else 0
        return end - acks.floor - acks.done_between(acks.floor, end) - dying

    def stats(self, now_ms: int) -> SubscriptionStats:
        for state in self._partitions:
            if state.scheduled is not None:
                state.promote(now_ms)  # what came due since the last tick is ready, not delayed
        if self._expiry.active or any(self._expiry.leased):
            self._expire_due(now_ms)  # whoever looks first expires what is due
        return subscription_stats(self, now_ms)

    def peek(self, now_ms: int, max_messages: int, partition: int | None) -> list[Peeked]:
        if self._expiry.active or any(self._expiry.leased):
            self._expire_due(now_ms)
        return peek_queue(self, now_ms, max_messages, partition)


def _ignore(value: int) -> None:
    """Nobody watches this subscription (used on its own, as in tests)."""


def _nobody() -> None:
    """Nobody watches for this subscription's snapshots."""
