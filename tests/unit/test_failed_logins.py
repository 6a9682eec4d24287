"""Failed logins per address: past the limit within the window, refused until it passes."""

from __future__ import annotations

import pytest

from roost.clock import ManualClock
from roost.errors import NotAuthenticated
from roost.server.failed_logins import FailedLogins


def test_an_address_waits_once_it_failed_too_often_and_only_it() -> None:
    clock = ManualClock()
    failures = FailedLogins(clock, limit=3, window_ms=60_000)
    for _ in range(3):
        failures.check("10.0.0.1")
        failures.failed("10.0.0.1")
        clock.advance(1_000)
    with pytest.raises(NotAuthenticated, match=r"try again in 57 s"):
        failures.check("10.0.0.1")
    failures.check("10.0.0.2")  # another address is not held up
    clock.advance(57_000)  # the first failure leaves the window
    failures.check("10.0.0.1")


def test_the_table_is_bounded() -> None:
    clock = ManualClock()
    failures = FailedLogins(clock, limit=3)
    failures.max_addresses = 10
    for n in range(25):
        failures.failed(f"10.0.0.{n}")
    assert len(failures) <= 10
