"""Keys that each fall due at a time, found without looking at the ones not yet due.

The flusher asks what is due on every publish and every round: with a thousand state journals
each holding a deadline 100 ms out, a scan of every deadline per question cost more than the
publish it served. Here a heap orders the deadlines; a question moves the ones that have passed
into the due set (each once) and looks at nothing else.

    deadlines = Deadlines()
    deadlines.add(log, now_ms + 100)      # only if it has none: the earlier deadline stands
    deadlines.due(now_ms)                 # the keys whose deadline has passed, oldest first
    deadlines.pop(log)                    # flushed (or forgotten): no longer due, nor waiting

The dict of deadlines is the truth; heap entries that no longer match it (the key was popped,
or popped and added again later) are skipped when they come up, so ``pop`` costs O(1).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class Deadlines(Generic[K]):
    def __init__(self) -> None:
        self._at: dict[K, int] = {}  # each key's deadline (monotonic ms)
        self._heap: list[tuple[int, int, K]] = []  # (deadline, tie-break, key), some stale
        self._due: dict[K, None] = {}  # keys whose deadline has passed, in the order it did
        self._order = itertools.count()

    def __contains__(self, key: object) -> bool:
        return key in self._at

    def __bool__(self) -> bool:
        return bool(self._at)

    def __len__(self) -> int:
        return len(self._at)

    def __iter__(self) -> Iterator[K]:
        return iter(self._at)

    def add(self, key: K, at_ms: int) -> None:
        """Make ``key`` due at ``at_ms``; a key that already has a deadline keeps it."""
        if key in self._at:
            return
        self._at[key] = at_ms
        heapq.heappush(self._heap, (at_ms, next(self._order), key))

    def pop(self, key: K) -> None:
        """``key`` is no longer waited for (absent keys are fine)."""
        if self._at.pop(key, None) is not None:
            self._due.pop(key, None)

    def clear(self) -> None:
        self._at.clear()
        self._heap.clear()
        self._due.clear()

    def due(self, now_ms: int) -> list[K]:
        """The keys whose deadline is ``now_ms`` or earlier; they stay until popped."""
        heap, at = self._heap, self._at
        while heap and heap[0][0] <= now_ms:
            deadline, _, key = heapq.heappop(heap)
            if at.get(key) == deadline:
                self._due[key] = None
        return list(self._due)

    def earliest(self) -> int | None:
        """The earliest deadline of any key (None: there are none)."""
        if self._due:
            return self._at[next(iter(self._due))]
        heap, at = self._heap, self._at
        while heap and at.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)  # stale: popped, or popped and added again later
        return heap[0][0] if heap else None
