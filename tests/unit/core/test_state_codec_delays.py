"""The ``delays`` a snapshot carries: written only when there are some, read back whole."""

from __future__ import annotations

import msgspec

from roost.core import state_codec
from roost.core.acks import AckRanges
from roost.core.delay_wheel import unpack
from roost.core.deliveries import PartitionDeliveries
from roost.core.scheduled import ScheduledDelays

NOW = 1_700_000_000_000


class _PartitionBefore(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    """A partition's state as brokers from before delays read it: six fields."""

    partition: int
    floor: int
    ranges: list[tuple[int, int]]
    attempts: list[tuple[int, int, int, int, str | None]]
    retry_at: list[tuple[int, int]]
    committed: int | None = None


class _SnapshotBefore(msgspec.Struct, array_like=True):
    format: int
    partitions: list[_PartitionBefore]


def test_a_snapshot_without_delays_is_what_older_brokers_read() -> None:
    state = PartitionDeliveries(0, keyed=False, acks=AckRanges(5))
    state.scheduled = ScheduledDelays()
    data = state_codec.snapshot([state], {})
    assert [len(row) for row in msgspec.msgpack.decode(data)[1]] == [6], "no seventh field"
    old = msgspec.msgpack.decode(data, type=_SnapshotBefore)
    assert old.partitions == [_PartitionBefore(0, 5, [], [], [], None)]


def test_a_snapshot_keeps_the_delays_not_yet_due() -> None:
    state = PartitionDeliveries(0, keyed=False)
    state.scheduled = ScheduledDelays()
    state.scheduled.add(NOW + 10, 3, 7, NOW)
    state.scheduled.add(NOW + 99, 9, 10, NOW)
    replayed = state_codec.replay(state_codec.snapshot([state], {}), [], 1)[0]
    entry = state_codec.delayed(0, [(NOW + 5, 12, 13)])
    with_entry = state_codec.replay(state_codec.snapshot([state], {}), [entry], 1)[0]
    restored = ScheduledDelays.restore(unpack(replayed.delays), AckRanges(), {}, NOW)
    assert sorted(restored.wheel.runs()) == [(NOW + 10, 3, 7), (NOW + 99, 9, 10)]
    assert len(with_entry.delays) == len(replayed.delays) + 24
