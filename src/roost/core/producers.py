"""Idempotent producers and the dedup window: what the broker asks before it appends a publish.

    state = ProducerState("orders", clock)
    decision = state.check("p-7f3a", partition=2, first_sequence=10, count=3)
    if decision is APPEND:                             # else Duplicate(base_offset, record_count)
        base_offset = log.append(records).base_offset
        state.record("p-7f3a", 2, first_sequence=10, count=3, base_offset=base_offset)
    placed = state.seen(dedup_id)                      # Placement(partition, offset) | None
    state.remember(dedup_id, partition, offset)        # after appending a record that had one

One ``ProducerState`` per topic, pure and synchronous: no I/O, time only from the Clock.

**Idempotent producers** (Kafka's rules, without epochs). A producer numbers the records it sends
to each partition 0, 1, 2, ...; a batch carries its first sequence and its record count.

- A producer this partition does not know must start at sequence 0; anything else is refused
  (it may be a retry of a batch appended before the producer was forgotten, which must not be
  appended twice). A producer that loses its sequence (a restart) takes a new producer id.
- A known producer's batch is new exactly when ``first_sequence`` is the one after its last.
  A retry of one of its last ``BATCHES_PER_PRODUCER`` batches (same first sequence and count) is
  a ``Duplicate`` carrying the offsets it got the first time. Anything else (a gap, a reordering,
  a retry older than those batches) is refused with the expected and the received sequence.
- ``check`` decides and changes nothing. ``record`` must follow the append in the same
  synchronous step, before anything is awaited: a second batch checked in between would be
  refused as a gap. ``record`` trusts its caller: a batch that does not follow the producer's
  last one starts the producer over from that batch.
- A producer idle (no ``record``) for ``producer_expiry_ms`` is forgotten; at most
  ``max_producers`` are tracked per partition, the least recently recorded evicted first. A
  producer forgotten while it still retries its first batch gets that batch appended twice.

**Dedup window** (SQS FIFO). A record's dedup id (or ``content_id`` of it, when the topic asks)
seen within ``window_ms`` is confirmed again with its first placement and not appended. The
scope is the topic, not the partition, as an SQS queue: a record without a key goes round robin,
so its retry may be routed to another partition. The first placement of an id stands: a second
``remember`` within the window is ignored. Two records with one id in the same batch are the
broker's to collapse: ``seen`` knows only what was remembered. At most ``max_dedup_ids`` are
kept; beyond that the oldest are dropped before their window ends, and a retry of those is
appended again (``evicted_ids`` counts them, so the admin API can say the guarantee weakened).

**Time** is ``clock.now_ms()`` (timestamps survive restarts), held at its highest reading: a
wall clock stepped back makes windows last longer, never shorter. Both tables are ordered dicts
in time order, pruned from the old end on each call, so expiry is amortised O(1).

**Persistence.** ``export()`` is the whole state; what was recorded after the last export is
lost on a crash unless the broker also journals, per publish, ``entry(...)`` (producer, first
sequence, dedup ids, offsets), and replays them with ``apply``. ``apply(entry(...))`` does what
``record`` plus ``remember`` do, so live state and replay agree by construction. The journal is
not the log: after recovery call ``truncate(partition, log.end_offset)`` for every partition
(entries may describe records recovery cut, which a retry must not be told were appended), then
snapshot before accepting publishes, so those entries are never replayed again. A record made
durable whose entry was not is unknown here and its retry is appended again: entries must be
durable no later than the records they describe.

Layouts (MessagePack arrays, format 1)::

    entry     [1, partition, base_offset, count, at_ms, producer_id | nil, first_sequence | nil,
               [[offset, dedup_id], ...]]
    snapshot  [1, now_ms, producers, dedup]
              producers  [[partition, producer_id, next_sequence, last_used_ms,
                           [[first_sequence, count, base_offset], ...]], ...]  LRU first
              dedup      [[dedup_id, at_ms, partition, offset], ...]           oldest first
"""

from __future__ import annotations

import enum
import hashlib
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from typing import Final, Literal, NamedTuple

import msgspec

from roost.clock import Clock
from roost.errors import (
    InvalidConfig,
    InvalidName,
    InvalidRequest,
    OutOfOrderSequence,
    StorageFailure,
    UnknownProducer,
)

BATCHES_PER_PRODUCER = 5
DEFAULT_PRODUCER_EXPIRY_MS = 7 * 24 * 3600 * 1000
MIN_PRODUCER_EXPIRY_MS = 60_000
MAX_PRODUCER_EXPIRY_MS = 90 * 24 * 3600 * 1000
DEFAULT_MAX_PRODUCERS = 1_000  # per partition
MAX_MAX_PRODUCERS = 1_000_000
DEFAULT_WINDOW_MS = 5 * 60 * 1000
MIN_WINDOW_MS = 1_000
MAX_WINDOW_MS = 24 * 3600 * 1000
DEFAULT_MAX_DEDUP_IDS = 100_000  # per topic
MAX_MAX_DEDUP_IDS = 10_000_000
MAX_PRODUCER_ID_CHARS = 255
MAX_DEDUP_ID_CHARS = 128  # as SQS; a content id is 72
MAX_SEQUENCE = 2**63 - 1  # an i64, as the offsets
FORMAT = 1


class Append(enum.Enum):
    """A new batch: append it, then ``record`` the offset it got."""

    APPEND = "append"


class Duplicate(NamedTuple):
    """A retry of a batch already appended at ``base_offset``: confirm, do not append."""

    base_offset: int
    record_count: int

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.record_count - 1


APPEND: Final = Append.APPEND
Decision = Literal[Append.APPEND] | Duplicate


class Placement(NamedTuple):
    partition: int
    offset: int


class Batch(NamedTuple):
    first_sequence: int
    record_count: int
    base_offset: int


class _Producer:
    __slots__ = ("batches", "last_used_ms", "next_sequence")

    def __init__(self, next_sequence: int, last_used_ms: int, batches: Iterable[Batch]) -> None:
        #: The first sequence of the next new batch; each batch starts where the one before ended.
        self.next_sequence = next_sequence
        self.last_used_ms = last_used_ms
        self.batches: deque[Batch] = deque(batches, maxlen=BATCHES_PER_PRODUCER)


class Published(msgspec.Struct, array_like=True, frozen=True, tag=1):
    """One appended batch, as journaled (see the layouts above)."""

    partition: int
    base_offset: int
    count: int
    at_ms: int
    producer_id: str | None
    first_sequence: int | None
    dedup_ids: list[tuple[int, str]]


class _Snapshot(msgspec.Struct, array_like=True, frozen=True):
    format: int
    now_ms: int
    producers: list[tuple[int, str, int, int, list[Batch]]]
    dedup: list[tuple[str, int, int, int]]


_encoder = msgspec.msgpack.Encoder()
_entry_decoder = msgspec.msgpack.Decoder(Published)
_snapshot_decoder = msgspec.msgpack.Decoder(_Snapshot)


def content_id(key: bytes | None, value: bytes, headers: Sequence[tuple[str, bytes]]) -> str:
    """A dedup id for the content of a record: equal key, value and headers (in order) give it.

    BLAKE2b-256 of the MessagePack array ``[key, value, [[name, value], ...]]``, personalised
    ``roost.dedup.v1``; stable across processes and versions (a golden test pins it). ``None``
    and ``b""`` keys differ.
    """
    data = _encoder.encode((key, value, [(name, v) for name, v in headers]))
    return "content:" + hashlib.blake2b(data, digest_size=32, person=b"roost.dedup.v1").hexdigest()


class ProducerState:
    """Producer sequences per partition and the dedup window of one topic. See the module doc."""

    def __init__(
        self,
        topic: str,
        clock: Clock,
        *,
        window_ms: int = DEFAULT_WINDOW_MS,
        max_dedup_ids: int = DEFAULT_MAX_DEDUP_IDS,
        producer_expiry_ms: int = DEFAULT_PRODUCER_EXPIRY_MS,
        max_producers: int = DEFAULT_MAX_PRODUCERS,
    ) -> None:
        _check_range("dedup.window_ms", window_ms, MIN_WINDOW_MS, MAX_WINDOW_MS)
        _check_range("dedup.max_ids", max_dedup_ids, 1, MAX_MAX_DEDUP_IDS)
        _check_range(
            "producer_expiry_ms", producer_expiry_ms, MIN_PRODUCER_EXPIRY_MS, MAX_PRODUCER_EXPIRY_MS
        )
        _check_range("max_producers", max_producers, 1, MAX_MAX_PRODUCERS)
        self.topic = topic
        self.window_ms = window_ms
        self.max_dedup_ids = max_dedup_ids
        self.producer_expiry_ms = producer_expiry_ms
        self.max_producers = max_producers
        self._clock = clock
        #: The highest clock reading (or replayed stamp) so far; time here never goes back.
        self._now_ms = 0
        #: Partition -> producer id -> state, least recently recorded first.
        self._producers: dict[int, OrderedDict[str, _Producer]] = {}
        #: Dedup id -> (remembered at ms, partition, offset), oldest first.
        self._ids: OrderedDict[str, tuple[int, int, int]] = OrderedDict()
        #: Dropped by the bounds before their time: the guarantees weakened this many times.
        self.evicted_producers = 0
        self.evicted_ids = 0

    # -- idempotent producers ---------------------------------------------------------------

    def check(self, producer_id: str, partition: int, first_sequence: int, count: int) -> Decision:
        """``APPEND`` or ``Duplicate``; raises ``InvalidRequest`` naming expected and got."""
        _check_batch(producer_id, first_sequence, count)
        producer = self._live_producers(partition, self._now()).get(producer_id)
        expected = 0 if producer is None else producer.next_sequence
        if first_sequence == expected:
            return APPEND
        sent = Batch(first_sequence, count, -1)
        if producer is None:
            raise self._sequence_error(producer_id, partition, expected, sent, "unknown")
        for batch in producer.batches:
            if batch[:2] == sent[:2]:
                return Duplicate(batch.base_offset, count)
        why = "gap" if first_sequence > expected else "stale"
        raise self._sequence_error(producer_id, partition, expected, sent, why)

    def record(
        self, producer_id: str, partition: int, first_sequence: int, count: int, base_offset: int
    ) -> None:
        """After appending a batch ``check`` allowed: it is now the producer's latest."""
        _check_batch(producer_id, first_sequence, count)
        batch = Batch(first_sequence, count, base_offset)
        self._record(producer_id, partition, batch, self._now())

    def tracked_producers(self, partition: int) -> int:
        return len(self._live_producers(partition, self._now()))

    # -- dedup window -----------------------------------------------------------------------

    def seen(self, dedup_id: str) -> Placement | None:
        """Where a record with this dedup id went, if one was remembered within the window."""
        _check_dedup_id(dedup_id)
        self._prune_ids(self._now())
        hit = self._ids.get(dedup_id)
        return None if hit is None else Placement(hit[1], hit[2])

    def remember(self, dedup_id: str, partition: int, offset: int) -> None:
        """After appending a record that carried ``dedup_id``; ignored if one is in the window."""
        _check_dedup_id(dedup_id)
        self._remember(dedup_id, partition, offset, self._now())

    def tracked_dedup_ids(self) -> int:
        self._prune_ids(self._now())
        return len(self._ids)

    # -- persistence ------------------------------------------------------------------------

    def entry(
        self,
        partition: int,
        base_offset: int,
        count: int,
        *,
        producer_id: str | None = None,
        first_sequence: int | None = None,
        dedup_ids: Sequence[str | None] = (),
    ) -> bytes:
        """A journal entry for one appended batch; ``dedup_ids[i]`` is record i's, or None."""
        if (producer_id is None) != (first_sequence is None):
            raise InvalidRequest("an entry has both producer_id and first_sequence, or neither")
        if producer_id is not None and first_sequence is not None:
            _check_batch(producer_id, first_sequence, count)
        pairs = [(base_offset + i, d) for i, d in enumerate(dedup_ids) if d is not None]
        for _, dedup_id in pairs:
            _check_dedup_id(dedup_id)
        return _encoder.encode(
            Published(
                partition, base_offset, count, self._now(), producer_id, first_sequence, pairs
            )
        )

    def apply(self, entry: bytes) -> None:
        """Replay an entry: what ``record`` and ``remember`` did, at the time the entry says."""
        try:
            published = _entry_decoder.decode(entry)
        except msgspec.MsgspecError as e:
            raise StorageFailure(f"producer state of topic {self.topic!r}: bad entry", e) from e
        now = self._now_ms = max(self._now_ms, published.at_ms)
        if published.producer_id is not None:
            first = published.first_sequence or 0
            batch = Batch(first, published.count, published.base_offset)
            self._record(published.producer_id, published.partition, batch, now)
        for offset, dedup_id in published.dedup_ids:
            self._remember(dedup_id, published.partition, offset, now)

    def export(self) -> bytes:
        """The whole state (see the layouts above), for ``restore`` or a journal snapshot."""
        now = self._now()
        self._prune_ids(now)
        producers = []
        for partition in sorted(self._producers):
            for producer_id, p in self._live_producers(partition, now).items():
                row = (partition, producer_id, p.next_sequence, p.last_used_ms, list(p.batches))
                producers.append(row)
        dedup = [(d, at, partition, offset) for d, (at, partition, offset) in self._ids.items()]
        return _encoder.encode(_Snapshot(FORMAT, self._now_ms, producers, dedup))

    def restore(self, data: bytes) -> None:
        """Replace the state with an ``export``; this instance's bounds apply from here on."""
        try:
            snapshot = _snapshot_decoder.decode(data)
        except msgspec.MsgspecError as e:
            raise StorageFailure(f"producer state of topic {self.topic!r}: bad snapshot", e) from e
        if snapshot.format != FORMAT:
            raise StorageFailure(
                f"producer state of topic {self.topic!r}: snapshot format {snapshot.format}"
            )
        self._now_ms = max(self._now_ms, snapshot.now_ms)
        self._producers = {}
        for partition, producer_id, next_sequence, last_used_ms, batches in snapshot.producers:
            table = self._producers.setdefault(partition, OrderedDict())
            table[producer_id] = _Producer(next_sequence, last_used_ms, batches)
            self._bound_producers(table)
        self._ids = OrderedDict()
        for dedup_id, at_ms, partition, offset in snapshot.dedup:
            self._ids[dedup_id] = (at_ms, partition, offset)
            self._bound_ids()

    def truncate(self, partition: int, end_offset: int) -> bool:
        """Forget what lies at ``end_offset`` or after on ``partition`` (recovery cut it);
        returns whether anything was forgotten.

        A producer goes back to the first batch it lost. A full scan: for recovery only.
        """
        forgot = False
        table = self._producers.get(partition, OrderedDict())
        for producer_id, producer in list(table.items()):
            batches = producer.batches
            while batches and batches[-1].base_offset + batches[-1].record_count > end_offset:
                producer.next_sequence = batches.pop().first_sequence
                forgot = True
            if producer.next_sequence == 0:
                del table[producer_id]
        for dedup_id, (_, p, offset) in list(self._ids.items()):
            if p == partition and offset >= end_offset:
                del self._ids[dedup_id]
                forgot = True
        return forgot

    # -- internals --------------------------------------------------------------------------

    def _now(self) -> int:
        self._now_ms = max(self._now_ms, self._clock.now_ms())
        return self._now_ms

    def _live_producers(self, partition: int, now: int) -> OrderedDict[str, _Producer]:
        table = self._producers.setdefault(partition, OrderedDict())
        while table:
            oldest = next(iter(table.values()))
            if now < oldest.last_used_ms + self.producer_expiry_ms:
                break
            table.popitem(last=False)
        return table

    def _record(self, producer_id: str, partition: int, batch: Batch, now: int) -> None:
        table = self._live_producers(partition, now)
        producer = table.pop(producer_id, None)
        if producer is None or batch.first_sequence != producer.next_sequence:
            producer = _Producer(batch.first_sequence, now, ())
        producer.batches.append(batch)
        producer.next_sequence = batch.first_sequence + batch.record_count
        producer.last_used_ms = now
        table[producer_id] = producer
        self._bound_producers(table)

    def _bound_producers(self, table: OrderedDict[str, _Producer]) -> None:
        while len(table) > self.max_producers:
            table.popitem(last=False)
            self.evicted_producers += 1

    def _remember(self, dedup_id: str, partition: int, offset: int, now: int) -> None:
        self._prune_ids(now)
        if dedup_id not in self._ids:
            self._ids[dedup_id] = (now, partition, offset)
            self._bound_ids()

    def _bound_ids(self) -> None:
        while len(self._ids) > self.max_dedup_ids:
            self._ids.popitem(last=False)
            self.evicted_ids += 1

    def _prune_ids(self, now: int) -> None:
        ids = self._ids
        while ids and now >= next(iter(ids.values()))[0] + self.window_ms:
            ids.popitem(last=False)

    def _sequence_error(
        self, producer_id: str, partition: int, expected: int, batch: Batch, why: str
    ) -> OutOfOrderSequence:
        first, last = batch.first_sequence, batch.first_sequence + batch.record_count - 1
        if why == "unknown":
            idle_s = self.producer_expiry_ms // 1000
            detail = f"a producer not known here (new, idle for {idle_s} s, or evicted) starts at 0"
        elif why == "gap":
            detail = f"sequences {expected}..{first - 1} are missing"
        else:
            detail = f"{first}..{last} is not one of its last {BATCHES_PER_PRODUCER} batches"
        error = UnknownProducer if why == "unknown" else OutOfOrderSequence
        return error(
            f"producer {producer_id!r} on topic {self.topic!r} partition {partition}: "
            f"expected sequence {expected}, got {first} ({detail})",
            self.topic, partition, producer_id, expected, first,
        )  # fmt: skip


def _check_range(field: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidConfig(field, value, f"an integer in {low}..{high}")


def _check_batch(producer_id: str, first_sequence: int, count: int) -> None:
    if not 0 < len(producer_id) <= MAX_PRODUCER_ID_CHARS or not producer_id.isprintable():
        raise InvalidName("producer", producer_id, f"1 to {MAX_PRODUCER_ID_CHARS} printable chars")
    if first_sequence < 0 or count < 1 or first_sequence + count - 1 > MAX_SEQUENCE:
        raise InvalidRequest(
            f"a batch of producer {producer_id!r} needs first_sequence >= 0 and count >= 1 with "
            f"its last sequence at most {MAX_SEQUENCE}, got {first_sequence} and {count}"
        )


def _check_dedup_id(dedup_id: str) -> None:
    if not 0 < len(dedup_id) <= MAX_DEDUP_ID_CHARS or not dedup_id.isprintable():
        raise InvalidName("dedup id", dedup_id, f"1 to {MAX_DEDUP_ID_CHARS} printable chars")
