"""Publishing to a topic: partitioning, idempotent producers, the dedup window, one append per
partition, results in the order the messages were given.

    publisher = Publisher(engine, clock)
    outcome = publisher.publish(topic, policy, messages, producer_id="p-1", sequence=0)

- Partition: ``message.partition`` if given, else a stable hash (CRC32C) of the key, else
  round robin per topic.
- Idempotent producer: a publish with ``producer_id`` and ``sequence`` (its first record's
  sequence) must land on one partition. A retry of one of its last batches is confirmed with
  the offsets it got the first time and appends nothing.
- Dedup: a message whose ``dedup_id`` (or content hash, when the topic asks) was published in
  the window is confirmed with its first placement and not appended again; two messages with
  one id in the same publish are appended once.
- What producers and dedup ids have done is journaled per topic (``ProducerState.entry``),
  after the append, in the same flush round as the records; a publish is confirmed only when
  both are durable. Known window: a crash between the two fsyncs of one round keeps a record
  whose entry was lost, and a retry of it is appended again.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import NamedTuple, overload

from crc32c import crc32c

from roost.clock import Clock
from roost.core import state_codec
from roost.core.delay_limits import check_publish_delays
from roost.core.model import (
    DELIVER_AT_HEADER,
    EXPIRES_AT_HEADER,
    MAX_DELAY_MS,
    check_delay,
    check_ttl,
)
from roost.core.policies import TopicPolicy
from roost.core.producers import APPEND, ProducerState, content_id
from roost.errors import InvalidRequest, PartitionQuarantined, StorageClosed
from roost.storage import Journal, Record, Topic
from roost.storage import batch as batch_format
from roost.storage.log import PartitionLog
from roost.storage.validation import check_records

#: Bytes a record's encoding may add to its key, value and headers (offset, timestamp, length
#: prefixes: under 40 in fact), and each header to its name and value: below these bounds a
#: batch is known to fit a segment without encoding it.
_RECORD_OVERHEAD_BYTES = 64
_HEADER_OVERHEAD_BYTES = 16


class Outgoing(Record, kw_only=True):
    """A message to publish: a ``Record`` (value, key, headers, timestamp) and where and when
    it goes. ``partition`` wins over ``key``; without either, round robin.

    Without a delay, the message is appended as it is: no copy per message.
    """

    partition: int | None = None
    #: Not delivered to queue subscriptions before this time (ms since the epoch) ...
    deliver_at_ms: int | None = None
    #: ... or before this long after publishing.
    delay_ms: int | None = None
    #: Published again within the topic's dedup window: confirmed, not appended.
    dedup_id: str | None = None
    #: Expired (never delivered) this long after publishing (core/expiry.py).
    ttl_ms: int | None = None


class Published(NamedTuple):
    topic: str
    partition: int
    offset: int


class PublishedRange(Sequence[Published]):
    """Consecutive offsets of one partition, as a sequence of ``Published`` made on demand:
    a publish of 100 messages answers with one of these, not 100 tuples."""

    __slots__ = ("base_offset", "length", "partition", "topic")
    __hash__ = None  # type: ignore[assignment]  # equal to lists, so not hashable

    def __init__(self, topic: str, partition: int, base_offset: int, length: int) -> None:
        self.topic = topic
        self.partition = partition
        self.base_offset = base_offset
        self.length = length

    def __len__(self) -> int:
        return self.length

    @overload
    def __getitem__(self, index: int) -> Published: ...
    @overload
    def __getitem__(self, index: slice) -> list[Published]: ...
    def __getitem__(self, index: int | slice) -> Published | list[Published]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.length))]
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError(index)
        return Published(self.topic, self.partition, self.base_offset + index)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    def __repr__(self) -> str:
        return (
            f"PublishedRange({self.topic!r}, {self.partition}, {self.base_offset}, {self.length})"
        )


class PublishOutcome(NamedTuple):
    published: Sequence[Published]
    #: Confirm only once each log's durable_offset reaches the offset (``always`` logs).
    durability: list[tuple[PartitionLog, int]]


class TopicProducers:
    """A topic's ``ProducerState`` and the journal that keeps it."""

    def __init__(self, state: ProducerState, journal: Journal) -> None:
        self.state = state
        self.journal = journal
        self.entries_since_snapshot = 0

    @property
    def snapshot_due(self) -> bool:
        return self.entries_since_snapshot >= state_codec.SNAPSHOT_EVERY

    def snapshot(self) -> bytes:
        """The whole state, for ``Journal.snapshot_job``; resets the entry count."""
        self.entries_since_snapshot = 0
        return self.state.export()

    @classmethod
    def open(cls, topic: Topic, journal: Journal, clock: Clock, window_ms: int) -> TopicProducers:
        state = ProducerState(topic.name, clock, window_ms=window_ms)
        snapshot, entries = journal.recover()
        if snapshot is not None:
            state.restore(snapshot)
        for entry in entries:
            state.apply(entry)
        forgot = [state.truncate(p, log.end_offset) for p, log in enumerate(topic.partitions)]
        producers = cls(state, journal)
        if entries or any(forgot):
            # Durable before any publish: a later recovery may put a gap batch where the
            # forgotten records were, and must not find them in the state again.
            journal.snapshot(state.export())
        return producers


class Publisher:
    def __init__(self, clock: Clock, producers: Callable[[Topic], TopicProducers]) -> None:
        self._clock = clock
        self._producers = producers
        self._round_robin: dict[str, itertools.count[int]] = {}

    def partition_for(self, topic: Topic, message: Outgoing) -> int:
        count = len(topic.partitions)
        if message.partition is not None:
            topic.log(message.partition)  # UnknownPartition for a bad one
            return message.partition
        if message.key is not None:
            return partition_for_key(message.key, count)
        counter = self._round_robin.setdefault(topic.name, itertools.count())
        partition = next(counter) % count
        for _ in range(count - 1):  # past quarantined partitions, while another serves
            if not topic.partitions[partition].quarantined:
                break
            partition = next(counter) % count
        return partition

    def plan(self, topic: Topic, messages: Sequence[Outgoing]) -> list[int]:
        """The partition of each message, in order."""
        if not messages:
            raise InvalidRequest("publish needs at least one message")
        if len(topic.partitions) == 1 and all(m.partition is None for m in messages):
            # (a quarantined single partition refuses the append itself)
            return [0] * len(messages)
        return [self.partition_for(topic, message) for message in messages]

    def check(
        self,
        topic: Topic,
        policy: TopicPolicy,
        messages: Sequence[Outgoing],
        partitions: list[int],
    ) -> None:
        """Raise now what appending ``messages`` to their ``partitions`` would be refused for
        (a bad delay, a record or a batch too large, a partition or producer state that takes
        no writes), appending nothing: a publish to several topics checks every one before
        it appends to any. What it cannot foresee is an I/O error."""
        now_ms = self._clock.now_ms()
        check_publish_delays(topic, messages, now_ms)
        records = [_record(m, now_ms) for m in messages]
        check_records(records, topic.config.max_record_bytes, topic.name, topic.config.compacted)
        if policy.content_dedup or any(m.dedup_id is not None for m in messages):
            self._producers(topic)  # ProducerStateQuarantined when it is out of service
        batches: dict[int, list[Record]] = {}
        for record, partition in zip(records, partitions, strict=True):
            batches.setdefault(partition, []).append(record)
        for partition, batch in batches.items():
            log = topic.log(partition)
            if log.closed:
                raise StorageClosed(f"log {log.name}")
            if log.failure is not None:
                raise log.failure
            if log.quarantined:
                raise PartitionQuarantined(topic.name, partition, log.quarantined)
            _check_batch_fits(batch, topic.config.segment_max_bytes, now_ms)

    def publish(
        self,
        topic: Topic,
        policy: TopicPolicy,
        messages: Sequence[Outgoing],
        partitions: list[int],
        producer_id: str | None = None,
        sequence: int | None = None,
    ) -> PublishOutcome:
        """Append (or confirm again) ``messages`` on their ``partitions``."""
        check_publish_delays(topic, messages, self._clock.now_ms())
        tracked = (
            producer_id is not None
            or policy.content_dedup
            or any(m.dedup_id is not None for m in messages)
        )
        if not tracked and len(set(partitions)) == 1:
            return self._publish_plainly(topic, messages, partitions[0])
        producers = self._producers(topic) if tracked else None
        if producer_id is not None:
            assert producers is not None
            if any(m.dedup_id is not None for m in messages):
                # A batch's sequences must all be appended or all be a retry: dedup hits
                # inside it would leave holes in the producer's sequence.
                raise InvalidRequest(
                    "an idempotent publish carries no dedup ids: its sequence numbers already "
                    "make a retry safe"
                )
            duplicate = self._retried_batch(topic, producers, partitions, producer_id, sequence)
            if duplicate is not None:
                return duplicate
        return self._publish_tracked(
            topic, policy, messages, partitions, producers, producer_id, sequence
        )

    def _publish_tracked(
        self,
        topic: Topic,
        policy: TopicPolicy,
        messages: Sequence[Outgoing],
        partitions: list[int],
        producers: TopicProducers | None,
        producer_id: str | None,
        sequence: int | None,
    ) -> PublishOutcome:
        """Several partitions, or dedup ids, or an idempotent producer's new batch (appended
        whole: content dedup does not apply to it)."""
        if producer_id is None:
            ids = [_dedup_id(m, policy) for m in messages]
        else:
            ids = [None] * len(messages)
        results: list[Published | None] = [None] * len(messages)
        batches: dict[int, list[int]] = {}  # partition -> indexes of the messages to append
        first_by_id: dict[str, int] = {}
        for i, (message_id, partition) in enumerate(zip(ids, partitions, strict=True)):
            if message_id is not None and producers is not None:
                placed = producers.state.seen(message_id)
                if placed is not None:
                    results[i] = Published(topic.name, placed.partition, placed.offset)
                    continue
                if message_id in first_by_id:
                    continue  # the same id earlier in this publish: filled in below
                first_by_id[message_id] = i
            batches.setdefault(partition, []).append(i)
        now_ms = self._clock.now_ms()
        durability: list[tuple[PartitionLog, int]] = []
        for partition, indexes in batches.items():
            records = [_record(messages[i], now_ms) for i in indexes]
            result = topic.append(partition, records)
            for position, i in enumerate(indexes):
                results[i] = Published(topic.name, partition, result.base_offset + position)
            log = topic.log(partition)
            if log.config.durability == "always":
                durability.append((log, result.next_offset))
            if producers is not None:
                durability += self._journal(
                    producers, partition, result.base_offset, indexes, ids, producer_id, sequence
                )
        for i, message_id in enumerate(ids):
            if results[i] is None and message_id is not None:
                results[i] = results[first_by_id[message_id]]
        return PublishOutcome([r for r in results if r is not None], durability)

    def _publish_plainly(
        self, topic: Topic, messages: Sequence[Outgoing], partition: int
    ) -> PublishOutcome:
        """The common case: no producer id, no dedup, one partition: one append, no lookups."""
        now_ms = self._clock.now_ms()
        delayed = any(m.delay_ms is not None or m.deliver_at_ms is not None for m in messages)
        rewritten = delayed or any(m.ttl_ms is not None for m in messages)
        records = [_record(m, now_ms) for m in messages] if rewritten else messages
        result = topic.append(partition, records)
        published = PublishedRange(topic.name, partition, result.base_offset, len(messages))
        log = topic.log(partition)
        durability = [(log, result.next_offset)] if log.config.durability == "always" else []
        return PublishOutcome(published, durability)

    def _retried_batch(
        self,
        topic: Topic,
        producers: TopicProducers,
        partitions: list[int],
        producer_id: str,
        sequence: int | None,
    ) -> PublishOutcome | None:
        if sequence is None or len(set(partitions)) != 1:
            raise InvalidRequest(
                "an idempotent publish needs a sequence and must go to one partition "
                "(give every message the same key, or a partition)"
            )
        partition = partitions[0]
        decision = producers.state.check(producer_id, partition, sequence, len(partitions))
        if decision is APPEND:
            return None
        log = topic.log(partition)
        offsets = range(decision.base_offset, decision.base_offset + decision.record_count)
        durability = [(log, offsets.stop)] if log.config.durability == "always" else []
        return PublishOutcome([Published(topic.name, partition, o) for o in offsets], durability)

    def _journal(
        self,
        producers: TopicProducers,
        partition: int,
        base_offset: int,
        indexes: list[int],
        ids: list[str | None],
        producer_id: str | None,
        sequence: int | None,
    ) -> list[tuple[PartitionLog, int]]:
        entry = producers.state.entry(
            partition, base_offset, len(indexes), producer_id=producer_id,
            first_sequence=sequence, dedup_ids=[ids[i] for i in indexes],
        )  # fmt: skip
        producers.state.apply(entry)
        next_seq = producers.journal.append([entry])
        producers.entries_since_snapshot += 1
        return [(producers.journal.log, next_seq)]


def partition_for_key(key: bytes, partitions: int) -> int:
    """The partition a key always lands on: a stable hash (CRC32C), never Python's hash()."""
    return crc32c(key) % partitions


def _check_batch_fits(records: list[Record], segment_max_bytes: int, now_ms: int) -> None:
    """``InvalidRequest`` if ``records`` encode to a batch larger than a segment (as
    ``PartitionLog.append`` would say); encodes them only when their size is near the limit."""
    bound = batch_format.HEADER_SIZE
    for r in records:
        bound += len(r.value) + len(r.key or b"") + _RECORD_OVERHEAD_BYTES
        for name, value in r.headers:
            bound += len(name.encode()) + len(value) + _HEADER_OVERHEAD_BYTES
    if bound <= segment_max_bytes:
        return
    size = len(_encoded(records, now_ms))
    if size > segment_max_bytes:
        raise InvalidRequest(
            f"a batch of {size} bytes exceeds segment_max_bytes "
            f"({segment_max_bytes}); append fewer records at once"
        )


def _encoded(records: list[Record], now_ms: int) -> bytearray:
    buffer = bytearray()
    batch_format.encode_into(buffer, 0, records, now_ms)
    return buffer


def _dedup_id(message: Outgoing, policy: TopicPolicy) -> str | None:
    if message.dedup_id is not None:
        return message.dedup_id
    if policy.content_dedup:
        return content_id(message.key, message.value, message.headers)
    return None


def deliver_at(message: Outgoing, now_ms: int) -> int | None:
    """When ``message``, published at ``now_ms``, may first be delivered; None: at once."""
    when = message.deliver_at_ms
    if message.delay_ms is not None:
        when = max(when or 0, now_ms + check_delay(message.delay_ms))
    return when


def expires_at(message: Outgoing, now_ms: int) -> int | None:
    """When ``message``, published at ``now_ms``, expires; None: it carries no TTL."""
    return None if message.ttl_ms is None else now_ms + check_ttl(message.ttl_ms)


def _record(message: Outgoing, now_ms: int) -> Record:
    if message.deliver_at_ms is None and message.delay_ms is None and message.ttl_ms is None:
        return message
    headers = message.headers
    deliver_at_ms = deliver_at(message, now_ms)
    if deliver_at_ms is not None:
        if type(deliver_at_ms) is not int or not 0 <= deliver_at_ms <= now_ms + MAX_DELAY_MS:
            raise InvalidRequest(
                f"deliver_at_ms must be an int between 0 and now + 365 days, not {deliver_at_ms!r}"
            )
        headers = (*headers, (DELIVER_AT_HEADER, b"%d" % deliver_at_ms))
    expires_at_ms = expires_at(message, now_ms)
    if expires_at_ms is not None:
        if deliver_at_ms is not None and deliver_at_ms >= expires_at_ms:
            raise InvalidRequest(
                f"a message delayed until {deliver_at_ms} would expire (ttl_ms="
                f"{message.ttl_ms}) before it could be delivered: its TTL counts from the "
                "publish, so make it longer than the delay"
            )
        headers = (*headers, (EXPIRES_AT_HEADER, b"%d" % expires_at_ms))
    return Record(
        value=message.value, key=message.key, headers=headers, timestamp_ms=message.timestamp_ms
    )
