"""``nack(delay=...)`` has the bound publish delays have, checked before anything changes, with
an ``InvalidRequest`` naming the limit — embedded and over the network alike (issue 15,
bug 8)."""

from __future__ import annotations

from pathlib import Path

import pytest

import roost
from roost.clock import ManualClock
from roost.core.broker import Broker
from roost.core.model import MAX_DELAY_MS
from roost.core.publishing import Outgoing
from roost.errors import InvalidRequest
from roost.storage import LocalEngine
from tests.embedded_support import run, run_over_the_network

YEAR_S = 365 * 24 * 3600


async def out_of_bounds_nacks_change_nothing(broker: roost.Client) -> None:
    await broker.create_queue("q")
    await broker.publish("q", b"job")
    [message] = await broker.receive("q")
    for delay in (95 * YEAR_S, 1e17, float("inf"), float("nan"), -1):
        with pytest.raises(InvalidRequest, match="365 days") as refused:
            await message.nack(delay=delay)
        assert str(MAX_DELAY_MS) in str(refused.value) or "31536000" in str(refused.value)
    stats = await broker.stats("q")
    assert (stats.in_flight, stats.delayed) == (1, 0)  # type: ignore[union-attr]
    await message.nack(delay=YEAR_S)  # the limit itself is fine
    assert (await broker.stats("q")).delayed == 1  # type: ignore[union-attr]


def test_embedded(data_dir: str, clock: ManualClock) -> None:
    run(data_dir, clock, out_of_bounds_nacks_change_nothing)


def test_over_the_network(tmp_path: Path) -> None:
    run_over_the_network(tmp_path, out_of_bounds_nacks_change_nothing)


def test_the_core_refuses_before_the_lease_changes(engine: LocalEngine, clock: ManualClock) -> None:
    broker = Broker.open(engine, clock)
    broker.create_queue("q", durability="never")
    broker.publish("q", [Outgoing(value=b"x")])
    [message] = broker.receive("q", "q")
    for delay_ms in (MAX_DELAY_MS + 1, 10**20):
        with pytest.raises(InvalidRequest, match="365 days"):
            broker.nack("q", "q", [message.receipt], delay_ms=delay_ms)
    assert broker.ack("q", "q", [message.receipt]) == [], "still leased: nothing changed"
