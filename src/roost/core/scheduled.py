"""Delayed offsets of one partition that a `queue` subscription knows before reading them.

A receive reads the log in offset order. Were delayed records admitted as it reads them, a
million delayed records ahead of a ready one would be read (and held, one heap entry each)
before that one is delivered. Instead the broker tells the subscription, when it publishes a
delayed record, its offset and time (``Broker._announce_delays``); the subscription journals
that (state_codec's ``DELAYED`` entry, in the publish's flush round) and keeps it here:

- in a ``DelayWheel``, by time: ``due`` hands the offsets whose time has come to the ready
  heap (``PartitionDeliveries.promote``);
- as sorted, merged offset ranges, by offset: the read position jumps over them (``jump``)
  without reading a record, however many there are.

So a delayed offset is admitted out of band, once, when announced; the read path never admits
it again. A delayed record the subscription was not told of (its journal entry lost in a crash
before its fsync, a subscription created after the publish) is admitted by the read path from
its deliver-at header, as before: never early, never lost. After a restart, retries due later
than now are skipped the same way (``skip``), so a backlog of long retries does not stand
between a receive and a ready message either.

Memory: 24 bytes per run of offsets delayed to one time, plus 16 per range of consecutive
skipped offsets; ranges the read position has passed are dropped.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from typing import TYPE_CHECKING

from roost.core.acks import AckRanges
from roost.core.delay_wheel import NEVER, DelayWheel

if TYPE_CHECKING:
    from roost.core.deliveries import PartitionDeliveries

#: Ranges passed by the read position are dropped from the front this many at a time.
_COMPACT_AFTER = 1024


class ScheduledDelays:
    __slots__ = ("_ends", "_head", "_starts", "next_skip", "wheel")

    def __init__(self) -> None:
        self.wheel = DelayWheel()
        #: Offset ranges ``[start, end)`` the read position skips; ``_head`` is the first not
        #: yet passed. Sorted, disjoint, non-adjacent.
        self._starts = array("q")
        self._ends = array("q")
        self._head = 0
        #: Where the next skipped range starts (NEVER: none); the read path reads up to it.
        self.next_skip = NEVER

    def add(self, visible_at_ms: int, start: int, end: int, now_ms: int) -> None:
        """Offsets ``[start, end)`` are delayed until ``visible_at_ms`` and must not be read."""
        self.wheel.add(visible_at_ms, start, end, now_ms)
        self.skip(start, end)

    def skip(self, start: int, end: int) -> None:
        """The read position jumps over ``[start, end)`` (they are tracked elsewhere)."""
        starts, ends = self._starts, self._ends
        if self._head == len(starts) or start > ends[-1]:
            starts.append(start)  # (never merged into a range the read position passed)
            ends.append(end)
        elif start == ends[-1]:
            ends[-1] = end
        else:  # rare: restored out of order at open
            first = bisect_left(ends, start, self._head)
            last = bisect_right(starts, end, self._head)
            if first < last:
                start = min(start, starts[first])
                end = max(end, ends[last - 1])
            starts[first:last] = array("q", [start])
            ends[first:last] = array("q", [end])
        self.next_skip = starts[self._head] if self._head < len(starts) else NEVER

    def jump(self, offset: int) -> int:
        """Where a read at ``offset`` continues: past the skipped range holding it, if any."""
        starts, ends = self._starts, self._ends
        head = self._head
        while head < len(starts) and ends[head] <= offset:
            head += 1
        if head < len(starts) and starts[head] <= offset:
            offset = ends[head]
            head += 1
        if head >= _COMPACT_AFTER:
            del starts[:head], ends[:head]
            head = 0
        self._head = head
        self.next_skip = starts[head] if head < len(starts) else NEVER
        return offset

    @classmethod
    def restore(
        cls,
        runs: Iterable[tuple[int, int, int]],
        acks: AckRanges,
        retry_at: dict[int, int],
        now_ms: int,
    ) -> ScheduledDelays:
        """From the journal's runs, without the offsets already done or waiting for a retry
        (a retry's time replaces the publish delay)."""
        scheduled = cls()
        done = acks.ranges()
        done_ends = [end for _, end in done]
        retries = sorted(retry_at)
        for visible_at, start, end in sorted(runs, key=lambda run: run[1]):
            for first, stop in _undone(acks.floor, done, done_ends, start, end):
                for part in _without(retries, first, stop):
                    scheduled.add(visible_at, *part, now_ms)
        return scheduled

    def discard(self, start: int, end: int) -> None:
        """``[start, end)`` finished another way (purge, ``drop_oldest``, retention, a gap)."""
        self.wheel.discard(start, end)

    @property
    def count(self) -> int:
        """Offsets whose delay has not been found due yet."""
        return self.wheel.count

    def seen_end(self) -> int:
        """One past the highest offset skipped (0: none)."""
        return self._ends[-1] if self._ends else 0


def restore_scheduled(
    state: PartitionDeliveries,
    runs: Iterable[tuple[int, int, int]],
    max_deliveries: int | None,
    now_ms: int,
) -> ScheduledDelays:
    """A restored partition's scheduled delays: the journal's ``runs``, and the retries due
    later than ``now_ms`` (those not at ``max_deliveries``: the read path dead-letters them)."""
    scheduled = ScheduledDelays.restore(runs, state.acks, state.retry_at, now_ms)
    for offset, visible_at in sorted(state.retry_at.items()):
        attempts = state.attempts.get(offset)
        exhausted = (
            max_deliveries is not None
            and attempts is not None
            and (attempts.count >= max_deliveries)
        )
        if visible_at > now_ms and offset >= state.read_offset and not exhausted:
            state.hold(offset, visible_at)
            scheduled.skip(offset, offset + 1)
    return scheduled


def runs_of(delays: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """``(offset, visible_at_ms)`` pairs, in offset order, as ``(visible_at_ms, start, end)``
    runs of consecutive offsets delayed to one time."""
    runs: list[tuple[int, int, int]] = []
    for offset, visible_at in delays:
        if runs and runs[-1][0] == visible_at and runs[-1][2] == offset:
            runs[-1] = (visible_at, runs[-1][1], offset + 1)
        else:
            runs.append((visible_at, offset, offset + 1))
    return runs


def _without(offsets: list[int], start: int, end: int) -> list[tuple[int, int]]:
    """``[start, end)`` split around the sorted ``offsets`` in it."""
    parts: list[tuple[int, int]] = []
    for offset in offsets[bisect_left(offsets, start) : bisect_left(offsets, end)]:
        if start < offset:
            parts.append((start, offset))
        start = offset + 1
    if start < end:
        parts.append((start, end))
    return parts


def _undone(
    floor: int, done: list[tuple[int, int]], done_ends: list[int], start: int, end: int
) -> list[tuple[int, int]]:
    """The parts of ``[start, end)`` not done (below ``floor`` or in the ``done`` ranges)."""
    start = max(start, floor)
    parts: list[tuple[int, int]] = []
    for done_start, done_end in done[bisect_right(done_ends, start) :]:
        if done_start >= end:
            break
        if done_start > start:
            parts.append((start, done_start))
        start = max(start, done_end)
    if start < end:
        parts.append((start, end))
    return parts
