"""Delivery state of one `queue` or `keyed` subscription on one partition.

Offsets move through these states; every transition is a method here, and nothing else changes
them:

    unread --admit--> ready | delayed | parked (keyed: its key is busy)
    ready --lease--> leased --ack--> done
                     leased --release (nack, lease expiry)--> delayed | ready | dead
                     leased --give_back (never handed to a handler)--> ready, uncounted
    delayed --promote (time passes)--> ready
    scheduled (announced at publish, core/scheduled.py) --promote--> ready
    parked --(the key's head is done)--> ready | delayed
    dead --finish (after the dead-letter append)--> done

- ``read_offset`` is the next offset never admitted. Admission reads the log forward; offsets
  already done (known from the ack ranges after a restart) are skipped.
- ``ready`` is a min-heap of offsets to deliver now, lowest first; ``delayed`` a heap of
  ``(visible_at_ms, offset)``; leases a dict plus a heap of deadlines (stale heap entries are
  skipped, not removed).
- A lease's token is the delivery count at the time: an ack or nack carrying an older token is
  for a delivery that expired, and is refused.
- `keyed` mode: a key is busy while its head offset is leased, delayed or ready; later offsets
  of a busy key are parked on that key's own queue, in order. Parking is per key, so a key stuck
  in retries never holds back any other key, however long its own queue. A record's key is
  ``b""`` when it has none.
- What must survive a restart (ack ranges, attempt counts and times, retry times) is exposed for
  the journal; leases are not: after a restart every unacked offset is admitted again.
- The counters (``delivered`` ... ``dead_lettered``) count since the process started, for
  ``/metrics``; each costs one integer increment per call (per message only on paths that are
  per message anyway: a nack, a redelivery, an expiry). Never journaled.

The caller (subscription.py) reads records and builds messages; this class only decides.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterable
from typing import NamedTuple

from roost.core.acks import AckRanges, ranges_of
from roost.core.scheduled import ScheduledDelays


class Attempts:
    """What is known about the deliveries of one offset that is not done yet."""

    __slots__ = ("count", "first_ms", "last_error", "last_ms")

    def __init__(self, count: int = 0, first_ms: int = 0, last_ms: int = 0) -> None:
        self.count = count
        self.first_ms = first_ms
        self.last_ms = last_ms
        self.last_error: str | None = None


class Lease(NamedTuple):
    token: int
    deadline_ms: int
    consumer: str
    leased_ms: int


class Released(NamedTuple):
    """Outcome of a release: retry at ``visible_at_ms``, or dead-letter (``dead``)."""

    offset: int
    dead: bool
    visible_at_ms: int


class PartitionDeliveries:
    def __init__(self, partition: int, keyed: bool, acks: AckRanges | None = None) -> None:
        self.partition = partition
        self.keyed = keyed
        self.acks = acks or AckRanges()
        self.read_offset = self.acks.floor
        self.attempts: dict[int, Attempts] = {}
        self.retry_at: dict[int, int] = {}  # offset -> visible_at_ms, survives restarts
        self.leases: dict[int, Lease] = {}
        # (deadline, serial, [(offset, token), ...]): one entry per receive or extend; entries
        # whose leases were acked, released or extended are skipped, not removed.
        self._lease_heap: list[tuple[int, int, list[tuple[int, int]]]] = []
        self._heap_serial = 0
        self._ready: list[int] = []
        self._delayed: list[tuple[int, int]] = []
        self._busy: dict[bytes, deque[tuple[int, int]]] = {}  # key -> parked (offset, visible)
        self._head_key: dict[int, bytes] = {}
        #: Delayed offsets known before they are read (`queue` mode without a queue delay):
        #: the read position jumps over them, ``promote`` makes them ready.
        self.scheduled: ScheduledDelays | None = None
        self.delivered = 0  # leases granted: first deliveries and redeliveries
        self.redelivered = 0  # leases granted to an offset delivered before
        self.acked = 0
        self.nacked = 0  # leases given back by a consumer
        self.expired = 0  # leases that ran out before an ack or a nack
        self.dead_lettered = 0  # done by moving to the dead-letter topic (subscription.py)
        self.given_back = 0  # leases returned unseen by a closing subscriber (``give_back``)
        #: Told each new lease deadline or delay end, which may be earlier than any before:
        #: the broker's timers (core/timers.py) visit this partition's subscription then.
        self.on_deadline: Callable[[int], None] = _ignore

    # -- admission ------------------------------------------------------------------------

    def admit(self, offset: int, key: bytes | None, visible_at_ms: int, now_ms: int) -> bool:
        """Take in the record at ``read_offset``; True if it may be leased right now.

        ``visible_at_ms`` is when the record may first be delivered (its delay).
        """
        self.read_offset = offset + 1
        acks = self.acks
        if offset < acks.floor or (acks.has_ranges and offset in acks):
            return False
        visible_at_ms = max(visible_at_ms, self.retry_at.get(offset, 0))
        if self.keyed:
            key = key or b""
            parked = self._busy.get(key)
            if parked is not None:
                parked.append((offset, visible_at_ms))
                return False
            self._busy[key] = deque()
            self._head_key[offset] = key
        if visible_at_ms > now_ms:
            self._delay(visible_at_ms, offset)
            return False
        return True

    def take_ready(self, limit: int) -> list[int]:
        """Up to ``limit`` offsets that are ready to be delivered again, lowest first."""
        taken: list[int] = []
        while self._ready and len(taken) < limit:
            offset = heapq.heappop(self._ready)
            if offset not in self.acks and offset not in self.leases and offset not in taken:
                taken.append(offset)
        return taken

    # -- leases ---------------------------------------------------------------------------

    def lease(
        self, offsets: list[int], now_ms: int, visibility_ms: int, consumer: str
    ) -> list[int]:
        """Lease ``offsets`` until now + ``visibility_ms``; returns each one's token (its
        delivery count). One deadline entry covers the whole batch."""
        deadline = now_ms + visibility_ms
        attempts_of, leases = self.attempts, self.leases
        tokens = []
        for offset in offsets:
            # A first delivery keeps its count in the lease alone: ``Attempts`` are made only
            # when a message comes back (``_attempts_after``), which most never do.
            attempts = attempts_of.get(offset)
            if attempts is None:
                token = 1
            else:
                attempts.count += 1
                attempts.last_ms = now_ms
                token = attempts.count
                self.redelivered += 1
            leases[offset] = Lease(token, deadline, consumer, now_ms)
            tokens.append(token)
        self._push_deadline(deadline, list(zip(offsets, tokens, strict=True)))
        self.delivered += len(offsets)
        return tokens

    def _push_deadline(self, deadline_ms: int, members: list[tuple[int, int]]) -> None:
        self._heap_serial += 1
        heapq.heappush(self._lease_heap, (deadline_ms, self._heap_serial, members))
        self.on_deadline(deadline_ms)

    def _delay(self, visible_at_ms: int, offset: int) -> None:
        heapq.heappush(self._delayed, (visible_at_ms, offset))
        self.on_deadline(visible_at_ms)

    def holds(self, offset: int, token: int, now_ms: int) -> bool:
        """Whether delivery ``token`` of ``offset`` is still leased: a lease past its deadline
        is gone even before ``expire`` has swept it."""
        lease = self.leases.get(offset)
        return lease is not None and lease.token == token and lease.deadline_ms > now_ms

    def extend(self, offset: int, token: int, now_ms: int, deadline_ms: int) -> bool:
        if not self.holds(offset, token, now_ms):
            return False
        lease = self.leases[offset]
        self.leases[offset] = lease._replace(deadline_ms=deadline_ms)
        self._push_deadline(deadline_ms, [(offset, token)])
        return True

    def ack(
        self, pairs: Iterable[tuple[int, int]], now_ms: int
    ) -> tuple[list[tuple[int, int]], list[int]]:
        """Finish leased offsets, given as ``(offset, token)``; returns the ranges acked and
        the offsets refused (their lease is gone: expired, or another delivery holds it)."""
        leases = self.leases
        acked: list[int] = []
        refused: list[int] = []
        for offset, token in pairs:
            lease = leases.get(offset)
            if lease is None or lease.token != token or lease.deadline_ms <= now_ms:
                refused.append(offset)
                continue
            del leases[offset]
            acked.append(offset)
        self.acked += len(acked)
        return self.finish_many(acked), refused

    def release(
        self,
        offset: int,
        token: int,
        now_ms: int,
        visible_at_ms: int,
        error: str | None,
        max_deliveries: int | None,
    ) -> Released | None:
        """Give a leased offset back (nack): retry at ``visible_at_ms``, or mark it dead.

        None if the lease is gone (expired, or another delivery holds the offset now).
        """
        if not self.holds(offset, token, now_ms):
            return None
        self.nacked += 1
        self._attempts_after(offset, self.leases.pop(offset))
        return self.requeue(offset, visible_at_ms, error, max_deliveries)

    def give_back(self, offset: int, token: int, now_ms: int) -> bool:
        """A leased offset that never reached a handler (its subscriber closed with it
        prefetched): ready again at once, and the delivery it was leased for does not count.
        False if the lease is gone."""
        if not self.holds(offset, token, now_ms):
            return False
        del self.leases[offset]
        attempts = self.attempts.get(offset)
        if attempts is not None:  # delivered before: its count had moved on for this lease
            attempts.count -= 1
        self.given_back += 1
        self._delay(now_ms, offset)
        return True

    def _live(self, deadline_ms: int, offset: int, token: int) -> bool:
        lease = self.leases.get(offset)
        return lease is not None and lease.token == token and lease.deadline_ms == deadline_ms

    def expire(self, now_ms: int) -> list[tuple[int, int]]:
        """Drop every lease whose deadline has passed; returns ``(offset, deadline_ms)`` pairs
        for the caller to requeue (a retry delay counts from the deadline, not from whenever
        the expiry was noticed)."""
        expired = []
        heap = self._lease_heap
        while heap and heap[0][0] <= now_ms:
            deadline, _, members = heapq.heappop(heap)
            for offset, token in members:
                if self._live(deadline, offset, token):
                    self._attempts_after(offset, self.leases.pop(offset))
                    expired.append((offset, deadline))
        self.expired += len(expired)
        return expired

    def _attempts_after(self, offset: int, lease: Lease) -> None:
        """A lease ended without an ack: its first delivery's count moves out of the lease."""
        if offset not in self.attempts:
            self.attempts[offset] = Attempts(lease.token, lease.leased_ms, lease.leased_ms)

    def attempts_of(self, offset: int) -> Attempts | None:
        """What is known of ``offset``'s deliveries, from its attempts or its live lease."""
        attempts = self.attempts.get(offset)
        lease = self.leases.get(offset)
        if attempts is None and lease is not None:
            return Attempts(lease.token, lease.leased_ms, lease.leased_ms)
        return attempts

    def requeue(
        self, offset: int, visible_at_ms: int, error: str | None, max_deliveries: int | None
    ) -> Released:
        """An offset no longer leased: deliver again at ``visible_at_ms``, or it is dead."""
        attempts = self.attempts[offset]
        attempts.last_error = error
        if max_deliveries is not None and attempts.count >= max_deliveries:
            return Released(offset, True, visible_at_ms)
        self.retry_at[offset] = visible_at_ms
        self._delay(visible_at_ms, offset)
        return Released(offset, False, visible_at_ms)

    # -- time -----------------------------------------------------------------------------

    def promote(self, now_ms: int) -> int:
        """Move delayed offsets whose time has come to ready; returns how many."""
        moved = 0
        while self._delayed and self._delayed[0][0] <= now_ms:
            _, offset = heapq.heappop(self._delayed)
            if offset not in self.acks and offset not in self.leases:
                heapq.heappush(self._ready, offset)
                moved += 1
        scheduled = self.scheduled
        if scheduled is not None and scheduled.wheel.next_ms() <= now_ms:
            moved += self._promote_scheduled(scheduled, now_ms)
        return moved

    def _promote_scheduled(self, scheduled: ScheduledDelays, now_ms: int) -> int:
        moved = 0
        acks, leases, retry_at, ready = self.acks, self.leases, self.retry_at, self._ready
        for start, end in scheduled.wheel.due(now_ms):
            for offset in range(start, end):
                # A retry due later is in ``_delayed`` (restored after a restart).
                if offset in acks or offset in leases or retry_at.get(offset, 0) > now_ms:
                    continue
                heapq.heappush(ready, offset)
                moved += 1
        return moved

    def hold(self, offset: int, visible_at_ms: int) -> None:
        """Restored after a restart: ``offset`` waits for its retry at ``visible_at_ms``, not
        read again (``scheduled`` skips it)."""
        self._delay(visible_at_ms, offset)

    def make_ready(self, offsets: list[int]) -> None:
        """Offsets taken by ``take_ready`` but not delivered (not durable yet): ready again."""
        for offset in offsets:
            heapq.heappush(self._ready, offset)

    def next_deadline_ms(self) -> int | None:
        """The earliest lease deadline or delay end, for the host's timer."""
        candidates = []
        heap = self._lease_heap
        if not self.leases:
            heap.clear()  # every entry is stale: nothing is leased
        elif heap:
            # May be a batch whose leases are all gone: the host then wakes early, finds
            # nothing, and sleeps again — cheaper than checking every member here.
            candidates.append(heap[0][0])
        if self._delayed:
            candidates.append(self._delayed[0][0])
        if self.scheduled is not None and self.scheduled.count:
            candidates.append(self.scheduled.wheel.next_ms())
        return min(candidates) if candidates else None

    # -- done -----------------------------------------------------------------------------

    def finish_many(self, offsets: list[int]) -> list[tuple[int, int]]:
        """``finish`` for many offsets, the ack ranges updated once per contiguous run;
        returns those runs as ``[start, end)`` ranges."""
        runs = ranges_of(offsets)
        if self._head_key:
            for offset in offsets:
                self.finish(offset)
            return runs
        for start, end in runs:
            self.acks.add_range(start, end)
        attempts, retry_at = self.attempts, self.retry_at
        for offset in offsets:
            attempts.pop(offset, None)
        if retry_at:
            for offset in offsets:
                retry_at.pop(offset, None)
        return runs

    def finish(self, offset: int) -> None:
        """``offset`` is done (acked, or dead-lettered): record it, unblock its key."""
        self.acks.add(offset)
        self.attempts.pop(offset, None)
        self.retry_at.pop(offset, None)
        self.leases.pop(offset, None)
        key = self._head_key.pop(offset, None)
        if key is None:
            return
        parked = self._busy[key]
        if not parked:
            del self._busy[key]
            return
        head, visible_at_ms = parked.popleft()
        self._head_key[head] = key
        self._delay(max(visible_at_ms, self.retry_at.get(head, 0)), head)

    def finish_range(self, start: int, end: int) -> None:
        """Every offset in ``[start, end)`` is done, read or not (dropped, or past retention).

        Leased, delayed and parked offsets in the range go too, and keys whose heads were in
        it move on to their first offset past it.
        """
        self.acks.add_range(start, end)
        self.read_offset = max(self.read_offset, end)
        if self.scheduled is not None:
            self.scheduled.discard(start, end)
        while stale := [o for o in {*self.leases, *self.attempts, *self._head_key} if o < end]:
            for offset in stale:
                self.finish(offset)

    def seen_end(self) -> int:
        """One past the highest offset this state names: acked, delivered or due for a retry.

        After a cut, the log must continue past it (``Broker.open``): an offset named here and
        then given to a new record would be that record's fate, never delivered if done.
        """
        ends = [self.acks.floor, self.read_offset, *(end for _, end in self.acks.ranges())]
        if self.attempts:
            ends.append(max(self.attempts) + 1)
        if self.retry_at:
            ends.append(max(self.retry_at) + 1)
        if self.scheduled is not None:
            ends.append(self.scheduled.seen_end())
        return max(ends)

    def finish_gap(self, start: int, end: int) -> None:
        """No record will ever have an offset in ``[start, end)`` (a gap batch): done, with
        whatever the journal said about them; offsets outside the range keep their state."""
        self.acks.add_range(start, end)
        if start <= self.read_offset < end:
            self.read_offset = end
        if self.scheduled is not None:
            self.scheduled.discard(start, end)
        for offset in [
            o for o in {*self.leases, *self.attempts, *self.retry_at} if start <= o < end
        ]:
            self.finish(offset)

    # -- counts ---------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self.leases)

    @property
    def delayed(self) -> int:
        scheduled = self.scheduled.count if self.scheduled is not None else 0
        return (
            sum(1 for _, offset in self._delayed if offset not in self.acks)
            + sum(len(parked) for parked in self._busy.values())
            + scheduled
        )


def _ignore(deadline_ms: int) -> None:
    """No one watches this partition's deadlines (a subscription used on its own)."""
