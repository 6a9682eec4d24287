"""The delay wheel against a list of runs: exact times, exact counts, compact memory."""

from __future__ import annotations

import random
import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st

from roost.core.delay_wheel import NEVER, DelayWheel, unpack
from roost.core.scheduled import ScheduledDelays

NOW = 1_700_000_000_000
YEAR_MS = 365 * 24 * 3600 * 1000

delays = st.one_of(st.integers(0, 5_000), st.integers(0, YEAR_MS))


@settings(max_examples=200, deadline=None)
@given(
    runs=st.lists(st.tuples(delays, st.integers(1, 5)), min_size=1, max_size=40),
    steps=st.lists(st.one_of(st.integers(1, 3_000), st.integers(1, YEAR_MS // 4)), max_size=30),
    cut=st.none() | st.tuples(st.integers(0, 60), st.integers(0, 60)),
)
def test_due_gives_each_offset_once_at_its_time(
    runs: list[tuple[int, int]], steps: list[int], cut: tuple[int, int] | None
) -> None:
    wheel = DelayWheel()
    expected: dict[int, int] = {}  # offset -> visible_at
    offset = 0
    for delay, length in runs:
        wheel.add(NOW + delay, offset, offset + length, NOW)
        expected.update((o, NOW + delay) for o in range(offset, offset + length))
        offset += length
    if cut is not None:
        start, end = sorted(cut)
        wheel.discard(start, end)
        expected = {o: at for o, at in expected.items() if not start <= o < end}
    assert wheel.count == len(expected)
    now = NOW
    for step in [*steps, 2 * YEAR_MS]:
        assert wheel.next_ms() == min(expected.values(), default=NEVER), "exact, never early"
        now += step
        found = [o for start, end in wheel.due(now) for o in range(start, end)]
        due = sorted(o for o, at in expected.items() if at <= now)
        assert sorted(found) == due
        for o in due:
            del expected[o]
        assert wheel.count == len(expected)
    assert wheel.count == 0 and wheel.next_ms() == NEVER


def test_packed_runs_come_back() -> None:
    wheel = DelayWheel()
    wheel.add(NOW + 10, 0, 5, NOW)
    wheel.add(NOW + YEAR_MS, 5, 6, NOW)
    wheel.add(NOW + 1, 6, 9, NOW)
    assert sorted(unpack(wheel.packed())) == sorted(wheel.runs())
    assert sorted(wheel.runs(), key=lambda r: r[1]) == [
        (NOW + 10, 0, 5), (NOW + YEAR_MS, 5, 6), (NOW + 1, 6, 9),
    ]  # fmt: skip


def test_a_batch_with_one_delay_is_one_run() -> None:
    wheel = DelayWheel()
    for offset in range(10_000):
        wheel.add(NOW + 3_600_000, offset, offset + 1, NOW)
    assert list(wheel.runs()) == [(NOW + 3_600_000, 0, 10_000)]


def test_a_hundred_thousand_delays_of_their_own_take_under_40_bytes_each() -> None:
    """Each its own time, spread over a year, offsets in order: the wheel's worst case."""
    rng = random.Random(3)
    times = [NOW + rng.randrange(1, YEAR_MS) for _ in range(100_000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        scheduled = ScheduledDelays()
        for offset, at in enumerate(times):
            scheduled.add(at, offset, offset + 1, NOW)
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert scheduled.count == 100_000
    assert used / 100_000 < 40, f"{used / 100_000:.1f} bytes per delayed message"


def test_the_read_position_jumps_whole_ranges() -> None:
    scheduled = ScheduledDelays()
    scheduled.add(NOW + 50, 10, 1_000_010, NOW)
    scheduled.add(NOW + 60, 1_000_020, 1_000_030, NOW)
    assert scheduled.next_skip == 10
    assert scheduled.jump(5) == 5, "not in a range: stays"
    assert scheduled.jump(10) == 1_000_010
    assert scheduled.next_skip == 1_000_020
    assert scheduled.jump(1_000_020) == 1_000_030
    scheduled.add(NOW + 70, 1_000_030, 1_000_031, NOW)
    assert scheduled.next_skip == 1_000_030, "a new range after a passed one is a range anew"
    assert scheduled.jump(1_000_030) == 1_000_031
