"""Rate-limited log lines: the first few of a kind in full, the rest counted in one summary."""

from __future__ import annotations

import logging

import pytest

from roost.clock import ManualClock
from roost.server.log_limit import LogLimit

LOGGER = "roost.test.log_limit"


def _limit(clock: ManualClock, lines: int = 3, interval_ms: int = 10_000) -> LogLimit:
    return LogLimit(logging.getLogger(LOGGER), clock, lines=lines, interval_ms=interval_ms)


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def test_a_burst_logs_its_first_lines_then_one_summary_counting_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    limit = _limit(clock)
    with caplog.at_level(logging.WARNING, LOGGER):
        for n in range(1_237):
            limit.log("closing a connection for a protocol error", "closing peer %d", n)
        assert _lines(caplog) == ["closing peer 0", "closing peer 1", "closing peer 2"]
        clock.advance(9_999)
        limit.flush()
        assert len(_lines(caplog)) == 3, "no summary before the interval has ended"
        clock.advance(1)
        limit.flush()
        limit.flush()
    assert _lines(caplog)[3:] == [
        "... and 1,234 more like it in the last 10.0 s: closing a connection for a protocol error"
    ]
    assert all(r.levelno == logging.WARNING for r in caplog.records)


def test_the_next_line_after_the_interval_sums_up_and_starts_a_new_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    limit = _limit(clock, lines=1, interval_ms=1_000)
    with caplog.at_level(logging.WARNING, LOGGER):
        for n in range(5):
            limit.log("a timeout", "timed out %d", n)
        clock.advance(2_500)
        for n in range(5, 8):
            limit.log("a timeout", "timed out %d", n)
        limit.close()
    assert _lines(caplog) == [
        "timed out 0",
        "... and 4 more like it in the last 2.5 s: a timeout",
        "timed out 5",
        "... and 2 more like it in the last 0.0 s: a timeout",
    ]


def test_kinds_are_limited_apart_and_a_quiet_kind_gets_no_summary(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    limit = _limit(clock, lines=2)
    with caplog.at_level(logging.WARNING, LOGGER):
        for n in range(4):
            limit.log("kind a", "a %d", n)
        limit.log("kind b", "b %d", 0)
        clock.advance(10_000)
        limit.flush()
    assert _lines(caplog) == [
        "a 0", "a 1", "b 0", "... and 2 more like it in the last 10.0 s: kind a"
    ]  # fmt: skip


def test_nothing_is_counted_or_formatted_when_the_level_is_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    limit = _limit(clock, lines=1)
    with caplog.at_level(logging.ERROR, LOGGER):
        for n in range(10):
            limit.log("kind", "line %d", n)
        clock.advance(10_000)
        limit.close()
    assert _lines(caplog) == []


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        LogLimit(logging.getLogger(LOGGER), ManualClock(), lines=0)
