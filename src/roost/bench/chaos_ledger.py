"""What ``roost bench chaos`` sent, what the broker confirmed, and what the drain delivered.

Each producer lane numbers its messages 0, 1, 2, ... and publishes them in that order, one
request at a time: a request the kill failed is sent again, unchanged, before anything newer
(as a producer without idempotence retries). So a lane's history is two facts: how many
messages it ever attempted (every sequence number below is "sent") and the ranges of sequence
numbers whose publish was confirmed. A message's value names it (``payload``), so whatever the
drain delivers is checked against that history without the broker's help:

- **lost**: confirmed, and never delivered from a topic it was confirmed to (the promise:
  never, under durability ``always``);
- **unexpected**: delivered, and never sent, or not byte for byte what was sent;
- **duplicated**: deliveries beyond the first of one message in one topic (allowed: at least
  once, and a retried request whose first try was stored is stored twice);
- **order violations** (keyed topics): per key, in delivery order, counting first deliveries
  of confirmed messages only, a message delivered after a later-confirmed one of its key. A
  lane owns its keys and confirms in sequence order, so "later confirmed" is "higher sequence
  number". Retried requests make duplicates, never inversions of first deliveries: that is the
  per-key promise of a `keyed` subscription (docs/concepts.md).

Counts live in one ``bytearray`` per lane and topic (saturating at 255), so millions of
messages cost a few MB here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

#: Filler of every value after its header, so that a damaged value is told from a good one.
_FILLER = bytes(range(33, 127)) * 64


def payload(lane: int, seq: int, key: bytes | None, size: int) -> bytes:
    """The value lane ``lane`` publishes as message ``seq`` (with ``key``): a header naming
    it, then filler up to ``size`` bytes (longer if the header needs it)."""
    head = b"%d:%d:%s|" % (lane, seq, key or b"")
    return head + _FILLER[: max(0, size - len(head))]


def parse(value: bytes) -> tuple[int, int, bytes] | None:
    """(lane, seq, key) of a value made by ``payload``; None for anything else."""
    head, bar, _ = value.partition(b"|")
    parts = head.split(b":", 2)
    if not bar or len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
        return None
    return int(parts[0]), int(parts[1]), parts[2]


@dataclass
class Lane:
    """One producer lane's history: what it sent and what was confirmed."""

    lane: int
    workload: str
    attempted: int
    #: half-open ranges [start, end) of confirmed sequence numbers, ascending
    confirmed: list[tuple[int, int]] = field(default_factory=list)

    def confirmed_count(self) -> int:
        return sum(end - start for start, end in self.confirmed)


#: Whether confirmed message ``seq`` of a lane belongs in a topic (an exchange routes by it).
Expected = Callable[["Lane", int, str], bool]


@dataclass
class Figures:
    delivered: int = 0
    lost: int = 0
    unexpected: int = 0
    duplicated: int = 0
    order_violations: int = 0
    #: a few examples of each problem, for the report
    examples: dict[str, list[str]] = field(default_factory=dict)

    def note(self, problem: str, example: str) -> None:
        found = self.examples.setdefault(problem, [])
        if len(found) < 5:
            found.append(example)

    def add(self, other: Figures) -> None:
        self.delivered += other.delivered
        self.lost += other.lost
        self.unexpected += other.unexpected
        self.duplicated += other.duplicated
        self.order_violations += other.order_violations
        for problem, examples in other.examples.items():
            for example in examples:
                self.note(problem, example)


class TopicTally:
    """The deliveries of one drained topic, checked against the lanes that feed it.

    ``expected(lane, seq)`` says whether a confirmed message of ``lane`` belongs in this topic
    (an exchange routes by the message); ``keyed`` turns on the per-key order check.
    """

    def __init__(
        self, topic: str, lanes: Iterable[Lane], value_bytes: int, keyed: bool = False
    ) -> None:
        self.topic = topic
        self.lanes = {lane.lane: lane for lane in lanes}
        self.value_bytes = value_bytes
        self.keyed = keyed
        self.counts = {n: bytearray(lane.attempted) for n, lane in self.lanes.items()}
        self.figures = Figures()
        #: key -> the highest confirmed sequence number first-delivered so far
        self._key_high: dict[bytes, int] = {}
        self._confirmed = {n: _RangeSet(lane.confirmed) for n, lane in self.lanes.items()}

    def delivered(self, key: bytes | None, value: bytes) -> None:
        """One delivery, in delivery order."""
        figures = self.figures
        figures.delivered += 1
        named = parse(value)
        counts = None if named is None else self.counts.get(named[0])
        if named is None or counts is None or named[1] >= len(counts):
            figures.unexpected += 1
            figures.note("unexpected", f"{self.topic}: never sent: {value[:40]!r}")
            return
        lane, seq, named_key = named
        if value != payload(lane, seq, named_key or None, self.value_bytes) or (
            (key or b"") != named_key
        ):
            figures.unexpected += 1
            figures.note("unexpected", f"{self.topic}: not as sent: {lane}:{seq} key {key!r}")
            return
        count = counts[seq]
        if count:
            figures.duplicated += 1
            counts[seq] = min(255, count + 1)
            return
        counts[seq] = 1
        if self.keyed and seq in self._confirmed[lane]:
            high = self._key_high.get(named_key, -1)
            if seq < high:
                figures.order_violations += 1
                figures.note(
                    "order", f"{self.topic}: key {named_key!r}: {seq} first delivered after {high}"
                )
            else:
                self._key_high[named_key] = seq

    def finish(self, expected: Expected | None = None) -> Figures:
        """The figures, with every confirmed and expected message never delivered counted
        as lost."""
        for n, lane in self.lanes.items():
            counts = self.counts[n]
            for start, end in lane.confirmed:
                for seq in range(start, end):
                    if counts[seq] == 0 and (expected is None or expected(lane, seq, self.topic)):
                        self.figures.lost += 1
                        self.figures.note("lost", f"{self.topic}: lane {n} message {seq}")
        return self.figures


class _RangeSet:
    """Membership in sorted half-open ranges, for sequence numbers that mostly ascend."""

    def __init__(self, ranges: list[tuple[int, int]]) -> None:
        self._ranges = ranges
        self._at = 0

    def __contains__(self, seq: int) -> bool:
        ranges = self._ranges
        if not ranges:
            return False
        at = self._at
        if not ranges[at][0] <= seq < ranges[at][1]:
            at = _bisect(ranges, seq)
            self._at = at
        start, end = ranges[at]
        return start <= seq < end


def _bisect(ranges: list[tuple[int, int]], seq: int) -> int:
    """The index of the last range starting at or before ``seq`` (0 if none does)."""
    low, high = 0, len(ranges)
    while low < high:
        mid = (low + high) // 2
        if ranges[mid][0] <= seq:
            low = mid + 1
        else:
            high = mid
    return max(0, low - 1)


def add_range(ranges: list[tuple[int, int]], start: int, end: int) -> None:
    """Record [start, end) as confirmed, merging with the last range when they touch. A lane
    confirms in ascending order, so appending at the end keeps the list sorted."""
    if ranges and ranges[-1][1] == start:
        ranges[-1] = (ranges[-1][0], end)
    else:
        ranges.append((start, end))
