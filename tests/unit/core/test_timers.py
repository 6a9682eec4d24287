"""Timers: one live deadline per key, the earliest reported; stale heap entries skipped."""

from __future__ import annotations

from roost.core.timers import Timers


def test_a_key_keeps_its_earliest_deadline() -> None:
    timers: Timers[str] = Timers()
    timers.schedule("a", 500)
    timers.schedule("a", 900)  # later: the visit at 500 finds it
    timers.schedule("a", 300)  # earlier: replaces 500
    assert timers.deadline_of("a") == 300
    assert timers.next_deadline_ms() == 300
    assert timers.due(299) == []
    assert timers.due(1_000) == ["a"]  # once, though three entries were pushed
    assert len(timers) == 0 and timers.next_deadline_ms() is None


def test_due_keys_come_in_deadline_order_and_are_no_longer_scheduled() -> None:
    timers: Timers[str] = Timers()
    for key, deadline in [("c", 30), ("a", 10), ("b", 20), ("d", 40)]:
        timers.schedule(key, deadline)
    assert timers.due(30) == ["a", "b", "c"]
    assert len(timers) == 1 and timers.deadline_of("a") is None
    timers.schedule("a", 35)  # scheduled again after its visit
    assert timers.next_deadline_ms() == 35
    assert timers.due(40) == ["a", "d"]


def test_a_cancelled_key_is_never_due_and_never_wakes_anyone() -> None:
    timers: Timers[str] = Timers()
    timers.schedule("gone", 10)
    timers.schedule("kept", 50)
    timers.cancel("gone")
    assert timers.next_deadline_ms() == 50  # the stale entry is skipped
    assert timers.due(100) == ["kept"]
    timers.schedule("gone", 60)  # a new subscription of the same name
    assert timers.due(100) == ["gone"]
