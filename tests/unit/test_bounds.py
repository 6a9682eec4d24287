"""The logic of the native listener's bounds, on an injected clock: which connection is overdue
and why, the memory budget's settings, the alarm's hysteresis, and the watchdog's tick."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from roost.clock import ManualClock
from roost.errors import InvalidConfig
from roost.protocols.native import messages as m
from roost.server.framed import MEMORY, UNSENT
from roost.server.memory import MemoryAlarm, budget_bytes
from roost.server.native_server import IN_FLIGHT, PUSH_BATCH, PUSH_BYTES, _Push
from roost.server.serve import bounds, settings
from roost.server.watchdog import (
    MAX_TICK_MS,
    PRESSURE_SAMPLE_MS,
    RELEASE_EVERY_MS,
    Timeouts,
    Watchdog,
    overdue,
)

TIMEOUTS = Timeouts(frame_timeout_ms=30_000, heartbeat_ms=10_000)


def _overdue(now_ms: int, **times: object) -> str | None:
    arguments: dict[str, object] = {
        "last_received_ms": 0, "frame_started_ms": None, "heartbeats": True, "holds": (),
        **times,
    }  # fmt: skip
    return overdue(now_ms, TIMEOUTS, **arguments)  # type: ignore[arg-type]


def test_a_frame_still_arriving_is_overdue_at_its_timeout_and_not_a_ms_before() -> None:
    times = {"frame_started_ms": 1_000, "last_received_ms": 30_999}
    assert _overdue(30_999, **times) is None
    reason = _overdue(31_000, **times)
    assert reason == "a frame started 30000 ms ago is not whole (frame_timeout_ms=30000)"


def test_silence_ends_a_connection_that_promised_heartbeats_at_twice_the_interval() -> None:
    assert _overdue(19_999) is None
    assert _overdue(20_000) == "nothing received for 20000 ms (twice heartbeat_ms=10000)"
    assert _overdue(20_000, last_received_ms=5_000) is None  # a PING came: it is alive


def test_silence_is_not_held_against_a_client_that_never_promised_heartbeats() -> None:
    assert _overdue(10_000_000, heartbeats=False) is None
    late_frame = _overdue(40_000, heartbeats=False, frame_started_ms=0)
    assert late_frame is not None and "frame_timeout_ms" in late_frame


@pytest.mark.parametrize("hold", [UNSENT, IN_FLIGHT, MEMORY])
def test_silence_is_never_timed_while_the_broker_holds_reading(hold: str) -> None:
    assert _overdue(10_000_000, holds={hold}) is None


@pytest.mark.parametrize(("holds", "timed"), [
    ({MEMORY}, True),  # the alarm must not let a stalled frame hold memory for ever
    ({UNSENT}, False),  # waiting for the peer to read: the frame waits on us
    ({IN_FLIGHT}, False),
    ({MEMORY, IN_FLIGHT}, False),
])  # fmt: skip
def test_a_frame_held_by_the_memory_alarm_is_still_timed(holds: set[str], timed: bool) -> None:
    reason = _overdue(60_000, frame_started_ms=0, last_received_ms=0, holds=holds)
    assert (reason is not None) is timed


def test_the_tick_is_a_quarter_of_the_shortest_timeout_and_at_most_the_maximum() -> None:
    assert TIMEOUTS.tick_ms == MAX_TICK_MS
    assert Timeouts(frame_timeout_ms=400, heartbeat_ms=10_000).tick_ms == 100
    assert Timeouts(frame_timeout_ms=30_000, heartbeat_ms=100).tick_ms == 50
    assert Timeouts(frame_timeout_ms=1, heartbeat_ms=1).tick_ms == 1


# -- the budget ------------------------------------------------------------------------------


@pytest.mark.parametrize(("setting", "expected"), [
    ("0.4", 400), (0.4, 400), ("1", 1_000), ("0.001", 1),
    ("2048", 2048), ("512MiB", 512 * 1024**2), ("2GB", 2 * 1000**3), ("1.5 GiB", 3 * 1024**3 // 2),
    ("64kb", 64_000), ("100b", 100),
    ("0", None), ("off", None), ("OFF", None), ("none", None), (0, None),
])  # fmt: skip
def test_a_budget_is_bytes_a_fraction_of_the_machine_or_none(
    setting: str | float, expected: int | None
) -> None:
    assert budget_bytes(setting, machine_bytes=1_000) == expected


@pytest.mark.parametrize("setting", ["-1", "lots", "12 parsecs", "1e9", "0.4.1", "MiB"])
def test_a_budget_in_no_known_form_is_refused_naming_the_forms(setting: str) -> None:
    with pytest.raises(InvalidConfig, match=r"max_memory=.*512MiB.*0\.4.*0 for none"):
        budget_bytes(setting, machine_bytes=1_000)


def test_the_default_fraction_is_of_this_machine() -> None:
    budget = budget_bytes("0.4")
    assert budget is not None and budget > 0


def test_the_alarm_blocks_over_the_budget_and_lifts_below_ninety_percent() -> None:
    alarm = MemoryAlarm(1_000 * 1024**2)
    assert not alarm.observe(1_000 * 1024**2)  # at the budget: not over it
    assert alarm.observe(1_001 * 1024**2) and alarm.blocked
    assert alarm.reason == (
        "memory alarm: the broker holds 1001 MiB, over its budget of 1000 MiB (max_memory); "
        "publishing connections are not read until it falls below 900 MiB"
    )
    assert not alarm.observe(950 * 1024**2) and alarm.blocked  # between: stays blocked
    assert alarm.observe(899 * 1024**2) and not alarm.blocked
    assert alarm.reason is None
    assert alarm.alarms == 1


def test_an_alarm_without_a_budget_never_blocks() -> None:
    alarm = MemoryAlarm(None)
    assert not alarm.observe(10**15)
    assert not alarm.blocked and not alarm.over(10**15)


# -- the watchdog ----------------------------------------------------------------------------


class Connection:
    """What the watchdog sees of a connection: it records what it was asked."""

    def __init__(self) -> None:
        self.checked: list[int] = []
        self.told: list[bool] = []

    def check(self, now_ms: int) -> None:
        self.checked.append(now_ms)

    def memory(self, alarm: MemoryAlarm) -> None:
        self.told.append(alarm.blocked)


class Memory:
    """Samples the test sets; ``release`` frees what the test says it would."""

    def __init__(self, used: int, freed_by_release: int = 0) -> None:
        self.used = used
        self.freed_by_release = freed_by_release
        self.releases = 0

    def sample(self) -> int:
        return self.used

    def release(self) -> None:
        self.releases += 1
        self.used -= self.freed_by_release


def _watchdog(memory: Memory, *connections: Connection) -> tuple[Watchdog, ManualClock]:
    clock = ManualClock()
    alarm = MemoryAlarm(1_000)
    watchdog = Watchdog(set(connections), alarm, TIMEOUTS, clock=clock, sample=memory.sample,
                        release=memory.release)  # fmt: skip
    return watchdog, clock


def test_each_tick_checks_every_connection_at_the_clock_s_time() -> None:
    first, second = Connection(), Connection()
    watchdog, clock = _watchdog(Memory(used=10), first, second)
    watchdog.tick()
    clock.advance(250)
    watchdog.tick()
    assert first.checked == second.checked == [0, 250]
    assert first.told == [] and watchdog.alarm.used_bytes == 10


def test_memory_that_release_frees_never_blocks_anyone() -> None:
    connection = Connection()
    memory = Memory(used=1_500, freed_by_release=600)
    watchdog, _ = _watchdog(memory, connection)
    watchdog.tick()
    assert memory.releases == 1
    assert not watchdog.alarm.blocked and connection.told == []


def test_over_the_budget_every_connection_is_told_once_and_again_when_it_lifts() -> None:
    first, second = Connection(), Connection()
    memory = Memory(used=1_500)
    watchdog, clock = _watchdog(memory, first, second)
    watchdog.tick()
    watchdog.tick()
    assert first.told == second.told == [True]
    assert memory.releases == 1  # once a second at most
    clock.advance(RELEASE_EVERY_MS)
    watchdog.tick()
    assert memory.releases == 2
    memory.used = 950  # under the budget, over 90% of it: still blocked
    watchdog.tick()
    assert first.told == [True]
    memory.used = 899
    watchdog.tick()
    assert first.told == second.told == [True, False]


def test_without_a_budget_memory_is_not_even_sampled() -> None:
    memory = Memory(used=10**12)
    watchdog = Watchdog(set(), MemoryAlarm(None), TIMEOUTS, clock=ManualClock(),
                        sample=lambda: 1 // 0, release=memory.release)  # fmt: skip
    watchdog.tick()
    assert memory.releases == 0


def test_a_push_leases_fewer_large_messages_at_a_time() -> None:
    push = _Push(1, m.Subscribe("t", "t", credit=10_000))
    assert push.batch() == PUSH_BATCH  # nothing pushed yet
    push.message_bytes = 100
    assert push.batch() == PUSH_BATCH
    push.message_bytes = PUSH_BYTES // 10
    assert push.batch() == 10
    push.message_bytes = 16 * PUSH_BYTES
    assert push.batch() == 1  # one at least
    push.credit = 3
    push.message_bytes = 100
    assert push.batch() == 3  # never past the credit


def test_a_large_frame_samples_memory_between_ticks_at_most_every_10_ms() -> None:
    samples = []

    def sample() -> int:
        samples.append(1)
        return 10

    clock = ManualClock()
    watchdog = Watchdog(set(), MemoryAlarm(1_000), TIMEOUTS, clock=clock, sample=sample,
                        release=lambda: None)  # fmt: skip
    watchdog.memory_pressure()
    watchdog.memory_pressure()
    assert len(samples) == 1
    clock.advance(PRESSURE_SAMPLE_MS - 1)
    watchdog.memory_pressure()
    assert len(samples) == 1
    clock.advance(1)
    watchdog.memory_pressure()
    assert len(samples) == 2
    watchdog.tick()  # a tick samples whatever the pace
    assert len(samples) == 3


# -- settings --------------------------------------------------------------------------------


def test_bounds_come_from_the_file_the_environment_and_flags(tmp_path: Path) -> None:
    config = tmp_path / "roost.toml"
    config.write_text("[server]\nmax_memory = 0.25\nframe_timeout_ms = 5000\n")
    environ = {"ROOST_HEARTBEAT_MS": "2000", "ROOST_FRAME_TIMEOUT_MS": "6000"}
    chosen = settings(str(config), environ, {"max_memory": "1GiB", "heartbeat_ms": None})
    assert (chosen.max_memory, chosen.frame_timeout_ms, chosen.heartbeat_ms) == ("1GiB", 6000, 2000)
    timeouts, budget = bounds(chosen)
    assert timeouts == Timeouts(frame_timeout_ms=6000, heartbeat_ms=2000)
    assert budget == 1024**3
    assert bounds(settings(str(config), {}, {}))[1] == budget_bytes("0.25")


@pytest.mark.parametrize(("flags", "message"), [
    ({"max_memory": "lots"}, "invalid max_memory='lots'"),
    ({"frame_timeout_ms": 0}, "invalid frame_timeout_ms=0: takes a whole number of at least 1"),
    ({"heartbeat_ms": -1}, "invalid heartbeat_ms=-1"),
])  # fmt: skip
def test_bounds_it_cannot_serve_with_are_refused_before_anything_opens(
    flags: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidConfig, match=message):
        bounds(settings(None, {}, flags))


def test_roost_serve_refuses_a_budget_it_cannot_read_in_one_line(tmp_path: Path) -> None:
    """In a process of its own: ``serve`` tunes the allocator and collector of its process."""
    data = tmp_path / "data"
    command = [sys.executable, "-m", "roost.cli.main", "serve", "--data", str(data),
               "--port", "0", "--no-admin", "--max-memory", "lots"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, timeout=60, check=False)
    assert done.returncode == 1
    assert (
        done.stderr.decode()
        .strip()
        .splitlines()[-1]
        .startswith("error: invalid max_memory='lots': give bytes")
    )
    assert not data.exists()  # refused before the data directory was opened
