"""Shared fixtures: a data directory, a clock the test drives, an engine on both."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from roost.clock import ManualClock
from roost.storage import LocalEngine


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def data_dir(tmp_path: Path) -> str:
    return str(tmp_path / "data")


@pytest.fixture
def engine(data_dir: str, clock: ManualClock) -> Iterator[LocalEngine]:
    engine = LocalEngine.open(data_dir, clock)
    yield engine
    engine.close()
