"""What is due when: a heap of ``(deadline_ms, key)`` with lazy invalidation.

The broker's tick must cost what is due, not what exists: with 10,000 idle queues it visits
none of them. Each subscription reports a deadline whenever one of its own may have moved
earlier (a lease granted, a delay admitted, a nack with a delay, a dead letter to settle, a
member joining); the tick pops what is due, visits those subscriptions alone, and schedules
each one's next deadline again.

    timers = Timers()
    timers.schedule(("jobs", "jobs"), 1_000)
    timers.schedule(("jobs", "jobs"), 5_000)   # later than what is scheduled: nothing to do
    timers.due(1_000)                          # [("jobs", "jobs")]

A key has one live deadline, the earliest reported since it was last popped. Reports of a
later one are ignored: the visit at the earlier one finds the later one itself. Entries that
are no longer the live deadline of their key (an earlier report replaced them, the key was
cancelled) stay in the heap and are skipped when they surface, so that each report costs one
push at most, and the heap holds at most one entry per report of an earlier deadline.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class Timers(Generic[K]):
    def __init__(self) -> None:
        self._heap: list[tuple[int, int, K]] = []
        self._live: dict[K, int] = {}
        self._serial = 0  # keys need not be ordered: ties break on the push order

    def schedule(self, key: K, deadline_ms: int) -> None:
        """``key`` has something due at ``deadline_ms``, unless it is already due earlier."""
        live = self._live.get(key)
        if live is not None and live <= deadline_ms:
            return
        self._live[key] = deadline_ms
        self._serial += 1
        heapq.heappush(self._heap, (deadline_ms, self._serial, key))

    def cancel(self, key: K) -> None:
        """Forget ``key`` (its subscription is gone); its heap entries become stale."""
        self._live.pop(key, None)

    def due(self, now_ms: int) -> list[K]:
        """Every key whose deadline is at or before ``now_ms``, each once; they are no longer
        scheduled (the caller visits them and schedules their next deadline)."""
        heap, live = self._heap, self._live
        keys: list[K] = []
        while heap and heap[0][0] <= now_ms:
            deadline, _, key = heapq.heappop(heap)
            if live.get(key) == deadline:
                del live[key]
                keys.append(key)
        return keys

    def next_deadline_ms(self) -> int | None:
        """The earliest live deadline, None when nothing is scheduled."""
        heap, live = self._heap, self._live
        while heap and live.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def __len__(self) -> int:
        """How many keys have a deadline."""
        return len(self._live)

    def deadline_of(self, key: K) -> int | None:
        return self._live.get(key)
