"""The accounting of ``roost bench chaos``: lost, unexpected, duplicated and per-key order,
on histories and deliveries made up here."""

from __future__ import annotations

import pytest

from roost.bench.chaos import routed_to
from roost.bench.chaos_ledger import Lane, TopicTally, _RangeSet, add_range, parse, payload

SIZE = 60


def deliver(tally: TopicTally, lane: int, seq: int, key: bytes | None = None) -> None:
    tally.delivered(key, payload(lane, seq, key, SIZE))


def test_a_payload_names_its_lane_sequence_and_key() -> None:
    value = payload(3, 41, b"L3.k2", SIZE)
    assert len(value) == SIZE
    assert parse(value) == (3, 41, b"L3.k2")
    assert parse(payload(0, 0, None, 5)) == (0, 0, b""), "longer than asked when the name is"
    for junk in (b"", b"3:41", b"x:1:|", b"3:y:k|...", b"\xff\x00|"):
        assert parse(junk) is None, junk


def test_every_confirmed_message_delivered_once_is_clean() -> None:
    tally = TopicTally("q", [Lane(0, "jobs", 5, [(0, 5)])], SIZE)
    for seq in range(5):
        deliver(tally, 0, seq)
    figures = tally.finish()
    assert (figures.delivered, figures.lost, figures.unexpected, figures.duplicated) == (5, 0, 0, 0)


def test_a_confirmed_message_never_delivered_is_lost_an_unconfirmed_one_is_not() -> None:
    # 0-3 and 6-7 confirmed; 4-5 sent and never confirmed (the kill failed that request).
    tally = TopicTally("q", [Lane(0, "jobs", 8, [(0, 4), (6, 8)])], SIZE)
    for seq in (0, 1, 3, 7):
        deliver(tally, 0, seq)
    figures = tally.finish()
    assert figures.lost == 2, "2 and 6"
    assert figures.examples["lost"] == ["q: lane 0 message 2", "q: lane 0 message 6"]


def test_what_was_never_sent_or_not_as_sent_is_unexpected() -> None:
    tally = TopicTally("q", [Lane(0, "jobs", 3, [(0, 3)]), Lane(1, "jobs", 0, [])], SIZE)
    for seq in range(3):
        deliver(tally, 0, seq)
    deliver(tally, 0, 3)  # beyond what lane 0 ever attempted
    deliver(tally, 7, 0)  # no such lane
    tally.delivered(None, b"garbage")
    tally.delivered(None, payload(0, 1, None, SIZE)[:-1] + b"!")  # one byte changed
    tally.delivered(b"other", payload(0, 2, None, SIZE))  # the key it was not sent with
    figures = tally.finish()
    assert (figures.unexpected, figures.lost, figures.duplicated) == (5, 0, 0)


def test_second_deliveries_are_duplicates_not_losses() -> None:
    tally = TopicTally("q", [Lane(0, "jobs", 3, [(0, 3)])], SIZE)
    for seq in (0, 1, 1, 2, 1, 0):
        deliver(tally, 0, seq)
    figures = tally.finish()
    assert (figures.delivered, figures.duplicated, figures.lost) == (6, 3, 0)


def test_key_order_counts_first_deliveries_of_confirmed_messages() -> None:
    a, b = b"L0.ka", b"L0.kb"
    keys = {0: a, 1: b, 2: a, 3: a, 4: b, 5: a}
    lane = Lane(0, "orders", 6, [(0, 4), (5, 6)])  # 4 was never confirmed
    tally = TopicTally("fifo", [lane], SIZE, keyed=True)
    # Key a: 0, 2, then 0 again (a retried batch: a duplicate, no inversion), 5, then 3:
    # 3 was confirmed before 5 and first delivered after it. Key b: 1, 4 fine; then 4 again.
    for seq in (0, 1, 2, 0, 5, 3, 4, 4):
        deliver(tally, 0, seq, keys[seq])
    figures = tally.finish()
    assert figures.order_violations == 1
    assert figures.examples["order"] == ["fifo: key b'L0.ka': 3 first delivered after 5"]
    assert figures.duplicated == 2


def test_an_unconfirmed_message_out_of_order_is_no_violation() -> None:
    key = b"L0.k"
    tally = TopicTally("fifo", [Lane(0, "orders", 3, [(0, 1), (2, 3)])], SIZE, keyed=True)
    for seq in (0, 2, 1):  # 1 was never confirmed: nothing was promised about it
        deliver(tally, 0, seq, key)
    assert tally.finish().order_violations == 0


def test_without_keyed_order_is_not_checked() -> None:
    tally = TopicTally("q", [Lane(0, "jobs", 3, [(0, 3)])], SIZE)
    for seq in (2, 1, 0):
        deliver(tally, 0, seq)
    assert tally.finish().order_violations == 0


def test_an_exchange_topic_expects_only_what_its_bindings_route_to_it() -> None:
    lane = Lane(4, "route", 4, [(0, 4)])
    evens = TopicTally("chaos.route.a", [lane], SIZE)
    everything = TopicTally("chaos.route.all", [lane], SIZE)
    for seq in (0, 2):
        deliver(evens, 4, seq)
    for seq in (0, 1, 2):
        deliver(everything, 4, seq)
    assert evens.finish(routed_to).lost == 0, "the odd ones go to chaos.route.b"
    assert everything.finish(routed_to).lost == 1, "3 was routed to chaos.route.all"


def test_confirmed_ranges_merge_and_answer_membership() -> None:
    ranges: list[tuple[int, int]] = []
    for start, end in ((0, 3), (3, 5), (7, 9), (9, 10), (12, 13)):
        add_range(ranges, start, end)
    assert ranges == [(0, 5), (7, 10), (12, 13)]
    members = _RangeSet(ranges)
    probes = [14, 0, 4, 5, 6, 7, 12, 11, 3, 9, 10, 13, -1]
    assert [p for p in probes if p in members] == [0, 4, 7, 12, 3, 9]
    assert 1 not in _RangeSet([])


@pytest.mark.parametrize("seq", range(4))
def test_routes_follow_the_bindings(seq: int) -> None:
    lane = Lane(0, "route", 4, [(0, 4)])
    expected = {"chaos.route.a", "chaos.route.all"} if seq % 2 == 0 else {
        "chaos.route.b", "chaos.route.all"
    }  # fmt: skip
    topics = {"chaos.route.a", "chaos.route.b", "chaos.route.all"}
    assert {t for t in topics if routed_to(lane, seq, t)} == expected
