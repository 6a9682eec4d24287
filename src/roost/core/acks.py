"""Which offsets of a partition a subscription has finished with: a floor and ranges above it.

Every offset below ``floor`` is done (acked, or dead-lettered, which acks the original). Above
the floor, done offsets are kept as sorted, disjoint, non-adjacent half-open ranges
``[start, end)``. Acks arrive mostly in order, so the ranges stay few however many messages
flow; one message stuck in retries holds the floor while everything after it is one range.

    acks = AckRanges(floor=0)
    acks.add(1); acks.add(2)       # ranges [(1, 3)]
    acks.add(0)                    # floor 3, no ranges
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right


class AckRanges:
    __slots__ = ("_ends", "_starts", "floor")

    def __init__(self, floor: int = 0, ranges: list[tuple[int, int]] | None = None) -> None:
        self.floor = floor
        self._starts: list[int] = []
        self._ends: list[int] = []
        for start, end in ranges or ():
            self.add_range(start, end)

    def __contains__(self, offset: int) -> bool:
        if offset < self.floor:
            return True
        i = bisect_right(self._starts, offset) - 1
        return i >= 0 and offset < self._ends[i]

    @property
    def has_ranges(self) -> bool:
        """Whether anything above the floor is done (else ``in`` is just ``< floor``)."""
        return bool(self._starts)

    def done_from(self, offset: int) -> bool:
        """Whether anything at or above ``offset`` is done."""
        return bool(self._ends) and self._ends[-1] > max(offset, self.floor)

    def add(self, offset: int) -> None:
        self.add_range(offset, offset + 1)

    def add_range(self, start: int, end: int) -> None:
        """Mark ``[start, end)`` done; merges with neighbours and advances the floor."""
        start = max(start, self.floor)
        if start >= end:
            return
        # Every range touching or overlapping [start, end) merges into one.
        first = bisect_left(self._ends, start)
        last = bisect_right(self._starts, end)
        if first < last:
            start = min(start, self._starts[first])
            end = max(end, self._ends[last - 1])
        self._starts[first:last] = [start]
        self._ends[first:last] = [end]
        if self._starts[0] == self.floor:
            self.floor = self._ends[0]
            del self._starts[0], self._ends[0]

    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self._starts, self._ends, strict=True))

    def done_between(self, start: int, end: int) -> int:
        """How many offsets in ``[start, end)`` are done."""
        count = max(0, min(end, self.floor) - start)
        for s, e in zip(self._starts, self._ends, strict=True):
            count += max(0, min(e, end) - max(s, start, self.floor))
        return count


def ranges_of(offsets: list[int]) -> list[tuple[int, int]]:
    """Sorted, merged ``[start, end)`` ranges covering ``offsets`` (duplicates allowed)."""
    runs: list[tuple[int, int]] = []
    if not offsets:
        return runs
    ordered = sorted(offsets)
    start = previous = ordered[0]
    for offset in ordered[1:]:
        if offset > previous + 1:
            runs.append((start, previous + 1))
            start = offset
        previous = offset
    runs.append((start, previous + 1))
    return runs
