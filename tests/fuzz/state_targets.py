"""Fuzz target for the state journal's codec (roost.core.state_codec): a snapshot and the
entries after it, replayed as a subscription does when it opens.

The input is a MessagePack array ``[partitions, snapshot, entry, entry, ...]`` whose items
are encoded again one by one (``snapshot`` nil for none), so the fuzzer mutates values
inside the structure the journal really holds; an input that is not such an array is
replayed as one raw entry. Contract: ``replay`` raises only ``CorruptState``; a state it
returns, snapshotted and replayed again, is the same state.
"""

from __future__ import annotations

from typing import Any

import msgspec

from roost.core import state_codec as codec
from roost.core.state_codec import CorruptState, PartitionState
from tests.fuzz.target import Target


def parse(data: bytes) -> tuple[int, bytes | None, list[bytes]]:
    """Partitions, snapshot bytes and entries the input stands for."""
    try:
        value = msgspec.msgpack.decode(data)
    except (ValueError, RecursionError):
        return 1, None, [data]
    if not isinstance(value, list) or len(value) < 2 or not isinstance(value[0], int):
        return 1, None, [data]
    partitions = 1 + value[0] % 8
    snapshot = value[1]
    if snapshot is not None and not isinstance(snapshot, bytes):
        snapshot = msgspec.msgpack.encode(snapshot)
    return partitions, snapshot, [msgspec.msgpack.encode(entry) for entry in value[2:]]


def canonical(state: PartitionState) -> tuple[Any, ...]:
    """A state with its lists in one order (a snapshot writes attempts sorted)."""
    return (state.partition, state.floor, state.ranges, sorted(state.attempts),
            sorted(state.retry_at), state.committed)  # fmt: skip


def check_state(data: bytes) -> None:
    partitions, snapshot, entries = parse(data)
    try:
        states = codec.replay(snapshot, entries, partitions)
    except CorruptState:
        return
    assert sorted(states) == list(range(partitions))
    deliveries = [codec.restore(state, keyed=False) for state in states.values()]
    committed = {p: s.committed for p, s in states.items() if s.committed is not None}
    again = codec.replay(codec.snapshot(deliveries, committed), [], partitions)
    for p, state in states.items():
        assert canonical(again[p]) == canonical(state), (state, again[p])


def seeds() -> list[bytes]:
    entries = [
        codec.delivered(0, 1000, [3, 4, 5]),
        codec.retry(0, 2000, "boom", [4]),
        codec.done(0, [(0, 4)]),
        codec.committed(1, 17),
        codec.delivered(1, 1500, [0]),
    ]
    state = codec.replay(None, entries, 2)
    snapshot = codec.snapshot([codec.restore(s, keyed=True) for s in state.values()], {1: 17})
    decode = msgspec.msgpack.decode
    return [
        msgspec.msgpack.encode([2, None, *map(decode, entries)]),
        msgspec.msgpack.encode([2, decode(snapshot), *map(decode, entries[:2])]),
        msgspec.msgpack.encode([1, decode(snapshot)]),
    ]


TARGETS = {
    "state_codec": Target(
        "state_codec",
        "state journal snapshots and entries through state_codec.replay: CorruptState only; "
        "a replayed state snapshots and replays to itself", check_state, seeds),
}  # fmt: skip
