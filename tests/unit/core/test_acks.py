"""Ack ranges (roost.core.acks): a floor and the done ranges above it.

Examples pin each rule (floor advance, merging, containment, ``done_between``); a hypothesis test
checks any sequence of adds against a plain set of offsets.
"""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from roost.core.acks import AckRanges


def test_acks_in_order_advance_the_floor_and_keep_no_ranges() -> None:
    acks = AckRanges()
    for offset in range(5):
        acks.add(offset)
    assert (acks.floor, acks.ranges()) == (5, [])


def test_an_ack_above_a_gap_is_kept_as_a_range() -> None:
    acks = AckRanges()
    acks.add(3)
    assert (acks.floor, acks.ranges()) == (0, [(3, 4)])


def test_acks_in_any_order_end_in_the_same_floor() -> None:
    acks = AckRanges()
    for offset in (4, 1, 3, 0, 2):
        acks.add(offset)
    assert (acks.floor, acks.ranges()) == (5, [])


def test_filling_the_gap_at_the_floor_swallows_the_range_above_it() -> None:
    acks = AckRanges()
    acks.add_range(1, 10)
    acks.add(0)
    assert (acks.floor, acks.ranges()) == (10, [])


def test_filling_a_gap_between_ranges_merges_them() -> None:
    acks = AckRanges()
    acks.add(2)
    acks.add(4)
    acks.add(3)
    assert acks.ranges() == [(2, 5)]


def test_adjacent_ranges_merge() -> None:
    acks = AckRanges()
    acks.add_range(5, 8)
    acks.add_range(8, 10)
    acks.add_range(3, 5)
    assert acks.ranges() == [(3, 10)]


def test_a_range_spanning_several_ranges_merges_them_all() -> None:
    acks = AckRanges()
    for start in (10, 20, 30):
        acks.add_range(start, start + 2)
    acks.add_range(11, 31)
    assert acks.ranges() == [(10, 32)]


def test_a_range_inside_a_range_changes_nothing() -> None:
    acks = AckRanges()
    acks.add_range(5, 10)
    acks.add_range(6, 8)
    assert acks.ranges() == [(5, 10)]


def test_ranges_with_a_gap_stay_apart() -> None:
    acks = AckRanges()
    acks.add_range(5, 7)
    acks.add_range(8, 9)
    assert acks.ranges() == [(5, 7), (8, 9)]


def test_an_ack_below_the_floor_changes_nothing() -> None:
    acks = AckRanges(floor=10)
    acks.add(3)
    acks.add_range(0, 10)
    assert (acks.floor, acks.ranges()) == (10, [])


def test_a_range_straddling_the_floor_advances_it() -> None:
    acks = AckRanges(floor=10)
    acks.add_range(5, 15)
    assert (acks.floor, acks.ranges()) == (15, [])


def test_an_empty_range_changes_nothing() -> None:
    acks = AckRanges()
    acks.add_range(5, 5)
    acks.add_range(7, 6)
    assert (acks.floor, acks.ranges()) == (0, [])


def test_containment_covers_the_floor_and_the_ranges_half_open() -> None:
    acks = AckRanges(floor=3, ranges=[(5, 7)])
    assert [offset in acks for offset in range(9)] == [
        True, True, True, False, False, True, True, False, False,
    ]  # fmt: skip


def test_ranges_given_at_construction_are_normalised() -> None:
    acks = AckRanges(floor=3, ranges=[(8, 9), (0, 4), (6, 8)])
    assert (acks.floor, acks.ranges()) == (4, [(6, 9)])


def test_done_between_counts_the_floor_and_the_ranges() -> None:
    acks = AckRanges(floor=3, ranges=[(5, 7), (9, 12)])
    assert acks.done_between(0, 20) == 3 + 2 + 3
    assert acks.done_between(2, 10) == 1 + 2 + 1
    assert acks.done_between(3, 5) == 0
    assert acks.done_between(6, 6) == 0
    assert acks.done_between(10, 4) == 0


# -- against a set -------------------------------------------------------------------------------

spans = st.tuples(st.integers(0, 60), st.integers(0, 8)).map(lambda s: (s[0], s[0] + s[1]))


@given(floor=st.integers(0, 10), adds=st.lists(spans, max_size=30), window=spans)
def test_ack_ranges_match_a_set_of_offsets(
    floor: int, adds: list[tuple[int, int]], window: tuple[int, int]
) -> None:
    acks = AckRanges(floor)
    done = set(range(floor))
    for start, end in adds:
        acks.add_range(start, end)
        done.update(range(start, end))

    assert acks.floor == min(set(range(100)) - done)
    assert [o for o in range(100) if o in acks] == sorted(done)
    ranges = acks.ranges()
    assert {o for s, e in ranges for o in range(s, e)} == done - set(range(acks.floor))
    assert all(s < e for s, e in ranges), "no empty ranges"
    assert all(acks.floor < s for s, _ in ranges), "ranges start above the floor, never at it"
    assert all(e1 < s2 for (_, e1), (s2, _) in pairwise(ranges)), "sorted, with gaps"
    start, end = window
    assert acks.done_between(start, end) == len(done & set(range(start, end)))
