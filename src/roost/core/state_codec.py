"""What a subscription writes to its state journal, and how it reads it back.

Entries are MessagePack arrays, one per command, tagged by their first element:

    [DELIVERED, partition, now_ms, [offset, ...]]            each offset delivered once more
    [DONE, partition, [[start, end], ...]]                   acked or dead-lettered
    [RETRY, partition, visible_at_ms, error, [offset, ...]]  released: not before visible_at
    [COMMITTED, partition, offset]                           stream mode: the committed offset

A snapshot is the whole state: per partition the ack floor and ranges, the attempts of offsets
not done (count, first and last delivery time, last error) and their retry times, and the
committed offset. Leases are never written: after a restart every offset not known to be done is
delivered again, with its delivery count intact.

Replaying a journal is applying its entries in order to an empty or snapshotted state; a
``PartitionState`` is exactly what ``PartitionDeliveries`` needs to resume.
"""

from __future__ import annotations

from typing import Any

import msgspec

from roost.core.acks import AckRanges
from roost.core.deliveries import Attempts, PartitionDeliveries

DELIVERED, DONE, RETRY, COMMITTED = 0, 1, 2, 3
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


class Snapshot(msgspec.Struct, array_like=True):
    format: int
    partitions: list[PartitionState]


_encoder = msgspec.msgpack.Encoder()
_entry_decoder = msgspec.msgpack.Decoder(list[Any])
_snapshot_decoder = msgspec.msgpack.Decoder(Snapshot)


def delivered(partition: int, now_ms: int, offsets: list[int]) -> bytes:
    return _encoder.encode((DELIVERED, partition, now_ms, offsets))


def done(partition: int, ranges: list[tuple[int, int]]) -> bytes:
    return _encoder.encode((DONE, partition, ranges))


def retry(partition: int, visible_at_ms: int, error: str | None, offsets: list[int]) -> bytes:
    return _encoder.encode((RETRY, partition, visible_at_ms, error, offsets))


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
        )
        for state in states
    }
    for partition, offset in committed.items():
        partitions.setdefault(partition, PartitionState(partition, 0, [], [], [], offset))
    return _encoder.encode(Snapshot(1, [partitions[p] for p in sorted(partitions)]))


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
    """Rebuild every partition's state from a snapshot and the entries after it."""
    states = {p: PartitionState(p, 0, [], [], []) for p in range(partitions)}
    if snapshot_bytes is not None:
        for state in _snapshot_decoder.decode(snapshot_bytes).partitions:
            states[state.partition] = state
    work = {p: _Replay(state) for p, state in states.items()}
    for entry in entries:
        fields = _entry_decoder.decode(entry)
        work[fields[1]].apply(fields)
    return {p: replayed.result() for p, replayed in work.items()}


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

    def apply(self, fields: list[Any]) -> None:
        kind = fields[0]
        if kind == DELIVERED:
            _, _, now_ms, offsets = fields
            for offset in offsets:
                attempts = self.attempts.setdefault(offset, Attempts(0, now_ms, now_ms))
                attempts.count += 1
                attempts.last_ms = now_ms
        elif kind == DONE:
            for start, end in fields[2]:
                self.acks.add_range(start, end)
                for offset in [o for o in self.attempts if start <= o < end]:
                    del self.attempts[offset]
                    self.retry_at.pop(offset, None)
        elif kind == RETRY:
            _, _, visible_at_ms, error, offsets = fields
            for offset in offsets:
                self.retry_at[offset] = visible_at_ms
                if offset in self.attempts:
                    self.attempts[offset].last_error = error
        elif kind == COMMITTED:
            self.committed = fields[2]

    def result(self) -> PartitionState:
        return PartitionState(
            self.partition,
            self.acks.floor,
            self.acks.ranges(),
            [(o, a.count, a.first_ms, a.last_ms, a.last_error) for o, a in self.attempts.items()],
            list(self.retry_at.items()),
            self.committed,
        )


def restore(state: PartitionState, keyed: bool) -> PartitionDeliveries:
    deliveries = PartitionDeliveries(state.partition, keyed, AckRanges(state.floor, state.ranges))
    for offset, count, first_ms, last_ms, error in state.attempts:
        attempts = deliveries.attempts[offset] = Attempts(count, first_ms, last_ms)
        attempts.last_error = error
    deliveries.retry_at = dict(state.retry_at)
    return deliveries
