"""Looking at messages without consuming them: what an operator (or the admin API) peeks at.

    peeked = peek_queue(sub, now_ms, max_messages=10)       # what a queue subscription holds
    records = peek_stream(stream, max_messages=10)          # what a group has not committed
    messages = read_log(topic, partition=0, offset=0, max_messages=10)   # the raw log

Rules:

- Nothing here changes state: no lease, no delivery count, no journal entry. A peek may run
  while consumers work; it shows the state at that instant.
- Only records a subscription could deliver are shown: those below the log's
  ``confirmed_offset`` (durable under ``always``).
- A queue subscription's messages are those not done (acked or dead-lettered), from its ack
  floor on, partitions in order, each with its state: ``leased`` (until the lease's deadline),
  ``delayed`` (until its retry time, deliver-at header or the subscription's delay) or
  ``pending`` (a consumer may take it now, or, in `keyed` mode, once the messages before it
  with the same key are done). Its ``delivery_count`` is the deliveries so far (0: never).
- The work is bounded: at most ``MAX_PEEK_MESSAGES`` returned and ``MAX_PEEK_SCAN`` records
  read per partition, so a subscription with a long run of acked records above a stuck one
  returns what it found within the scan.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Literal

import msgspec

from roost.core.model import Message
from roost.errors import InvalidRequest
from roost.storage import StoredRecord, Topic
from roost.storage.log import PartitionLog

if TYPE_CHECKING:  # the subscriptions call these, so they are imported only for their types
    from roost.core.streams import StreamSubscription
    from roost.core.subscription import QueueSubscription

MAX_PEEK_MESSAGES = 1000
#: Records read per partition at most by one peek, however many of them are done.
MAX_PEEK_SCAN = 10_000
#: Records decoded per read while scanning.
READ_CHUNK = 256

PeekState = Literal["pending", "leased", "delayed"]


class Peeked(msgspec.Struct, frozen=True):
    """A message as it stands in a subscription, seen without taking it."""

    message: Message
    state: PeekState
    #: ``leased``: the lease's deadline; ``delayed``: when it becomes visible (ms since epoch).
    until_ms: int | None = None


def check_limit(max_messages: int) -> int:
    if type(max_messages) is not int or not 1 <= max_messages <= MAX_PEEK_MESSAGES:
        raise InvalidRequest(
            f"max_messages must be an int between 1 and {MAX_PEEK_MESSAGES}, not {max_messages!r}"
        )
    return max_messages


#: (partition, offset) of the last message of a page: the next page starts past it.
Cursor = tuple[int, int]


def peek_queue(
    sub: QueueSubscription,
    now_ms: int,
    max_messages: int,
    partition: int | None = None,
    after: Cursor | None = None,
) -> list[Peeked]:
    """Up to ``max_messages`` messages ``sub`` has not finished with, lowest offsets first
    (past ``after``, the last one of the page before, if given)."""
    check_limit(max_messages)
    found: list[Peeked] = []
    for p in _partitions(sub.topic, partition, after):
        state = sub.partition_state(p)
        log = sub.topic.log(p)
        start = _past(p, max(state.acks.floor, log.start_offset), after)
        leaving = sub.dead_lettering(p)  # no longer the queue's: on their way to its DLQ
        for record in _records(log, start, max_messages - len(found)):
            if record.offset in state.acks or record.offset in leaving:
                continue
            attempts = state.attempts_of(record.offset)
            count = attempts.count if attempts is not None else 0
            message = _message(sub.spec.topic, p, record, count)
            lease = state.leases.get(record.offset)
            visible_at = max(sub.visible_at(record), state.retry_at.get(record.offset, 0))
            if lease is not None and lease.deadline_ms > now_ms:
                found.append(Peeked(message, "leased", lease.deadline_ms))
            elif visible_at > now_ms:
                found.append(Peeked(message, "delayed", visible_at))
            else:
                found.append(Peeked(message, "pending"))
            if len(found) >= max_messages:
                return found
    return found


def peek_stream(
    stream: StreamSubscription, max_messages: int, partition: int | None = None
) -> list[Peeked]:
    """Up to ``max_messages`` records after the group's committed offsets, partitions in order."""
    return peek_topic(stream.topic, max_messages, partition, lambda p: stream.committed[p])


def peek_topic(
    topic: Topic,
    max_messages: int,
    partition: int | None = None,
    start: Callable[[int], int] | None = None,
    after: Cursor | None = None,
) -> list[Peeked]:
    """Up to ``max_messages`` records of ``topic`` from ``start(partition)`` (default: the
    log's start; past ``after`` if given), partitions in order; all ``pending`` with no
    deliveries."""
    check_limit(max_messages)
    found: list[Peeked] = []
    for p in _partitions(topic, partition, after):
        log = topic.log(p)
        first = max(start(p), log.start_offset) if start is not None else log.start_offset
        first = _past(p, first, after)
        for record in _records(log, first, max_messages - len(found)):
            found.append(Peeked(_message(topic.name, p, record, 0), "pending"))
            if len(found) >= max_messages:
                return found
    return found


def read_log(topic: Topic, partition: int, offset: int | None, max_messages: int) -> list[Message]:
    """Up to ``max_messages`` records of one partition from ``offset`` (default: its start).

    ``OffsetOutOfRange`` outside ``[start_offset, end_offset]``; empty at the end.
    """
    check_limit(max_messages)
    log = topic.log(partition)
    start = log.start_offset if offset is None else offset
    records = log.read(start, max_records=max_messages)
    end = log.confirmed_offset
    return [_message(topic.name, partition, r, 0) for r in records[:max_messages] if r.offset < end]


def _partitions(topic: Topic, partition: int | None, after: Cursor | None = None) -> range:
    """The partitions to look in, in order: one, or all (from ``after``'s, when paging)."""
    if partition is None:
        return range(0 if after is None else after[0], len(topic.partitions))
    topic.log(partition)  # UnknownPartition if there is none
    return range(partition, partition + 1)


def _past(partition: int, start: int, after: Cursor | None) -> int:
    """Where to start in ``partition``: past ``after`` if it is this partition's."""
    if after is None or partition != after[0]:
        return start
    return max(start, after[1] + 1)


def _records(log: PartitionLog, start: int, wanted: int) -> Iterator[StoredRecord]:
    """Confirmed records from ``start`` on, reading at most ``MAX_PEEK_SCAN`` of them.

    The caller stops iterating once it has enough; ``wanted`` only sizes the first read.
    """
    end = min(log.confirmed_offset, start + MAX_PEEK_SCAN)
    offset = start
    chunk = max(1, min(wanted, READ_CHUNK))
    while offset < end:
        records = log.read(offset, max_records=min(chunk, end - offset))
        if not records:
            return
        for record in records:
            if record.offset >= end:
                return
            yield record
        offset = records[-1].offset + 1
        chunk = READ_CHUNK


def _message(topic: str, partition: int, record: StoredRecord, deliveries: int) -> Message:
    return Message(
        topic, partition, record.offset, record.timestamp_ms, record.key, record.value,
        record.headers, deliveries,
    )  # fmt: skip
