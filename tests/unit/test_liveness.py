"""When the client PINGs and when it counts a broker as gone (client/liveness.py), from times
the test gives: a PING every interval; gone after twice the interval and the margin of
silence with a PING unanswered, not a millisecond before; a client that could not PING (its
own loop stalled) does not hold that silence against the broker; a blocked broker is excused;
a broker that may hold reading for requests it owes answers to gets as long as an answer may
take; ``heartbeat=0`` never judges; the interval the client PINGs at from the broker's and its
own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

import roost
from roost import sync
from roost.client.liveness import (
    BROKER_MAX_IN_FLIGHT,
    BROKER_MAX_IN_FLIGHT_BYTES,
    DEFAULT_HEARTBEAT_MS,
    HELD_MS,
    MARGIN_MS,
    Heartbeat,
    Pulse,
    silence_limit_ms,
)
from roost.core.policies import MAX_BLOCK_MS
from roost.server import native_server

INTERVAL_MS = 1_000
LIMIT_MS = 2 * INTERVAL_MS + MARGIN_MS


def beat(pulse: Pulse, now_ms: int) -> bool:
    """What the client's heartbeat task does when it wakes: PING if due; whether it did."""
    if pulse.ping_due(now_ms):
        pulse.pinged(now_ms)
        return True
    return False


def test_the_limit_is_two_intervals_and_the_margin() -> None:
    assert silence_limit_ms(10_000) == 21_000
    assert Pulse(INTERVAL_MS, True, 0).limit_ms == LIMIT_MS == 3_000


def test_a_ping_every_interval_and_the_wakes_in_between() -> None:
    pulse = Pulse(INTERVAL_MS, True, now_ms=0)
    assert not beat(pulse, 999)
    assert pulse.wait_ms(999) == 1
    assert beat(pulse, 1_000)
    assert not beat(pulse, 1_500)
    assert pulse.wait_ms(1_500) == 500  # the next PING comes before the broker may be gone
    assert beat(pulse, 2_000)


def test_a_silent_broker_is_gone_at_the_limit_and_not_before() -> None:
    pulse = Pulse(INTERVAL_MS, True, now_ms=0)
    beat(pulse, 1_000)
    beat(pulse, 2_000)
    assert pulse.gone(LIMIT_MS - 1) is None
    assert pulse.wait_ms(2_000) == 1_000
    gone = pulse.gone(LIMIT_MS)
    assert gone == (
        "the broker sent nothing for 3000 ms though PINGed every 1000 ms; "
        "the limit is twice that + 1000 ms"
    )


def test_anything_heard_restarts_the_silence() -> None:
    pulse = Pulse(INTERVAL_MS, True, now_ms=0)
    beat(pulse, 1_000)
    pulse.heard(1_200)  # the PONG, or any byte
    beat(pulse, 2_000)
    beat(pulse, 3_000)
    assert pulse.gone(1_200 + LIMIT_MS - 1) is None
    assert pulse.gone(1_200 + LIMIT_MS) is not None
    pulse.heard(1_000)  # an older reading changes nothing
    assert pulse.gone(1_200 + LIMIT_MS) is not None


def test_silence_while_the_client_sent_no_ping_is_not_the_brokers() -> None:
    """The client's own loop stalled for 30 s: it PINGed nothing, and what the broker sent
    may be waiting unread. A PING now must wait an interval and the margin first."""
    pulse = Pulse(INTERVAL_MS, True, now_ms=0)
    assert pulse.gone(30_000) is None
    assert beat(pulse, 30_000)
    assert pulse.gone(30_000 + INTERVAL_MS + MARGIN_MS - 1) is None
    assert pulse.wait_ms(30_000) == INTERVAL_MS  # the next PING
    beat(pulse, 31_000)
    assert pulse.wait_ms(31_000) == MARGIN_MS  # then the PING of 30 s has waited long enough
    assert pulse.gone(30_000 + INTERVAL_MS + MARGIN_MS) is not None


def test_a_broker_that_says_it_is_blocked_is_excused() -> None:
    """While ``BLOCKED`` the client's heartbeat task reports the broker heard each time it
    wakes: the broker may not be reading the PINGs."""
    pulse = Pulse(INTERVAL_MS, True, now_ms=0)
    for now_ms in range(1_000, 60_001, 1_000):
        pulse.heard(now_ms)
        beat(pulse, now_ms)
        assert pulse.gone(now_ms) is None
    assert pulse.gone(60_000 + LIMIT_MS - 1) is None


def test_a_broker_owing_many_answers_gets_as_long_as_an_answer_may_take() -> None:
    pulse = Pulse(INTERVAL_MS, True, now_ms=0)
    for now_ms in range(1_000, LIMIT_MS + HELD_MS, 1_000):
        beat(pulse, now_ms)
    assert pulse.gone(LIMIT_MS) is not None  # were it not holding
    assert pulse.gone(LIMIT_MS + HELD_MS - 1, held=True) is None
    assert pulse.wait_ms(LIMIT_MS + HELD_MS - 1, held=True) == 1
    gone = pulse.gone(LIMIT_MS + HELD_MS, held=True)
    assert gone is not None and gone.endswith("+ 1000 ms and 60000 ms for answers owed")


def test_the_brokers_bounds_the_client_mirrors_are_the_brokers() -> None:
    assert BROKER_MAX_IN_FLIGHT == native_server.MAX_IN_FLIGHT
    assert BROKER_MAX_IN_FLIGHT_BYTES == native_server.MAX_IN_FLIGHT_BYTES
    assert HELD_MS == MAX_BLOCK_MS == 60_000


def test_heartbeat_zero_pings_and_never_judges() -> None:
    pulse = Pulse(INTERVAL_MS, False, now_ms=0)
    assert pulse.limit_ms is None
    for now_ms in range(1_000, 100_001, 1_000):
        assert beat(pulse, now_ms)
    assert pulse.gone(1_000_000) is None
    assert pulse.wait_ms(100_000) == INTERVAL_MS


@pytest.mark.parametrize(
    ("heartbeat_s", "broker_ms", "interval_ms"),
    [
        (None, 10_000, 10_000),  # the broker's
        (2.5, 10_000, 2_500),  # more often than the broker asks
        (60, 10_000, 10_000),  # less often would have the broker end the connection
        (0, 10_000, 10_000),  # PINGs the broker asks for are still sent
        (0.0001, 10_000, 1),
    ],
)
def test_the_interval_from_the_brokers_and_the_clients(
    heartbeat_s: float | None, broker_ms: int, interval_ms: int
) -> None:
    assert Heartbeat(heartbeat_s).interval_ms(broker_ms) == interval_ms


def test_opening_a_connection_is_timed_by_the_interval_the_client_would_ping_at() -> None:
    assert Heartbeat().connect_timeout_ms == silence_limit_ms(DEFAULT_HEARTBEAT_MS) == 21_000
    assert Heartbeat(1).connect_timeout_ms == 3_000
    assert Heartbeat(0).connect_timeout_ms is None


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf")])
def test_a_heartbeat_that_is_no_duration_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="heartbeat must be a finite number of seconds >= 0"):
        Heartbeat(bad)


def test_within_returns_the_work_or_raises_timeout_error_and_cancels_it() -> None:
    async def body() -> None:
        fired = asyncio.Event()

        async def sleep(seconds: float) -> None:
            assert seconds == 3.0
            await fired.wait()

        heartbeat = Heartbeat(1, sleep=sleep)
        assert await heartbeat.within(asyncio.sleep(0, "done"), 3_000, "work") == "done"

        cancelled = asyncio.Event()

        async def hangs() -> None:
            try:
                await asyncio.Event().wait()
            finally:
                cancelled.set()

        waiting = asyncio.ensure_future(heartbeat.within(hangs(), 3_000, "connecting to x"))
        await asyncio.sleep(0)
        assert not waiting.done()
        fired.set()
        with pytest.raises(TimeoutError, match="connecting to x: no answer within 3000 ms"):
            await waiting
        assert cancelled.is_set()

    asyncio.run(body())


@pytest.mark.parametrize("connect", [roost.connect, sync.connect])
def test_connect_refuses_a_bad_heartbeat_at_once(connect: Callable[..., object]) -> None:
    refusal = "heartbeat must be a finite number of seconds >= 0, not -2"
    with pytest.raises(ValueError, match=refusal):
        connect("roost://127.0.0.1:7420", heartbeat=-2)
