"""Delays that end far ahead, kept compactly: a hierarchical timing wheel of offset runs.

A delayed message costs a run ``(visible_at_ms, start, end)``: three 64-bit ints in an
``array``, 24 bytes, and consecutive offsets delayed to the same time share one run (a batch
published with one delay is one run, however large). Runs wait in buckets by the time they end,
the coarser the farther away: a bucket of level L spans ``2 ** (10 + 6 L)`` ms (about 1 s,
65 s, 70 min, 74 h, 198 days, 34 years). A run goes to the coarsest bucket that starts after
now, so at most 64 buckets per level are live at once. When a bucket's start comes its runs move
to finer buckets, and within the last second to a small heap that knows exact times. A run thus
moves at most six times in its life: the cost of a delay does not grow with how many others
wait, and nothing holds a Python object per delayed message.

    wheel = DelayWheel()
    wheel.add(visible_at_ms, start, end, now_ms)   # offsets [start, end) wait until then
    for start, end in wheel.due(now_ms): ...         # the runs whose time has come, removed
    wheel.next_ms()                                  # the earliest time waited for

Rules: ``next_ms`` is exact (the broker's timers wake for real work only); ``count`` is the
number of offsets waiting (exact: ``discard`` removes offsets that were
finished some other way); runs never overlap (the caller adds an offset once).
"""

from __future__ import annotations

import heapq
import sys
from array import array
from collections.abc import Iterator

#: log2 of each level's bucket span in ms, finest first.
_SHIFTS = (10, 16, 22, 28, 34, 40)
_LEVEL_BITS = 3  # a bucket's key: its start, shifted, or'd with its level
NEVER = 1 << 62


class DelayWheel:
    __slots__ = ("_buckets", "_lowest", "_mins", "_near", "_next", "_starts", "count")

    def __init__(self) -> None:
        #: key (start_ms << 3 | level) -> flat runs: visible_at, start, end, visible_at, ...
        self._buckets: dict[int, array[int]] = {}
        self._starts: list[int] = []  # a heap of the keys of ``_buckets``
        self._mins: dict[int, int] = {}  # key -> the earliest time in that bucket
        self._next = NEVER  # the earliest time of all (buckets overlap: not the first's)
        self._lowest = NEVER  # no offset below this waits (a bound, exact after ``discard``)
        #: Runs due within the bucket span of level 0 from the last look: exact times.
        self._near: list[tuple[int, int, int]] = []
        self.count = 0

    def add(self, visible_at_ms: int, start: int, end: int, now_ms: int) -> None:
        """Offsets ``[start, end)`` wait until ``visible_at_ms``."""
        if start < end:
            self._place(visible_at_ms, start, end, now_ms)
            self.count += end - start
            self._next = min(self._next, visible_at_ms)
            self._lowest = min(self._lowest, start)

    def _place(self, visible_at_ms: int, start: int, end: int, now_ms: int) -> None:
        for level in range(len(_SHIFTS) - 1, -1, -1):
            shift = _SHIFTS[level]
            bucket_start = visible_at_ms >> shift << shift
            if bucket_start > now_ms:
                key = bucket_start << _LEVEL_BITS | level
                runs = self._buckets.get(key)
                if runs is None:
                    runs = self._buckets[key] = array("q")
                    heapq.heappush(self._starts, key)
                    self._mins[key] = visible_at_ms
                elif visible_at_ms < self._mins[key]:
                    self._mins[key] = visible_at_ms
                if runs and runs[-3] == visible_at_ms and runs[-1] == start:
                    runs[-1] = end  # the next offset, delayed to the same time
                else:
                    runs.extend((visible_at_ms, start, end))
                return
        heapq.heappush(self._near, (visible_at_ms, start, end))

    def due(self, now_ms: int) -> list[tuple[int, int]]:
        """The runs ``[start, end)`` whose time is ``now_ms`` or earlier; they leave."""
        if self._next > now_ms:
            return []
        starts, buckets = self._starts, self._buckets
        while starts and starts[0] >> _LEVEL_BITS <= now_ms:
            key = heapq.heappop(starts)
            runs = buckets.pop(key)
            del self._mins[key]
            for i in range(0, len(runs), 3):
                self._place(runs[i], runs[i + 1], runs[i + 2], now_ms)
        found: list[tuple[int, int]] = []
        near = self._near
        while near and near[0][0] <= now_ms:
            _, start, end = heapq.heappop(near)
            found.append((start, end))
            self.count -= end - start
        self._find_next()
        return found

    def _find_next(self) -> None:
        """The earliest time left: a look at each live bucket (at most 64 a level)."""
        first = min(self._mins.values(), default=NEVER)
        self._next = min(first, self._near[0][0]) if self._near else first

    def next_ms(self) -> int:
        """The earliest time a run waits for (NEVER: none waits)."""
        return self._next

    def discard(self, start: int, end: int) -> None:
        """Offsets in ``[start, end)`` no longer wait (finished: dropped, purged, a gap).

        Rewrites every bucket: a rare operation (purge, ``drop_oldest``, retention), never a
        receive's."""
        if not self.count or end <= self._lowest:
            return  # (``drop_oldest`` below every delayed offset: the common case, free)
        for key, runs in self._buckets.items():
            kept = array(
                "q", [n for run in self._clip(_flat_triples(runs), start, end) for n in run]
            )
            self._buckets[key] = kept
            # An empty bucket stays until its start (harmless), known to hold nothing.
            self._mins[key] = min(kept[0::3], default=NEVER)
        self._near = list(self._clip(iter(list(self._near)), start, end))
        heapq.heapify(self._near)
        self._find_next()
        self._lowest = min((start for _, start, _ in self.runs()), default=NEVER)

    def _clip(
        self, runs: Iterator[tuple[int, int, int]], start: int, end: int
    ) -> Iterator[tuple[int, int, int]]:
        for visible_at, first, stop in runs:
            if stop <= start or first >= end:
                yield visible_at, first, stop
                continue
            self.count -= min(stop, end) - max(first, start)
            if first < start:
                yield visible_at, first, start
            if stop > end:
                yield visible_at, end, stop

    def runs(self) -> Iterator[tuple[int, int, int]]:
        """Every waiting ``(visible_at_ms, start, end)``, in no particular order."""
        for runs in self._buckets.values():
            yield from _flat_triples(runs)
        yield from self._near

    def packed(self) -> bytes:
        """``runs`` as native 64-bit ints (for a snapshot): 24 bytes a run."""
        flat = array("q")
        for runs in self._buckets.values():
            flat.extend(runs)
        for run in self._near:
            flat.extend(run)
        if sys.byteorder == "big":
            flat.byteswap()  # stored little-endian, as every other format here
        return flat.tobytes()


def _flat_triples(runs: array[int]) -> Iterator[tuple[int, int, int]]:
    for i in range(0, len(runs), 3):
        yield runs[i], runs[i + 1], runs[i + 2]


def unpack(packed: bytes) -> Iterator[tuple[int, int, int]]:
    """The runs ``packed`` wrote."""
    flat = array("q")
    flat.frombytes(packed)
    if sys.byteorder == "big":
        flat.byteswap()
    return _flat_triples(flat)
