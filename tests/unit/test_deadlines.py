"""``Deadlines`` against a plain dict scanned each time (what the flusher did before)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from roost.server.deadlines import Deadlines

KEYS = st.sampled_from("abcdef")
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), KEYS, st.integers(0, 50)),
        st.tuples(st.just("pop"), KEYS, st.just(0)),
        st.tuples(st.just("tick"), st.just(""), st.integers(0, 20)),
        st.tuples(st.just("clear"), st.just(""), st.just(0)),
    ),
    max_size=60,
)


@given(STEPS)
def test_due_and_earliest_agree_with_a_scan_of_every_deadline(steps) -> None:
    deadlines: Deadlines[str] = Deadlines()
    model: dict[str, int] = {}
    now_ms = 0
    for op, key, value in steps:
        if op == "add":
            deadlines.add(key, now_ms + value)
            model.setdefault(key, now_ms + value)
        elif op == "pop":
            deadlines.pop(key)
            model.pop(key, None)
        elif op == "tick":
            now_ms += value
        else:
            deadlines.clear()
            model.clear()
        assert sorted(deadlines.due(now_ms)) == sorted(k for k, at in model.items() if at <= now_ms)
        earliest = deadlines.earliest()
        if any(at <= now_ms for at in model.values()):
            assert earliest is not None and earliest <= now_ms  # the timer fires at once
        else:
            assert earliest == (min(model.values()) if model else None)
        assert set(deadlines) == set(model) and len(deadlines) == len(model)
        assert all((k in deadlines) == (k in model) for k in "abcdef")


def test_a_key_keeps_its_first_deadline_and_is_due_until_popped() -> None:
    deadlines: Deadlines[str] = Deadlines()
    deadlines.add("journal", 100)
    deadlines.add("journal", 500)  # already waiting: the earlier deadline stands
    assert deadlines.due(99) == [] and deadlines.earliest() == 100
    assert deadlines.due(100) == ["journal"]
    assert deadlines.due(100) == ["journal"], "due until flushed, however often asked"
    deadlines.pop("journal")
    assert deadlines.due(1_000) == [] and deadlines.earliest() is None
    deadlines.add("journal", 2_000)  # the stale entry at 100 must not make it due early
    assert deadlines.due(1_999) == [] and deadlines.earliest() == 2_000
