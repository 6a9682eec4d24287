"""Time and size retention, run by the broker (Kafka's ``retention.ms`` and ``retention.bytes``,
SQS's retention period): whole segments go, oldest first, and a tick never looks at a
partition that has nothing due.

- A partition of a topic with ``retention_ms`` has one deadline in a ``Timers`` heap: the
  moment its oldest segment's newest record passes retention. The tick visits the partitions
  whose deadline has come, deletes what expired, and schedules the next deadline from the new
  oldest segment. A publish schedules one where none is live (a log that was empty), at the
  cost of one dict look-up.
- Only an append can push a partition past ``retention_bytes``, and only sealed segments are
  deleted: a publish that rolled a segment (the segment count changed) applies retention to
  that partition there and then. Between rolls a partition may exceed the limit by at most
  its active segment, as in Kafka.
- When every record of a partition is past ``retention_ms``, its active segment is rolled so
  that it can go too (Kafka does the same): an idle queue's stale messages do not stay forever.
- At open, every partition of a topic with retention is due once: what expired while the
  broker was down goes at the first tick.

A deletion that cannot happen yet (a flush holds the segment; the log failed or is
quarantined and waits for its repair) is looked at again later, through the same heap.
Nothing is persisted: the segments on disk are the whole state.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from roost.clock import Clock
from roost.core.timers import Timers
from roost.errors import RoostError
from roost.storage import LocalEngine, Topic, TopicConfig
from roost.storage.log import PartitionLog

#: When a deletion is held back (a flush holds the segment), look again this much later.
HELD_RETRY_MS = 1_000
#: When the log cannot change (failed, quarantined, a roll refused), look again this much later.
FAILED_RETRY_MS = 60_000

log = logging.getLogger("roost.retention")

Key = tuple[str, int]  # (topic, partition)


def has_retention(config: TopicConfig) -> bool:
    return config.retention_ms is not None or config.retention_bytes is not None


class Retention:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._timers: Timers[Key] = Timers()
        #: Segment count last seen per partition of a size-limited topic: a change is a roll.
        self._segment_counts: dict[Key, int] = {}
        #: Segments deleted by retention (these rules and until-consumed) since the process
        #: started, per partition: ``roost_partition_retention_deleted_segments_total``.
        self.deleted: dict[Key, int] = {}

    def watch(self, topic: Topic) -> None:
        """Look at every partition of ``topic`` at the next tick (at open)."""
        if has_retention(topic.config):
            now_ms = self._clock.now_ms()
            for partition in range(len(topic.partitions)):
                self._timers.schedule((topic.name, partition), now_ms)

    def appended(self, topic: Topic, partitions: Iterable[int]) -> None:
        """Records were appended to ``partitions`` of ``topic``: apply retention where a
        segment rolled, and make sure a time-limited partition has a deadline."""
        config = topic.config
        if config.retention_ms is None and config.retention_bytes is None:
            return
        now_ms = self._clock.now_ms()
        for partition in set(partitions):
            key = (topic.name, partition)
            if config.retention_bytes is not None:
                count = topic.partitions[partition].segment_count
                if self._segment_counts.get(key, 1) != count:
                    self._segment_counts[key] = count
                    self._visit(topic, partition, now_ms)
                    continue
            if config.retention_ms is not None:
                self._timers.schedule(key, now_ms + config.retention_ms + 1)

    def tick(self, engine: LocalEngine) -> set[str]:
        """Apply retention to the partitions whose deadline has come; returns the topics that
        lost segments."""
        now_ms = self._clock.now_ms()
        topics: set[str] = set()
        due = self._timers.due(now_ms)
        for i, (name, partition) in enumerate(due):
            if not engine.has_topic(name):
                continue  # deleted since
            topic = engine.topic(name)
            if partition >= len(topic.partitions) or not has_retention(topic.config):
                continue
            try:
                if self._visit(topic, partition, now_ms):
                    topics.add(name)
            except BaseException:
                for key in due[i:]:  # what was due stays due: the host retries the tick
                    self._timers.schedule(key, now_ms)
                raise
        return topics

    def next_deadline_ms(self) -> int | None:
        return self._timers.next_deadline_ms()

    def count(self, key: Key, deleted: int) -> None:
        if deleted:
            self.deleted[key] = self.deleted.get(key, 0) + deleted

    def forget(self, name: str, partitions: int) -> None:
        """``name`` is deleted: its deadlines and counters go with it."""
        for partition in range(partitions):
            key = (name, partition)
            self._timers.cancel(key)
            self._segment_counts.pop(key, None)
            self.deleted.pop(key, None)

    def _visit(self, topic: Topic, partition: int, now_ms: int) -> int:
        """Delete what is past retention in one partition, schedule its next look; returns
        how many segments went."""
        key = (topic.name, partition)
        partition_log = topic.log(partition)
        config = topic.config
        deleted = partition_log.enforce_retention()
        if self._wholly_expired(partition_log, config, now_ms):
            try:
                partition_log.roll()
            except RoostError as e:
                log.warning("retention of %s: could not roll its segment: %s", key, e)
            else:
                deleted += partition_log.enforce_retention()
        self.count(key, deleted)
        if config.retention_bytes is not None:
            self._segment_counts[key] = partition_log.segment_count
        next_ms = self._next_look_ms(partition_log, config, now_ms)
        if next_ms is not None:
            self._timers.schedule(key, next_ms)
        return deleted

    @staticmethod
    def _wholly_expired(partition_log: PartitionLog, config: TopicConfig, now_ms: int) -> bool:
        return (
            config.retention_ms is not None
            and partition_log.segment_count == 1
            and partition_log.end_offset > partition_log.start_offset
            and partition_log.oldest_segment_last_append_ms < now_ms - config.retention_ms
        )

    @staticmethod
    def _next_look_ms(partition_log: PartitionLog, config: TopicConfig, now_ms: int) -> int | None:
        """When this partition next has something due; None: not before its next append."""
        if partition_log.end_offset == partition_log.start_offset:
            return None  # empty: the next publish schedules
        if partition_log.failure is not None or partition_log.quarantined:
            return now_ms + FAILED_RETRY_MS  # nothing changes before its repair
        candidates = []
        if config.retention_ms is not None:
            expires_ms = partition_log.oldest_segment_last_append_ms + config.retention_ms + 1
            if expires_ms <= now_ms:
                # Due but still there: its roll was refused, or a flush holds the segment.
                refused = Retention._wholly_expired(partition_log, config, now_ms)
                expires_ms = now_ms + (FAILED_RETRY_MS if refused else HELD_RETRY_MS)
            candidates.append(expires_ms)
        if config.retention_bytes is not None and partition_log.segment_count > 1:
            oldest_bytes = partition_log.sealed_segments()[partition_log.start_offset]
            if partition_log.size_bytes - oldest_bytes >= config.retention_bytes:
                candidates.append(now_ms + HELD_RETRY_MS)  # a flush holds it
        return min(candidates) if candidates else None
