"""Delayed messages a queue subscription has not read yet, counted for ``stats``.

A subscription reads its log lazily: a record is admitted (and its delay seen) only when a
receive reaches it. Until then ``stats`` would count a delayed record as ready depth, and
autoscaling on depth would react to messages nobody can receive. So, per partition, what is
delayed above the read position is known without reading it:

(A `queue` subscription keeps what it is told in ``ScheduledDelays`` instead, journaled, and a
new one starts from ``find_delays``; this is for `keyed` ones and those with a queue delay.)

- **per-message delays** (``delay``, ``deliver_at_ms``): the broker tells the subscription the
  offset and the time of each delayed record it appends (``announce``); after a restart, the
  first unread records of the last ``MAX_DELAY_MS`` (no delay is longer) are searched at
  open, ``SCAN_AT_OPEN_BYTES`` of them per partition, as stored batches (only a batch holding
  the deliver-at header's name is decoded); beyond those, a delay is counted when a receive
  reads it, as before;
- **retries** (a nack's delay, journaled) restored after a restart, above the read position;
- **the subscription's own delay** (``delay_ms``): every unread record younger than it, found
  with the log's timestamp index.

An entry goes once its record is read (the subscription's own delayed heap counts it then) or
its time has come. Memory: one entry per delayed record not yet read, as the delayed heap
holds one per delayed record read.
"""

from __future__ import annotations

from roost.core.acks import AckRanges
from roost.core.header_scan import timed_records
from roost.core.model import DELIVER_AT_HEADER, MAX_DELAY_MS
from roost.errors import PartitionQuarantined
from roost.storage.log import PartitionLog

#: Bytes of unread records searched for delays per partition at open: the cost is a read and
#: a CRC per stored batch (about 2 ms for 64 KiB of one-record batches), paid before serving.
SCAN_AT_OPEN_BYTES = 64 * 1024


class UnreadDelays:
    def __init__(self) -> None:
        #: partition -> offset -> when it becomes visible (ms), above the read position.
        self._known: dict[int, dict[int, int]] = {}

    def announce(self, partition: int, delays: list[tuple[int, int]]) -> None:
        """``(offset, visible_at_ms)`` of delayed records just appended to ``partition``."""
        self._known.setdefault(partition, {}).update(delays)

    def scan(self, partition: int, log: PartitionLog, read_offset: int, now_ms: int) -> None:
        """At open: ``find_delays`` of ``partition``, known from here on."""
        found = find_delays(log, read_offset, now_ms)
        if found:
            self.announce(partition, found)

    def count(
        self,
        partition: int,
        log: PartitionLog,
        read_offset: int,
        acks: AckRanges,
        retry_at: dict[int, int],
        delay_ms: int,
        now_ms: int,
    ) -> int:
        """How many records at or above ``read_offset`` are delayed past ``now_ms``; forgets
        what was read or is due since."""
        start = max(read_offset, log.start_offset)
        end = log.end_offset
        # The subscription's delay covers every unread record from ``young`` on.
        young = end
        if delay_ms and start < end and not log.quarantined:
            first = log.offset_for_timestamp(now_ms - delay_ms + 1)
            if first is not None:
                young = max(start, first)
        delayed = (end - young) - acks.done_between(young, end) if young < end else 0
        known = self._known.get(partition)
        if known:
            stale = [o for o, at in known.items() if o < start or at <= now_ms]
            for offset in stale:
                del known[offset]
        offsets = {o for o in known or () if o < young and o not in acks}
        offsets.update(
            o for o, at in retry_at.items() if start <= o < young and at > now_ms and o not in acks
        )
        return delayed + len(offsets)


def find_delays(log: PartitionLog, read_offset: int, now_ms: int) -> list[tuple[int, int]]:
    """``(offset, visible_at_ms)`` of the first unread records of ``log`` that may still be
    delayed (published within the longest delay), among at most ``SCAN_AT_OPEN_BYTES`` of
    them, in offset order (core/header_scan.py)."""
    if log.quarantined:
        return []
    try:
        recent = log.offset_for_timestamp(now_ms - MAX_DELAY_MS)
    except PartitionQuarantined:
        return []  # a read found damage: the partition is out of service anyway
    if recent is None:
        return []  # nothing published within the longest delay
    start = max(read_offset, recent)
    found, _ = timed_records(log, start, DELIVER_AT_HEADER, SCAN_AT_OPEN_BYTES)
    return [(offset, at) for offset, at in found if at > now_ms]
