"""pytest fixtures for testing code that uses Roost: a broker in this process, in a temporary
directory, on a clock the test moves — no server, and no sleeping through delays, retries,
visibility timeouts or retention.

Installed with the package (a ``pytest11`` entry point), so a project that depends on roost has
them without a conftest (docs/testing.md has a whole example):

    def test_a_failed_job_comes_back_after_its_delay(roost_broker, roost_clock):
        roost_broker.create_queue("jobs")
        roost_broker.publish("jobs", b"resize img-1")
        [job] = roost_broker.receive("jobs")
        job.nack(delay=30)
        assert roost_broker.receive("jobs") == []
        roost_clock.advance(30_000)                 # milliseconds, as the clock counts
        [again] = roost_broker.receive("jobs")
        assert again.message.delivery_count == 2

- ``roost_clock``: a ``ManualClock``; ``advance(ms)`` moves it (never backwards).
- ``roost_data_dir``: the broker's data directory, under the test's ``tmp_path``.
- ``roost_broker``: a blocking client (``roost.sync``'s API) of a broker on those two; closed
  after the test.
- ``roost_open``: for async tests (pytest-asyncio, anyio): ``async with roost_open() as
  broker`` opens the async client of a broker on the same directory and clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from roost.client.api import Opening
from roost.client.embedded import open as open_embedded
from roost.client.sync import SyncBroker
from roost.client.sync import open as open_sync
from roost.clock import ManualClock


@pytest.fixture
def roost_clock() -> ManualClock:
    """The broker's clock: it moves only when the test calls ``advance(ms)``."""
    return ManualClock()


@pytest.fixture
def roost_data_dir(tmp_path: Path) -> str:
    """The broker's data directory, inside the test's own temporary directory."""
    return str(tmp_path / "roost-data")


@pytest.fixture
def roost_broker(roost_data_dir: str, roost_clock: ManualClock) -> Iterator[SyncBroker]:
    """A blocking client of a broker run in this process on ``roost_clock``."""
    broker = open_sync(roost_data_dir, clock=roost_clock)
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture
def roost_open(roost_data_dir: str, roost_clock: ManualClock) -> Callable[[], Opening]:
    """Opens the async client of a broker on ``roost_data_dir`` and ``roost_clock``."""
    return lambda: open_embedded(roost_data_dir, clock=roost_clock)
