"""What a subscription writes to its state journal, and how it reads it back.

Entries are MessagePack arrays, one per command, tagged by their first element:

    [DELIVERED, partition, now_ms, [offset, ...]]            each offset delivered once more
    [DONE, partition, [[start, end], ...]]                   acked or dead-lettered
    [RETRY, partition, visible_at_ms, error, [offset, ...]]  released: not before visible_at
    [COMMITTED, partition, offset]                           stream mode: the committed offset
    [RETURNED, partition, [offset, ...]]                     given back unseen: one delivery
                                                             fewer (undoes a DELIVERED)
    [DELAYED, partition, [visible_at_ms, start, end, ...]]   published delayed: offsets
                                                             [start, end) not before visible_at
                                                             (core/scheduled.py)

A snapshot is the whole state: per partition the ack floor and ranges, the attempts of offsets
not done (count, first and last delivery time, last error) and their retry times, and the
committed offset, and the published delays not yet due (``delays``: packed runs, see
``DelayWheel.packed``). Leases are never written: after a restart every offset not known to
be done is delivered again, with its delivery count intact.

Replaying a journal is applying its entries in order to an empty or snapshotted state; a
``PartitionState`` is exactly what ``PartitionDeliveries`` needs to resume. Entries and
snapshots are read back as typed structs: bytes that are not what this module writes (a
snapshot or entry whose CRC held but whose content is wrong, a partition the topic does not
have) raise ``CorruptState``, never a ``KeyError`` or ``TypeError`` from deep in the replay.
"""

from __future__ import annotations

import sys
from array import array
from typing import Any

import msgspec

from roost.core.acks import AckRanges
from roost.core.deliveries import Attempts, PartitionDeliveries

DELIVERED, DONE, RETRY, COMMITTED, RETURNED, DELAYED = 0, 1, 2, 3, 4, 5
#: Journal entries between snapshots (of a subscription, or of a topic's producer state).
SNAPSHOT_EVERY = 10_000


class PartitionState(msgspec.Struct, array_like=True):
    partition: int
    floor: int
    ranges: list[tuple[int, int]]
    #: offset, count, first_ms, last_ms, last_error
    attempts: list[tuple[int, int, int, int, str | None]]
    retry_at: list[tuple[int, int]]
    committed: int | None = None
    #: Published delays not yet due: (visible_at_ms, start, end) runs as little-endian int64s.
    delays: bytes = b""


class Snapshot(msgspec.Struct, array_like=True):
    format: int
    partitions: list[PartitionState]


class CorruptState(ValueError):
    """A snapshot or journal entry that is not what this module writes."""


# The entries as read back: the arrays above, their first element the tag.
class _Entry(msgspec.Struct, array_like=True):
    partition: int


class _Delivered(_Entry, tag=DELIVERED):
    now_ms: int
    offsets: list[int]


class _Done(_Entry, tag=DONE):
    ranges: list[tuple[int, int]]


class _Retry(_Entry, tag=RETRY):
    visible_at_ms: int
    error: str | None
    offsets: list[int]


class _Committed(_Entry, tag=COMMITTED):
    offset: int


class _Returned(_Entry, tag=RETURNED):
    offsets: list[int]


class _Delayed(_Entry, tag=DELAYED):
    runs: list[int]


_encoder = msgspec.msgpack.Encoder()
_entry_decoder = msgspec.msgpack.Decoder(
    _Delivered | _Done | _Retry | _Committed | _Returned | _Delayed
)
_snapshot_decoder = msgspec.msgpack.Decoder(Snapshot)


def delivered(partition: int, now_ms: int, offsets: list[int]) -> bytes:
    return _encoder.encode((DELIVERED, partition, now_ms, offsets))


def done(partition: int, ranges: list[tuple[int, int]]) -> bytes:
    return _encoder.encode((DONE, partition, ranges))


def retry(partition: int, visible_at_ms: int, error: str | None, offsets: list[int]) -> bytes:
    return _encoder.encode((RETRY, partition, visible_at_ms, error, offsets))


def returned(partition: int, offsets: list[int]) -> bytes:
    return _encoder.encode((RETURNED, partition, offsets))


def delayed(partition: int, runs: list[tuple[int, int, int]]) -> bytes:
    """Offsets published delayed: ``(visible_at_ms, start, end)`` runs."""
    return _encoder.encode((DELAYED, partition, [n for run in runs for n in run]))


def committed(partition: int, offset: int) -> bytes:
    return _encoder.encode((COMMITTED, partition, offset))


def snapshot(states: list[PartitionDeliveries], committed: dict[int, int]) -> bytes:
    """Queue/keyed delivery states and stream committed offsets, as one snapshot."""
    partitions = {
        state.partition: PartitionState(
            state.partition,
            state.acks.floor,
            state.acks.ranges(),
            _attempts(state),
            list(state.retry_at.items()),
            committed.get(state.partition),
            state.scheduled.wheel.packed() if state.scheduled is not None else b"",
        )
        for state in states
    }
    for partition, offset in committed.items():
        partitions.setdefault(partition, PartitionState(partition, 0, [], [], [], offset))
    rows = [_row(partitions[p]) for p in sorted(partitions)]
    return _encoder.encode((1, rows))


def _row(state: PartitionState) -> tuple[Any, ...]:
    """``state`` as the array it is stored as; without ``delays`` when there are none, so
    that a broker from before them reads the snapshot (storage-format.md)."""
    fields = tuple(getattr(state, name) for name in PartitionState.__struct_fields__)
    return fields if state.delays else fields[:-1]


def _attempts(state: PartitionDeliveries) -> list[tuple[int, int, int, int, str | None]]:
    """Attempts of offsets not done, first deliveries still leased included."""
    offsets = {*state.attempts, *state.leases}
    rows = []
    for offset in sorted(offsets):
        attempts = state.attempts_of(offset)
        if attempts is not None:
            rows.append((offset, attempts.count, attempts.first_ms, attempts.last_ms,
                         attempts.last_error))  # fmt: skip
    return rows


def replay(
    snapshot_bytes: bytes | None, entries: list[bytes], partitions: int
) -> dict[int, PartitionState]:
    """Rebuild every partition's state from a snapshot and the entries after it; raises
    ``CorruptState`` for a snapshot or entry this module did not write, naming which."""
    states = {p: PartitionState(p, 0, [], [], []) for p in range(partitions)}
    if snapshot_bytes is not None:
        for state in _decode(_snapshot_decoder, snapshot_bytes, "snapshot").partitions:
            _check_partition(state.partition, partitions, "snapshot")
            states[state.partition] = state
    work = {p: _Replay(state) for p, state in states.items()}
    for number, entry in enumerate(entries):
        fields = _decode(_entry_decoder, entry, f"entry {number}")
        _check_partition(fields.partition, partitions, f"entry {number}")
        work[fields.partition].apply(fields)
    return {p: replayed.result() for p, replayed in work.items()}


def _decode(decoder: msgspec.msgpack.Decoder[Any], data: bytes, what: str) -> Any:
    try:
        return decoder.decode(data)
    except (ValueError, RecursionError) as e:  # msgspec's DecodeError is a ValueError
        raise CorruptState(f"journal {what} is not a state entry: {e}") from None


def _check_partition(partition: int, partitions: int, what: str) -> None:
    if not 0 <= partition < partitions:
        raise CorruptState(f"journal {what} names partition {partition} of {partitions}")


class _Replay:
    def __init__(self, state: PartitionState) -> None:
        self.partition = state.partition
        self.acks = AckRanges(state.floor, state.ranges)
        self.attempts: dict[int, Attempts] = {}
        for offset, count, first_ms, last_ms, error in state.attempts:
            attempts = self.attempts[offset] = Attempts(count, first_ms, last_ms)
            attempts.last_error = error
        self.retry_at = dict(state.retry_at)
        self.committed = state.committed
        self.delays = array("q")
        self.delays.frombytes(state.delays)

    def apply(self, entry: _Entry) -> None:
        if isinstance(entry, _Delivered):
            now_ms = entry.now_ms
            for offset in entry.offsets:
                attempts = self.attempts.setdefault(offset, Attempts(0, now_ms, now_ms))
                attempts.count += 1
                attempts.last_ms = now_ms
        elif isinstance(entry, _Done):
            for start, end in entry.ranges:
                self.acks.add_range(start, end)
                for offset in [o for o in self.attempts if start <= o < end]:
                    del self.attempts[offset]
                    self.retry_at.pop(offset, None)
        elif isinstance(entry, _Retry):
            for offset in entry.offsets:
                self.retry_at[offset] = entry.visible_at_ms
                if offset in self.attempts:
                    self.attempts[offset].last_error = entry.error
        elif isinstance(entry, _Committed):
            self.committed = entry.offset
        elif isinstance(entry, _Returned):
            self._returned(entry.offsets)
        elif isinstance(entry, _Delayed):
            self._delayed(entry.runs)

    def _delayed(self, runs: list[int]) -> None:
        if len(runs) % 3:
            raise CorruptState(f"a delayed entry of {len(runs)} ints, not runs of 3")
        try:
            self.delays.extend(_little_endian(runs))
        except OverflowError:
            raise CorruptState("a delayed entry with an int beyond 64 bits") from None

    def _returned(self, offsets: list[int]) -> None:
        """Given back unseen: the DELIVERED entry before counted one delivery too many."""
        for offset in offsets:
            found = self.attempts.get(offset)
            if found is not None:
                found.count -= 1
                if found.count <= 0:  # its only delivery: as if never delivered
                    del self.attempts[offset]

    def result(self) -> PartitionState:
        return PartitionState(
            self.partition,
            self.acks.floor,
            self.acks.ranges(),
            [(o, a.count, a.first_ms, a.last_ms, a.last_error) for o, a in self.attempts.items()],
            list(self.retry_at.items()),
            self.committed,
            self.delays.tobytes(),
        )


def restore(state: PartitionState, keyed: bool) -> PartitionDeliveries:
    deliveries = PartitionDeliveries(state.partition, keyed, AckRanges(state.floor, state.ranges))
    for offset, count, first_ms, last_ms, error in state.attempts:
        attempts = deliveries.attempts[offset] = Attempts(count, first_ms, last_ms)
        attempts.last_error = error
    deliveries.retry_at = dict(state.retry_at)
    return deliveries


def _little_endian(ints: list[int]) -> array[int]:
    """``ints`` as the int64s ``PartitionState.delays`` holds."""
    packed = array("q", ints)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed
