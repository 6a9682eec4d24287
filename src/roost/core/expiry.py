"""Message TTL: when a queue subscription's messages expire, and which are due now.

A message expires at the earliest of

- its own ``x-roost-expires-at`` header: ``publish(ttl=...)`` writes the publish time plus the
  TTL there, so the expiry is fixed at publish (NATS's per-message TTL, RabbitMQ's
  ``expiration`` property);
- its record's timestamp plus the subscription's ``message_ttl_ms`` (RabbitMQ's
  ``x-message-ttl``): also counted from the publish.

Both count from the publish, as RabbitMQ counts from the enqueue: a delayed message spends its
delay out of its TTL (a publish whose delay reaches past its own TTL is refused; one that a
subscription default would expire before its delay ends is expired unseen).

The rules, for ``QueueSubscription`` (which does what expiring means: dead-letter with
``x-roost-death-reason: expired`` where there is a dead-letter topic, else done, journaled
as an ack):

- An expired message is never delivered: a receive drops what it would lease (``is_expired``).
- A message leased when its TTL passes keeps its lease, as RabbitMQ expires only what waits
  in the queue, never what was delivered: an ack finishes it as usual; when the lease ends
  otherwise (a nack, a lease that runs out) it is expired then, never redelivered. It is
  remembered in ``leased`` meanwhile.
- The tick expires what is due without waiting for a receive, so depth drops promptly:
  - the subscription's default: records in offset order expire in order (the head first),
    so a **cursor** per partition walks from the ack floor: every offset below it has been
    looked at. The next due time is the cursor record's timestamp plus the TTL.
  - per-message TTLs: a heap of ``(expires_at_ms, offset)`` per partition, fed at publish
    (``announce``, as delays are announced) and, after a restart, by a search of the first
    ``SCAN_AT_OPEN_BYTES`` of stored batches above the ack floor for the header's name
    (only a batch holding it is decoded). A message with its own TTL beyond those is still
    never delivered (a receive checks), but is counted in depth until a receive reaches it.
- At most ``MAX_PER_PASS`` messages are expired per tick; the next deadline is then "now".

Memory: one heap entry per message published with its own TTL and not finished (entries of
finished ones go when their time comes, or when the heap doubles: ``PRUNE_AT_LEAST``); the
cursor costs nothing per message. Nothing here is journaled: the log holds the
headers and timestamps, the state journal what was expired (as done or dead-lettered).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from roost.core.acks import AckRanges
from roost.core.header_scan import header_time, timed_records
from roost.core.model import EXPIRES_AT_HEADER
from roost.storage import StoredRecord
from roost.storage.log import PartitionLog

#: Messages expired per partition per tick, at most (each dead letter is an append).
MAX_PER_PASS = 1_000
#: A partition's heap is pruned of finished messages when it grows past twice what it held
#: after its last pruning (and at least this many entries): amortised, a few list operations
#: per message, and the heap holds what is not finished, not every message of the TTL window.
PRUNE_AT_LEAST = 4_096
#: Bytes of stored batches above the ack floor searched for per-message TTLs at open.
SCAN_AT_OPEN_BYTES = 64 * 1024
#: How soon a due record not yet durable is looked at again (it cannot be expired before:
#: a crash could take it back, and a later record would be written at its offset).
RECHECK_UNCONFIRMED_MS = 50


class Expiry:
    """The expiry times of one queue subscription's messages, per partition."""

    def __init__(self, message_ttl_ms: int | None, floors: Sequence[int]) -> None:
        self.message_ttl_ms = message_ttl_ms
        self._heaps: list[list[tuple[int, int]]] = [[] for _ in floors]
        self._prune_at = [PRUNE_AT_LEAST for _ in floors]
        #: Below it, every offset has been looked at for the subscription's default TTL.
        self._cursor = list(floors)
        #: When the record at the cursor expires, once read (None: not known): until then a
        #: pass reads nothing. Records are in timestamp order, so a cursor that moved on (the
        #: floor passed it) only makes the next one due later, never earlier.
        self._cursor_due: list[int | None] = [None for _ in floors]
        #: Offsets whose TTL passed while they were leased: expired when the lease ends.
        self.leased: list[set[int]] = [set() for _ in floors]
        #: Messages expired since the process started, per partition (for stats, metrics).
        self.expired = [0 for _ in floors]
        #: Whether a record may carry its own TTL: set when one is announced or found, and
        #: when the search at open could not look at everything (a receive then checks
        #: every record's headers; until then it does not read them).
        self.per_message = False

    # -- feeding --------------------------------------------------------------------------

    def announce(
        self, partition: int, expiries: list[tuple[int, int]], acks: AckRanges | None = None
    ) -> None:
        """``(offset, expires_at_ms)`` of records just appended to ``partition``; ``acks``
        (what is done) lets a heap that has grown be pruned of what needs no expiring."""
        heap = self._heaps[partition]
        for offset, expires_at_ms in expiries:
            heapq.heappush(heap, (expires_at_ms, offset))
        self.per_message = True
        if acks is not None and len(heap) > self._prune_at[partition]:
            heap[:] = [entry for entry in heap if entry[1] not in acks]
            heapq.heapify(heap)
            self._prune_at[partition] = max(PRUNE_AT_LEAST, 2 * len(heap))

    def scan(self, partition: int, log: PartitionLog, floor: int) -> None:
        """At open: find the per-message TTLs of the first unfinished records of
        ``partition``, at most ``SCAN_AT_OPEN_BYTES`` of stored batches."""
        self._cursor[partition] = max(floor, self._cursor[partition])
        found, whole = timed_records(log, floor, EXPIRES_AT_HEADER, SCAN_AT_OPEN_BYTES)
        if not whole:
            self.per_message = True  # not all looked at: receives check each one
        if found:
            self.announce(partition, found)

    # -- asking ---------------------------------------------------------------------------

    def expires_at(self, record: StoredRecord) -> int | None:
        """When ``record`` expires (ms); None if never."""
        at = None
        if self.message_ttl_ms is not None:
            at = record.timestamp_ms + self.message_ttl_ms
        if self.per_message and record.headers:
            own = _own_expiry(record.headers)
            if own is not None and (at is None or own < at):
                at = own
        return at

    def is_expired(self, record: StoredRecord, now_ms: int) -> bool:
        at = self.expires_at(record)
        return at is not None and at <= now_ms

    @property
    def active(self) -> bool:
        """Whether any message of the subscription may ever expire."""
        return self.message_ttl_ms is not None or self.per_message

    def due(self, partition: int, log: PartitionLog, acks: AckRanges, now_ms: int) -> list[int]:
        """Offsets of ``partition`` whose TTL has passed and that nobody has looked at since,
        not done (at most ``MAX_PER_PASS``); the caller expires each, or keeps it in
        ``leased``. Records not yet durable are left for later."""
        found: list[int] = []
        heap = self._heaps[partition]
        start = log.start_offset
        while heap and heap[0][0] <= now_ms and len(found) < MAX_PER_PASS:
            _, offset = heap[0]
            if offset >= log.confirmed_offset:
                break
            heapq.heappop(heap)
            if offset >= start and offset not in acks:
                found.append(offset)
        if self.message_ttl_ms is not None:
            found += self._due_by_default(partition, log, acks, now_ms, MAX_PER_PASS - len(found))
        return found

    def _due_by_default(
        self, partition: int, log: PartitionLog, acks: AckRanges, now_ms: int, limit: int
    ) -> list[int]:
        assert self.message_ttl_ms is not None
        known_due = self._cursor_due[partition]
        if known_due is not None and now_ms < known_due:
            return []  # the head is not due yet: no read (a receive's tick passes here)
        self._cursor_due[partition] = None
        oldest_kept = now_ms - self.message_ttl_ms  # a record at or before it has expired
        cursor = max(self._cursor[partition], acks.floor, log.start_offset)
        readable = log.confirmed_offset
        found: list[int] = []
        while cursor < readable and len(found) < limit and not log.quarantined:
            records = log.read(cursor, max_records=min(256, readable - cursor))
            if not records:
                break
            for record in records:
                if record.offset >= readable or record.timestamp_ms > oldest_kept:
                    self._cursor[partition] = cursor
                    if record.offset < readable:
                        self._cursor_due[partition] = record.timestamp_ms + self.message_ttl_ms
                    return found
                if record.offset not in acks:
                    found.append(record.offset)
                cursor = record.offset + 1
                if len(found) >= limit:
                    break
        self._cursor[partition] = cursor
        return found

    def next_deadline_ms(self, partition: int, log: PartitionLog, now_ms: int) -> int | None:
        """When something of ``partition`` is next due to expire, as far as is known."""
        candidates = []
        heap = self._heaps[partition]
        if heap:
            candidates.append(heap[0][0])
        known_due = self._cursor_due[partition]
        if known_due is not None:
            candidates.append(known_due)
        elif self.message_ttl_ms is not None and not log.quarantined:
            cursor = max(self._cursor[partition], log.start_offset)
            if cursor < log.end_offset:
                records = log.read(cursor, max_records=1)
                if records:
                    candidates.append(records[0].timestamp_ms + self.message_ttl_ms)
        if not candidates:
            return None
        deadline = min(candidates)
        if deadline <= now_ms:
            # Due but not expired by the pass just made: not durable yet (or more than a
            # pass could take, and then ``now`` is right anyway).
            return now_ms + RECHECK_UNCONFIRMED_MS
        return deadline

    def forget_below(self, partition: int, offset: int) -> None:
        """Offsets below ``offset`` are done some other way (dropped, purged)."""
        self._cursor[partition] = max(self._cursor[partition], offset)


def _own_expiry(headers: Sequence[tuple[str, bytes]]) -> int | None:
    # The broker writes this header; anything unparsable came from elsewhere and must not
    # stop the subscription: it means no TTL of its own.
    return header_time(headers, EXPIRES_AT_HEADER)
