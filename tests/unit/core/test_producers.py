"""Idempotent producers and the dedup window (roost.core.producers).

What is pinned here:

- sequences: a new producer starts at 0; in-order batches append; a retry of any of the last
  five batches is a Duplicate with its first offsets; gaps, reordering, stale and reshaped retries
  are refused naming expected and got; sequences are per partition; ``check`` changes nothing;
- producer expiry by idle time and the per-partition LRU bound;
- the dedup window: inside and not after it (ManualClock), topic scope, first placement stands,
  the id bound, a clock stepped back never shortens it;
- ``content_id``: equal for equal content, different when key, value or headers differ, and a
  golden value guarding the hash scheme;
- persistence: export/restore, entry/apply replay equal to live state, snapshot plus entries,
  truncate after recovery, golden bytes of both layouts, damage refused.
"""

from __future__ import annotations

import msgspec
import pytest

from roost.clock import ManualClock
from roost.core.producers import (
    APPEND,
    BATCHES_PER_PRODUCER,
    DEFAULT_MAX_DEDUP_IDS,
    DEFAULT_MAX_PRODUCERS,
    DEFAULT_PRODUCER_EXPIRY_MS,
    DEFAULT_WINDOW_MS,
    MAX_DEDUP_ID_CHARS,
    MAX_SEQUENCE,
    MAX_WINDOW_MS,
    MIN_PRODUCER_EXPIRY_MS,
    MIN_WINDOW_MS,
    Duplicate,
    Placement,
    ProducerState,
    content_id,
)
from roost.errors import InvalidConfig, InvalidName, InvalidRequest, StorageFailure

EXPIRY_MS = MIN_PRODUCER_EXPIRY_MS


class SteppedClock:
    """A wall clock that may be set back, as a real one can."""

    def __init__(self, now_ms: int) -> None:
        self.now = now_ms

    def now_ms(self) -> int:
        return self.now

    def monotonic_ms(self) -> int:
        return 0


class Publisher(ProducerState):
    """A ProducerState plus the dense offsets a partition log would assign: the broker's use."""

    def __init__(self, clock: ManualClock | SteppedClock, **limits: int) -> None:
        super().__init__("orders", clock, **limits)
        self.ends: dict[int, int] = {}

    def produce(self, producer: str, partition: int, first: int, count: int) -> int:
        """Check, append, record; the base offset."""
        assert self.check(producer, partition, first, count) is APPEND
        base = self.ends.get(partition, 0)
        self.ends[partition] = base + count
        self.record(producer, partition, first, count, base)
        return base


def state_of(clock: ManualClock, **limits: int) -> Publisher:
    return Publisher(clock, **limits)


# -- configuration ------------------------------------------------------------------------------


def test_defaults(clock: ManualClock) -> None:
    state = ProducerState("orders", clock)
    assert state.window_ms == DEFAULT_WINDOW_MS == 5 * 60 * 1000
    assert state.producer_expiry_ms == DEFAULT_PRODUCER_EXPIRY_MS == 7 * 24 * 3600 * 1000
    assert state.max_producers == DEFAULT_MAX_PRODUCERS
    assert state.max_dedup_ids == DEFAULT_MAX_DEDUP_IDS


@pytest.mark.parametrize(
    ("limit", "value", "field"),
    [
        ("window_ms", MIN_WINDOW_MS - 1, "dedup.window_ms"),
        ("window_ms", MAX_WINDOW_MS + 1, "dedup.window_ms"),
        ("max_dedup_ids", 0, "dedup.max_ids"),
        ("producer_expiry_ms", MIN_PRODUCER_EXPIRY_MS - 1, "producer_expiry_ms"),
        ("max_producers", 0, "max_producers"),
        ("max_producers", True, "max_producers"),
    ],
)
def test_limits_out_of_range_are_refused(
    clock: ManualClock, limit: str, value: int, field: str
) -> None:
    with pytest.raises(InvalidConfig) as caught:
        ProducerState("orders", clock, **{limit: value})
    assert caught.value.field == field


@pytest.mark.parametrize("window_ms", [MIN_WINDOW_MS, MAX_WINDOW_MS])
def test_window_bounds_are_accepted(clock: ManualClock, window_ms: int) -> None:
    assert ProducerState("orders", clock, window_ms=window_ms).window_ms == window_ms


@pytest.mark.parametrize("producer", ["", "x" * 256, "bad\nid"])
def test_bad_producer_ids_are_refused(clock: ManualClock, producer: str) -> None:
    with pytest.raises(InvalidName):
        state_of(clock).check(producer, 0, 0, 1)


@pytest.mark.parametrize(("first", "count"), [(-1, 1), (0, 0), (MAX_SEQUENCE, 2)])
def test_bad_sequences_are_refused(clock: ManualClock, first: int, count: int) -> None:
    with pytest.raises(InvalidRequest, match="first_sequence >= 0 and count >= 1"):
        state_of(clock).check("p", 0, first, count)


@pytest.mark.parametrize("dedup_id", ["", "x" * (MAX_DEDUP_ID_CHARS + 1), "tab\there"])
def test_bad_dedup_ids_are_refused(clock: ManualClock, dedup_id: str) -> None:
    with pytest.raises(InvalidName):
        state_of(clock).seen(dedup_id)


# -- idempotent producers -----------------------------------------------------------------------


def test_in_order_batches_append(clock: ManualClock) -> None:
    state = state_of(clock)
    assert [state.produce("p", 0, first, 3) for first in (0, 3, 6)] == [0, 3, 6]
    assert state.check("p", 0, 9, 1) is APPEND
    assert state.tracked_producers(0) == 1


def test_a_new_producer_must_start_at_zero(clock: ManualClock) -> None:
    state = state_of(clock)
    message = r"'p' on topic 'orders' partition 2: expected sequence 0, got 5 \(a producer not"
    with pytest.raises(InvalidRequest, match=message):
        state.check("p", 2, 5, 1)
    assert state.check("p", 2, 0, 1) is APPEND


@pytest.mark.parametrize("back", range(1, BATCHES_PER_PRODUCER + 1))
def test_a_retry_of_any_of_the_last_five_batches_gets_its_offsets(
    clock: ManualClock, back: int
) -> None:
    state = state_of(clock)
    bases = [state.produce("p", 0, 2 * n, 2) for n in range(7)]
    n = 7 - back
    assert state.check("p", 0, 2 * n, 2) == Duplicate(bases[n], 2)
    assert Duplicate(bases[n], 2).last_offset == bases[n] + 1
    assert state.check("p", 0, 14, 2) is APPEND  # a retry changes nothing


def test_a_retry_older_than_the_last_five_is_refused(clock: ManualClock) -> None:
    state = state_of(clock)
    for n in range(6):
        state.produce("p", 0, n, 1)
    with pytest.raises(InvalidRequest, match=r"expected sequence 6, got 0 \(0\.\.0 is not one of"):
        state.check("p", 0, 0, 1)


def test_a_retry_with_another_count_is_refused(clock: ManualClock) -> None:
    state = state_of(clock)
    state.produce("p", 0, 0, 3)
    state.produce("p", 0, 3, 3)
    with pytest.raises(InvalidRequest, match=r"expected sequence 6, got 3 \(3\.\.4 is not one of"):
        state.check("p", 0, 3, 2)


def test_a_gap_is_refused_naming_expected_and_got(clock: ManualClock) -> None:
    state = state_of(clock)
    state.produce("p", 0, 0, 4)
    with pytest.raises(InvalidRequest, match=r"expected sequence 4, got 7 \(sequences 4\.\.6 are"):
        state.check("p", 0, 7, 1)


def test_reordered_batches_are_refused_then_accepted_in_order(clock: ManualClock) -> None:
    state = state_of(clock)
    state.produce("p", 0, 0, 2)
    with pytest.raises(InvalidRequest, match="expected sequence 2, got 4"):
        state.check("p", 0, 4, 2)  # the third batch overtook the second
    state.produce("p", 0, 2, 2)
    state.produce("p", 0, 4, 2)


def test_check_changes_nothing(clock: ManualClock) -> None:
    state = state_of(clock)
    assert state.check("p", 0, 0, 5) is APPEND
    assert state.check("p", 0, 0, 5) is APPEND
    assert state.tracked_producers(0) == 0


def test_sequences_are_per_partition(clock: ManualClock) -> None:
    state = state_of(clock)
    state.produce("p", 0, 0, 10)
    assert state.check("p", 1, 0, 1) is APPEND
    with pytest.raises(InvalidRequest, match="partition 1: expected sequence 0, got 10"):
        state.check("p", 1, 10, 1)


def test_a_record_that_does_not_follow_starts_the_producer_over(clock: ManualClock) -> None:
    state = state_of(clock)
    state.produce("p", 0, 0, 2)
    state.record("p", 0, 40, 1, 99)
    assert state.check("p", 0, 40, 1) == Duplicate(99, 1)
    with pytest.raises(InvalidRequest, match="expected sequence 41, got 0"):
        state.check("p", 0, 0, 2)


def test_an_idle_producer_is_forgotten_after_the_expiry(clock: ManualClock) -> None:
    state = state_of(clock, producer_expiry_ms=EXPIRY_MS)
    state.produce("p", 0, 0, 1)
    clock.advance(EXPIRY_MS - 1)
    assert state.check("p", 0, 0, 1) == Duplicate(0, 1)
    clock.advance(1)
    with pytest.raises(InvalidRequest, match=r"got 1 .*idle for 60 s"):
        state.check("p", 0, 1, 1)
    assert state.tracked_producers(0) == 0
    assert state.check("p", 0, 0, 1) is APPEND  # and may start over


def test_recording_refreshes_the_idle_time(clock: ManualClock) -> None:
    state = state_of(clock, producer_expiry_ms=EXPIRY_MS)
    state.produce("p", 0, 0, 1)
    clock.advance(EXPIRY_MS - 1)
    state.produce("p", 0, 1, 1)
    clock.advance(EXPIRY_MS - 1)
    assert state.check("p", 0, 2, 1) is APPEND


def test_the_least_recently_recorded_producer_is_evicted(clock: ManualClock) -> None:
    state = state_of(clock, max_producers=2)
    state.produce("a", 0, 0, 1)
    state.produce("b", 0, 0, 1)
    state.produce("a", 0, 1, 1)  # b is now the least recent
    state.produce("c", 0, 0, 1)
    assert state.tracked_producers(0) == 2
    assert state.evicted_producers == 1
    assert state.check("a", 0, 2, 1) is APPEND
    with pytest.raises(InvalidRequest, match=r"'b' .*expected sequence 0, got 1"):
        state.check("b", 0, 1, 1)
    state.produce("d", 1, 0, 1)  # the bound is per partition
    assert state.tracked_producers(1) == 1


# -- dedup window -------------------------------------------------------------------------------


def test_an_id_is_seen_within_the_window_and_not_after(clock: ManualClock) -> None:
    state = state_of(clock, window_ms=10_000)
    assert state.seen("order-17") is None
    state.remember("order-17", 3, 120)
    clock.advance(9_999)
    assert state.seen("order-17") == Placement(3, 120)
    clock.advance(1)
    assert state.seen("order-17") is None
    assert state.tracked_dedup_ids() == 0


def test_the_scope_is_the_topic(clock: ManualClock) -> None:
    state = state_of(clock)
    state.remember("order-17", 1, 5)
    assert state.seen("order-17") == Placement(1, 5)  # a retry routed to partition 0 learns this


def test_the_first_placement_stands(clock: ManualClock) -> None:
    state = state_of(clock, window_ms=10_000)
    state.remember("order-17", 0, 5)
    clock.advance(5_000)
    state.remember("order-17", 1, 9)
    assert state.seen("order-17") == Placement(0, 5)
    clock.advance(5_000)  # the window runs from the first remember
    assert state.seen("order-17") is None


def test_when_full_the_oldest_ids_are_dropped_early(clock: ManualClock) -> None:
    state = state_of(clock, max_dedup_ids=3)
    for n in range(5):
        state.remember(f"id-{n}", 0, n)
        clock.advance(1)
    assert [state.seen(f"id-{n}") for n in range(5)] == [
        None,
        None,
        Placement(0, 2),
        Placement(0, 3),
        Placement(0, 4),
    ]
    assert state.tracked_dedup_ids() == 3
    assert state.evicted_ids == 2


def test_expired_ids_free_their_place(clock: ManualClock) -> None:
    state = state_of(clock, max_dedup_ids=2, window_ms=1_000)
    state.remember("a", 0, 0)
    state.remember("b", 0, 1)
    clock.advance(1_000)
    state.remember("c", 0, 2)
    state.remember("d", 0, 3)
    assert state.evicted_ids == 0


def test_a_clock_stepped_back_never_shortens_the_window() -> None:
    clock = SteppedClock(1_000_000)
    state = ProducerState("orders", clock, window_ms=10_000)
    state.remember("x", 0, 0)
    clock.now = 1_000_000 - 60_000
    state.remember("y", 0, 1)  # stamped at the highest reading, 1_000_000
    clock.now = 1_000_000 + 9_999
    assert state.seen("x") == Placement(0, 0)
    assert state.seen("y") == Placement(0, 1)
    clock.now = 1_000_000 + 10_000
    assert state.seen("x") is state.seen("y") is None


# -- content ids --------------------------------------------------------------------------------

HEADERS = [("type", b"order"), ("v", b"2")]


def test_equal_content_gives_equal_ids() -> None:
    assert content_id(b"k", b"value", HEADERS) == content_id(b"k", b"value", list(HEADERS))
    assert content_id(None, b"", ()) == content_id(None, b"", [])


@pytest.mark.parametrize(
    ("key", "value", "headers"),
    [
        (b"K", b"value", HEADERS),
        (None, b"value", HEADERS),
        (b"", b"value", HEADERS),
        (b"k", b"valuE", HEADERS),
        (b"k", b"value", [("type", b"order")]),
        (b"k", b"value", [("type", b"order"), ("v", b"3")]),
        (b"k", b"value", [("type", b"order"), ("V", b"2")]),
        (b"k", b"value", list(reversed(HEADERS))),
        (b"kv", b"alue", HEADERS),  # no ambiguity where one field ends
    ],
)
def test_any_difference_gives_another_id(
    key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
) -> None:
    assert content_id(key, value, headers) != content_id(b"k", b"value", HEADERS)


def test_content_ids_are_stable_and_usable_as_dedup_ids(clock: ManualClock) -> None:
    golden = "content:f178813032be55ac3a24518d3f5dc0a610e4253936a4498e1441db0c34fbdb31"
    cid = content_id(b"k", b"value", HEADERS)
    assert len(cid) == len(golden) <= MAX_DEDUP_ID_CHARS
    assert cid == golden
    state = state_of(clock)
    state.remember(cid, 0, 1)
    assert state.seen(content_id(b"k", b"value", HEADERS)) == Placement(0, 1)


# -- persistence --------------------------------------------------------------------------------


def busy_state(clock: ManualClock, **limits: int) -> Publisher:
    state = state_of(clock, **limits)
    for n in range(7):
        state.produce("a", 0, 2 * n, 2)
        clock.advance(10)
    state.produce("b", 1, 0, 1)
    for n in range(4):
        state.remember(f"id-{n}", n % 2, 100 + n)
        clock.advance(1_000)
    return state


def test_export_restore_round_trip(clock: ManualClock) -> None:
    live = busy_state(clock)
    again = state_of(clock)
    again.restore(live.export())
    assert again.export() == live.export()
    assert again.check("a", 0, 10, 2) == live.check("a", 0, 10, 2) == Duplicate(10, 2)
    assert again.check("a", 0, 14, 1) is APPEND
    assert again.seen("id-1") == Placement(1, 101)


def test_restored_windows_keep_their_times(clock: ManualClock) -> None:
    live = busy_state(clock, window_ms=10_000)
    data = live.export()
    clock.advance(10_000 - 4_000)  # id-0 was remembered 4 s before the export
    again = state_of(clock, window_ms=10_000)
    again.restore(data)
    assert again.seen("id-0") is None
    assert again.seen("id-1") == Placement(1, 101)


def test_restore_applies_this_instances_bounds(clock: ManualClock) -> None:
    data = busy_state(clock).export()
    small = state_of(clock, max_dedup_ids=1, max_producers=1)
    small.restore(data)
    assert small.tracked_dedup_ids() == 1
    assert small.evicted_ids == 3
    assert small.seen("id-3") == Placement(1, 103)


def test_replayed_entries_equal_live_state(clock: ManualClock) -> None:
    live = state_of(clock)
    journal: list[bytes] = []
    for n in range(8):
        entry = live.entry(
            n % 2,
            10 * n,
            3,
            producer_id="p",
            first_sequence=3 * (n // 2),
            dedup_ids=[f"d-{n}", None, f"e-{n}"],
        )
        live.apply(entry)
        journal.append(entry)
        clock.advance(40_000)
    replayed = state_of(clock)
    for entry in journal:
        replayed.apply(entry)
    assert replayed.export() == live.export()
    assert replayed.seen("e-7") == Placement(1, 72)
    assert replayed.check("p", 1, 9, 3) == Duplicate(70, 3)


def test_record_and_remember_equal_their_entries_applied(clock: ManualClock) -> None:
    live, replayed = state_of(clock), state_of(clock)
    for n in range(6):
        live.record("p", n % 2, n // 2, 1, n)
        live.remember(f"d-{n}", n % 2, n)
        replayed.apply(
            live.entry(n % 2, n, 1, producer_id="p", first_sequence=n // 2, dedup_ids=[f"d-{n}"])
        )
        clock.advance(100_000)
    assert replayed.export() == live.export()


def test_a_snapshot_plus_later_entries_equals_live_state(clock: ManualClock) -> None:
    live = busy_state(clock)
    snapshot = live.export()
    later = [live.entry(0, 14, 2, producer_id="a", first_sequence=14, dedup_ids=["x", "y"])]
    live.apply(later[0])
    clock.advance(1)
    recovered = state_of(clock)
    recovered.restore(snapshot)
    for entry in later:
        recovered.apply(entry)
    assert recovered.export() == live.export()


def test_replay_at_a_later_time_does_not_extend_windows(clock: ManualClock) -> None:
    live = state_of(clock, window_ms=10_000)
    entry = live.entry(0, 0, 1, dedup_ids=["x"])
    clock.advance(10_000)
    replayed = state_of(clock, window_ms=10_000)
    replayed.apply(entry)
    assert replayed.seen("x") is None


def test_truncate_forgets_what_recovery_cut(clock: ManualClock) -> None:
    state = state_of(clock)
    state.produce("a", 0, 0, 2)  # offsets 0..1
    state.produce("b", 0, 0, 1)  # 2
    state.produce("a", 0, 2, 2)  # 3..4, cut
    state.produce("c", 0, 0, 1)  # 5, cut
    state.produce("a", 1, 0, 9)  # another partition
    for dedup_id, offset in [("kept", 2), ("cut", 3)]:
        state.remember(dedup_id, 0, offset)
    state.remember("other", 1, 3)
    state.truncate(0, 3)
    assert state.check("a", 0, 2, 2) is APPEND  # must be appended again
    assert state.check("a", 0, 0, 2) == Duplicate(0, 2)
    assert state.check("b", 0, 0, 1) == Duplicate(2, 1)
    assert state.tracked_producers(0) == 2  # c is gone: its only batch was cut
    assert [state.seen(d) for d in ("kept", "cut", "other")] == [
        Placement(0, 2),
        None,
        Placement(1, 3),
    ]
    assert state.check("a", 1, 0, 9) == Duplicate(0, 9)


def test_entry_layout_is_pinned() -> None:
    clock = ManualClock(now_ms=1_000)
    entry = state_of(clock).entry(
        2, 40, 3, producer_id="p", first_sequence=7, dedup_ids=[None, "x"]
    )
    assert msgspec.msgpack.decode(entry) == [1, 2, 40, 3, 1_000, "p", 7, [[41, "x"]]]
    assert entry == bytes.fromhex("9801022803cd03e8a17007919229a178")


def test_snapshot_layout_is_pinned() -> None:
    clock = ManualClock(now_ms=1_000)
    state = state_of(clock)
    state.record("p", 1, 0, 2, 40)
    state.remember("x", 1, 41)
    assert msgspec.msgpack.decode(state.export()) == [
        1,
        1_000,
        [[1, "p", 2, 1_000, [[0, 2, 40]]]],
        [["x", 1_000, 1, 41]],
    ]


@pytest.mark.parametrize("data", [b"", b"\x93\x01", msgspec.msgpack.encode([2, 0, [], []])])
def test_a_damaged_snapshot_is_refused(clock: ManualClock, data: bytes) -> None:
    with pytest.raises(StorageFailure, match="producer state of topic 'orders'"):
        state_of(clock).restore(data)


def test_a_damaged_entry_is_refused(clock: ManualClock) -> None:
    with pytest.raises(StorageFailure, match="bad entry"):
        state_of(clock).apply(msgspec.msgpack.encode([9, 0]))


def test_an_entry_needs_a_producer_and_its_sequence_together(clock: ManualClock) -> None:
    with pytest.raises(InvalidRequest, match="both producer_id and first_sequence"):
        state_of(clock).entry(0, 0, 1, producer_id="p")
